//! Pre-started interpreters (issue 14): a pooled sandbox keeps `python3` started and
//! waiting; the next execution hands its code to it. These tests hold it to its two
//! promises: nothing of an earlier execution is reachable from a later one, and a
//! program behaves exactly as under a fresh `python3 -c`.

use std::collections::{BTreeMap, HashSet};

use isol8::docker::EngineConfig;
use isol8::{DockerEngine, EngineOptions, ExecutionRequest, ExecutionResult};
use isol8_protocol::{ExitReason, PoolSize, PoolStrategy};
use isol8_testkit::{assert_clean, code, engine_with, run};

/// A pool of one sandbox, reset between executions.
async fn pooled(fresh_starts: bool) -> DockerEngine {
    pooled_with(PoolStrategy::Fast, fresh_starts).await
}

async fn pooled_with(strategy: PoolStrategy, fresh_starts: bool) -> DockerEngine {
    let engine = engine_with(EngineConfig {
        options: EngineOptions {
            pool_strategy: Some(strategy),
            pool_size: Some(PoolSize::Split { clean: 1, dirty: 1 }),
            timeout_ms: Some(2_000),
            max_output_size: Some(1000),
            ..Default::default()
        },
        fresh_starts,
        ..Default::default()
    })
    .await;
    engine.prewarm(&["python".into()]).await.expect("prewarm");
    engine
}

/// Whether the program ran in a pre-started interpreter: its command line is the
/// loader's (the one difference a program can see, documented in docs/SECURITY.md).
/// (The name is split so that a fresh `python3 -c` of this probe does not carry it.)
const WARM_PROBE: &str = "print(b'_isol8_' b'prestart' in open('/proc/self/cmdline', 'rb').read())";

/// Checks that nothing of the run before is visible, then leaves all of it behind for the
/// run after: interpreter state (builtins, sys.modules, globals), environment, files in
/// every writable directory, a process in its own session, a thread, an open
/// descriptor, a seeded random generator and an armed interval timer. Prints whether it
/// ran pre-started, the container's hostname, its string hash (randomised per process)
/// and what it found.
const LEAK_CHECK: &str = r#"
import builtins, os, random, signal, socket, subprocess, sys, threading, time
found = []
if hasattr(builtins, "isol8_leak"): found.append("builtins")
if "isol8_leak_module" in sys.modules: found.append("sys.modules")
if "isol8_leak_global" in globals(): found.append("globals")
if "ISOL8_LEAK" in os.environ: found.append("environ")
for d in ("/sandbox", "/tmp", "/dev/shm"):
    if os.listdir(d): found.append("files in " + d)
me = os.getpid()
others = [p for p in os.listdir("/proc") if p.isdigit() and int(p) != me and os.stat("/proc/" + p).st_uid == os.getuid()]
if others: found.append("processes %s" % others)
if len(os.listdir("/proc/self/task")) != 1 or threading.active_count() != 1: found.append("threads")
fds = sorted(int(f) for f in os.listdir("/proc/self/fd"))
if fds != [0, 1, 2, 3]: found.append("descriptors %s" % fds)
if random.random() == random.Random(1234).random(): found.append("random state")
if signal.getitimer(signal.ITIMER_REAL) != (0.0, 0.0) or signal.alarm(0) != 0: found.append("timers")
warm = b"_isol8_" b"prestart" in open("/proc/self/cmdline", "rb").read()
builtins.isol8_leak = 1
sys.modules["isol8_leak_module"] = sys
isol8_leak_global = 1
os.environ["ISOL8_LEAK"] = "1"
for d in ("/sandbox", "/tmp", "/dev/shm"):
    open(d + "/leak", "w").write("x")
subprocess.Popen(["sleep", "1000"], start_new_session=True)
threading.Thread(target=time.sleep, args=(1000,), daemon=True).start()
kept = open("/sandbox/leak")
random.seed(1234)
signal.setitimer(signal.ITIMER_REAL, 1000)
print(warm, socket.gethostname(), hash("isol8"), ",".join(found) or "clean")
"#;

#[isol8_testkit::test(docker)]
async fn a_thousand_runs_in_one_pre_started_sandbox_see_nothing_of_each_other() {
    let engine = pooled(false).await;
    let mut hosts = HashSet::new();
    let mut hashes = HashSet::new();
    for i in 0..1000 {
        let r = ready_run(&engine, code("python", LEAK_CHECK)).await;
        assert_eq!(r.exit_code, 0, "run {i}: {r:?}");
        let fields: Vec<&str> = r.stdout.split_whitespace().collect();
        assert_eq!(fields.len(), 4, "run {i}: {r:?}");
        assert_eq!(fields[0], "True", "run {i} did not run pre-started: {r:?}");
        assert_eq!(fields[3], "clean", "run {i} saw an earlier run: {r:?}");
        hosts.insert(fields[1].to_string());
        hashes.insert(fields[2].to_string());
    }
    // One sandbox served all of them, each in a new process (its own hash seed).
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    assert_eq!(hashes.len(), 1000);
    assert_clean(&engine).await;
}

/// One program of the differential test: code, and what it is given.
struct Program {
    code: &'static str,
    stdin: Option<&'static str>,
    env: &'static [(&'static str, &'static str)],
}

const fn p(code: &'static str) -> Program {
    Program {
        code,
        stdin: None,
        env: &[],
    }
}

/// Programs whose stdout, stderr and exit code must not depend on how the interpreter
/// started: argv, `__main__`, exits, exceptions and tracebacks, signals, stdio, the
/// environment, the process's identity, limits and signal dispositions.
const PROGRAMS: &[Program] = &[
    p("print('hello')"),
    p("import sys; print(sys.argv, len(sys.argv))"),
    p("print(__name__, __doc__, __package__, __spec__)"),
    p("print(sorted(globals()))"),
    p("import __main__; print(__main__.__loader__, sorted(vars(__main__)))"),
    p("print(type(__builtins__).__name__)"),
    p("import sys; print(sys.orig_argv)"),
    p("1/0"),
    p("def f():\n    raise ValueError('deep')\ndef g():\n    f()\ng()"),
    p("try:\n    1/0\nexcept ZeroDivisionError:\n    raise KeyError('during')"),
    p("raise Exception('multi\\nline')"),
    p("x = ("),
    p("print('before')\nundefined_name"),
    p("import sys; sys.exit(3)"),
    p("import sys; sys.exit('a message')"),
    p("raise SystemExit"),
    p("raise KeyboardInterrupt"),
    p("import os; os._exit(5)"),
    p("import os, signal; os.kill(os.getpid(), signal.SIGTERM)"),
    p("import os; os.abort()"),
    p("import os; print(sorted(os.environ.items()))"),
    Program {
        code: "import os; print(os.environ['GREETING'], os.environ.get('PYTHONPATH'))",
        stdin: None,
        env: &[("GREETING", "hi")],
    },
    Program {
        // A library that reads the environment when it is first used.
        code: "import tempfile; print(tempfile.gettempdir())",
        stdin: None,
        env: &[("TMPDIR", "/dev/shm")],
    },
    Program {
        code: "import subprocess; print(subprocess.run(['sh', '-c', 'echo $CHILD'], capture_output=True, text=True).stdout)",
        stdin: None,
        env: &[("CHILD", "inherited")],
    },
    p("import os; print(os.getcwd())"),
    p("import sys; print(sys.path)"),
    p("import sys; print(sorted(sys.modules))"),
    p("import sys; print(sys.flags)"),
    p("import sys; print(sys.executable, sys.prefix, sys.getrecursionlimit())"),
    Program {
        code: "import sys; print(repr(sys.stdin.read()))",
        stdin: Some("line one\nline two\n"),
        env: &[],
    },
    Program {
        code: "print(input()); print(input())",
        stdin: Some("first\nsecond\n"),
        env: &[],
    },
    p("import sys; print(repr(sys.stdin.read()))"),
    p("input()"),
    p("import os, stat; print([stat.S_IFMT(os.fstat(fd).st_mode) for fd in (0, 1, 2)])"),
    p("import os; print(sorted(os.listdir('/proc/self/fd')))"),
    p("import sys; print(sys.stdin.isatty(), sys.stdout.isatty(), sys.stdout.encoding, sys.stdout.line_buffering)"),
    p("print('é ü 日本 🙂')"),
    p("# -*- coding: latin-1 -*-\nprint('é')"),
    p("import sys; sys.stdout.write('no newline')"),
    p("import sys; print('to stderr', file=sys.stderr); print('to stdout')"),
    p("import sys\nfor i in range(3):\n    print(i); print(-i, file=sys.stderr)"),
    p("import signal; print([signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGCHLD, signal.SIGHUP)])"),
    p("print([l.split()[0] + l.split()[1] for l in open('/proc/self/status') if l.startswith(('SigBlk', 'SigIgn', 'SigCgt'))])"),
    p("import os; print(os.getuid(), os.geteuid(), os.getgid(), os.getgroups())"),
    p("import resource; print([resource.getrlimit(r) for r in (resource.RLIMIT_NOFILE, resource.RLIMIT_NPROC, resource.RLIMIT_CORE, resource.RLIMIT_STACK)])"),
    p("import os; print(oct(os.umask(0)))"),
    p("import os; print(os.getpgrp() == os.getpid(), os.getsid(0) == os.getpid())"),
    p("print(open('/proc/self/oom_score_adj').read().strip())"),
    p("import threading; print(threading.active_count(), threading.current_thread().name)"),
    p("import atexit; atexit.register(print, 'at exit'); print('main')"),
    p("import threading, time\nt = threading.Thread(target=lambda: (time.sleep(0.05), print('thread')))\nt.start()\nprint('main')"),
    p("import warnings; warnings.warn('careful')"),
    p("from __future__ import annotations\ndef f(x: int) -> str: pass\nprint(f.__annotations__)"),
    p("import gc, sys; print(gc.isenabled(), sys.gettrace(), sys.getprofile())"),
    p("import sys; sys.stderr.write('partial'); raise RuntimeError('after partial')"),
    p("import sys\nclass E(Exception):\n    def __str__(self): return 'custom'\nraise E()"),
];

fn request(prog: &Program) -> ExecutionRequest {
    let mut req = code("python", prog.code);
    req.stdin = prog.stdin.map(str::to_string);
    req.env = prog
        .env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .collect();
    req
}

fn observed(r: &ExecutionResult) -> (String, String, i32) {
    (r.stdout.clone(), r.stderr.clone(), r.exit_code)
}

#[isol8_testkit::test(docker)]
async fn programs_behave_alike_fresh_and_pre_started() {
    assert!(PROGRAMS.len() >= 40, "{}", PROGRAMS.len());
    let warm = pooled(false).await;
    let fresh = pooled(true).await;
    // The comparison means something only if the two engines differ as intended.
    assert_eq!(
        ready_run(&warm, code("python", WARM_PROBE)).await.stdout,
        "True\n"
    );
    assert_eq!(
        ready_run(&fresh, code("python", WARM_PROBE)).await.stdout,
        "False\n"
    );
    let mut differ = Vec::new();
    for prog in PROGRAMS {
        let a = ready_run(&fresh, request(prog)).await;
        let b = ready_run(&warm, request(prog)).await;
        if observed(&a) != observed(&b) {
            differ.push(format!(
                "{:?}\n  fresh:       {:?}\n  pre-started: {:?}",
                prog.code,
                observed(&a),
                observed(&b)
            ));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
    assert_clean(&warm).await;
    assert_clean(&fresh).await;
}

/// Runs `req` once the pool has a ready sandbox: reset and pre-started. (`secure` refills
/// after each run, and a request arriving before that starts a container of its own,
/// never pre-started; under `fast`, a request that has to wait for the reset gets the
/// sandbox without a pre-started interpreter, which it would only wait for.)
async fn ready_run(engine: &DockerEngine, req: ExecutionRequest) -> ExecutionResult {
    engine.prewarm(&["python".into()]).await.expect("prewarm");
    run(engine, req).await
}

#[isol8_testkit::test(docker)]
async fn limits_hold_pre_started_and_what_it_cannot_serve_starts_fresh() {
    for strategy in [PoolStrategy::Fast, PoolStrategy::Secure] {
        let engine = pooled_with(strategy, false).await;
        let warm = |r: &ExecutionResult| r.stdout.starts_with("True");
        // The timeout and the output cap apply as to any program.
        let r = ready_run(
            &engine,
            code("python", &format!("{WARM_PROBE}\nwhile True: pass")),
        )
        .await;
        assert!(warm(&r), "{strategy:?}: {r:?}");
        assert_eq!(
            (r.exit_code, r.exit_reason),
            (137, Some(ExitReason::Timeout)),
            "{strategy:?}: {r:?}"
        );
        let r = ready_run(
            &engine,
            code("python", &format!("{WARM_PROBE}\nprint('x' * 5000)")),
        )
        .await;
        assert!(warm(&r) && r.truncated, "{strategy:?}: {r:?}");
        // (5,006 bytes written: "True\\n", 5,000 x, "\\n".)
        assert!(
            r.stdout.ends_with(&format!(
                "x\n{}\n",
                isol8::output::truncation_trailer(5006, 1000)
            )),
            "{strategy:?}: {r:?}"
        );
        // A setup script, or a start-up variable of its own: a fresh interpreter, which
        // sees what it asked for…
        let mut req = code(
            "python",
            &format!("{WARM_PROBE}\nimport sys; print(sys.path[1])"),
        );
        req.setup_script = Some("mkdir -p /sandbox/lib".into());
        req.env.insert("PYTHONPATH".into(), "/sandbox/lib".into());
        let r = ready_run(&engine, req).await;
        assert_eq!(r.stdout, "False\n/sandbox/lib\n", "{strategy:?}: {r:?}");
        let mut req = code("python", WARM_PROBE);
        req.env.insert("PYTHONHASHSEED".into(), "0".into());
        let r = ready_run(&engine, req).await;
        assert_eq!(r.stdout, "False\n", "{strategy:?}: {r:?}");
        // …and the sandbox's next run is pre-started again.
        let r = ready_run(&engine, code("python", WARM_PROBE)).await;
        assert_eq!(r.stdout, "True\n", "{strategy:?}: {r:?}");
        assert_clean(&engine).await;
    }
}

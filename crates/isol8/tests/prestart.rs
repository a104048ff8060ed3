//! Pre-started interpreters (issue 14): a pooled sandbox keeps `python3`, `node` or
//! `deno` started and waiting; the next execution hands its code to it. These tests hold
//! it to its two promises, per runtime: nothing of an earlier execution is reachable from
//! a later one, and a program behaves exactly as under a fresh `python3 -c`, `node -e` or
//! `deno run`.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use isol8::docker::EngineConfig;
use isol8::runtime::{Prestart, RuntimeRegistry};
use isol8::{DockerEngine, EngineOptions, ExecutionRequest, ExecutionResult};
use isol8_protocol::{ExitReason, NetworkMode, PoolSize, PoolStrategy};
use isol8_testkit::{assert_clean, code, engine_with, run};

/// A pool of one `runtime` sandbox, reset between executions.
async fn pooled(runtime: &str, fresh_starts: bool) -> DockerEngine {
    pooled_with(runtime, PoolStrategy::Fast, fresh_starts).await
}

async fn pooled_with(runtime: &str, strategy: PoolStrategy, fresh_starts: bool) -> DockerEngine {
    pooled_from(runtime, pool_config(strategy, fresh_starts)).await
}

/// A pool of one sandbox, reset between executions, with a 30 s timeout and a
/// 1,000-byte output cap. (The timeout is generous: a runtime's first run in a new
/// container reads its interpreter, up to 120 MB, from disk when the page cache has let
/// it go, which took over 2 s on a throttled VM disk; [`timeout_and_cap_hold`] sets its
/// own short one.)
fn pool_config(strategy: PoolStrategy, fresh_starts: bool) -> EngineConfig {
    EngineConfig {
        options: EngineOptions {
            pool_strategy: Some(strategy),
            pool_size: Some(PoolSize::Split { clean: 1, dirty: 1 }),
            timeout_ms: Some(30_000),
            max_output_size: Some(1000),
            ..Default::default()
        },
        fresh_starts,
        registry: Some(registry()),
        ..Default::default()
    }
}

/// An engine of `config` with `runtime`'s pool ready.
async fn pooled_from(runtime: &str, config: EngineConfig) -> DockerEngine {
    let engine = engine_with(config).await;
    engine.prewarm(&[runtime.into()]).await.expect("prewarm");
    engine
}

/// The built-in runtimes and `deno-all`: the built-in `deno` with every permission
/// (`--allow-all`), so that its programs can read `/proc` (their command line, other
/// processes), which Deno allows with no narrower flag. Its sandboxes, loader and
/// pre-start are `deno`'s; only the permissions differ, on both paths.
/// (`the_built_in_deno_runs_pre_started_with_its_own_permissions` checks `deno` itself.)
fn registry() -> RuntimeRegistry {
    let mut registry = RuntimeRegistry::default();
    let run = ["deno", "run", "--allow-all"];
    let mut deno = registry.get("deno").expect("deno").clone();
    deno.name = "deno-all".into();
    deno.file = run.iter().map(|s| s.to_string()).collect();
    deno.prestart = Some(Prestart::deno(&run));
    registry.register(deno).expect("register deno-all");
    registry
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
    let engine = pooled("python", false).await;
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
#[derive(Clone)]
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
    // The collector and finalisation: garbage found, objects finalised at exit (module
    // teardown, suspended generators, `weakref.finalize`).
    p("import gc; print(gc.collect(), gc.get_threshold())"),
    p("import gc\nclass A:\n    def __del__(self): print('collected')\na = A(); a.me = a; del a\nprint(gc.collect())"),
    p("class A:\n    def __del__(self): print('torn down')\na = A()\nprint('main')"),
    p("def g():\n    try:\n        yield 1\n    finally:\n        print('finally at exit')\nit = g(); next(it); print('main')"),
    p("import weakref\nclass A: pass\na = A()\nweakref.finalize(a, print, 'finalized')\nprint('main')"),
    p("import os\nclass A:\n    def __del__(self): print('kept by os')\nos.keep = A()\nprint('main')"),
    p("import sys\nclass A:\n    def __del__(self): print('kept by sys')\nsys.keep = A()\nprint('main')"),
    p("import gc\nclass A:\n    def __del__(self): print('cycle at exit')\na = A(); a.me = a\nprint('main')"),
    p("import __main__, sys; print(__main__ is sys.modules['__main__'], list(vars(__main__)))"),
    p("import sys\nclass E(Exception):\n    def __str__(self): return 'custom'\nraise E()"),
];

fn request(runtime: &str, prog: &Program) -> ExecutionRequest {
    let mut req = code(runtime, prog.code);
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
    differential("python", PROGRAMS, WARM_PROBE, ("True\n", "False\n")).await;
}

/// Runs each of `programs` fresh and pre-started and fails with every difference in
/// stdout, stderr or exit code. `probe` tells the two engines apart (`answers`: what it
/// prints pre-started, then fresh).
async fn differential(runtime: &str, programs: &[Program], probe: &str, answers: (&str, &str)) {
    assert!(programs.len() >= 40, "{}", programs.len());
    let warm = pooled(runtime, false).await;
    let fresh = pooled(runtime, true).await;
    // The comparison means something only if the two engines differ as intended.
    assert_eq!(
        ready_run(&warm, code(runtime, probe)).await.stdout,
        answers.0
    );
    assert_eq!(
        ready_run(&fresh, code(runtime, probe)).await.stdout,
        answers.1
    );
    let mut differ = Vec::new();
    for prog in programs {
        let a = ready_run(&fresh, request(runtime, prog)).await;
        let b = ready_run(&warm, request(runtime, prog)).await;
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
    engine
        .prewarm(std::slice::from_ref(&req.runtime))
        .await
        .expect("prewarm");
    run(engine, req).await
}

/// `runtime` running `probe`, then `rest`.
fn probed(runtime: &str, probe: &str, rest: &str) -> ExecutionRequest {
    code(runtime, &format!("{probe}\n{rest}"))
}

/// A JavaScript program that runs until it is killed, and one that writes 5,001 bytes
/// (for [`timeout_and_cap_hold`]).
const JS_SPIN: &str = "while (true) {}";
const JS_PRINT: &str = "console.log('x'.repeat(5000))";

/// The timeout and the output cap apply to a pre-started program as to any: `spin` runs
/// until killed, `print` writes 5,001 bytes (5,000 `x` and a newline). `probe` is the
/// runtime's warm probe and what it prints pre-started.
async fn timeout_and_cap_hold(
    engine: &DockerEngine,
    runtime: &str,
    probe: (&str, &str),
    spin: &str,
    print: &str,
) {
    let mut req = probed(runtime, probe.0, spin);
    req.timeout_ms = Some(2_000);
    let r = ready_run(engine, req).await;
    assert!(r.stdout.starts_with(probe.1), "{r:?}");
    assert_eq!(
        (r.exit_code, r.exit_reason),
        (137, Some(ExitReason::Timeout)),
        "{r:?}"
    );
    let r = ready_run(engine, probed(runtime, probe.0, print)).await;
    assert!(r.stdout.starts_with(probe.1) && r.truncated, "{r:?}");
    let written = probe.1.len() as u64 + 5001;
    assert!(
        r.stdout.ends_with(&format!(
            "x\n{}\n",
            isol8::output::truncation_trailer(written, 1000)
        )),
        "{r:?}"
    );
}

#[isol8_testkit::test(docker)]
async fn limits_hold_pre_started_and_what_it_cannot_serve_starts_fresh() {
    for strategy in [PoolStrategy::Fast, PoolStrategy::Secure] {
        let engine = pooled_with("python", strategy, false).await;
        let probe = (WARM_PROBE, "True\n");
        timeout_and_cap_hold(
            &engine,
            "python",
            probe,
            "while True: pass",
            "print('x' * 5000)",
        )
        .await;
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

/// Whether a node program ran pre-started: its command line names the loader (split so
/// that a fresh `node -e` of this probe does not carry it).
const NODE_WARM_PROBE: &str =
    "console.log(require('fs').readFileSync('/proc/self/cmdline', 'latin1').includes('isol8/' + 'prestart'))";

/// Node's counterpart of [`LEAK_CHECK`]: looks for globals, a polluted
/// `Object.prototype`, cached modules, the environment, files, processes, a thread (a
/// worker), an open descriptor and a timer left by the run before, then leaves all of
/// them behind. Prints whether it ran pre-started, the hostname, a `Math.random()` (a
/// new generator per process), what it found, and its own state at the start (open
/// descriptors, threads, active resources) for comparison with a fresh process's.
const NODE_LEAK_CHECK: &str = r#"
const fs = require('fs'), os = require('os'), cp = require('child_process');
const state = [fs.readdirSync('/proc/self/fd').join('/'), fs.readdirSync('/proc/self/task').length,
  process.getActiveResourcesInfo().join('/') || '-'].join(';');
const found = [];
if (typeof isol8_leak !== 'undefined') found.push('globals');
if ({}.isol8_leak !== undefined) found.push('Object.prototype');
if (Object.keys(require.cache).length) found.push('require.cache');
if ('ISOL8_LEAK' in process.env) found.push('environ');
for (const d of ['/sandbox', '/tmp', '/dev/shm']) if (fs.readdirSync(d).length) found.push('files in ' + d);
const others = fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p) && p !== String(process.pid)
  && fs.statSync('/proc/' + p).uid === process.getuid());
if (others.length) found.push('processes ' + others);
const warm = fs.readFileSync('/proc/self/cmdline', 'latin1').includes('isol8/' + 'prestart');
globalThis.isol8_leak = 1;
Object.prototype.isol8_leak = 1;
fs.writeFileSync('/sandbox/leak.js', 'module.exports = 1');
require('/sandbox/leak.js');
process.env.ISOL8_LEAK = '1';
for (const d of ['/tmp', '/dev/shm']) fs.writeFileSync(d + '/leak', 'x');
cp.spawn('sleep', ['1000'], { detached: true, stdio: 'ignore' }).unref();
new (require('worker_threads').Worker)('setInterval(() => {}, 1000)', { eval: true }).unref();
fs.openSync('/sandbox/leak.js', 'r');
setInterval(() => {}, 1000).unref();
console.log(warm, os.hostname(), Math.random(), found.join(',') || 'clean', state);
"#;

#[isol8_testkit::test(docker)]
async fn a_thousand_node_runs_in_one_pre_started_sandbox_see_nothing_of_each_other() {
    a_thousand_runs_see_nothing_of_each_other("node", NODE_LEAK_CHECK, StartState::Same).await;
}

/// How a pre-started run's start state (the last field of a leak check) must compare with
/// a fresh process's.
enum StartState {
    /// Equal.
    Same,
    /// A `,`-separated list holding nothing the fresh one does not.
    NoMore,
}

/// Runs `check` ([`NODE_LEAK_CHECK`]'s output: pre-started, hostname, a random number,
/// what it found, its start state) once fresh, then 1,000 times in one pooled sandbox:
/// each run is pre-started, finds nothing, starts in the fresh process's state, and
/// gets its own random generator, all in one sandbox.
async fn a_thousand_runs_see_nothing_of_each_other(runtime: &str, check: &str, state: StartState) {
    let fresh = pooled(runtime, true).await;
    let r = ready_run(&fresh, code(runtime, check)).await;
    let fields: Vec<&str> = r.stdout.split_whitespace().collect();
    assert_eq!(fields.len(), 5, "{r:?}");
    assert_eq!((fields[0], fields[3]), ("false", "clean"), "{r:?}");
    let fresh_state = fields[4].to_string();
    assert_clean(&fresh).await;
    let engine = pooled(runtime, false).await;
    let mut hosts = HashSet::new();
    let mut randoms = HashSet::new();
    for i in 0..1000 {
        let r = ready_run(&engine, code(runtime, check)).await;
        assert_eq!(r.exit_code, 0, "run {i}: {r:?}");
        let fields: Vec<&str> = r.stdout.split_whitespace().collect();
        assert_eq!(fields.len(), 5, "run {i}: {r:?}");
        assert_eq!(fields[0], "true", "run {i} did not run pre-started: {r:?}");
        assert_eq!(fields[3], "clean", "run {i} saw an earlier run: {r:?}");
        match state {
            StartState::Same => assert_eq!(
                fields[4], fresh_state,
                "run {i} started unlike a fresh process: {r:?}"
            ),
            StartState::NoMore => {
                let fresh: HashSet<&str> = fresh_state.split(',').collect();
                assert!(
                    fields[4].split(',').all(|d| fresh.contains(d)),
                    "run {i} holds more than a fresh process ({fresh_state}): {r:?}"
                );
            }
        }
        hosts.insert(fields[1].to_string());
        randoms.insert(fields[2].to_string());
    }
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    assert_eq!(randoms.len(), 1000);
    assert_clean(&engine).await;
}

/// JavaScript programs whose stdout, stderr and exit code must not depend on how Node.js
/// or Bun started (see [`NODE_PROGRAMS`], [`BUN_PROGRAMS`]): errors and their stack
/// traces, exits, signals, the event loop, TypeScript, imports, the environment of
/// libraries and children, stdio, ids and limits.
const JS_PROGRAMS: &[Program] = &[
    p("console.log('hello')"),
    p("throw new Error('thrown')"),
    p("function f() { throw new TypeError('deep') }\nfunction g() { f() }\ng()"),
    p("console.log('before'); undefined_name"),
    p("foo("),
    p("null.x"),
    p("throw 42"),
    p("Promise.reject(new Error('unhandled'))"),
    p("setTimeout(() => { throw new RangeError('later') }, 10)"),
    p("async function f() { await null; throw new Error('async') }\nf()"),
    p("process.exit(3)"),
    p("process.exitCode = 4"),
    p("process.kill(process.pid, 'SIGTERM')"),
    p("process.on('exit', (c) => console.log('exiting', c)); process.on('beforeExit', () => console.log('before exit')); console.log('main')"),
    // (A 0 ms timer and an immediate set in the main module run in an order that depends
    // on whether 1 ms has passed when the event loop starts, which Node.js documents as
    // non-deterministic; a pre-started process's faster first write flipped it. The
    // busy wait makes the timer due.)
    p("setTimeout(() => console.log('timeout'), 0); setImmediate(() => console.log('immediate')); process.nextTick(() => console.log('tick')); Promise.resolve().then(() => console.log('micro')); console.log('sync'); const until = Date.now() + 5; while (Date.now() < until);"),
    p("require('fs').stat('/', () => { setTimeout(() => console.log('timeout'), 0); setImmediate(() => console.log('immediate')) })"),
    p("const x: number = 5; console.log(x)"),
    p("import('fs').then((m) => console.log(typeof m.readFileSync))"),
    p("console.log(typeof crypto, typeof fetch, typeof require('crypto').randomUUID)"),
    Program {
        code: "console.log(require('child_process').execSync('echo $CHILD').toString())",
        stdin: None,
        env: &[("CHILD", "inherited")],
    },
    Program {
        // A library that reads the environment when it is first used.
        code: "console.log(require('os').tmpdir())",
        stdin: None,
        env: &[("TMPDIR", "/dev/shm")],
    },
    p("let d = ''; process.stdin.on('data', (c) => d += c).on('end', () => console.log(JSON.stringify(d)))"),
    p("console.log(process.cwd(), require('os').homedir())"),
    p("console.log(require('fs').readFileSync('/proc/self/limits', 'utf8'))"),
    p("console.log(process.getuid(), process.geteuid(), process.getgid(), process.getgroups(), process.umask().toString(8))"),
    p("console.log('é ü 日本 🙂')"),
    p("process.stdout.write('no newline')"),
    p("console.error('to stderr'); console.log('to stdout')"),
    p("for (let i = 0; i < 3; i++) { console.log(i); console.error(-i) }"),
];

/// Node programs whose stdout, stderr and exit code must not depend on how the
/// interpreter started (see [`PROGRAMS`]), beyond [`JS_PROGRAMS`]; stack traces include
/// Node.js's own frames.
const NODE_PROGRAMS: &[Program] = &[
    p("console.log(process.argv, process.argv0, process.title, process.execArgv)"),
    p("console.log(__filename, typeof __dirname, typeof module, typeof exports, require.main, module.id, module.paths)"),
    p("console.log(Object.getOwnPropertyNames(globalThis).join())"),
    p("console.log(Object.keys(process).join())"),
    p("console.log(Object.getOwnPropertyDescriptor(process, '_eval'), process._preload_modules)"),
    p("console.log(Object.keys(require.cache), require('module')._pathCache, require('module').builtinModules.length)"),
    // (Which modules are loaded, once stdout is in use: the loader loads stdout's ahead,
    // see `pre_started_node_has_loaded_only_what_its_stdout_needs`.)
    p("process.stdout; const l = process.moduleLoadList.slice().sort();
console.log(l.length, require('crypto').createHash('sha256').update(l.join()).digest('hex'))"),
    p("try { require('internal/options') } catch (e) { console.log(e.code) }"),
    p("console.log(new Error('e').stack, Error.stackTraceLimit, typeof Error.prepareStackTrace)"),
    p("process.abort()"),
    p("import { readFileSync } from 'fs'; console.log(typeof readFileSync)"),
    p("console.log(Object.keys(process.env).sort(), process.env.NODE_PATH)"),
    Program {
        code: "console.log(process.env.GREETING, process.env.NODE_OPTIONS)",
        stdin: None,
        env: &[("GREETING", "hi")],
    },
    Program {
        // Fed stdin: this one starts fresh in both engines.
        code: "let d = ''; process.stdin.on('data', (c) => d += c).on('end', () => console.log(JSON.stringify(d)))",
        stdin: Some("line one\nline two\n"),
        env: &[],
    },
    p("console.log(process.stdin.constructor.name, process.stdout.constructor.name, process.stdout.isTTY, require('fs').fstatSync(0).isCharacterDevice())"),
    p("console.log(require('fs').readdirSync('/proc/self/fd'), require('fs').openSync('/etc/hostname', 'r'))"),
    p("console.log(process._getActiveHandles().length, process._getActiveRequests().length, process.getActiveResourcesInfo())"),
    p("console.log(require('fs').readFileSync('/proc/self/status', 'utf8').split('\\n').filter((l) => /^(Sig(Blk|Ign|Cgt)|Threads|NoNewPrivs|Seccomp|Cap(Inh|Prm|Eff|Bnd|Amb))/.test(l)))"),
    p("console.log(require('fs').readFileSync('/proc/self/oom_score_adj', 'utf8'))"),
    p("const s = require('fs').readFileSync('/proc/self/stat', 'utf8').split(') ')[1].split(' '); console.log(s[2] === String(process.pid), s[3] === String(process.pid))"),
    p("console.log(Intl.DateTimeFormat().resolvedOptions().timeZone, Intl.DateTimeFormat().resolvedOptions().locale, new Date(0).toString())"),
    p("process.removeAllListeners('warning'); process.on('warning', (w) => console.log(w.name, w.message)); process.emitWarning('careful')"),
    p("console.log(require('worker_threads').isMainThread, require('worker_threads').threadId)"),
    // (The error is handled: an unhandled one races the worker's exit event against the
    // main thread's crash.)
    p("const { Worker } = require('worker_threads'); new Worker(\"console.log(process.argv, process._preload_modules, Object.keys(require.cache)); throw new TypeError('in worker')\", { eval: true }).on('error', (e) => console.log(e.stack)).on('exit', (c) => console.log('worker exit', c))"),
    p("console.log(require('inspector').url(), process.debugPort, process.features.inspector)"),
    p("const v8 = require('v8'); console.log(v8.getHeapStatistics().number_of_native_contexts, v8.getHeapStatistics().number_of_detached_contexts)"),
    p("console.log(Object.keys(console).join(), Object.getOwnPropertySymbols(globalThis).map(String))"),
    p("console.log(process.listenerCount('SIGINT'), process.listenerCount('exit'), process.eventNames())"),
    // The loader's quick way out (prestart.js) must change nothing a program can see of
    // how it ends: the `emit` it finds, an `exit` emitted by hand, `emit` or `reallyExit`
    // replaced (as signal-exit does), in sloppy and strict code, work queued by `exit`
    // listeners, `beforeExit` adding work, and an explicit `exitCode` of 0.
    p("console.log(process.emit === require('events').prototype.emit, Object.keys(Object.getPrototypeOf(process)), 'emit' in process)"),
    p("process.emit('exit', 0); console.log('after an exit emitted by hand')"),
    p("const o = process.emit; process.emit = function (ev, ...a) { const r = o.call(this, ev, ...a); if (ev === 'exit') console.log('patched emit after exit', a); return r }; console.log('main', Object.hasOwn(process, 'emit'))"),
    p("'use strict'; const o = process.emit; process.emit = function (ev, ...a) { const r = o.call(this, ev, ...a); if (ev === 'exit') console.log('strict patched emit after exit', a); return r }; console.log('main')"),
    p("const E = require('events'); const o = E.prototype.emit; E.prototype.emit = function (ev, ...a) { if (ev === 'exit') console.log('patched prototype emit sees exit', a); return o.call(this, ev, ...a) }; console.log('main')"),
    p("const r = process.reallyExit; process.reallyExit = (c) => { console.log('reallyExit', c); r.call(process, c) }; console.log('natural end')"),
    p("const r = process.reallyExit; process.reallyExit = (c) => { console.log('reallyExit', c); r.call(process, c) }; process.exit()"),
    p("process.on('exit', () => Promise.resolve().then(() => console.log('microtask queued by an exit listener')))"),
    p("process.on('beforeExit', () => { if (!globalThis.again) { globalThis.again = 1; setTimeout(() => console.log('more work'), 1) } }); process.exitCode = 0"),
    p("Object.preventExtensions(process); process.emit = () => {}; console.log(Object.hasOwn(process, 'emit'))"),
    // The loader runs stdout's code once on a stand-in socket (prestart.js): the program
    // must still get the asynchronous ids, hook callbacks and stream state of a fresh
    // process, its own stdout created on first use.
    p("const ah = require('async_hooks'); const r = new ah.AsyncResource('x'); process.nextTick(() => console.log('tick', ah.executionAsyncId())); setTimeout(() => console.log('timer', ah.executionAsyncId()), 0); console.log(r.asyncId(), ah.executionAsyncId(), ah.triggerAsyncId())"),
    p("const ah = require('async_hooks'); const seen = []; ah.createHook({ init(id, type) { seen.push('init ' + type + ' ' + id) }, before(id) { seen.push('before ' + id) }, after(id) { seen.push('after ' + id) } }).enable(); process.stdout.write('x\\n'); setImmediate(() => { const s = seen.slice(); process.stderr.write(s.join() + '\\n') })"),
    p("process.stdout.write('ab\\n'); console.log(process.stdout.bytesWritten, process.stdout.writableLength, process.stdout.writableNeedDrain, process.stdout._writableState.pendingcb)"),
];

#[isol8_testkit::test(docker)]
async fn node_programs_behave_alike_fresh_and_pre_started() {
    differential(
        "node",
        &[JS_PROGRAMS, NODE_PROGRAMS].concat(),
        NODE_WARM_PROBE,
        ("true\n", "false\n"),
    )
    .await;
}

/// A Node.js program that ends with a `node:sqlite` database open leaves, pre-started as
/// fresh, through Node.js's own teardown, which closes the database: in WAL mode that
/// moves the log into the database file and removes the log (the loader's quick way out,
/// like `process.exit()`, would leave `-wal` and `-shm` beside a database file without
/// the table). The files read back are the same either way.
#[isol8_testkit::test(docker)]
async fn a_sqlite_database_left_open_is_closed_at_exit_pre_started_too() {
    use base64::Engine as _;
    let program = format!(
        "{NODE_WARM_PROBE}
const {{ DatabaseSync }} = require('node:sqlite');
const db = new DatabaseSync('/sandbox/w.db');
db.exec('PRAGMA journal_mode=WAL; CREATE TABLE isol8_t(x); INSERT INTO isol8_t VALUES (42)');"
    );
    for (fresh_starts, probe_answer) in [(true, "false\n"), (false, "true\n")] {
        let engine = pooled("node", fresh_starts).await;
        let mut req = code("node", &program);
        req.output_paths = ["/sandbox/w.db", "/sandbox/w.db-wal", "/sandbox/w.db-shm"]
            .map(String::from)
            .to_vec();
        let r = ready_run(&engine, req).await;
        assert_eq!(
            (r.stdout.as_str(), r.exit_code),
            (probe_answer, 0),
            "fresh_starts {fresh_starts}: {}",
            r.stderr
        );
        let files = r.files.unwrap_or_default();
        assert_eq!(
            files.keys().map(String::as_str).collect::<Vec<_>>(),
            ["/sandbox/w.db"],
            "fresh_starts {fresh_starts}: the files read back"
        );
        let db = base64::engine::general_purpose::STANDARD
            .decode(&files["/sandbox/w.db"])
            .expect("base64");
        assert!(
            db.windows(b"CREATE TABLE isol8_t".len())
                .any(|w| w == b"CREATE TABLE isol8_t"),
            "fresh_starts {fresh_starts}: the table is not in the database file"
        );
        assert_clean(&engine).await;
    }
}

/// The internal modules Node.js has loaded (`process.moduleLoadList`) when the program
/// starts, and once it has written to stdout (what [`NODE_WARM_PROBE`] prints): a JSON
/// array of the two, after the probe's line.
fn node_modules_loaded() -> String {
    format!(
        "const start = process.moduleLoadList.slice();
{NODE_WARM_PROBE}
process.stdout.write(JSON.stringify([start, process.moduleLoadList]));"
    )
}

/// The loader loads ahead what Node.js loads on a program's first use of `process.stdout`
/// (docs/SECURITY.md): a pre-started program starts with exactly the modules a fresh
/// `node -e` has plus those `require('net')` adds to it, and once both have written to
/// stdout they have loaded the same.
#[isol8_testkit::test(docker)]
async fn pre_started_node_has_loaded_only_what_its_stdout_needs() {
    type Lists = (BTreeSet<String>, BTreeSet<String>);
    async fn loaded(engine: &DockerEngine, probe_answer: &str) -> Lists {
        let r = ready_run(engine, code("node", &node_modules_loaded())).await;
        let json = r
            .stdout
            .strip_prefix(probe_answer)
            .unwrap_or_else(|| panic!("{r:?}"));
        let (start, written): (Vec<String>, Vec<String>) =
            serde_json::from_str(json.trim_start()).unwrap_or_else(|e| panic!("{e}: {r:?}"));
        (start.into_iter().collect(), written.into_iter().collect())
    }
    // (The lists are about 9 KB.)
    let pooled_wide = |fresh_starts| {
        let mut config = pool_config(PoolStrategy::Fast, fresh_starts);
        config.options.max_output_size = Some(1 << 16);
        pooled_from("node", config)
    };
    let fresh = pooled_wide(true).await;
    let (fresh_start, fresh_written) = loaded(&fresh, "false\n").await;
    let r = ready_run(
        &fresh,
        code(
            "node",
            "const before = new Set(process.moduleLoadList); require('net');
console.log(JSON.stringify(process.moduleLoadList.filter((m) => !before.has(m))))",
        ),
    )
    .await;
    let by_net: BTreeSet<String> = serde_json::from_str(r.stdout.trim()).expect("json");
    assert!(by_net.contains("NativeModule net"), "{by_net:?}");
    assert!(
        by_net.is_disjoint(&fresh_start),
        "{:?}",
        by_net.intersection(&fresh_start).collect::<Vec<_>>()
    );
    let warm = pooled_wide(false).await;
    let (warm_start, warm_written) = loaded(&warm, "true\n").await;
    let ahead: BTreeSet<String> = warm_start.difference(&fresh_start).cloned().collect();
    assert!(
        fresh_start.is_subset(&warm_start),
        "{fresh_start:?}\n{warm_start:?}"
    );
    assert_eq!(ahead, by_net);
    assert_eq!(warm_written, fresh_written);
    assert_clean(&warm).await;
    assert_clean(&fresh).await;
}

#[isol8_testkit::test(docker)]
async fn node_limits_hold_pre_started_and_what_it_cannot_serve_starts_fresh() {
    for strategy in [PoolStrategy::Fast, PoolStrategy::Secure] {
        let engine = pooled_with("node", strategy, false).await;
        let probe = (NODE_WARM_PROBE, "true\n");
        timeout_and_cap_hold(&engine, "node", probe, JS_SPIN, JS_PRINT).await;
        // The loader the next waiting process reads cannot be changed from inside.
        let r = ready_run(
            &engine,
            code(
                "node",
                &format!(
                    "{NODE_WARM_PROBE}\ntry {{ require('fs').appendFileSync('{}', 'process.exit(9)'); console.log('written') }} catch (e) {{ console.log(e.code) }}",
                    isol8::runtime::NODE_LOADER.path
                ),
            ),
        )
        .await;
        // (Root's file, mode 0644: refused before the read-only root is even consulted.)
        assert!(
            ["true\nEACCES\n", "true\nEROFS\n"].contains(&r.stdout.as_str()),
            "{strategy:?}: {r:?}"
        );
        // Stdin, or a start-up variable of its own: a fresh node, which sees them.
        let mut req = probed(
            "node",
            NODE_WARM_PROBE,
            "process.stdin.on('data', (d) => process.stdout.write(d))",
        );
        req.stdin = Some("fed\n".into());
        let r = ready_run(&engine, req).await;
        assert_eq!(r.stdout, "false\nfed\n", "{strategy:?}: {r:?}");
        let mut req = probed(
            "node",
            NODE_WARM_PROBE,
            "console.log(process.execArgv.length, process.noDeprecation)",
        );
        req.env
            .insert("NODE_OPTIONS".into(), "--no-deprecation".into());
        let r = ready_run(&engine, req).await;
        assert_eq!(r.stdout, "false\n2 true\n", "{strategy:?}: {r:?}");
        // …and the sandbox's next run is pre-started again.
        let r = ready_run(&engine, code("node", NODE_WARM_PROBE)).await;
        assert_eq!(r.stdout, "true\n", "{strategy:?}: {r:?}");
        assert_clean(&engine).await;
    }
}

/// On the `filtered` network the engine gives Node.js start-up variables of its own
/// (`NODE_USE_ENV_PROXY`, `NODE_OPTIONS`): a filtered pool pre-starts node with them, so
/// its runs are pre-started and find what a fresh node would.
#[isol8_testkit::test(docker)]
async fn node_on_the_filtered_network_runs_pre_started_with_the_proxy_variables() {
    let engine = engine_with(EngineConfig {
        options: EngineOptions {
            network: Some(NetworkMode::Filtered),
            pool_strategy: Some(PoolStrategy::Fast),
            pool_size: Some(PoolSize::Split { clean: 1, dirty: 1 }),
            timeout_ms: Some(5_000),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let print = "console.log(process.env.HTTP_PROXY, process.env.NODE_USE_ENV_PROXY, process.env.NODE_OPTIONS)";
    let r = ready_run(&engine, probed("node", NODE_WARM_PROBE, print)).await;
    assert_eq!(
        r.stdout, "true\nhttp://127.0.0.1:3128 1 --disable-warning=UNDICI-EHPA\n",
        "{r:?}"
    );
    // A request's own start-up options still start fresh.
    let mut req = probed("node", NODE_WARM_PROBE, print);
    req.env
        .insert("NODE_OPTIONS".into(), "--no-deprecation".into());
    let r = ready_run(&engine, req).await;
    assert_eq!(
        r.stdout, "false\nhttp://127.0.0.1:3128 1 --no-deprecation\n",
        "{r:?}"
    );
    assert_clean(&engine).await;
}

/// Whether a Deno program ran pre-started (in `deno-all`, see [`registry`]).
const DENO_WARM_PROBE: &str =
    "console.log(Deno.readTextFileSync('/proc/self/cmdline').includes('isol8/' + 'prestart'))";

/// Deno's counterpart of [`LEAK_CHECK`]: globals, a polluted `Object.prototype`, the
/// environment, files (besides its own `main.mts` and Deno's cache directory), processes,
/// an open file and a timer of the run before; then it leaves them behind, with a process
/// in its own session. Prints whether it ran pre-started, the hostname, a
/// `Math.random()`, what it found, and its open descriptors at the start, which must be
/// among a fresh process's. (Not its thread count: Deno's own helper threads, each with
/// descriptors of its own, can be fewer in a process that waited — seen in CI as 4
/// threads against a fresh process's 5, and descriptors 0–17 against 0–20;
/// docs/SECURITY.md lists it.)
const DENO_LEAK_CHECK: &str = r#"
const names = (d: string) => [...Deno.readDirSync(d)].map((e) => e.name).sort();
// What the descriptors lead to. Into the writable directories (DENO_DIR, Deno's own
// caches, aside): nothing, or a previous run's file is held. Other files (the read-only
// root, /proc, /sys) are opened by Deno's own threads on their own schedule and left out;
// the rest by kind (inode numbers dropped; stdin, an empty pipe when pre-started, left
// out: SECURITY.md).
const denoDir = Deno.env.get('DENO_DIR') ?? '/tmp/deno';
const kinds = new Set<string>();
const held: string[] = [];
for (const fd of names('/proc/self/fd').filter((n) => n !== '0')) {
  let target: string;
  try { target = Deno.readLinkSync('/proc/self/fd/' + fd); } catch { continue; }
  if (target.startsWith(denoDir)) continue;
  if (/^\/(sandbox|tmp|dev\/shm)(\/|$)/.test(target)) held.push(target);
  else if (!target.startsWith('/')) kinds.add(target.replace(/\[\d+\]$/, ''));
}
const state = [...kinds].sort().join(',');
const found: string[] = [];
if (held.length) found.push('descriptors ' + held);
if ((globalThis as any).isol8_leak !== undefined) found.push('globals');
if (({} as any).isol8_leak !== undefined) found.push('Object.prototype');
if (Deno.env.get('ISOL8_LEAK') !== undefined) found.push('environ');
const extra = [...names('/sandbox').filter((n) => n !== 'main.mts'), ...names('/tmp').filter((n) => n !== 'deno'), ...names('/dev/shm')];
if (extra.length) found.push('files ' + extra);
const me = Deno.statSync('/proc/self').uid;
const others = names('/proc').filter((p) => /^\d+$/.test(p) && p !== String(Deno.pid) && Deno.statSync('/proc/' + p).uid === me);
if (others.length) found.push('processes ' + others);
const warm = Deno.readTextFileSync('/proc/self/cmdline').includes('isol8/' + 'prestart');
const host = Deno.readTextFileSync('/proc/sys/kernel/hostname').trim();
(globalThis as any).isol8_leak = 1;
(Object.prototype as any).isol8_leak = 1;
Deno.env.set('ISOL8_LEAK', '1');
for (const d of ['/sandbox', '/tmp', '/dev/shm']) Deno.writeTextFileSync(d + '/leak', 'x');
const kept = Deno.openSync('/sandbox/leak');
new Deno.Command('setsid', { args: ['sleep', '1000'], stdout: 'null', stderr: 'null' }).spawn().unref();
Deno.unrefTimer(setInterval(() => {}, 1000));
console.log(warm, host, Math.random(), found.join(',') || 'clean', state);
"#;

#[isol8_testkit::test(docker)]
async fn a_thousand_deno_runs_in_one_pre_started_sandbox_see_nothing_of_each_other() {
    // Deno's own threads open descriptors on their own schedule (its cache databases,
    // `/sys/devices/system/cpu/online`…): the check finds no descriptor into the writable
    // directories and compares the kinds of the others (pipes, sockets, event
    // descriptors) with a fresh process's: a process that waited may hold fewer, never
    // another.
    a_thousand_runs_see_nothing_of_each_other("deno-all", DENO_LEAK_CHECK, StartState::NoMore)
        .await;
}

/// Deno programs whose stdout, stderr and exit code must not depend on how the
/// interpreter started (see [`PROGRAMS`]).
const DENO_PROGRAMS: &[Program] = &[
    p("console.log('hello')"),
    p("console.log(Deno.args, Deno.mainModule, import.meta.main, import.meta.url, import.meta.filename)"),
    p("console.log(Object.getOwnPropertyNames(globalThis).sort().join())"),
    p("console.log(Object.keys(Deno).sort().join())"),
    p("throw new Error('thrown')"),
    p("function f(): never { throw new TypeError('deep') }\nfunction g() { f() }\ng()"),
    p("console.log('before'); undefined_name"),
    p("foo("),
    p("null.x"),
    p("throw 42"),
    p("Promise.reject(new Error('unhandled'))"),
    p("setTimeout(() => { throw new RangeError('later') }, 10)"),
    p("async function f() { await null; throw new Error('async') }\nf()"),
    p("console.log(new Error('e').stack, Error.stackTraceLimit)"),
    p("Deno.exit(3)"),
    p("Deno.kill(Deno.pid, 'SIGTERM')"),
    p("globalThis.addEventListener('unload', () => console.log('unload')); console.log('main')"),
    p("globalThis.addEventListener('beforeunload', () => console.log('beforeunload')); console.log('main')"),
    p("globalThis.addEventListener('unhandledrejection', (e) => { e.preventDefault(); console.log('handled', e.reason.message) }); Promise.reject(new Error('r'))"),
    p("setTimeout(() => console.log('timeout'), 0); queueMicrotask(() => console.log('micro')); Promise.resolve().then(() => console.log('then')); console.log('sync')"),
    p("const x: number = 5; interface I { a: string }; const i: I = { a: 'b' }; console.log(x, i)"),
    p("enum E { A, B }; console.log(E.B, E[0])"),
    p("import { readFileSync } from 'node:fs'; console.log(typeof readFileSync)"),
    p("import process from 'node:process'; console.log(process.argv.length, process.argv.slice(1), process.execArgv, process.exitCode)"),
    p("const m = await import('node:path'); console.log(m.join('a', 'b'))"),
    p("Deno.writeTextFileSync('/sandbox/mod.ts', 'export const v: number = 7'); const m = await import('/sandbox/mod.ts'); console.log(m.v)"),
    p("console.log(Object.keys(Deno.env.toObject()).sort())"),
    Program {
        code: "console.log(Deno.env.get('GREETING'), Deno.env.get('DENO_DIR'))",
        stdin: None,
        env: &[("GREETING", "hi")],
    },
    Program {
        code: "import { tmpdir } from 'node:os'; console.log(tmpdir())",
        stdin: None,
        env: &[("TMPDIR", "/sandbox")],
    },
    Program {
        code: "console.log(new TextDecoder().decode(new Deno.Command('sh', { args: ['-c', 'echo $CHILD'] }).outputSync().stdout))",
        stdin: None,
        env: &[("CHILD", "inherited")],
    },
    Program {
        // Fed stdin: this one starts fresh in both engines.
        code: "console.log(JSON.stringify(await new Response(Deno.stdin.readable).text()))",
        stdin: Some("line one\nline two\n"),
        env: &[],
    },
    p("console.log(JSON.stringify(await new Response(Deno.stdin.readable).text()))"),
    p("console.log(Deno.cwd())"),
    p("console.log(Deno.stdin.isTerminal(), Deno.stdout.isTerminal(), Deno.stderr.isTerminal())"),
    p("console.log((await Deno.permissions.query({ name: 'read', path: '/usr/local/lib/isol8' })).state, (await Deno.permissions.query({ name: 'run' })).state)"),
    // (Not its descriptors or thread count: see DENO_LEAK_CHECK.)
    p("console.log(Deno.execPath(), Deno.ppid)"),
    p("console.log(Deno.readTextFileSync('/proc/self/status').split('\\n').filter((l) => /^(Sig(Blk|Ign|Cgt)|NoNewPrivs|Seccomp|Cap(Inh|Prm|Eff|Bnd|Amb))/.test(l)))"),
    p("console.log(Deno.readTextFileSync('/proc/self/limits'))"),
    p("console.log(Deno.readTextFileSync('/proc/self/oom_score_adj'))"),
    p("const s = Deno.readTextFileSync('/proc/self/stat').split(') ')[1].split(' '); console.log(s[2] === String(Deno.pid), s[3] === String(Deno.pid))"),
    p("console.log(Deno.uid(), Deno.gid(), Deno.hostname().length > 0)"),
    p("console.log(Intl.DateTimeFormat().resolvedOptions().timeZone, Intl.DateTimeFormat().resolvedOptions().locale, new Date(0).toString())"),
    p("console.log('é ü 日本 🙂')"),
    p("Deno.stdout.writeSync(new TextEncoder().encode('no newline'))"),
    p("console.error('to stderr'); console.log('to stdout')"),
    p("for (let i = 0; i < 3; i++) { console.log(i); console.error(-i) }"),
    p("console.log(navigator.userAgent, navigator.hardwareConcurrency > 0, Deno.build.os, typeof Deno.version.deno)"),
    p("const w = new Worker('data:text/javascript,postMessage([Deno.args.length, Deno.env.get(\"DENO_DIR\")])', { type: 'module' }); w.onmessage = (e) => { console.log('worker says', e.data); w.terminate() }"),
    p("console.log(typeof crypto.randomUUID(), structuredClone({ a: [1] }), new TextEncoder().encode('x'))"),
    p("console.log(Object.keys(Deno.memoryUsage()).sort())"),
    p("label: { console.log('in'); break label }; console.log(eval('1 + 1'), new Function('return 3')())"),
    p("const { instance } = await WebAssembly.instantiate(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0])); console.log(Object.keys(instance.exports))"),
];

#[isol8_testkit::test(docker)]
async fn deno_programs_behave_alike_fresh_and_pre_started() {
    differential(
        "deno-all",
        DENO_PROGRAMS,
        DENO_WARM_PROBE,
        ("true\n", "false\n"),
    )
    .await;
}

#[isol8_testkit::test(docker)]
async fn deno_limits_hold_pre_started_and_what_it_cannot_serve_starts_fresh() {
    for strategy in [PoolStrategy::Fast, PoolStrategy::Secure] {
        let engine = pooled_with("deno-all", strategy, false).await;
        let probe = (DENO_WARM_PROBE, "true\n");
        timeout_and_cap_hold(&engine, "deno-all", probe, JS_SPIN, JS_PRINT).await;
        // The loader the next waiting process reads cannot be changed from inside (even
        // with every permission: root's file).
        let r = ready_run(
            &engine,
            code(
                "deno-all",
                &format!(
                    "{DENO_WARM_PROBE}\ntry {{ Deno.writeTextFileSync('{}', 'Deno.exit(9)', {{ append: true }}); console.log('written') }} catch (e) {{ console.log(e.name) }}",
                    isol8::runtime::DENO_LOADER.path
                ),
            ),
        )
        .await;
        assert_eq!(r.stdout, "true\nPermissionDenied\n", "{strategy:?}: {r:?}");
        // Stdin, another file extension, or a start-up variable of its own: a fresh
        // deno, which sees them.
        let mut req = probed(
            "deno-all",
            DENO_WARM_PROBE,
            "console.log(await new Response(Deno.stdin.readable).text())",
        );
        req.stdin = Some("fed".into());
        let r = ready_run(&engine, req).await;
        assert_eq!(r.stdout, "false\nfed\n", "{strategy:?}: {r:?}");
        let mut req = code("deno-all", DENO_WARM_PROBE);
        req.file_extension = Some(".ts".into());
        let r = ready_run(&engine, req).await;
        assert_eq!(r.stdout, "false\n", "{strategy:?}: {r:?}");
        let mut req = probed(
            "deno-all",
            DENO_WARM_PROBE,
            "console.log(Deno.env.get('DENO_DIR'))",
        );
        req.env.insert("DENO_DIR".into(), "/sandbox/.deno".into());
        let r = ready_run(&engine, req).await;
        assert_eq!(r.stdout, "false\n/sandbox/.deno\n", "{strategy:?}: {r:?}");
        // …and the sandbox's next run is pre-started again.
        let r = ready_run(&engine, code("deno-all", DENO_WARM_PROBE)).await;
        assert_eq!(r.stdout, "true\n", "{strategy:?}: {r:?}");
        assert_clean(&engine).await;
    }
}

/// The built-in `deno` (its own narrow permissions: no `/proc`) runs pre-started too. Its
/// programs cannot read their command line; what tells them apart is the one documented
/// difference, stdin an empty pipe instead of `/dev/null`.
#[isol8_testkit::test(docker)]
async fn the_built_in_deno_runs_pre_started_with_its_own_permissions() {
    let probe = "import { fstatSync } from 'node:fs'; const s = fstatSync(0); console.log(s.isFIFO(), s.isCharacterDevice())";
    let warm = pooled("deno", false).await;
    let r = ready_run(&warm, code("deno", probe)).await;
    assert_eq!(r.stdout, "true false\n", "{r:?}");
    let r = ready_run(
        &warm,
        code("deno", "console.log(Deno.args); throw new Error('boom')"),
    )
    .await;
    assert_eq!((r.stdout.as_str(), r.exit_code), ("[]\n", 1), "{r:?}");
    assert!(
        r.stderr.contains("Uncaught (in promise) Error: boom"),
        "{r:?}"
    );
    assert!(r.stderr.contains("at file:///sandbox/main.mts:1:"), "{r:?}");
    assert_clean(&warm).await;
    let fresh = pooled("deno", true).await;
    let r = ready_run(&fresh, code("deno", probe)).await;
    assert_eq!(r.stdout, "false true\n", "{r:?}");
    assert_clean(&fresh).await;
}

/// The teardown library (`isol8::runtime::TEARDOWN`, docs/PERFORMANCE.md) is in every
/// pre-started interpreter's memory and in no fresh one's, and neither the program nor
/// its children find the `LD_PRELOAD` that loaded it. The fresh run is an execution the
/// waiting interpreter cannot serve: it sets a variable the interpreter reads at start.
#[isol8_testkit::test(docker)]
async fn pre_started_interpreters_carry_the_teardown_library_and_hide_how() {
    let cases = [
        (
            "python",
            "import os, subprocess\n\
             print('libisol8-teardown' in open('/proc/self/maps').read(), \
             os.environ.get('LD_PRELOAD'), \
             subprocess.run(['sh', '-c', 'echo ${LD_PRELOAD-unset}'], \
             capture_output=True, text=True).stdout.strip())",
            ("PYTHONHASHSEED", "0"),
            ("True None unset\n", "False None unset\n"),
        ),
        (
            "node",
            "const maps = require('fs').readFileSync('/proc/self/maps', 'utf8');\n\
             const child = require('child_process').execSync('echo ${LD_PRELOAD-unset}');\n\
             console.log(maps.includes('libisol8-teardown'), process.env.LD_PRELOAD, \
             child.toString().trim())",
            ("NODE_PATH", "/nowhere"),
            ("true undefined unset\n", "false undefined unset\n"),
        ),
        (
            "deno-all",
            "const maps = Deno.readTextFileSync('/proc/self/maps');\n\
             const child = new Deno.Command('sh', { args: ['-c', 'echo ${LD_PRELOAD-unset}'] })\
             .outputSync();\n\
             console.log(maps.includes('libisol8-teardown'), Deno.env.get('LD_PRELOAD'), \
             new TextDecoder().decode(child.stdout).trim())",
            ("RUST_BACKTRACE", "0"),
            ("true undefined unset\n", "false undefined unset\n"),
        ),
    ];
    for (runtime, program, (name, value), (warm, fresh)) in cases {
        let engine = pooled(runtime, false).await;
        let r = ready_run(&engine, code(runtime, program)).await;
        assert_eq!(
            (r.stdout.as_str(), r.exit_code),
            (warm, 0),
            "{runtime}: {r:?}"
        );
        let mut req = code(runtime, program);
        req.env = BTreeMap::from([(name.to_string(), value.to_string())]);
        let r = ready_run(&engine, req).await;
        assert_eq!(
            (r.stdout.as_str(), r.exit_code),
            (fresh, 0),
            "{runtime}: {r:?}"
        );
        assert_clean(&engine).await;
    }
}

/// Whether a Bun program runs with the teardown library loaded (split so that the source
/// of the probe, which Bun keeps in memory, cannot match).
const BUN_LIBRARY_PROBE: &str =
    "console.log(require('fs').readFileSync('/proc/self/maps', 'utf8').includes('libisol8-' + 'teardown'))";

/// Bun starts fresh for every program and loads the teardown library
/// (`Runtime::code_preload`); an engine with `fresh_starts` loads nothing. Neither the
/// program nor its children find the `LD_PRELOAD` that loaded it.
#[isol8_testkit::test(docker)]
async fn bun_loads_the_teardown_library_and_hides_how() {
    let program = "const maps = require('fs').readFileSync('/proc/self/maps', 'utf8');\n\
         const child = require('child_process').execSync('echo ${LD_PRELOAD-unset}');\n\
         console.log(maps.includes('libisol8-' + 'teardown'), process.env.LD_PRELOAD, \
         Bun.env.LD_PRELOAD, child.toString().trim())";
    for (fresh_starts, expected) in [
        (false, "true undefined undefined unset\n"),
        (true, "false undefined undefined unset\n"),
    ] {
        let engine = pooled("bun", fresh_starts).await;
        let r = ready_run(&engine, code("bun", program)).await;
        assert_eq!(
            (r.stdout.as_str(), r.exit_code),
            (expected, 0),
            "fresh_starts {fresh_starts}: {r:?}"
        );
        // A `cmd` is a shell command line, not Bun's code: nothing is preloaded into its
        // bash (which looks at its own map: `exit` last, so that it does not exec grep).
        let mut req = code("bun", "");
        req.code = None;
        req.cmd = Some("grep -c libisol8-teardown /proc/$$/maps; exit".into());
        let r = ready_run(&engine, req).await;
        assert_eq!((r.stdout.as_str(), r.exit_code), ("0\n", 1), "{r:?}");
        assert_clean(&engine).await;
    }
}

/// Bun programs whose stdout, stderr and exit code must not depend on whether the
/// teardown library is loaded, beyond [`JS_PROGRAMS`]: exits of every kind (the library
/// acts at `exit` and `quick_exit`), output flushed at exit, exceptions, signals, the
/// environment of the program and of its children, stdio, identity and limits.
const BUN_PROGRAMS: &[Program] = &[
    p("console.log(process.argv.slice(1), process.execArgv, Bun.argv.length)"),
    p("console.log(typeof Bun, Bun.version, typeof Bun.main)"),
    p("console.log('x'); process.exit(256 + 7)"),
    p("process.kill(process.pid, 'SIGKILL')"),
    p("process.on('SIGINT', () => { console.log('got SIGINT'); process.exit(5) }); process.kill(process.pid, 'SIGINT'); setTimeout(() => {}, 1000)"),
    p("process.on('exit', () => { throw new Error('in exit handler') }); console.log('main')"),
    p("queueMicrotask(() => { console.log('micro'); process.exit(0) }); console.log('sync')"),
    p("await Bun.sleep(5); console.log('slept')"),
    p("console.log(Object.keys(process.env).sort(), Object.keys(Bun.env).length === Object.keys(process.env).length)"),
    Program {
        code: "console.log(process.env.GREETING, Bun.env.GREETING)",
        stdin: None,
        env: &[("GREETING", "hi")],
    },
    p("console.log(Bun.spawnSync(['sh', '-c', 'env | sort']).stdout.toString())"),
    Program {
        code: "let d = ''; process.stdin.on('data', (c) => d += c).on('end', () => console.log(JSON.stringify(d)))",
        stdin: Some("line one\nline two\n"),
        env: &[],
    },
    p("console.log(process.stdout.isTTY, require('fs').fstatSync(0).isCharacterDevice(), require('fs').fstatSync(1).isFIFO())"),
    p("console.log(require('fs').readdirSync('/proc/self/fd'))"),
    p("console.log(require('fs').readFileSync('/proc/self/status', 'utf8').split('\\n').filter((l) => /^(Sig(Blk|Ign|Cgt)|NoNewPrivs|Seccomp|Cap(Inh|Prm|Eff|Bnd|Amb))/.test(l)))"),
    p("console.log(Intl.DateTimeFormat().resolvedOptions().timeZone, new Date(0).toString())"),
    // Output pending at exit. (Within a pipe's 64 KiB: what Bun writes to a full pipe at
    // exit it may drop, with or without the library, depending on how fast the reader is.)
    p("console.log('x'.repeat(200000).length); process.stdout.write('y'.repeat(60000)); process.exit(2)"),
    p("process.on('exit', () => process.stdout.write('z'.repeat(60000) + '\\n')); console.log('main')"),
    p("await Bun.write('/tmp/out.txt', 'written'); console.log(await Bun.file('/tmp/out.txt').text())"),
    p("console.log(require('worker_threads').isMainThread)"),
    p("process.reallyExit(6)"),
];

#[isol8_testkit::test(docker)]
async fn bun_programs_behave_alike_with_and_without_the_teardown_library() {
    differential(
        "bun",
        &[JS_PROGRAMS, BUN_PROGRAMS].concat(),
        BUN_LIBRARY_PROBE,
        ("true\n", "false\n"),
    )
    .await;
}

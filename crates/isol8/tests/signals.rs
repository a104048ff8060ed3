//! Signals as user code finds them, in every runtime against a real Docker daemon: every
//! disposition the default and nothing blocked, as under a normal shell or `docker run`
//! (the agent, PID 1, used to pass on signal 32 ignored), also in setup scripts and in
//! the programs a language starts; and `yes | head -1` ends `yes` with SIGPIPE (141).

use isol8::{EngineOptions, ExecutionRequest};
use isol8_testkit::{assert_clean, code, engine, run};

/// Bit of signal `sig` in a `/proc/<pid>/status` signal mask.
fn bit(sig: u32) -> u64 {
    1 << (sig - 1)
}

/// The hexadecimal `field` (`SigIgn:`, `SigBlk:`) of the first block of `/proc/*/status`
/// lines in `text` that follows `label` (each program prints `label` then its lines).
fn mask(text: &str, label: &str, field: &str) -> u64 {
    let value = text
        .split(label)
        .nth(1)
        .and_then(|rest| rest.lines().find_map(|l| l.strip_prefix(field)))
        .unwrap_or_else(|| panic!("no {field} after {label} in {text}"));
    u64::from_str_radix(value.trim(), 16).unwrap_or_else(|_| panic!("bad mask {value}"))
}

/// A bash script printing its own signal masks and how `yes | head -1` ended `yes`.
const SHELL_CHECK: &str = "echo shell:; grep -E '^Sig(Ign|Blk)' /proc/self/status; \
     yes | head -1 >/dev/null; echo \"yes=${PIPESTATUS[0]}\"";

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn user_code_starts_with_default_signals_in_every_runtime() {
    let engine = engine(EngineOptions::default()).await;
    // What the languages ignore themselves at startup, under any shell or a plain
    // `docker run` too: SIGPIPE (all four) and SIGXFSZ (Python, Node, Bun).
    let their_own = bit(libc::SIGPIPE as u32) | bit(libc::SIGXFSZ as u32);

    // Bash: the user's program is the shell itself; a setup script is checked the same
    // way (it leaves its masks where the code can read them).
    let mut req = code("bash", &format!("cat /tmp/setup-signals; {SHELL_CHECK}"));
    req.setup_script = Some(
        "{ echo setup:; grep -E '^Sig(Ign|Blk)' /proc/self/status; } > /tmp/setup-signals".into(),
    );
    let r = run(&engine, req).await;
    assert_eq!(r.exit_code, 0, "{r:?}");
    for label in ["setup:", "shell:"] {
        assert_eq!(mask(&r.stdout, label, "SigIgn:"), 0, "{label} {r:?}");
        assert_eq!(mask(&r.stdout, label, "SigBlk:"), 0, "{label} {r:?}");
    }
    assert!(r.stdout.ends_with("yes=141\n"), "{r:?}");

    // The languages read their own status: nothing but what they ignore themselves
    // may be ignored (signal 32 was, inherited from the agent), nothing blocked, and a
    // program they start gets the defaults back.
    let programs = [
        (
            "python",
            "import subprocess\n\
             print('lang:'); print(open('/proc/self/status').read())\n\
             subprocess.run(['bash', '-c', 'echo child:; grep Sig /proc/self/status'])",
        ),
        (
            "node",
            "const fs = require('fs');\n\
             console.log('lang:\\n' + fs.readFileSync('/proc/self/status', 'utf8'));\n\
             const cp = require('child_process');\n\
             process.stdout.write(cp.execFileSync('bash', ['-c', 'echo child:; grep Sig /proc/self/status']));",
        ),
        (
            "bun",
            "const fs = require('fs');\n\
             console.log('lang:\\n' + fs.readFileSync('/proc/self/status', 'utf8'));\n\
             const cp = require('child_process');\n\
             process.stdout.write(cp.execFileSync('bash', ['-c', 'echo child:; grep Sig /proc/self/status']));",
        ),
        // Deno code runs without permissions; `deno eval` (all of them), as a user would
        // run it from `cmd`, may read the file and start a program.
        (
            "deno",
            "deno eval 'console.log(\"lang:\\n\" + Deno.readTextFileSync(\"/proc/self/status\"));\n\
             const out = new Deno.Command(\"bash\", { args: [\"-c\", \"echo child:; grep Sig /proc/self/status\"] }).outputSync();\n\
             console.log(new TextDecoder().decode(out.stdout));'",
        ),
    ];
    for (runtime, src) in programs {
        let req = match src.strip_prefix("deno eval ") {
            Some(_) => ExecutionRequest {
                runtime: runtime.into(),
                cmd: Some(src.into()),
                ..Default::default()
            },
            None => code(runtime, src),
        };
        let r = run(&engine, req).await;
        assert_eq!(r.exit_code, 0, "{runtime}: {r:?}");
        let ignored = mask(&r.stdout, "lang:", "SigIgn:");
        assert_eq!(
            ignored & !their_own,
            0,
            "{runtime} ignores more than SIGPIPE and SIGXFSZ: {r:?}"
        );
        assert_eq!(mask(&r.stdout, "lang:", "SigBlk:"), 0, "{runtime}: {r:?}");
        // Deno starts programs with glibc's posix_spawn, which leaves glibc's reserved
        // signals 32 and 33 ignored in the child: Deno's doing, the same under a plain
        // `docker run` or any shell. Everything else must be the default.
        let glibc_spawn = match runtime {
            "deno" => bit(32) | bit(33),
            _ => 0,
        };
        let child_ignored = mask(&r.stdout, "child:", "SigIgn:");
        assert_eq!(child_ignored & !glibc_spawn, 0, "{runtime}: {r:?}");
        assert_eq!(mask(&r.stdout, "child:", "SigBlk:"), 0, "{runtime}: {r:?}");

        // A shell command in the runtime's image (`cmd`) sees the defaults too.
        let req = ExecutionRequest {
            runtime: runtime.into(),
            cmd: Some(SHELL_CHECK.into()),
            ..Default::default()
        };
        let r = run(&engine, req).await;
        assert_eq!(mask(&r.stdout, "shell:", "SigIgn:"), 0, "{runtime}: {r:?}");
        assert_eq!(mask(&r.stdout, "shell:", "SigBlk:"), 0, "{runtime}: {r:?}");
        assert!(r.stdout.ends_with("yes=141\n"), "{runtime}: {r:?}");
    }
    assert_clean(&engine).await;
}

//! The body of `POST /execute` (and `/execute/stream`): `{request, options?, sessionId?}`
//! taken through the production code a request meets before any container is involved:
//!
//! 1. `serde_json` into `ExecuteBody` — what the server's `ApiJson` extractor runs on
//!    any body, whatever its content type;
//! 2. the server's `route`: `options.mode` dropped (`sessionId` decides), per-request
//!    options laid over the server's ([`EngineOptions::overlay`]) and resolved
//!    ([`SandboxSettings::resolve`]) as `DockerEngine::settings_with` does, the server
//!    policy checked on that result ([`isol8_server::policy::check`]) and, with a
//!    `sessionId`, [`isol8_server::check_session_id`], then the session's engine made
//!    from the client's options over the server's in persistent mode (the request
//!    that makes the session runs on it as it is);
//! 3. the engine's `launch_with`: the same settings turned into the container's
//!    `HostConfig` ([`host_config`]) and the pool key, then the request validated and
//!    turned into the agent's `ExecSpec` ([`prepare`]).
//!
//! Properties: nothing panics; whatever passes keeps the working directory inside
//! `/sandbox` and every file and output path inside `/sandbox`, `/tmp` or `/dev/shm`,
//! normalised, carries
//! no NUL byte into argv or the environment, never grants what the default policy refuses
//! (host network, another image, a weaker seccomp mode, a kept container, more than the
//! server's own limits, a limit Docker would read as "none"), and its `ExecSpec` reaches
//! the agent intact through the frame codec.

#![no_main]

use isol8::docker::{host_config, PoolKey};
use isol8::settings::SandboxSettings;
use isol8::prepare::prepare;
use isol8::RuntimeRegistry;
use isol8_protocol::agent::{ExecSpec, Frame, FrameDecoder, Kind};
use isol8_protocol::options::Mode;
use isol8_protocol::{EngineOptions, NetworkMode, SeccompMode};
use isol8_server::ExecuteBody;
use libfuzzer_sys::fuzz_target;

fn normalised(path: &str) -> bool {
    path.split('/')
        .skip(1)
        .all(|c| !c.is_empty() && c != "." && c != "..")
        && !path.contains('\0')
}

fn inside_sandbox(path: &str, allow_root: bool) -> bool {
    normalised(path) && (path.starts_with("/sandbox/") || (allow_root && path == "/sandbox"))
}

/// Strictly below one of the directories the sandbox user can write.
fn inside_writable(path: &str) -> bool {
    normalised(path)
        && ["/sandbox/", "/tmp/", "/dev/shm/"]
            .iter()
            .any(|d| path.starts_with(d))
}

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<ExecuteBody>(data) else {
        return;
    };
    // The server's own options: those of a server started without a configuration file.
    let server = EngineOptions::default();
    let own = SandboxSettings::resolve(&server).expect("the default options are valid");
    let mut options = body.options.clone().unwrap_or_default();
    options.mode = None;
    let Ok(checked) = SandboxSettings::resolve(&server.overlay(&options)) else {
        return;
    };
    let policy = Default::default();
    if isol8_server::policy::check(&policy, &body.request, &options, &own, &checked).is_err() {
        return;
    }
    let merged = match body.session_id.as_deref() {
        Some(id) => {
            if isol8_server::check_session_id(id).is_err() {
                return;
            }
            // The request that makes the session: its engine is made from the client's
            // options over the server's, in persistent mode, and the execution runs on
            // it as it is.
            EngineOptions {
                mode: Some(Mode::Persistent),
                ..server.overlay(&options)
            }
        }
        None => server.overlay(&options),
    };
    let Ok(settings) = SandboxSettings::resolve(&merged) else {
        return;
    };
    let Ok(host) = host_config(&settings) else {
        return;
    };
    let registry = RuntimeRegistry::default();
    let Ok(prepared) = prepare(&body.request, &registry, &settings) else {
        return;
    };
    let _key = PoolKey::new(&prepared.image, &host);

    // What the default policy refuses never gets through, in a session or not.
    {
        assert_ne!(settings.network, NetworkMode::Host);
        assert_eq!(settings.image, None);
        assert_eq!(settings.seccomp, SeccompMode::Strict);
        assert_eq!(settings.custom_profile_path, None);
        assert_eq!(settings.oci_runtime, None);
        assert!(!settings.persist);
        assert!(settings.readonly_root_fs);
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(
            settings.mode,
            if body.session_id.is_some() {
                Mode::Persistent
            } else {
                Mode::Ephemeral
            }
        );
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        // The policy saw what runs (a session's mode aside).
        let mut seen = checked.clone();
        seen.mode = settings.mode;
        assert_eq!(settings, seen, "the policy saw what runs");
        // Without a policy, at most the server's own limits.
        assert!(settings.memory_bytes <= own.memory_bytes);
        assert!(settings.nano_cpus <= own.nano_cpus);
        assert!(settings.pids_limit <= own.pids_limit);
        assert!(settings.max_output <= own.max_output);
        assert!(settings.sandbox_bytes <= own.sandbox_bytes);
        assert!(settings.tmp_bytes <= own.tmp_bytes);
        assert!(body.request.timeout_ms.unwrap_or(settings.timeout_ms) <= own.timeout_ms);
    }
    // Never a value Docker reads as "no limit".
    assert!(host.nano_cpus.is_some_and(|n| n >= 10_000_000));
    assert!(host.pids_limit.is_some_and(|n| n >= 1));
    assert!(host.memory.is_some_and(|n| n >= 6 << 20));
    assert_eq!(host.cap_drop.as_deref(), Some(&["ALL".to_string()][..]));

    // The working directory stays in /sandbox; files and output paths in the writable
    // directories; all normalised.
    let spec = &prepared.spec;
    assert!(inside_sandbox(&spec.cwd, true), "cwd {:?}", spec.cwd);
    for f in &spec.files {
        assert!(inside_writable(&f.path), "file {:?}", f.path);
    }
    for p in &spec.output_paths {
        assert!(inside_writable(p), "output path {p:?}");
    }
    // execve() would cut strings at a NUL byte.
    for step in &spec.steps {
        assert!(!step.argv.is_empty());
        assert!(step.argv.iter().all(|a| !a.contains('\0')), "{step:?}");
    }
    for (k, v) in &spec.env {
        assert!(!k.is_empty() && !k.contains(['\0', '=']) && !v.contains('\0'));
    }

    // The spec reaches the agent exactly as prepared.
    let frame = Frame::json(Kind::Exec, spec);
    let mut dec = FrameDecoder::new();
    dec.push(&frame.encode());
    let got = dec.next_frame().expect("valid frame").expect("whole frame");
    assert_eq!(got.kind, Kind::Exec);
    let back: ExecSpec = got.parse().expect("the agent parses what the engine sends");
    assert_eq!(&back, spec);
});

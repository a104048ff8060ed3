//! Turning an [`ExecutionRequest`] into what the agent runs: validation of every request
//! field (paths confined to `/sandbox`, `code` xor `cmd`, env names…), the argv of each
//! step, the environment and the files. Pure logic, unit-tested without Docker.

use std::collections::BTreeMap;

use base64::Engine as _;
use isol8_protocol::agent::{ExecSpec, FileWrite, Step, StepPhase, PROTOCOL_VERSION};
use isol8_protocol::{ExecutionRequest, NetworkMode};

use crate::limits::{check_env_name, check_timeout, SandboxSettings};
use crate::runtime::{Runtime, RuntimeRegistry};
use crate::{Error, Result};

/// Root of the sandbox's writable working area.
pub const SANDBOX_ROOT: &str = "/sandbox";

/// Inline code longer than this is written to a file instead (argv strings are limited).
const MAX_INLINE_CODE: usize = 64 << 10;

/// Largest output file read back into the result.
pub const MAX_OUTPUT_FILE: u64 = 16 << 20;

/// The environment every program starts from.
const BASE_ENV: &[(&str, &str)] = &[
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("HOME", "/sandbox"),
    ("LANG", "C.UTF-8"),
    ("TMPDIR", "/tmp"),
    ("USER", "sandbox"),
];

/// A validated request, ready for a sandbox.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The runtime that runs it.
    pub runtime: Runtime,
    /// Image of the sandbox.
    pub image: String,
    /// What the agent is asked to do.
    pub spec: ExecSpec,
}

/// Normalises `path` (relative paths are taken from `/sandbox`, `.` and `..` resolved
/// lexically) and checks that it stays inside `/sandbox`. `allow_root` accepts `/sandbox`
/// itself (for directories).
pub fn sandbox_path(field: &str, path: &str, allow_root: bool) -> Result<String> {
    let bad = |why: &str| Error::InvalidRequest(format!("{field} `{path}` {why}"));
    if path.is_empty() {
        return Err(bad("is empty"));
    }
    if path.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    let full = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{SANDBOX_ROOT}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for comp in full.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(bad("is outside /sandbox"));
                }
            }
            c => parts.push(c),
        }
    }
    if parts.first() != Some(&"sandbox") {
        return Err(bad("is outside /sandbox"));
    }
    if !allow_root && parts.len() == 1 {
        return Err(bad("must name a file inside /sandbox"));
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Validates `req` against the registry and settings and builds the agent's [`ExecSpec`].
pub fn prepare(
    req: &ExecutionRequest,
    registry: &RuntimeRegistry,
    settings: &SandboxSettings,
) -> Result<Prepared> {
    let runtime = registry.get(&req.runtime)?.clone();
    if !req.install_packages.is_empty() {
        return Err(Error::NotSupported("installPackages".into()));
    }
    if req.code_url.is_some() || req.code_hash.is_some() {
        return Err(Error::NotSupported("codeUrl (remote code)".into()));
    }
    if settings.network == NetworkMode::Filtered {
        return Err(Error::NotSupported("the filtered network".into()));
    }
    let timeout_ms = req.timeout_ms.unwrap_or(settings.timeout_ms);
    check_timeout("timeoutMs", timeout_ms)?;

    let mut files = Vec::new();
    for (path, content) in &req.files {
        files.push(FileWrite {
            path: sandbox_path("file path", path, false)?,
            content: base64::engine::general_purpose::STANDARD.encode(content),
            mode: None,
        });
    }
    let output_paths = req
        .output_paths
        .iter()
        .map(|p| sandbox_path("output path", p, false))
        .collect::<Result<Vec<_>>>()?;
    let cwd = match &req.workdir {
        Some(w) => sandbox_path("workdir", w, true)?,
        None => SANDBOX_ROOT.to_string(),
    };

    let code_argv = match (&req.code, &req.cmd) {
        (Some(_), Some(_)) => {
            return Err(Error::InvalidRequest(
                "give either `code` or `cmd`, not both".into(),
            ));
        }
        (None, None) => {
            return Err(Error::InvalidRequest(
                "the request needs `code` or `cmd`".into(),
            ))
        }
        (None, Some(cmd)) => vec!["bash".to_string(), "-c".to_string(), cmd.clone()],
        (Some(code), None) => {
            let ext = match &req.file_extension {
                Some(e) => Some(check_extension(e)?),
                None => None,
            };
            match (&runtime.inline, ext) {
                (Some(inline), None) if code.len() <= MAX_INLINE_CODE => {
                    let mut argv = inline.clone();
                    argv.push(code.clone());
                    argv
                }
                (_, ext) => {
                    let ext = ext.unwrap_or_else(|| runtime.default_extension().to_string());
                    let path = format!("{SANDBOX_ROOT}/main{ext}");
                    files.push(FileWrite {
                        path: path.clone(),
                        content: base64::engine::general_purpose::STANDARD.encode(code),
                        mode: None,
                    });
                    let mut argv = runtime.file.clone();
                    argv.push(path);
                    argv
                }
            }
        }
    };
    if code_argv.iter().any(|a| a.contains('\0')) {
        return Err(Error::InvalidRequest(
            "code and cmd may not contain NUL bytes".into(),
        ));
    }

    let mut env: BTreeMap<String, String> = BASE_ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.extend(runtime.env.clone());
    for (k, v) in req.env.iter().chain(&settings.secrets) {
        check_env_name("env", k)?;
        if v.contains('\0') {
            return Err(Error::InvalidRequest(format!(
                "env `{k}` contains a NUL byte"
            )));
        }
        env.insert(k.clone(), v.clone());
    }

    let mut steps = Vec::new();
    if let Some(script) = &req.setup_script {
        steps.push(Step {
            phase: StepPhase::Setup,
            argv: vec!["bash".into(), "-c".into(), script.clone()],
        });
    }
    steps.push(Step {
        phase: StepPhase::Code,
        argv: code_argv,
    });

    let image = settings
        .image
        .clone()
        .unwrap_or_else(|| runtime.image.clone());
    Ok(Prepared {
        runtime,
        image,
        spec: ExecSpec {
            protocol: PROTOCOL_VERSION,
            steps,
            env,
            cwd,
            stdin: req
                .stdin
                .as_ref()
                .map(|s| base64::engine::general_purpose::STANDARD.encode(s)),
            interactive: false,
            timeout_ms,
            max_output_bytes: settings.max_output,
            files,
            output_paths,
            max_read_bytes: MAX_OUTPUT_FILE,
        },
    })
}

/// The agent request of a pure file transfer: write `files`, read back `output_paths`.
pub fn transfer_spec(
    files: Vec<FileWrite>,
    output_paths: Vec<String>,
    max_read_bytes: u64,
) -> ExecSpec {
    ExecSpec {
        protocol: PROTOCOL_VERSION,
        steps: Vec::new(),
        env: BTreeMap::new(),
        cwd: SANDBOX_ROOT.to_string(),
        stdin: None,
        interactive: false,
        timeout_ms: 30_000,
        max_output_bytes: 0,
        files,
        output_paths,
        max_read_bytes,
    }
}

fn check_extension(ext: &str) -> Result<String> {
    let ext = if ext.starts_with('.') {
        ext.to_string()
    } else {
        format!(".{ext}")
    };
    if ext.len() < 2 || ext.len() > 16 || !ext[1..].chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(Error::InvalidRequest(format!(
            "fileExtension `{ext}` must be a dot followed by letters or digits, e.g. .py"
        )));
    }
    Ok(ext)
}

#[cfg(test)]
mod tests {
    use super::*;
    use isol8_protocol::EngineOptions;

    fn settings() -> SandboxSettings {
        SandboxSettings::resolve(&EngineOptions::default()).expect("defaults")
    }

    fn req(runtime: &str, code: &str) -> ExecutionRequest {
        ExecutionRequest {
            runtime: runtime.into(),
            code: Some(code.into()),
            ..Default::default()
        }
    }

    #[test]
    fn paths_are_confined_to_sandbox() {
        assert_eq!(
            sandbox_path("p", "a/b.txt", false).expect("ok"),
            "/sandbox/a/b.txt"
        );
        assert_eq!(
            sandbox_path("p", "/sandbox/./x/../y", false).expect("ok"),
            "/sandbox/y"
        );
        assert_eq!(sandbox_path("p", "/sandbox", true).expect("ok"), "/sandbox");
        for bad in [
            "/etc/passwd",
            "../x",
            "/sandbox/../etc",
            "/sandboxed/x",
            "/",
            "",
            "/sandbox",
        ] {
            let err = sandbox_path("file path", bad, false)
                .expect_err(bad)
                .to_string();
            assert!(err.contains("file path"), "{err}");
        }
    }

    #[test]
    fn inline_code_uses_the_inline_command() {
        let reg = RuntimeRegistry::builtin();
        let p = prepare(&req("python", "print(1)"), &reg, &settings()).expect("valid");
        assert_eq!(p.spec.steps[0].argv, vec!["python3", "-c", "print(1)"]);
        assert_eq!(p.image, "isol8:python");
        assert_eq!(p.spec.timeout_ms, 30_000);
    }

    #[test]
    fn deno_always_writes_a_file() {
        let reg = RuntimeRegistry::builtin();
        let p = prepare(&req("deno", "console.log(1)"), &reg, &settings()).expect("valid");
        let argv = &p.spec.steps[0].argv;
        assert_eq!(argv.last().map(String::as_str), Some("/sandbox/main.mts"));
        assert_eq!(argv[0], "deno");
        assert!(p.spec.files.iter().any(|f| f.path == "/sandbox/main.mts"));
        assert_eq!(
            p.spec.env.get("DENO_DIR").map(String::as_str),
            Some("/tmp/deno")
        );
    }

    #[test]
    fn file_extension_forces_a_file() {
        let reg = RuntimeRegistry::builtin();
        let mut r = req("node", "console.log(1)");
        r.file_extension = Some(".cjs".into());
        let p = prepare(&r, &reg, &settings()).expect("valid");
        assert_eq!(p.spec.steps[0].argv, vec!["node", "/sandbox/main.cjs"]);
        r.file_extension = Some("./../x".into());
        assert!(prepare(&r, &reg, &settings()).is_err());
    }

    #[test]
    fn code_and_cmd_are_exclusive() {
        let reg = RuntimeRegistry::builtin();
        let mut r = req("bash", "echo");
        r.cmd = Some("ls".into());
        assert!(prepare(&r, &reg, &settings())
            .expect_err("both")
            .to_string()
            .contains("not both"));
        r.code = None;
        r.cmd = None;
        assert!(prepare(&r, &reg, &settings()).is_err());
        r.cmd = Some("ls -la".into());
        let p = prepare(&r, &reg, &settings()).expect("cmd alone");
        assert_eq!(p.spec.steps[0].argv, vec!["bash", "-c", "ls -la"]);
    }

    #[test]
    fn setup_env_secrets_and_unsupported_fields() {
        let reg = RuntimeRegistry::builtin();
        let mut s = settings();
        s.secrets.insert("TOKEN".into(), "s3cret".into());
        let mut r = req("python", "print(1)");
        r.setup_script = Some("echo hi".into());
        r.env.insert("FOO".into(), "bar".into());
        let p = prepare(&r, &reg, &s).expect("valid");
        assert_eq!(p.spec.steps.len(), 2);
        assert_eq!(p.spec.steps[0].phase, StepPhase::Setup);
        assert_eq!(p.spec.env.get("FOO").map(String::as_str), Some("bar"));
        assert_eq!(p.spec.env.get("TOKEN").map(String::as_str), Some("s3cret"));
        r.env.insert("BAD NAME".into(), "x".into());
        assert!(prepare(&r, &reg, &s).is_err());
        let mut r = req("python", "print(1)");
        r.install_packages = vec!["six".into()];
        assert!(prepare(&r, &reg, &s)
            .expect_err("later")
            .to_string()
            .contains("not supported yet"));
    }
}

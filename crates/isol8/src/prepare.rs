//! Turning an [`ExecutionRequest`] into what the agent runs: validation of every request
//! field (paths confined to the sandbox's writable directories, `code` xor `cmd`, env names…), the argv of each
//! step, the environment and the files. Pure logic, unit-tested without Docker.
//! (Over 600 lines: its unit tests, below line 436, are the larger part.)

use std::collections::BTreeMap;

use base64::Engine as _;
use isol8_protocol::agent::{ExecSpec, FileWrite, Step, StepPhase, PROTOCOL_VERSION};
use isol8_protocol::layout::CA_BUNDLE as CA_BUNDLE_IN_SANDBOX;
use isol8_protocol::{ExecutionRequest, NetworkMode};

use crate::runtime::{Runtime, RuntimeRegistry};
use crate::settings::{check_env_name, check_timeout, SandboxSettings};
use crate::{Error, Result};

/// Root of the sandbox's writable working area (see [`isol8_protocol::layout`]).
pub use isol8_protocol::layout::SANDBOX_ROOT;

/// Where a request's files and output paths may lie (see [`isol8_protocol::layout`]).
pub use isol8_protocol::layout::WRITABLE_DIRS;

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
    ("HOME", SANDBOX_ROOT),
    ("LANG", "C.UTF-8"),
    ("TMPDIR", "/tmp"),
    ("USER", "sandbox"),
];

/// The environment every program of `runtime` starts with: [`BASE_ENV`], then the
/// runtime's own variables.
fn runtime_env(runtime: &crate::runtime::Runtime) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = BASE_ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.extend(runtime.env.clone());
    env
}

/// Adds what a program on the `filtered` network finds in its environment: the proxy
/// variables and, for Node.js (and the agent runtime, which is Node.js), the switch that
/// makes its built-in fetch honour them. A `NODE_OPTIONS` of the request's own is kept.
fn filtered_env(runtime: &crate::runtime::Runtime, env: &mut BTreeMap<String, String>) {
    env.extend(crate::egress::proxy_env());
    if runtime.name == "node" || runtime.coding_agent {
        // Node's built-in fetch honours the proxy variables only when asked to; the
        // "experimental" notice it prints for that is noise in every run's stderr.
        env.insert("NODE_USE_ENV_PROXY".into(), "1".into());
        env.entry("NODE_OPTIONS".into())
            .or_insert_with(|| "--disable-warning=UNDICI-EHPA".into());
    }
}

/// What a pooled sandbox of `runtime` keeps waiting ([`crate::runtime::Prestart`]): its
/// loader, started in [`SANDBOX_ROOT`] with the environment a request of that runtime
/// gets when it sets no variables of its own (on the `filtered` network when `filtered`,
/// the proxy variables too; with `ca_bundle`, the CA variables).
/// `None` when the runtime has no pre-started interpreter, or one that takes inline code
/// and no inline command.
pub fn prestart_spec(
    runtime: &crate::runtime::Runtime,
    filtered: bool,
    ca_bundle: bool,
) -> Option<isol8_protocol::agent::PrestartSpec> {
    let prestart = runtime.prestart.as_ref()?;
    let mut env = runtime_env(runtime);
    if filtered {
        filtered_env(runtime, &mut env);
    }
    if ca_bundle {
        env.extend(ca_env());
    }
    let inline = match &prestart.script {
        Some(_) => runtime.file.clone(),
        None => runtime.inline.clone()?,
    };
    Some(isol8_protocol::agent::PrestartSpec {
        inline,
        argv: prestart.argv.clone(),
        env,
        cwd: SANDBOX_ROOT.to_string(),
        startup_env: prestart.startup_env.clone(),
        first_fd: prestart.first_fd,
        serves_stdin: prestart.serves_stdin,
        script: prestart.script.clone(),
        stdio: prestart.stdio,
        preload: prestart.preload.map(str::to_string),
    })
}

/// A validated request, ready for a sandbox.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The runtime that runs it.
    pub runtime: Runtime,
    /// Image of the sandbox.
    pub image: String,
    /// What the agent is asked to do.
    pub spec: ExecSpec,
    /// Network mode of this execution (`filtered` when `installPackages` switched it).
    pub network: NetworkMode,
    /// Hosts the proxy admits beyond the request's rules (the package registries).
    pub egress_hosts: Vec<&'static str>,
    /// The whitelist is the registry hosts only (the install chose the network).
    pub egress_restricted: bool,
    /// The first step installs packages (so its failure is an install failure).
    pub installs: bool,
}

/// `path` as its components: relative paths are taken from `/sandbox`, `.` and `..`
/// resolved lexically; `None` when a `..` climbs above `/`. An empty path or one with a
/// NUL byte is an error.
fn components<'a>(field: &str, path: &'a str) -> Result<Option<Vec<&'a str>>> {
    let bad = |why: &str| Error::InvalidRequest(format!("{field} `{path}` {why}"));
    if path.is_empty() {
        return Err(bad("is empty"));
    }
    if path.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    let mut parts: Vec<&str> = if path.starts_with('/') {
        Vec::new()
    } else {
        SANDBOX_ROOT.split('/').filter(|c| !c.is_empty()).collect()
    };
    for comp in path.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Ok(None);
                }
            }
            c => parts.push(c),
        }
    }
    Ok(Some(parts))
}

/// Normalises `path` (relative paths are taken from `/sandbox`, `.` and `..` resolved
/// lexically) and checks that it stays inside `/sandbox`. `allow_root` accepts `/sandbox`
/// itself (for directories). How the working directory is checked.
pub fn sandbox_path(field: &str, path: &str, allow_root: bool) -> Result<String> {
    let bad = |why: &str| Error::InvalidRequest(format!("{field} `{path}` {why}"));
    let parts = components(field, path)?.ok_or_else(|| bad("is outside /sandbox"))?;
    if parts.first() != Some(&"sandbox") {
        return Err(bad("is outside /sandbox"));
    }
    if !allow_root && parts.len() == 1 {
        return Err(bad("must name a file inside /sandbox"));
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Normalises the path of a file the sandbox user may write or have read back (a
/// request's `files` and `outputPaths`, a session's file transfers) and checks that it
/// lies strictly below one of [`WRITABLE_DIRS`] (`/sandbox`, `/tmp`, `/dev/shm`).
/// Relative paths are taken from `/sandbox`; `.` and `..` are resolved lexically, so
/// `/tmp/../etc/passwd` is `/etc/passwd` and refused. The agent checks the result again
/// on the real filesystem (no symlink followed at any depth, no FIFO opened).
pub fn writable_path(field: &str, path: &str) -> Result<String> {
    let bad = |why: String| Error::InvalidRequest(format!("{field} `{path}` {why}"));
    let outside = || {
        let (last, rest) = WRITABLE_DIRS.split_last().unwrap_or((&"/sandbox", &[]));
        bad(format!(
            "is outside {} and {last} (the directories the sandbox user can write)",
            rest.join(", ")
        ))
    };
    let parts = components(field, path)?.ok_or_else(outside)?;
    for dir in WRITABLE_DIRS {
        let root: Vec<&str> = dir.split('/').filter(|c| !c.is_empty()).collect();
        if parts.starts_with(&root) {
            if parts.len() == root.len() {
                return Err(bad(format!("must name a file inside {dir}")));
            }
            return Ok(format!("/{}", parts.join("/")));
        }
    }
    Err(outside())
}

/// Validates `req` against the registry and settings and builds the agent's [`ExecSpec`].
pub fn prepare(
    req: &ExecutionRequest,
    registry: &RuntimeRegistry,
    settings: &SandboxSettings,
) -> Result<Prepared> {
    let runtime = registry.get(&req.runtime)?.clone();
    if req.code_url.is_some() || req.code_hash.is_some() {
        // The engine fetches codeUrl (the `code_url` module) before preparing.
        return Err(Error::InvalidRequest(
            "codeUrl must be fetched by the engine before the request is prepared".into(),
        ));
    }
    let install = install_step(&runtime, &req.install_packages)?;
    let mut network = settings.network;
    let mut egress_hosts = Vec::new();
    let mut egress_restricted = false;
    if install.is_some() {
        match network {
            NetworkMode::None if settings.network_explicit => {
                return Err(Error::InvalidRequest(
                    "installPackages needs the network, but the network is `none`; use `filtered` (registry hosts are allowed automatically) or leave the network unset".into(),
                ))
            }
            NetworkMode::None => {
                network = NetworkMode::Filtered;
                egress_restricted = true;
                egress_hosts = crate::egress::registry_hosts(&runtime.name).to_vec();
            }
            NetworkMode::Filtered => {
                egress_hosts = crate::egress::registry_hosts(&runtime.name).to_vec();
            }
            NetworkMode::Host => {}
        }
    }
    if runtime.coding_agent {
        // Before anything starts: the agent must reach its model provider.
        crate::runtime::agent::check_network(network, &settings.network_filter)?;
    }
    let agent_flags = req.agent_flags.as_deref().filter(|f| !f.trim().is_empty());
    if agent_flags.is_some() && !(runtime.coding_agent && req.code.is_some()) {
        return Err(Error::InvalidRequest(format!(
            "agentFlags is for the agent runtime's prompt (`code`); this request runs {} with {}: leave agentFlags out",
            runtime.name,
            if req.code.is_some() { "`code`" } else { "`cmd`" }
        )));
    }
    let timeout_ms = req.timeout_ms.unwrap_or(settings.timeout_ms);
    check_timeout("timeoutMs", timeout_ms)?;

    let mut files = Vec::new();
    for (path, content) in &req.files {
        files.push(FileWrite {
            path: writable_path("file path", path)?,
            content: base64::engine::general_purpose::STANDARD.encode(content),
            mode: None,
        });
    }
    let output_paths = req
        .output_paths
        .iter()
        .map(|p| writable_path("output path", p))
        .collect::<Result<Vec<_>>>()?;
    let cwd = match &req.workdir {
        Some(w) => sandbox_path("workdir", w, true)?,
        None => SANDBOX_ROOT.to_string(),
    };

    // The runtime's preload goes with its own interpreter running `code`, not with a
    // `cmd` (a shell command line) or a coding agent.
    let code_preload = match (&req.code, runtime.coding_agent) {
        (Some(_), false) => runtime.code_preload.map(str::to_string),
        _ => None,
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
        (Some(code), None) if runtime.coding_agent => {
            // The prompt is always one argument (pi has no prompt file); the flags are
            // argv items, never shell text.
            let prefix = runtime.inline.as_ref().unwrap_or(&runtime.file);
            crate::runtime::agent::command(prefix, agent_flags, code)?
        }
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

    let mut env = runtime_env(&runtime);
    for (k, v) in req.env.iter().chain(&settings.secrets) {
        check_env_name("env", k)?;
        if v.contains('\0') {
            return Err(Error::InvalidRequest(format!(
                "env `{k}` contains a NUL byte"
            )));
        }
        env.insert(k.clone(), v.clone());
    }

    if network == NetworkMode::Filtered {
        filtered_env(&runtime, &mut env);
    }
    if settings.ca_bundle.is_some() {
        env.extend(ca_env());
    }

    let mut steps = Vec::new();
    let installs = install.is_some();
    steps.extend(install);
    if settings.image.is_some() {
        // A custom image may carry a setup script of its own (`prebuiltImages[]
        // .setupScript`): it runs before the request's.
        steps.push(Step {
            phase: StepPhase::Setup,
            argv: image_setup_argv(),
            preload: None,
        });
    }
    if let Some(script) = &req.setup_script {
        steps.push(Step {
            phase: StepPhase::Setup,
            argv: vec!["bash".into(), "-c".into(), script.clone()],
            preload: None,
        });
    }
    steps.push(Step {
        phase: StepPhase::Code,
        argv: code_argv,
        preload: code_preload,
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
            measure_usage: true,
            memory_limit_bytes: u64::try_from(settings.memory_bytes).ok(),
        },
        network,
        egress_hosts,
        egress_restricted,
        installs,
    })
}

/// The step that runs a custom image's own setup script ([`crate::IMAGE_SETUP_SCRIPT`])
/// if the image has one, and does nothing otherwise.
pub fn image_setup_argv() -> Vec<String> {
    let script = crate::IMAGE_SETUP_SCRIPT;
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("if [ -f {script} ]; then exec bash {script}; fi"),
    ]
}

/// Variables that make OpenSSL, Python (requests, pip), Node, npm, Bun, Deno and curl
/// trust the operator's CA bundle mounted at [`CA_BUNDLE_IN_SANDBOX`].
fn ca_env() -> Vec<(String, String)> {
    [
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "PIP_CERT",
        "CURL_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "npm_config_cafile",
        "DENO_CERT",
    ]
    .iter()
    .map(|k| (k.to_string(), CA_BUNDLE_IN_SANDBOX.to_string()))
    .collect()
}

/// Characters a package spec may contain (names, versions, ranges, extras, scopes and
/// `npm:` / `jsr:` prefixes). Specs go to the installer as separate argv entries, never
/// through a shell; this check also keeps them from being options, paths or URLs.
pub fn check_package(spec: &str) -> Result<()> {
    let bad = |why: &str| Error::InvalidRequest(format!("installPackages entry `{spec}` {why}"));
    if spec.is_empty() || spec.len() > 214 {
        return Err(bad("must be 1 to 214 characters long"));
    }
    if spec.starts_with(['-', '.', '/']) {
        return Err(bad(
            "may not start with `-`, `.` or `/` (options and paths are not packages)",
        ));
    }
    if spec.contains("://") || spec.contains("..") {
        return Err(bad("may not be a URL or contain `..`"));
    }
    if let Some(c) = spec
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-@/=<>!~[],:+^*".contains(*c)))
    {
        return Err(bad(&format!(
            "contains `{}`; package specs use letters, digits and ._-@/=<>!~[],:+^*",
            c.escape_default()
        )));
    }
    Ok(())
}

/// The step that installs `packages` with the runtime's installer, if any are asked for.
fn install_step(runtime: &Runtime, packages: &[String]) -> Result<Option<Step>> {
    if packages.is_empty() {
        return Ok(None);
    }
    let Some(installer) = &runtime.install else {
        return Err(Error::InvalidRequest(format!(
            "runtime `{}` has no package installer; installPackages is not available for it",
            runtime.name
        )));
    };
    if packages.len() > 64 {
        return Err(Error::InvalidRequest(
            "installPackages takes at most 64 packages".into(),
        ));
    }
    let mut argv = installer.clone();
    for p in packages {
        check_package(p)?;
        // Deno installs from registries named in the specifier; bare names are npm's.
        if runtime.name == "deno" && !p.starts_with("npm:") && !p.starts_with("jsr:") {
            argv.push(format!("npm:{p}"));
        } else {
            argv.push(p.clone());
        }
    }
    Ok(Some(Step {
        phase: StepPhase::Setup,
        argv,
        preload: None,
    }))
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
        measure_usage: false,
        memory_limit_bytes: None,
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
    fn files_and_output_paths_may_lie_in_every_writable_directory() {
        for (path, want) in [
            ("a/b.txt", "/sandbox/a/b.txt"),
            ("/sandbox/x", "/sandbox/x"),
            ("/tmp/data.csv", "/tmp/data.csv"),
            ("/tmp/a/../b", "/tmp/b"),
            ("/dev/shm/seg", "/dev/shm/seg"),
            ("//dev//shm/./seg", "/dev/shm/seg"),
            // Lexically back into another writable directory: fine, it is that one.
            ("/tmp/../sandbox/y", "/sandbox/y"),
        ] {
            assert_eq!(writable_path("file path", path).expect(path), want);
        }
        // Escapes from each root, and near misses of the names.
        for bad in [
            "/tmp/../etc/passwd",
            "/tmp/../../etc/passwd",
            "/dev/shm/../../etc/passwd",
            "/dev/shm/..",
            "/dev/shm/../null",
            "/dev/mqueue/q",
            "/dev/shmx/a",
            "/tmpfoo",
            "/tmpx/a",
            "/sandboxed/x",
            "../etc/passwd",
            "/sandbox/../../tmp/../etc",
            "/etc/passwd",
            "/proc/1/environ",
            "/",
        ] {
            let err = writable_path("file path", bad).expect_err(bad).to_string();
            assert!(
                err.starts_with(&format!(
                    "file path `{bad}` is outside /sandbox, /tmp and /dev/shm"
                )),
                "{err}"
            );
        }
        // The directories themselves, and what is not a path.
        for bad in ["/tmp", "/tmp/", "/dev/shm", "/sandbox", "", "/tmp/a\0b"] {
            let err = writable_path("file path", bad).expect_err(bad).to_string();
            assert!(err.starts_with(&format!("file path `{bad}`")), "{err}");
        }
        // The working directory stays under /sandbox.
        assert!(sandbox_path("workdir", "/tmp", true).is_err());
    }

    #[test]
    fn prepare_accepts_files_and_output_paths_in_tmp_and_shm() {
        let reg = RuntimeRegistry::builtin();
        let mut r = req("bash", "true");
        r.files.insert("/tmp/in.txt".into(), "x".into());
        r.output_paths = vec!["/dev/shm/out".into(), "/tmp/../tmp/o2".into()];
        let p = prepare(&r, &reg, &settings()).expect("valid");
        assert!(p.spec.files.iter().any(|f| f.path == "/tmp/in.txt"));
        assert_eq!(p.spec.output_paths, vec!["/dev/shm/out", "/tmp/o2"]);
        r.output_paths = vec!["/tmp/../etc/shadow".into()];
        let err = prepare(&r, &reg, &settings())
            .expect_err("escape")
            .to_string();
        assert!(err.contains("output path `/tmp/../etc/shadow`"), "{err}");
    }

    #[test]
    fn inline_code_uses_the_inline_command() {
        let reg = RuntimeRegistry::builtin();
        let p = prepare(&req("python", "print(1)"), &reg, &settings()).expect("valid");
        assert_eq!(p.spec.steps[0].argv, vec!["python3", "-c", "print(1)"]);
        assert_eq!(p.image, "isol8:python");
        assert_eq!(p.spec.timeout_ms, 30_000);
        assert_eq!(
            p.spec.memory_limit_bytes,
            Some(512 << 20),
            "the agent holds the program to memoryLimit"
        );
        assert!(p.spec.measure_usage);
        let transfer = transfer_spec(vec![], vec!["/sandbox/a".into()], 1);
        assert_eq!(transfer.memory_limit_bytes, None, "nothing runs");
    }

    #[test]
    fn only_bun_code_gets_the_teardown_preload() {
        let reg = RuntimeRegistry::builtin();
        let teardown = Some(crate::runtime::TEARDOWN.path.to_string());
        let mut r = req("bun", "console.log(1)");
        r.setup_script = Some("true".into());
        let p = prepare(&r, &reg, &settings()).expect("valid");
        let preloads: Vec<_> = p.spec.steps.iter().map(|s| s.preload.clone()).collect();
        assert_eq!(preloads, vec![None, teardown.clone()], "setup, then code");
        // A file program too.
        let mut r = req("bun", "console.log(1)");
        r.file_extension = Some(".ts".into());
        let p = prepare(&r, &reg, &settings()).expect("valid");
        assert_eq!(p.spec.steps[0].argv[..2], ["bun", "run"]);
        assert_eq!(p.spec.steps[0].preload, teardown);
        // A shell command line is not Bun's code; the pre-starting runtimes start plain.
        let mut r = req("bun", "");
        r.code = None;
        r.cmd = Some("true".into());
        let p = prepare(&r, &reg, &settings()).expect("valid");
        assert_eq!(p.spec.steps[0].preload, None);
        for rt in ["python", "node", "deno", "bash"] {
            let p = prepare(&req(rt, "1"), &reg, &settings()).expect("valid");
            assert_eq!(p.spec.steps[0].preload, None, "{rt}");
        }
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
        // In a custom image, the image's own setup script (if it has one) runs first.
        let custom = SandboxSettings {
            image: Some("my-python:1".into()),
            ..s.clone()
        };
        let p = prepare(&r, &reg, &custom).expect("valid");
        let phases: Vec<_> = p.spec.steps.iter().map(|s| s.phase).collect();
        assert_eq!(
            phases,
            [StepPhase::Setup, StepPhase::Setup, StepPhase::Code]
        );
        assert!(p.spec.steps[0].argv[2].contains(crate::IMAGE_SETUP_SCRIPT));
        assert_eq!(p.spec.steps[1].argv, ["bash", "-c", "echo hi"]);
        assert_eq!(p.spec.env.get("FOO").map(String::as_str), Some("bar"));
        assert_eq!(p.spec.env.get("TOKEN").map(String::as_str), Some("s3cret"));
        r.env.insert("BAD NAME".into(), "x".into());
        assert!(prepare(&r, &reg, &s).is_err());
    }

    #[test]
    fn installs_are_an_argv_step_on_the_filtered_network() {
        let reg = RuntimeRegistry::builtin();
        let s = settings();
        let mut r = req("python", "import six");
        r.install_packages = vec!["six".into(), "requests[socks]>=2".into()];
        let p = prepare(&r, &reg, &s).expect("valid");
        assert!(p.installs);
        assert_eq!(
            p.network,
            NetworkMode::Filtered,
            "an unset network switches"
        );
        assert!(p.egress_restricted);
        assert_eq!(p.egress_hosts, vec!["pypi.org", "files.pythonhosted.org"]);
        let argv = &p.spec.steps[0].argv;
        assert_eq!(argv[0], "pip");
        assert_eq!(&argv[argv.len() - 2..], ["six", "requests[socks]>=2"]);
        assert_eq!(
            p.spec.env.get("HTTPS_PROXY").map(String::as_str),
            Some("http://127.0.0.1:3128")
        );

        // Deno's bare names are npm's; bash has no installer.
        let mut d = req("deno", "x");
        d.install_packages = vec!["is-number".into(), "jsr:@std/path".into()];
        let argv = prepare(&d, &reg, &s).expect("deno").spec.steps[0]
            .argv
            .clone();
        assert_eq!(&argv[argv.len() - 2..], ["npm:is-number", "jsr:@std/path"]);
        let mut b = req("bash", "x");
        b.install_packages = vec!["jq".into()];
        assert!(prepare(&b, &reg, &s).is_err());

        // An explicit `none` is respected: the install is refused up front.
        let none = SandboxSettings::resolve(&EngineOptions {
            network: Some(NetworkMode::None),
            ..Default::default()
        })
        .expect("none");
        assert!(prepare(&r, &reg, &none).is_err());
        for bad in [
            "",
            "-e",
            "--index-url=x",
            "./local",
            "/abs",
            "a b",
            "x;y",
            "$(id)",
            "http://x/y",
            "a\nb",
        ] {
            let mut r = req("python", "x");
            r.install_packages = vec![bad.into()];
            assert!(prepare(&r, &reg, &s).is_err(), "{bad:?} must be refused");
        }
    }

    /// Settings of a `filtered` network admitting `whitelist`.
    fn filtered(whitelist: &[&str]) -> SandboxSettings {
        SandboxSettings::resolve(&EngineOptions {
            network: Some(NetworkMode::Filtered),
            network_filter: Some(isol8_protocol::NetworkFilter {
                whitelist: whitelist.iter().map(|w| w.to_string()).collect(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .expect("filtered")
    }

    #[test]
    fn an_agent_request_runs_pi_with_its_flags_as_argv_and_the_prompt_last() {
        let reg = RuntimeRegistry::default();
        let mut r = req("agent", "write hello.txt; then $(id)");
        r.agent_flags = Some("--model 'stub/model one' ; id $(rm -rf /)".into());
        let p = prepare(&r, &reg, &filtered(&["^api\\.example\\.com$"])).expect("agent");
        assert_eq!(p.image, "isol8:agent");
        assert_eq!(p.network, NetworkMode::Filtered);
        let argv = &p.spec.steps.last().expect("code step").argv;
        assert_eq!(argv[..2], ["pi", "--no-session"]);
        assert_eq!(argv[2], "--append-system-prompt");
        assert_eq!(
            argv[4..],
            [
                "--model",
                "stub/model one",
                ";",
                "id",
                "$(rm",
                "-rf",
                "/)",
                "-p",
                "write hello.txt; then $(id)"
            ]
        );
        // No shell anywhere in the step, and no file written for the prompt.
        assert!(!argv.iter().any(|a| a == "bash" || a == "sh" || a == "-c"));
        assert!(p.spec.files.is_empty());
        // pi's startup stays off the network, and Node uses the sandbox's proxy.
        assert_eq!(p.spec.env.get("PI_OFFLINE").map(String::as_str), Some("1"));
        assert!(p.spec.env.contains_key("HTTPS_PROXY"));
        // A prompt that is too long is refused before anything runs (no file fallback).
        let long = req("agent", &"x".repeat(200 << 10));
        assert!(prepare(&long, &reg, &filtered(&["x"])).is_err());
        // `cmd` runs in the agent's image as in every other.
        let cmd = ExecutionRequest {
            runtime: "agent".into(),
            cmd: Some("pi --version".into()),
            ..Default::default()
        };
        let p = prepare(&cmd, &reg, &filtered(&["x"])).expect("cmd");
        assert_eq!(p.spec.steps[0].argv, ["bash", "-c", "pi --version"]);
    }

    #[test]
    fn agent_flags_are_refused_where_they_cannot_apply() {
        let reg = RuntimeRegistry::default();
        let mut py = req("python", "print(1)");
        py.agent_flags = Some("--model x".into());
        let e = prepare(&py, &reg, &settings())
            .expect_err("python")
            .to_string();
        assert!(e.contains("agentFlags") && e.contains("python"), "{e}");
        let cmd = ExecutionRequest {
            runtime: "agent".into(),
            cmd: Some("true".into()),
            agent_flags: Some("--model x".into()),
            ..Default::default()
        };
        let e = prepare(&cmd, &reg, &filtered(&["x"]))
            .expect_err("cmd")
            .to_string();
        assert!(e.contains("agentFlags") && e.contains("`cmd`"), "{e}");
        // Empty flags are no flags.
        py.agent_flags = Some(" ".into());
        assert!(prepare(&py, &reg, &settings()).is_ok());
        let mut bad = req("agent", "p");
        bad.agent_flags = Some("--model 'open".into());
        let e = prepare(&bad, &reg, &filtered(&["x"])).expect_err("unsplittable");
        assert!(e.to_string().contains("cannot be split"), "{e}");
    }

    #[test]
    fn an_agent_without_network_is_refused_with_the_reason() {
        let reg = RuntimeRegistry::default();
        let r = req("agent", "do it");
        // The default network is `none`.
        let e = prepare(&r, &reg, &settings())
            .expect_err("none")
            .to_string();
        assert!(
            e.contains("agent runtime needs network access") && e.contains("`none`"),
            "{e}"
        );
        let e = prepare(&r, &reg, &filtered(&[]))
            .expect_err("empty")
            .to_string();
        assert!(e.contains("at least one whitelist entry"), "{e}");
        // An install that switches an unset network to the registries only is no way out.
        let mut inst = req("agent", "do it");
        inst.install_packages = vec!["is-number".into()];
        let e = prepare(&inst, &reg, &settings())
            .expect_err("install")
            .to_string();
        assert!(e.contains("whitelist entry"), "{e}");
        let host = SandboxSettings::resolve(&EngineOptions {
            network: Some(NetworkMode::Host),
            ..Default::default()
        })
        .expect("host");
        assert!(
            prepare(&r, &reg, &host).is_ok(),
            "host is the operator's call"
        );
        assert!(prepare(&r, &reg, &filtered(&["^api\\.x\\.com$"])).is_ok());
    }
}

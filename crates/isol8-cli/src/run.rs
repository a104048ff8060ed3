//! `isol8 run`: parse the run flags into an [`ExecutionRequest`] and engine options, run
//! it (streaming by default), and exit with the program's status.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use isol8::config::LoadedConfig;
use isol8::docker::EngineConfig;
use isol8::{
    DockerEngine, Engine, EngineOptions, ExecutionRequest, RuntimeRegistry, StreamEventType,
};
use isol8_protocol::{ExitReason, NetworkMode, SeccompMode};

use crate::input::Input;

/// Flags of `isol8 run`.
#[derive(clap::Args, Debug, Default)]
#[command(group(clap::ArgGroup::new("code_url").args(["url", "github", "gist"])))]
pub struct RunArgs {
    /// File to run (runtime detected from its extension unless --runtime is given).
    pub file: Option<PathBuf>,
    /// Inline code to run (python unless --runtime says otherwise).
    #[arg(short = 'e', long = "eval", value_name = "CODE", conflicts_with_all = ["file", "cmd"])]
    pub eval: Option<String>,
    /// Shell command run as `bash -c CMD` in the runtime's image (bash unless --runtime
    /// says otherwise).
    #[arg(long, value_name = "CMD", conflicts_with = "file")]
    pub cmd: Option<String>,
    /// Runtime: python, node, bun, deno, bash, agent (default: from the file's extension;
    /// python for -e and code on standard input; bash for --cmd). With `agent` the code is
    /// the prompt of the pi coding agent, which needs `--net filtered --allow HOST` (its
    /// model provider) or `--net host`.
    #[arg(short, long)]
    pub runtime: Option<String>,
    /// Extra flags for the agent runtime's pi, e.g. "--model anthropic/claude-sonnet-4-5
    /// --thinking low": split like shell words (quotes work), never run through a shell.
    #[arg(long, value_name = "FLAGS", allow_hyphen_values = true)]
    pub agent_flags: Option<String>,
    /// Timeout in milliseconds (default 30000).
    #[arg(long, value_name = "MS")]
    pub timeout: Option<u64>,
    /// Memory limit, e.g. 512m.
    #[arg(long)]
    pub memory: Option<String>,
    /// CPU limit as a fraction of cores, e.g. 0.5 (at least 0.01).
    #[arg(long, allow_negative_numbers = true)]
    pub cpu: Option<f64>,
    /// Process limit (at least 1).
    #[arg(
        long = "pids-limit",
        visible_alias = "pids",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub pids: Option<i64>,
    /// Size of the /sandbox tmpfs, e.g. 512m.
    #[arg(long)]
    pub sandbox_size: Option<String>,
    /// Size of the /tmp tmpfs, e.g. 256m.
    #[arg(long)]
    pub tmp_size: Option<String>,
    /// Cap on stdout and on stderr, in bytes.
    #[arg(long, value_name = "BYTES")]
    pub max_output: Option<u64>,
    /// Network mode of the sandbox.
    #[arg(long, value_name = "MODE")]
    pub net: Option<NetworkMode>,
    /// Environment variable for the program (repeatable).
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Secret environment variable, masked as *** in all output (repeatable): NAME=VALUE,
    /// or NAME alone to pass this environment's $NAME without putting the value on the
    /// command line (which other local users can read).
    #[arg(long = "secret", value_name = "NAME[=VALUE]")]
    pub secret: Vec<String>,
    /// File of secrets, one NAME=VALUE per line (repeatable): the value is the rest of the
    /// line, verbatim; blank lines and lines starting with # are skipped; a NAME alone
    /// takes $NAME from this environment. --secret flags win over the files.
    #[arg(long = "secret-file", value_name = "PATH")]
    pub secret_file: Vec<PathBuf>,
    /// Data fed to the program's standard input (then end-of-file). Without it, this
    /// command's own standard input is forwarded to the program when it is not a terminal
    /// and the code came from a FILE, -e, --cmd or --url.
    #[arg(long, value_name = "DATA")]
    pub stdin: Option<String>,
    /// Bash script run before the code (repeatable, joined by newlines): the path of an
    /// existing file means its contents, anything else is the script itself.
    #[arg(long, value_name = "SCRIPT_OR_FILE")]
    pub setup: Vec<String>,
    /// Working directory inside /sandbox.
    #[arg(long)]
    pub workdir: Option<String>,
    /// File extension of the code file, e.g. .cjs.
    #[arg(long, value_name = "EXT")]
    pub ext: Option<String>,
    /// Also write the program's stdout to FILE.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Buffer the output and print it at the end.
    #[arg(long)]
    pub no_stream: bool,
    /// Print the ExecutionResult as JSON.
    #[arg(long)]
    pub json: bool,
    /// Image overriding the runtime's.
    #[arg(long)]
    pub image: Option<String>,
    /// Seccomp profile of the sandbox.
    #[arg(long, value_name = "MODE")]
    pub seccomp: Option<SeccompMode>,
    /// OCI runtime registered with Docker, e.g. runsc (gVisor).
    #[arg(long, value_name = "NAME")]
    pub oci_runtime: Option<String>,
    /// Keep the container after the run for inspection.
    #[arg(long)]
    pub persist: bool,
    /// Make the root filesystem writable.
    #[arg(long)]
    pub writable_root: bool,
    /// File read back after the run (repeatable; shown with --json).
    #[arg(long = "output-path", value_name = "PATH")]
    pub output_path: Vec<String>,
    /// Run on an isol8 server instead of the local Docker daemon (e.g. http://127.0.0.1:3000).
    #[arg(long, value_name = "URL")]
    pub host: Option<String>,
    /// API key of the server (prefer the ISOL8_API_KEY environment variable).
    #[arg(long, env = "ISOL8_API_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Run in this server-side persistent session (created on first use).
    #[arg(long, value_name = "ID", requires = "host")]
    pub session_id: Option<String>,
    /// Local file injected into the sandbox: SANDBOX_PATH=LOCAL_PATH (repeatable).
    #[arg(long = "file", value_name = "SANDBOX_PATH=LOCAL_PATH")]
    pub inject: Vec<String>,
    /// Inject a local directory into /sandbox, recursively (skips .git, node_modules,
    /// virtualenvs and __pycache__).
    #[arg(long = "files", value_name = "DIR")]
    pub files_dir: Option<PathBuf>,
    /// Install a package before the code runs (repeatable); switches an unset network to
    /// `filtered` with the runtime's registry allowed.
    #[arg(long = "install", value_name = "PACKAGE")]
    pub install: Vec<String>,
    /// Allow hosts matching this regex on the filtered network (repeatable; whitelist).
    #[arg(long = "allow", value_name = "REGEX")]
    pub allow: Vec<String>,
    /// Block hosts matching this regex on the filtered network (repeatable; wins over --allow).
    #[arg(long = "deny", value_name = "REGEX")]
    pub deny: Vec<String>,
    /// Record the proxy's ALLOW/BLOCK decisions (shown with --json, summarised on stderr).
    #[arg(long)]
    pub log_network: bool,
    /// Fetch the code from this URL (needs remoteCode.enabled in the config).
    #[arg(long, value_name = "URL", conflicts_with_all = ["file", "eval", "cmd"])]
    pub url: Option<String>,
    /// Fetch the code from GitHub: OWNER/REPO/REF/PATH, i.e.
    /// https://raw.githubusercontent.com/OWNER/REPO/REF/PATH (under the same remoteCode
    /// policy as --url).
    #[arg(long, value_name = "OWNER/REPO/REF/PATH", conflicts_with_all = ["file", "eval", "cmd"])]
    pub github: Option<String>,
    /// Fetch the code from a gist: ID[/FILE], i.e.
    /// https://gist.githubusercontent.com/ID/raw[/FILE] (under the same remoteCode policy
    /// as --url).
    #[arg(long, value_name = "ID[/FILE]", conflicts_with_all = ["file", "eval", "cmd"])]
    pub gist: Option<String>,
    /// Expected SHA-256 (hex) of the code fetched with --url, --github or --gist.
    #[arg(long, value_name = "SHA256")]
    pub hash: Option<String>,
    /// Allow a plain-http --url (when the config's remoteCode.allowedSchemes has http).
    #[arg(long = "allow-insecure-code-url", visible_alias = "allow-insecure-url")]
    pub allow_insecure_url: bool,
    /// Run in a persistent container (with --host and --session-id it outlives this command).
    #[arg(long)]
    pub persistent: bool,
}

/// Directory names `--files` never descends into.
const SKIPPED_DIRS: &[&str] = &[
    ".git",
    ".hg",
    ".svn",
    "node_modules",
    "__pycache__",
    ".venv",
    "venv",
    ".tox",
    ".mypy_cache",
    ".pytest_cache",
];

/// Limits of `--files`: the request carries the files inline.
const MAX_DIR_FILES: usize = 2000;
const MAX_DIR_BYTES: u64 = 16 << 20;

/// Reads `dir` recursively into sandbox-relative paths → text content.
fn read_dir_files(dir: &std::path::Path) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).with_context(|| format!("cannot read `{}`", d.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot read `{}`", d.display()))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            // symlink_metadata: links are neither followed nor copied.
            let meta = std::fs::symlink_metadata(&path)
                .with_context(|| format!("cannot read `{}`", path.display()))?;
            if meta.is_dir() {
                if SKIPPED_DIRS.contains(&name.as_str()) || path.join("pyvenv.cfg").exists() {
                    continue;
                }
                stack.push(path);
            } else if meta.is_file() {
                total += meta.len();
                if out.len() >= MAX_DIR_FILES || total > MAX_DIR_BYTES {
                    bail!(
                        "--files `{}` is too large: at most {MAX_DIR_FILES} files and {} MiB",
                        dir.display(),
                        MAX_DIR_BYTES >> 20
                    );
                }
                let rel = path.strip_prefix(dir).map_err(|_| {
                    anyhow::anyhow!("`{}` is outside `{}`", path.display(), dir.display())
                })?;
                let rel = rel.to_str().with_context(|| {
                    format!("--files: `{}` is not a UTF-8 file name", path.display())
                })?;
                let content = std::fs::read(&path)
                    .with_context(|| format!("cannot read `{}`", path.display()))?;
                let content = String::from_utf8(content).map_err(|_| {
                    anyhow::anyhow!(
                        "--files: `{}` is not UTF-8 text; request files are text (use put_file for binaries)",
                        path.display()
                    )
                })?;
                out.insert(rel.to_string(), content);
            }
        }
    }
    Ok(out)
}

fn parse_kv(flag: &str, items: &[String]) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for item in items {
        let (k, v) = item
            .split_once('=')
            .with_context(|| format!("{flag} `{item}` must look like NAME=value"))?;
        map.insert(k.to_string(), v.to_string());
    }
    Ok(map)
}

/// Engine options: the config file's defaults, overridden by flags.
fn options(args: &RunArgs, config: &LoadedConfig) -> Result<EngineOptions> {
    let mut o = config.config.engine_options();
    if let Some(v) = args.timeout {
        o.timeout_ms = Some(v);
    }
    if let Some(v) = &args.memory {
        o.memory_limit = Some(v.clone());
    }
    if let Some(v) = args.cpu {
        o.cpu_limit = Some(v);
    }
    if let Some(v) = args.pids {
        o.pids_limit = Some(v);
    }
    if let Some(v) = &args.sandbox_size {
        o.sandbox_size = Some(v.clone());
    }
    if let Some(v) = &args.tmp_size {
        o.tmp_size = Some(v.clone());
    }
    if let Some(v) = args.max_output {
        o.max_output_size = Some(v);
    }
    if let Some(v) = args.net {
        o.network = Some(v);
    }
    if let Some(v) = &args.image {
        o.image = Some(v.clone());
    }
    if let Some(v) = args.seccomp {
        let mut sec = o.security.clone().unwrap_or_default();
        sec.seccomp = Some(v);
        o.security = Some(sec);
    }
    if let Some(v) = &args.oci_runtime {
        let mut sec = o.security.clone().unwrap_or_default();
        sec.runtime = Some(v.clone());
        o.security = Some(sec);
    }
    if args.persist {
        o.persist = Some(true);
    }
    if args.writable_root {
        o.readonly_root_fs = Some(false);
    }
    if !args.allow.is_empty() || !args.deny.is_empty() {
        let mut filter = o.network_filter.clone().unwrap_or_default();
        filter.whitelist.extend(args.allow.iter().cloned());
        filter.blacklist.extend(args.deny.iter().cloned());
        o.network_filter = Some(filter);
    }
    if args.log_network {
        o.log_network = Some(true);
    }
    if args.persistent {
        o.mode = Some(isol8_protocol::options::Mode::Persistent);
    }
    o.secrets.extend(secrets(args)?);
    Ok(o)
}

/// The secrets of the `--secret-file` files, then of the `--secret` flags (a later entry
/// wins). Errors name the flag, file, line and variable, never a value.
fn secrets(args: &RunArgs) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for path in &args.secret_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--secret-file: cannot read `{}`", path.display()))?;
        for (i, line) in text.lines().enumerate() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (name, value) = secret_entry(line, || {
                format!("--secret-file `{}` line {}", path.display(), i + 1)
            })?;
            map.insert(name, value);
        }
    }
    for item in &args.secret {
        let (name, value) = secret_entry(item, || "--secret".to_string())?;
        map.insert(name, value);
    }
    Ok(map)
}

/// `NAME=VALUE`, or `NAME` with the value of `$NAME` in this process's environment.
fn secret_entry(item: &str, place: impl Fn() -> String) -> Result<(String, String)> {
    if let Some((name, value)) = item.split_once('=') {
        return Ok((name.to_string(), value.to_string()));
    }
    match std::env::var(item) {
        Ok(value) => Ok((item.to_string(), value)),
        Err(std::env::VarError::NotPresent) => bail!(
            "{}: `{item}` has no value and ${item} is not set in this environment; export {item}, or give {item}=VALUE in a --secret-file",
            place()
        ),
        Err(std::env::VarError::NotUnicode(_)) => {
            bail!("{}: ${item} is not valid UTF-8", place())
        }
    }
}

/// True when the code comes from standard input (no FILE, -e, --cmd, --url, --github or --gist): then
/// standard input is the code, not the program's input.
fn code_from_stdin(args: &RunArgs) -> bool {
    args.cmd.is_none()
        && args.url.is_none()
        && args.github.is_none()
        && args.gist.is_none()
        && args.eval.is_none()
        && args.file.is_none()
}

/// The request: code from FILE, -e, --cmd, a code URL or standard input.
fn request(args: &RunArgs, registry: &RuntimeRegistry) -> Result<ExecutionRequest> {
    let mut req = ExecutionRequest::default();
    // The runtime when --runtime is not given: the extension of the file or URL, else
    // python for inline code and bash for a command (as the reference CLI does).
    let detected: Option<String>;
    let remote = args.url.is_some() || args.github.is_some() || args.gist.is_some();
    if (args.hash.is_some() || args.allow_insecure_url) && !remote {
        bail!("--hash and --allow-insecure-code-url go with --url, --github or --gist");
    }
    if let Some(cmd) = &args.cmd {
        req.cmd = Some(cmd.clone());
        detected = Some("bash".to_string());
    } else if let Some(url) = crate::source::code_url(
        args.url.as_deref(),
        args.github.as_deref(),
        args.gist.as_deref(),
    )? {
        let name = url.rsplit('/').next().unwrap_or_default();
        detected = registry.detect(name).map(|r| r.name.clone());
        if args.runtime.is_none() && detected.is_none() {
            bail!(
                "cannot tell the runtime of `{url}` from its extension; pass --runtime ({})",
                registry.names().join(", ")
            );
        }
        req.code_url = Some(url);
        req.code_hash = args.hash.clone();
        req.allow_insecure_code_url = args.allow_insecure_url.then_some(true);
    } else if let Some(code) = &args.eval {
        req.code = Some(code.clone());
        detected = Some("python".to_string());
    } else if let Some(path) = &args.file {
        let code = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                anyhow::anyhow!("File not found: {}", path.display())
            }
            _ => anyhow::Error::new(e).context(format!("cannot read `{}`", path.display())),
        })?;
        req.code = Some(code);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        detected = registry.detect(&name).map(|r| r.name.clone());
        if args.runtime.is_none() && detected.is_none() {
            bail!(
                "cannot tell the runtime of `{}` from its extension; pass --runtime ({})",
                path.display(),
                registry.names().join(", ")
            );
        }
    } else {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            bail!("no code given: pass a FILE, -e CODE, --cmd CMD, or pipe code on standard input");
        }
        let mut code = String::new();
        stdin
            .lock()
            .read_to_string(&mut code)
            .context("cannot read code from standard input")?;
        if code.trim().is_empty() {
            bail!("no code given: standard input was empty; pass a FILE, -e CODE or --cmd CMD");
        }
        req.code = Some(code);
        detected = Some("python".to_string());
    }
    req.runtime = match (&args.runtime, detected) {
        (Some(r), _) => r.clone(),
        (None, Some(r)) => r,
        (None, None) => bail!("pass --runtime ({})", registry.names().join(", ")),
    };
    registry.get(&req.runtime)?;
    req.agent_flags = args.agent_flags.clone();
    req.timeout_ms = args.timeout;
    req.env = parse_kv("--env", &args.env)?;
    req.stdin = args.stdin.clone();
    req.setup_script = crate::source::setup_script(&args.setup)?;
    req.workdir = args.workdir.clone();
    req.file_extension = args.ext.clone();
    req.output_paths = args.output_path.clone();
    req.install_packages = args.install.clone();
    if let Some(dir) = &args.files_dir {
        if !dir.is_dir() {
            bail!("--files `{}` is not a directory", dir.display());
        }
        req.files.extend(read_dir_files(dir)?);
    }
    for spec in &args.inject {
        let (dest, local) = spec
            .split_once('=')
            .with_context(|| format!("--file `{spec}` must look like SANDBOX_PATH=LOCAL_PATH"))?;
        let content = std::fs::read(local).with_context(|| format!("cannot read `{local}`"))?;
        let content = String::from_utf8(content).map_err(|_| {
            anyhow::anyhow!(
                "--file `{local}` is not UTF-8 text (binary files come with put_file later)"
            )
        })?;
        req.files.insert(dest.to_string(), content);
    }
    Ok(req)
}

/// Runs `isol8 run`; returns the process exit status.
pub async fn run(args: RunArgs, config: &LoadedConfig) -> Result<i32> {
    let registry = RuntimeRegistry::builtin();
    let options = options(&args, config)?;
    let input = crate::input::input(args.stdin.as_deref(), code_from_stdin(&args));
    let req = request(&args, &registry)?;
    tracing::debug!(
        runtime = %req.runtime,
        on = args.host.as_deref().unwrap_or("the local Docker daemon"),
        "run: request ready"
    );
    // Validate everything before touching Docker: bad input fails fast and leaves nothing.
    let mut settings = isol8::settings::SandboxSettings::resolve(&options)?;
    if args.host.is_some() && options.network.is_none() {
        // The server's own network applies: it judges what needs the network (the agent).
        settings.network = NetworkMode::Host;
    }
    let mut check = req.clone();
    if check.code_url.take().is_some() {
        check.code_hash = None;
        check.code = Some("(fetched by the engine)".into());
    }
    isol8::prepare::prepare(&check, &registry, &settings)?;
    let memory = memory_limit(&options);
    if let Some(host) = &args.host {
        return run_remote(host, &args, options, req, input, &memory).await;
    }
    let engine = DockerEngine::connect_with(EngineConfig {
        options,
        registry: Some(registry),
        ..EngineConfig::from_config(&config.config)
    })
    .await?;
    let work = execute(&engine, req, &args, input, &memory);
    tokio::pin!(work);
    tokio::select! {
        status = &mut work => {
            if !engine.settings().persist {
                engine.stop().await?;
            }
            // The process exits right after this: the run's audit record (config
            // `audit`) is written before it does.
            engine.flush_audit().await;
            status
        }
        _ = tokio::signal::ctrl_c() => {
            engine.stop().await?;
            eprintln!("interrupted: the sandbox was removed");
            Ok(130)
        }
    }
}

/// Runs on an isol8 server. The session (if any) outlives this command; Ctrl-C closes
/// the connection, which makes the server kill the execution.
async fn run_remote(
    host: &str,
    args: &RunArgs,
    options: EngineOptions,
    req: ExecutionRequest,
    input: Input,
    memory: &str,
) -> Result<i32> {
    // --key / ISOL8_API_KEY, else the key stored by `isol8 login` for this host.
    let key = crate::account::key_for(host, args.key.clone())?.with_context(|| {
        format!(
            "API key required: pass --key, set ISOL8_API_KEY, or run `isol8 login --host {host}`"
        )
    })?;
    let engine = isol8::RemoteEngine::new(host, &key, args.session_id.clone(), options)?;
    tokio::select! {
        status = execute(&engine, req, args, input, memory) => status,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted");
            Ok(130)
        }
    }
}

/// The line `--no-stream` prints on stderr when the output was cut at `maxOutputSize`,
/// after the program's own stderr (`stderr`, which it starts on a line of its own).
fn truncation_warning(stderr: &str) -> String {
    let sep = if stderr.is_empty() || stderr.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    format!("{sep}warning: output was truncated at the output limit (--max-output / maxOutputSize)")
}

/// The memory limit a run gets (`--memory`, else the configuration's, else the default),
/// as the `MEMORY LIMIT EXCEEDED` line names it.
fn memory_limit(options: &EngineOptions) -> String {
    options
        .memory_limit
        .clone()
        .unwrap_or_else(|| isol8::settings::DEFAULT_MEMORY.to_string())
}

/// The stderr line for a run that ended for `reason` (none for a normal exit, and none
/// for a timeout, whose line comes from its own marker), before the truncation warning.
fn reason_line(reason: Option<ExitReason>, exit_code: i32, memory: &str) -> Option<String> {
    isol8::outcome::reason_line(reason?, exit_code, Some(memory))
}

async fn execute(
    engine: &dyn Engine,
    req: ExecutionRequest,
    args: &RunArgs,
    input: Input,
    memory: &str,
) -> Result<i32> {
    let mut out_file = match &args.out {
        Some(p) => Some(
            std::fs::File::create(p).with_context(|| format!("cannot create `{}`", p.display()))?,
        ),
        None => None,
    };
    // Network logs come with the whole result, so --log-network buffers.
    if args.json || args.no_stream || args.log_network {
        // A remote interactive run streams no output files or network logs.
        let full = args.host.is_some() && (args.log_network || !args.output_path.is_empty());
        let result = crate::input::buffered(engine, req, input, full).await?;
        if let Some(f) = out_file.as_mut() {
            f.write_all(result.stdout.as_bytes())?;
        }
        if args.json {
            println!("{}", serde_json::to_string_pretty(&result)?);
        } else {
            print!("{}", result.stdout);
            std::io::stdout().flush()?;
            eprint!("{}", result.stderr);
            if let Some(line) = reason_line(result.exit_reason, result.exit_code, memory) {
                let sep = if result.stderr.is_empty() || result.stderr.ends_with('\n') {
                    ""
                } else {
                    "\n"
                };
                eprintln!("{sep}{line}");
            }
            if result.truncated {
                eprintln!("{}", truncation_warning(&result.stderr));
            }
            for l in result.network_logs.iter().flatten() {
                eprintln!(
                    "[network] {} {} {}{} ({} ms)",
                    l.action, l.method, l.host, l.path, l.duration_ms
                );
            }
        }
        return Ok(result.exit_code);
    }
    let mut events = crate::input::stream(engine, req, input).await?;
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let mut status = None;
    // An `error` event that is not the timeout's: the run failed, unless an `exit` saying
    // why the program ended follows (a lost sandbox announces itself so).
    let mut failure = None;
    let mut last_byte = b'\n';
    while let Some(ev) = events.next().await {
        match ev.kind {
            StreamEventType::Stdout => {
                stdout.write_all(ev.data.as_bytes())?;
                stdout.flush()?;
                if let Some(f) = out_file.as_mut() {
                    f.write_all(ev.data.as_bytes())?;
                }
            }
            StreamEventType::Stderr => {
                stderr.write_all(ev.data.as_bytes())?;
                stderr.flush()?;
                if let Some(b) = ev.data.as_bytes().last() {
                    last_byte = *b;
                }
            }
            StreamEventType::Error if ev.data == isol8::output::TIMEOUT_EVENT => {
                writeln!(stderr, "{}", isol8::output::TIMEOUT_TRAILER)?;
                last_byte = b'\n';
            }
            // Announces the reason the `exit` event carries; its line is printed there.
            StreamEventType::Error if isol8::outcome::is_reason_event(&ev.data) => {}
            StreamEventType::Error => {
                failure.get_or_insert(ev.data);
            }
            StreamEventType::Exit => {
                let code = ev.data.parse().unwrap_or(1);
                status = Some(code);
                if ev.exit_reason.is_some() {
                    if let Some(why) = failure.take() {
                        tracing::debug!(%why, "the run's sandbox was lost");
                    }
                }
                let sep = if last_byte == b'\n' { "" } else { "\n" };
                if let Some(line) = reason_line(ev.exit_reason, code, memory) {
                    writeln!(stderr, "{sep}{line}")?;
                } else if ev.exit_reason == Some(ExitReason::OutputLimit) {
                    writeln!(stderr, "{sep}{}", truncation_warning(""))?;
                }
            }
        }
    }
    if let Some(message) = failure {
        bail!("{message}");
    }
    Ok(status.unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_truncation_warning_is_one_line_of_its_own() {
        assert_eq!(truncation_warning("").lines().count(), 1);
        assert_eq!(truncation_warning("err\n").lines().count(), 1);
        let after_partial = truncation_warning("partial");
        assert!(after_partial.starts_with('\n'), "{after_partial:?}");
        assert!(after_partial.contains("truncated"));
    }
}

//! The runtime registry: which image runs a language, how inline code and files are
//! launched, and which file extensions select it.
//!
//! The registry is open: library users [`RuntimeRegistry::register`] their own runtimes.
//! Detection by extension follows registration order (python, node, bun, bash, deno for
//! the built-ins), so `.ts` is Bun's and Deno owns `.mts`. The sixth built-in, `agent`
//! (the pi coding agent, see [`agent`]), selects no extension: its `code` is a prompt.

pub mod agent;

use std::collections::BTreeMap;

use crate::{Error, Result};

/// How a runtime runs code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    /// Name used in requests (`python`).
    pub name: String,
    /// Image that runs it (`isol8:python`).
    pub image: String,
    /// File extensions (with the dot) that select this runtime; the first is the default.
    pub extensions: Vec<String>,
    /// Argv prefix for inline code (the code is appended), if the runtime supports it.
    pub inline: Option<Vec<String>>,
    /// Argv prefix for running a file (the path is appended).
    pub file: Vec<String>,
    /// Argv prefix for installing packages (names are appended), if supported.
    pub install: Option<Vec<String>>,
    /// Environment the runtime needs (set before the request's own variables).
    pub env: BTreeMap<String, String>,
    /// The runtime is a coding agent ([`agent`]): its `code` is a prompt, always passed
    /// inline as the last argument after `-p`, a request's `agentFlags` are split into
    /// argv items before it, and it needs the network ([`agent::check_network`]).
    pub coding_agent: bool,
    /// Defaults this runtime's sandboxes get where the options leave a value unset.
    pub defaults: RuntimeDefaults,
    /// How a pooled sandbox keeps an interpreter of this runtime started and waiting for
    /// the next inline program (`None`: every program starts fresh).
    pub prestart: Option<Prestart>,
    /// A shared object in the image that the interpreter running a request's `code`
    /// loads when it starts fresh ([`isol8_protocol::agent::Step::preload`]):
    /// [`TEARDOWN`]'s path for Bun, which has no pre-started interpreter. `None` for the
    /// runtimes that pre-start: their fresh starts stay plain interpreters (the way out
    /// for a program that depends on starting fresh), and their pre-started ones load
    /// [`Prestart::preload`].
    pub code_preload: Option<&'static str>,
}

/// A pre-started interpreter of a runtime (see
/// [`isol8_protocol::agent::PrestartSpec`]): a pooled sandbox starts `argv` after each
/// reset, and the next execution whose only step is the runtime's inline command hands
/// its code to it instead of starting the interpreter, unless a variable in
/// `startup_env` differs from the sandbox's default environment (the interpreter has
/// already read those).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prestart {
    /// The waiting process: the interpreter running a loader.
    pub argv: Vec<String>,
    /// Variables read while the interpreter (or the C library) starts: names, or
    /// prefixes ending in `*`.
    pub startup_env: Vec<String>,
    /// Descriptor of the loader's request pipe, the stdin and ready pipes after it
    /// ([`isol8_protocol::agent::PrestartSpec::first_fd`]).
    pub first_fd: i32,
    /// The loader can take the execution's stdin; when false, executions that feed stdin
    /// start fresh.
    pub serves_stdin: bool,
    /// The interpreter runs its code from this file, named at the end of `argv`: the
    /// served step is the runtime's file command on it (inline code the engine writes
    /// there), not the inline command
    /// ([`isol8_protocol::agent::PrestartSpec::script`]).
    pub script: Option<String>,
    /// The request comes on stdin and the ready byte goes to stdout
    /// ([`isol8_protocol::agent::PrestartSpec::stdio`]).
    pub stdio: bool,
    /// A shared object in the image that the waiting process loads
    /// ([`isol8_protocol::agent::PrestartSpec::preload`]): [`TEARDOWN`]'s path for the
    /// built-in runtimes.
    pub preload: Option<&'static str>,
}

/// A file that a runtime's image carries for isol8 (root-owned, mode 0644), such as a
/// pre-start loader that the interpreter must read from a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageFile {
    /// Absolute path in the image.
    pub path: &'static str,
    /// The file's bytes.
    pub contents: &'static [u8],
}

/// The teardown library (`preload/teardown.rs`, built by this crate's build script): a
/// shared object with no dependency that a pre-started interpreter loads
/// ([`Prestart::preload`]). At the process's exit, after the runtime's own exit handlers,
/// it starts a task that shares the process's memory and dies with it, so the kernel
/// frees that memory after the exit has been reported instead of before. Bun, which
/// starts fresh, loads it too ([`Runtime::code_preload`]). `isol8 setup` puts it in the
/// python, node, bun and deno images.
pub const TEARDOWN: ImageFile = ImageFile {
    path: "/usr/local/lib/isol8/libisol8-teardown.so",
    contents: include_bytes!(concat!(env!("OUT_DIR"), "/libisol8-teardown.so")),
};

/// Start-up variables of every interpreter: the locale and `TZ` (read by the C library
/// or ICU) and what the C library and the dynamic loader read.
const LIBC_STARTUP_ENV: &[&str] = &[
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "LD_*",
    "GLIBC_TUNABLES",
    "MALLOC_*",
];

/// `own` start-up variables and [`LIBC_STARTUP_ENV`].
fn startup_env(own: &[&str]) -> Vec<String> {
    argv(own)
        .into_iter()
        .chain(argv(LIBC_STARTUP_ENV))
        .collect()
}

/// The loader a pre-started `python3` runs (see the file's own comments).
const PYTHON_LOADER: &str = include_str!("prestart.py");

/// The preload a pre-started `node` runs (see the file's own comments); `isol8 setup`
/// puts it in the node image.
pub const NODE_LOADER: ImageFile = ImageFile {
    path: "/usr/local/lib/isol8/prestart.js",
    contents: include_bytes!("prestart.js"),
};

/// Descriptor of the node loader's request pipe (`prestart.js` reads 100 to 102): above
/// the ~17 descriptors Node.js opens while it starts, so they get the numbers they have
/// in a fresh process.
const NODE_FIRST_FD: i32 = 100;

impl Prestart {
    /// Python's: `python3 -c LOADER`. Start-up reads `PYTHON*` (paths, flags, hash seed,
    /// I/O encoding), the locale (`LANG`, `LC_*`), `HOME` (the user site directory) and
    /// `PATH` (`sys.executable`); the C library and dynamic loader read `LD_*`,
    /// `GLIBC_TUNABLES` and `MALLOC_*`; `TZ` is kept to be safe.
    pub fn python() -> Prestart {
        Prestart {
            argv: argv(&["python3", "-c", PYTHON_LOADER]),
            startup_env: startup_env(&["PYTHON*", "HOME", "PATH"]),
            first_fd: isol8_protocol::agent::PRESTART_FIRST_FD,
            serves_stdin: true,
            script: None,
            stdio: false,
            preload: Some(TEARDOWN.path),
        }
    }

    /// Node.js's: `node --require LOADER --eval ''` ([`NODE_LOADER`]), which hands the
    /// code to Node.js's own `-e` evaluation. Start-up reads `NODE_*` (`NODE_OPTIONS`,
    /// `NODE_PATH`, `NODE_EXTRA_CA_CERTS`, …), `HOME` (the global module folders), libuv's
    /// `UV_*`, OpenSSL's `OPENSSL_*` and `SSL_CERT_*`, the locale and `TZ` (ICU), and what
    /// the C library and dynamic loader read. It cannot take stdin (Node.js has no way to
    /// move a descriptor to 0): executions that feed stdin start fresh.
    pub fn node() -> Prestart {
        Prestart {
            argv: argv(&["node", "--require", NODE_LOADER.path, "--eval", ""]),
            startup_env: startup_env(&["NODE_*", "UV_*", "HOME", "OPENSSL_*", "SSL_CERT_*"]),
            first_fd: NODE_FIRST_FD,
            serves_stdin: false,
            script: None,
            stdio: false,
            preload: Some(TEARDOWN.path),
        }
    }

    /// Deno's: `deno run <run's permissions> --preload LOADER /sandbox/main.mts`
    /// ([`DENO_LOADER`]; `run` is the runtime's file command). Deno evaluates preloads
    /// before it reads the main module, so the loader waits there while the execution
    /// writes `/sandbox/main.mts`, and Deno then loads and runs it as `deno run` would.
    /// Deno offers no way to use a descriptor by number without `--allow-all`, so the
    /// request comes on stdin and the ready byte goes to stdout: a program finds stdin an
    /// empty pipe rather than `/dev/null`, and executions that feed stdin start fresh.
    /// Start-up reads `DENO_*`, `NO_COLOR`, `RUST_*`, the proxy variables (the module
    /// fetcher's client), `NPM_CONFIG_*`, `HOME`, `XDG_*`, `SSL_CERT_*`, the locale, `TZ`
    /// and what the C library reads.
    pub fn deno(run: &[&str]) -> Prestart {
        let script = format!(
            "{}/main{DENO_EXTENSION}",
            isol8_protocol::layout::SANDBOX_ROOT
        );
        let mut command = argv(run);
        command.extend([
            "--preload".to_string(),
            DENO_LOADER.path.to_string(),
            script.clone(),
        ]);
        Prestart {
            argv: command,
            startup_env: startup_env(&[
                "DENO_*",
                "NO_COLOR",
                "FORCE_COLOR",
                "RUST_*",
                "HTTP_PROXY",
                "HTTPS_PROXY",
                "ALL_PROXY",
                "NO_PROXY",
                "http_proxy",
                "https_proxy",
                "all_proxy",
                "no_proxy",
                "NPM_CONFIG_*",
                "npm_config_*",
                "HOME",
                "XDG_*",
                "SSL_CERT_*",
            ]),
            first_fd: isol8_protocol::agent::PRESTART_FIRST_FD,
            serves_stdin: false,
            script: Some(script),
            stdio: true,
            preload: Some(TEARDOWN.path),
        }
    }
}

/// The preload a pre-started `deno` runs (see the file's own comments); `isol8 setup`
/// puts it in the deno image.
pub const DENO_LOADER: ImageFile = ImageFile {
    path: "/usr/local/lib/isol8/prestart-deno.js",
    contents: include_bytes!("prestart-deno.js"),
};

/// The extension of Deno's inline code file (its runtime's first).
const DENO_EXTENSION: &str = ".mts";

/// Deno's file command: `deno run` with the sandbox's permissions.
const DENO_RUN: &[&str] = &[
    "deno",
    "run",
    "--allow-read=/sandbox,/tmp",
    "--allow-write=/sandbox,/tmp",
    "--allow-env",
    "--allow-net",
];

/// Sandbox defaults of one runtime that differ from every runtime's (SPEC section 3):
/// applied where the options leave the value unset, to single runs and to a persistent
/// session's container (made at the session's first execution, whose runtime the
/// session is then bound to).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeDefaults {
    /// Process limit (`pidsLimit`).
    pub pids_limit: Option<i64>,
    /// Size of `/sandbox` as written in options (`sandboxSize`, e.g. `2g`).
    pub sandbox_size: Option<String>,
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

impl Runtime {
    /// A runtime named `name` running in `image`, launched as `file_cmd FILE`.
    pub fn new(name: &str, image: &str, extensions: &[&str], file_cmd: &[&str]) -> Self {
        Runtime {
            name: name.to_string(),
            image: image.to_string(),
            extensions: argv(extensions),
            inline: None,
            file: argv(file_cmd),
            install: None,
            env: BTreeMap::new(),
            coding_agent: false,
            defaults: RuntimeDefaults::default(),
            prestart: None,
            code_preload: None,
        }
    }

    /// The built-in `agent` runtime: pi in `isol8:agent` (see [`agent`]), with the
    /// reference's larger defaults (200 processes, a 2 GiB `/sandbox`: pi spawns a process
    /// per tool call, and projects need room).
    pub fn agent() -> Self {
        let prefix = agent::fixed_prefix();
        let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
        let mut rt = Runtime::new(agent::NAME, agent::IMAGE, &[], &prefix)
            .with_inline(&prefix)
            .with_install(&[
                "npm",
                "install",
                "--prefix",
                "/sandbox",
                "--no-audit",
                "--no-fund",
                "--no-update-notifier",
            ])
            .with_env("NODE_PATH", "/sandbox/node_modules")
            // No update checks or install telemetry: pi's startup stays off the network.
            .with_env("PI_OFFLINE", "1")
            .with_env("PI_TELEMETRY", "0")
            .with_env("NO_COLOR", "1");
        rt.coding_agent = true;
        rt.defaults = RuntimeDefaults {
            pids_limit: Some(200),
            sandbox_size: Some("2g".into()),
        };
        rt
    }

    /// Adds inline-code support: `inline_cmd CODE`.
    pub fn with_inline(mut self, inline_cmd: &[&str]) -> Self {
        self.inline = Some(argv(inline_cmd));
        self
    }

    /// Adds a package-install command: `install_cmd PKG...`.
    pub fn with_install(mut self, install_cmd: &[&str]) -> Self {
        self.install = Some(argv(install_cmd));
        self
    }

    /// Keeps an interpreter pre-started in pooled sandboxes ([`Prestart`]).
    pub fn with_prestart(mut self, prestart: Prestart) -> Self {
        self.prestart = Some(prestart);
        self
    }

    /// Has the interpreter running `code` load `path` when it starts fresh
    /// ([`Runtime::code_preload`]).
    pub fn with_code_preload(mut self, path: &'static str) -> Self {
        self.code_preload = Some(path);
        self
    }

    /// Adds an environment variable the runtime needs.
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.to_string(), value.to_string());
        self
    }

    /// The default file extension (with the dot).
    pub fn default_extension(&self) -> &str {
        self.extensions.first().map(String::as_str).unwrap_or("")
    }
}

/// The set of known runtimes, in registration order.
#[derive(Debug, Clone)]
pub struct RuntimeRegistry {
    runtimes: Vec<Runtime>,
}

impl Default for RuntimeRegistry {
    fn default() -> Self {
        Self::builtin()
    }
}

impl RuntimeRegistry {
    /// The six built-in runtimes: the five languages in SPEC order, then `agent`.
    pub fn builtin() -> Self {
        let runtimes = vec![
            Runtime::new("python", "isol8:python", &[".py"], &["python3"])
                .with_inline(&["python3", "-c"])
                .with_install(&[
                    "pip",
                    "install",
                    "--no-cache-dir",
                    "--disable-pip-version-check",
                    "--no-input",
                    "--progress-bar",
                    "off",
                    "--target",
                    "/sandbox/.local/pypackages",
                ])
                .with_env(
                    "PYTHONPATH",
                    "/sandbox/.local/pypackages:/opt/isol8/pypackages",
                )
                .with_env("PYTHONUNBUFFERED", "1")
                .with_env("PYTHONDONTWRITEBYTECODE", "1")
                .with_prestart(Prestart::python()),
            Runtime::new("node", "isol8:node", &[".mjs", ".js", ".cjs"], &["node"])
                .with_inline(&["node", "-e"])
                .with_install(&[
                    "npm",
                    "install",
                    "--prefix",
                    "/sandbox",
                    "--no-audit",
                    "--no-fund",
                    "--no-update-notifier",
                ])
                .with_env("NODE_PATH", "/sandbox/node_modules")
                .with_prestart(Prestart::node()),
            Runtime::new("bun", "isol8:bun", &[".ts"], &["bun", "run"])
                .with_inline(&["bun", "-e"])
                .with_install(&["bun", "add", "--cwd", "/sandbox"])
                .with_env("BUN_RUNTIME_TRANSPILER_CACHE_PATH", "0")
                .with_code_preload(TEARDOWN.path),
            Runtime::new("bash", "isol8:bash", &[".sh"], &["bash"]).with_inline(&["bash", "-c"]),
            Runtime::new("deno", "isol8:deno", &[DENO_EXTENSION], DENO_RUN)
                .with_install(&["deno", "cache"])
                .with_env("DENO_DIR", "/tmp/deno")
                .with_env("DENO_NO_UPDATE_CHECK", "1")
                .with_env("NO_COLOR", "1")
                .with_prestart(Prestart::deno(DENO_RUN)),
            Runtime::agent(),
        ];
        RuntimeRegistry { runtimes }
    }

    /// The same runtimes, each started plain: no pre-started interpreter ([`Prestart`])
    /// and no preloaded library ([`Runtime::code_preload`]). What an engine with
    /// `EngineConfig::fresh_starts` runs.
    pub fn plain_starts(mut self) -> Self {
        for runtime in &mut self.runtimes {
            runtime.prestart = None;
            runtime.code_preload = None;
        }
        self
    }

    /// Adds a runtime. Its extensions are detected after those registered before it.
    pub fn register(&mut self, runtime: Runtime) -> Result<()> {
        if runtime.name.is_empty() || runtime.file.is_empty() || runtime.image.is_empty() {
            return Err(Error::InvalidRequest(
                "a runtime needs a name, an image and a file command".into(),
            ));
        }
        if self.runtimes.iter().any(|r| r.name == runtime.name) {
            return Err(Error::InvalidRequest(format!(
                "runtime `{}` is already registered",
                runtime.name
            )));
        }
        self.runtimes.push(runtime);
        Ok(())
    }

    /// The runtime called `name`, or an error listing the available ones.
    pub fn get(&self, name: &str) -> Result<&Runtime> {
        self.runtimes
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| {
                Error::InvalidRequest(format!(
                    "unknown runtime `{name}`; available runtimes: {}",
                    self.names().join(", ")
                ))
            })
    }

    /// The runtime a file name selects by its extension (registration order wins).
    pub fn detect(&self, file_name: &str) -> Option<&Runtime> {
        let lower = file_name.to_ascii_lowercase();
        self.runtimes.iter().find(|r| {
            r.extensions
                .iter()
                .any(|ext| lower.ends_with(&ext.to_ascii_lowercase()))
        })
    }

    /// Names of all runtimes, in registration order.
    pub fn names(&self) -> Vec<&str> {
        self.runtimes.iter().map(|r| r.name.as_str()).collect()
    }

    /// All runtimes, in registration order.
    pub fn iter(&self) -> impl Iterator<Item = &Runtime> {
        self.runtimes.iter()
    }
}

#[cfg(test)]
mod teardown;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_follows_registration_order() {
        let reg = RuntimeRegistry::builtin();
        let detect = |f: &str| reg.detect(f).map(|r| r.name.as_str());
        assert_eq!(detect("a.py"), Some("python"));
        assert_eq!(detect("a.mjs"), Some("node"));
        assert_eq!(detect("a.js"), Some("node"));
        assert_eq!(detect("a.cjs"), Some("node"));
        assert_eq!(detect("a.ts"), Some("bun"));
        assert_eq!(detect("a.mts"), Some("deno"));
        assert_eq!(detect("a.sh"), Some("bash"));
        assert_eq!(detect("a.rb"), None);
        // The agent's code is a prompt: no file selects it.
        assert_eq!(detect("prompt.txt"), None);
        assert_eq!(detect("a"), None);
    }

    #[test]
    fn the_agent_runtime_is_built_in_with_its_defaults() {
        let reg = RuntimeRegistry::builtin();
        let agent = reg.get("agent").expect("built in");
        assert_eq!(agent.image, "isol8:agent");
        assert!(agent.coding_agent);
        assert!(agent.extensions.is_empty());
        assert_eq!(agent.defaults.pids_limit, Some(200));
        assert_eq!(agent.defaults.sandbox_size.as_deref(), Some("2g"));
        assert_eq!(agent.inline.as_deref(), Some(&agent::fixed_prefix()[..]));
        assert_eq!(
            reg.get("python").expect("python").defaults,
            RuntimeDefaults::default()
        );
    }

    #[test]
    fn unknown_runtime_lists_available_ones() {
        let reg = RuntimeRegistry::builtin();
        let msg = reg.get("cobol").expect_err("unknown").to_string();
        assert!(
            msg.contains("cobol") && msg.contains("python, node, bun, bash, deno, agent"),
            "{msg}"
        );
    }

    #[test]
    fn registered_runtime_is_detected_and_duplicates_refused() {
        let mut reg = RuntimeRegistry::builtin();
        reg.register(Runtime::new("lua", "isol8:lua", &[".lua"], &["lua"]))
            .expect("new runtime");
        assert_eq!(reg.detect("x.lua").map(|r| r.name.as_str()), Some("lua"));
        assert!(reg
            .register(Runtime::new("lua", "x", &[], &["lua"]))
            .is_err());
        assert!(reg.get("lua").is_ok());
    }
}

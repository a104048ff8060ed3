//! isol8's shared test helpers: a dev-only crate (`publish = false`, only ever a
//! `[dev-dependencies]` entry) used by the integration tests of every crate.
//!
//! # Tests that need Docker (or the registries, PostgreSQL, MySQL, root)
//!
//! One attribute replaces the hand-written guards:
//!
//! ```ignore
//! #[isol8_testkit::test(docker)]
//! async fn runs_python() {
//!     let engine = isol8_testkit::engine(EngineOptions::default()).await;
//!     // …
//! }
//!
//! #[isol8_testkit::test(docker, registries, flavor = "multi_thread")]
//! async fn installs_a_package() { /* … */ }
//! ```
//!
//! The bare words name what the test needs ([`Need`]: `docker`, `registries`, `postgres`,
//! `mysql`, `root`), checked in that order before the body runs; `key = value` arguments go to
//! `#[tokio::test]` (an `async fn` becomes a `#[tokio::test]`, any other a `#[test]`).
//! When something is missing:
//!
//! - in CI (`CI` set to anything but empty, `0` or `false`) the test **fails**, saying
//!   what was missing: CI always provisions Docker, the images, PostgreSQL, MariaDB and
//!   the registries, so their absence is a broken machine, not a reason to pass;
//! - elsewhere it prints `SKIPPED: <test>: <reason>` on stderr, appends `<test>\t<reason>`
//!   to the file named by `ISOL8_TEST_SKIP_LOG` (when set), and returns.
//!
//! Inside such a test the helpers that need Docker ([`engine`], [`engine_with`], …)
//! panic on failure: the precondition was checked, so a failure there is a real one.
//!
//! ## Why a run-time skip that is counted, not `#[ignore]`
//!
//! Neither libtest nor nextest has a run-time "skipped" outcome: a test that returns
//! early is reported as passed. Two honest ways were open: (a) skip at run time, say so
//! and have the suite count the skips; (b) mark every Docker test `#[ignore]` and run
//! them with `--run-ignored all` where Docker exists. (b) decides at compile time what
//! is only known at run time (is a daemon there?), so on a machine *with* Docker a plain
//! `cargo test` / `cargo nextest run -p isol8 --test execution` would silently stop
//! running the integration tests, and `--run-ignored all` would also pick up the
//! daemon-restart test that must run alone. So this crate does (a): every skip is
//! written to `ISOL8_TEST_SKIP_LOG`, and `scripts/test.sh` — which sets it — prints the
//! skipped tests and closes with `tests: N passed, N failed, N skipped`, where the
//! passed count excludes the run-time skips and the skipped count includes them (plus
//! the runner's own ignored tests). The runner's summary line is printed just above it.

use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

mod docker;
pub mod fixtures;
pub mod model_stub;
pub mod prometheus;
mod requests;
mod stdin;

pub use docker::{
    assert_clean, containers_created, containers_labelled, containers_of_pid, engine, engine_with,
    leftovers,
};
pub use isol8_testkit_macros::test;
pub use requests::{code, run};
pub use stdin::{
    assert_big_output, big_input, big_output, feed, interactive_both, stdout_and_exit, StdinCase,
    BIG_IO_CODE, BIG_OUTPUT_BYTES, INPUT, STDIN_CASES,
};

/// Items the [`test`] attribute's expansion names; not for direct use.
#[doc(hidden)]
pub mod __private {
    pub use tokio;
}

/// Environment variable naming the file every run-time skip is appended to, one
/// `<test>\t<reason>` line each (`scripts/test.sh` counts them).
pub const SKIP_LOG_ENV: &str = "ISOL8_TEST_SKIP_LOG";

/// Environment variable holding the PostgreSQL URL of the key-store tests.
pub const POSTGRES_URL_ENV: &str = "ISOL8_TEST_POSTGRES_URL";

/// Environment variable holding the MySQL/MariaDB URL (`mysql://…`) of the key-store
/// tests.
pub const MYSQL_URL_ENV: &str = "ISOL8_TEST_MYSQL_URL";

/// The package-registry hosts the tests reach (through the egress proxy or the
/// `codeUrl` fetcher).
pub const REGISTRY_HOSTS: [&str; 4] = [
    "pypi.org",
    "files.pythonhosted.org",
    "registry.npmjs.org",
    "jsr.io",
];

/// Something a test needs from the machine, named in `#[isol8_testkit::test(...)]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// `docker`: a reachable Docker daemon (`DOCKER_HOST` or the default socket) with
    /// the isol8 images built (`isol8:bash` is looked up).
    Docker,
    /// `registries`: the package registries answer on port 443 (pypi.org is tried, for
    /// at most 10 s).
    Registries,
    /// `postgres`: `ISOL8_TEST_POSTGRES_URL` names a PostgreSQL database
    /// (`scripts/test.sh` starts one); read it with [`postgres_url`].
    Postgres,
    /// `mysql`: `ISOL8_TEST_MYSQL_URL` names a MySQL or MariaDB database
    /// (`scripts/test.sh` starts MariaDB); read it with [`mysql_url`].
    Mysql,
    /// `root`: this process is root or may use password-less sudo (restarting the
    /// Docker daemon needs it).
    Root,
}

impl Need {
    /// Why this need is not met here, or `None` when it is.
    pub fn unmet(self) -> Option<String> {
        match self {
            Need::Docker => docker::unavailable(),
            Need::Registries => registries_unreachable(),
            Need::Postgres => match std::env::var(POSTGRES_URL_ENV) {
                Ok(u) if !u.is_empty() => None,
                _ => Some(format!(
                    "set {POSTGRES_URL_ENV} to test the PostgreSQL key store (scripts/test.sh starts PostgreSQL)"
                )),
            },
            Need::Mysql => match std::env::var(MYSQL_URL_ENV) {
                Ok(u) if !u.is_empty() => None,
                _ => Some(format!(
                    "set {MYSQL_URL_ENV} to test the MySQL key store (scripts/test.sh starts MariaDB)"
                )),
            },
            Need::Root => {
                // SAFETY: geteuid has no preconditions.
                let root = unsafe { libc::geteuid() } == 0;
                let sudo = || {
                    std::process::Command::new("sudo")
                        .args(["-n", "true"])
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success())
                };
                (!root && !sudo()).then(|| {
                    "restarting the Docker daemon needs root or password-less sudo".to_string()
                })
            }
        }
    }
}

/// True when running under CI (`CI` set to anything but empty, `0` or `false`), where a
/// test never skips.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The check the [`test`] attribute runs first: `false` when every need is met. When
/// one is not, in CI this panics naming it; elsewhere it reports `test` as skipped
/// (stderr and [`SKIP_LOG_ENV`]) and returns `true`, and the test returns.
#[doc(hidden)]
pub fn skipped(test: &str, needs: &[Need]) -> bool {
    match needs.iter().find_map(|n| n.unmet()) {
        Some(why) => skip(test, &why),
        None => false,
    }
}

/// Skips `test` for a reason the [`test`] attribute cannot check (a tool of its own,
/// e.g. a Python package): in CI this panics with `why` (CI provides everything);
/// elsewhere it reports `test` as skipped (stderr and [`SKIP_LOG_ENV`]) and returns
/// `true`, and the test should return.
pub fn skip(test: &str, why: &str) -> bool {
    if in_ci() {
        panic!("{test}: {why}; CI must provide it (CI is set, so tests never skip)");
    }
    eprintln!("SKIPPED: {test}: {why}");
    if let Some(path) = std::env::var_os(SKIP_LOG_ENV).filter(|p| !p.is_empty()) {
        // One short write on an O_APPEND file: lines of concurrent tests do not mix.
        let line = format!("{test}\t{}\n", why.replace(['\n', '\t'], " "));
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            panic!(
                "{test} skipped, but the skip could not be recorded in {} ({SKIP_LOG_ENV}): {e}",
                std::path::Path::new(&path).display()
            );
        }
    }
    true
}

/// Why the package registries cannot be reached from here (pypi.org:443, at most 10 s),
/// or `None`. Looked up once per process.
fn registries_unreachable() -> Option<String> {
    static RESULT: OnceLock<Option<String>> = OnceLock::new();
    RESULT
        .get_or_init(|| {
            use std::net::{TcpStream, ToSocketAddrs};
            let addrs = match ("pypi.org", 443).to_socket_addrs() {
                Ok(a) => a.collect::<Vec<_>>(),
                Err(e) => return Some(format!("pypi.org does not resolve here ({e})")),
            };
            let reached = addrs
                .iter()
                .any(|a| TcpStream::connect_timeout(a, Duration::from_secs(10)).is_ok());
            (!reached).then(|| "pypi.org is not reachable from this machine".to_string())
        })
        .clone()
}

/// The PostgreSQL URL of `ISOL8_TEST_POSTGRES_URL`, in a test marked `postgres`.
///
/// # Panics
/// When it is not set: the test lacks `#[isol8_testkit::test(postgres)]`.
pub fn postgres_url() -> String {
    match std::env::var(POSTGRES_URL_ENV) {
        Ok(u) if !u.is_empty() => u,
        _ => {
            panic!("{POSTGRES_URL_ENV} is not set: mark the test #[isol8_testkit::test(postgres)]")
        }
    }
}

/// The MySQL/MariaDB URL of `ISOL8_TEST_MYSQL_URL`, in a test marked `mysql`.
///
/// # Panics
/// When it is not set: the test lacks `#[isol8_testkit::test(mysql)]`.
pub fn mysql_url() -> String {
    match std::env::var(MYSQL_URL_ENV) {
        Ok(u) if !u.is_empty() => u,
        _ => panic!("{MYSQL_URL_ENV} is not set: mark the test #[isol8_testkit::test(mysql)]"),
    }
}

/// The `network.exemptRanges` the registry tests need: every address the registry hosts
/// resolve to *right now* that the egress address policy would refuse (on some machines
/// the registries are reached through a gateway inside a documentation range). Looked
/// up at test time, never hard-coded; empty where the registries have public addresses.
pub fn registry_exemptions() -> Vec<String> {
    use std::net::ToSocketAddrs;
    let policy = isol8::egress::AddressPolicy::default();
    let mut out: Vec<String> = REGISTRY_HOSTS
        .iter()
        .filter_map(|h| (*h, 443).to_socket_addrs().ok())
        .flatten()
        .map(|a| a.ip())
        .filter(|ip| policy.refusal(*ip).is_some())
        .map(|ip| ip.to_string())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Peak resident memory of this test process, MiB: `VmHWM` of `/proc/self/status`
/// (in kB there).
///
/// # Panics
/// When `/proc/self/status` cannot be read or has no `VmHWM` line (not Linux).
pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM in /proc/self/status");
    kb / 1024.0
}

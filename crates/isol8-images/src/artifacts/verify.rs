//! Verifying a download against its pin: npm's Subresource Integrity strings and PyPI's
//! SHA-256.

use base64::Engine as _;
use sha2::{Digest as _, Sha256, Sha512};

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

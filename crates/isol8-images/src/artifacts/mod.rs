//! Runtime binaries that Debian does not ship in a usable version: Node.js 22, Bun and
//! Deno, each an official upstream build taken from a package registry (npm, PyPI).
//!
//! Every artifact is pinned here by exact version **and** digest (npm's `dist.integrity`,
//! PyPI's sha256), so a content hash is computable offline and every download is verified
//! before use. Downloads happen on the host (reqwest, system trust roots, `HTTPS_PROXY`
//! honoured); the binary of a verified download is extracted into [`cache_dir`], so later
//! builds need neither the network nor another extraction.
//!
//! This file holds what an [`Artifact`] is; the pins themselves are in `pins.rs`, digest
//! checks in `verify.rs`, the download cache and downloading in `fetch.rs`, and taking the
//! binary out of an npm tarball or a PyPI wheel in `extract.rs`.

mod extract;
mod fetch;
mod pins;
#[cfg(test)]
mod tests;
mod verify;

pub use extract::{extract, extract_to};
pub(crate) use fetch::download;
pub use fetch::{cache_dir, cached_path, fetch, is_cached};
pub use pins::{bun_for_host, BUN, BUN_BASELINE, DENO, NODE, NPM, WHOLE};
pub use verify::{verify_integrity, Digest};

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

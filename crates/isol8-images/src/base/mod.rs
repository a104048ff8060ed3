//! The shared base image `isol8-base:bookworm`, from one of two sources:
//!
//! * **registry** (default): `debian:bookworm-slim` pulled through the Engine API;
//! * **offline** (`isol8 setup --offline`): `debootstrap --variant=minbase bookworm` from
//!   the host's Debian mirror, slimmed like `debian:bookworm-slim` (no docs, manual pages,
//!   translations, package lists or cached packages; the same apt and dpkg settings), and
//!   imported through the Engine API as a streamed tarball (tagged [`ROOTFS_IMAGE`]).
//!
//! Either source is then finished by the same build (`images/base.Dockerfile`: packages
//! upgraded to the current security updates, isol8 labels), and every runtime image is
//! built from the same Dockerfile on top of the result.
//!
//! This file holds the registry pull and the build that finishes either source; the host's
//! Debian sources are read in `sources.rs`, the offline rootfs is bootstrapped and
//! imported in `bootstrap.rs` and slimmed in `slim.rs`.

mod bootstrap;
mod slim;
mod sources;
#[cfg(test)]
mod tests;

pub use bootstrap::bootstrap;
pub use slim::slim_rootfs;
pub use sources::{parse_sources, DebianSources};

use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt as _;

use super::{docker_message, ImageError, SetupEvent, BASE_IMAGE, REGISTRY_BASE};

/// The Debian release every image is built on.
pub const SUITE: &str = "bookworm";

/// Mirror used when the host names none for bookworm.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// Security archive used with [`DEFAULT_MIRROR`].
pub const DEFAULT_SECURITY: &str = "http://deb.debian.org/debian-security";

const BASE_DOCKERFILE: &str = include_str!("../../../../images/base.Dockerfile");

/// Tag of the imported debootstrap rootfs while the base is built from it.
pub const ROOTFS_IMAGE: &str = "isol8-base:rootfs";

/// Pulls [`REGISTRY_BASE`] and builds [`BASE_IMAGE`] from it.
pub async fn pull(
    docker: &Docker,
    force: bool,
    progress: &(dyn Fn(SetupEvent) + Send + Sync),
) -> Result<(), ImageError> {
    progress(SetupEvent::Step {
        runtime: None,
        message: format!("pulling {REGISTRY_BASE}"),
    });
    let (repo, tag) = REGISTRY_BASE
        .split_once(':')
        .unwrap_or((REGISTRY_BASE, "latest"));
    let opts = CreateImageOptionsBuilder::default()
        .from_image(repo)
        .tag(tag)
        .build();
    let mut stream = docker.create_image(Some(opts), None, None);
    let mut last = String::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                let line = match (info.id, info.status) {
                    (Some(id), Some(status)) => format!("{id}: {status}"),
                    (None, Some(status)) => status,
                    _ => continue,
                };
                if line != last {
                    progress(SetupEvent::Output { line: line.clone() });
                    last = line;
                }
            }
            Err(e) => {
                let detail = docker_message(&e);
                return Err(if registry_unreachable(&detail) {
                    ImageError::NoRegistry {
                        image: REGISTRY_BASE.to_string(),
                        detail: one_line(&detail),
                    }
                } else {
                    ImageError::Pull {
                        image: REGISTRY_BASE.to_string(),
                        detail: one_line(&detail),
                    }
                });
            }
        }
    }
    let digest = docker
        .inspect_image(REGISTRY_BASE)
        .await
        .ok()
        .and_then(|i| i.repo_digests)
        .and_then(|d| d.into_iter().next())
        .unwrap_or_else(|| REGISTRY_BASE.to_string());
    finish(
        docker,
        REGISTRY_BASE,
        &format!("registry {digest}"),
        force,
        progress,
    )
    .await
}

/// Builds [`BASE_IMAGE`] from `source` with `images/base.Dockerfile`.
async fn finish(
    docker: &Docker,
    source: &str,
    source_label: &str,
    nocache: bool,
    progress: &(dyn Fn(SetupEvent) + Send + Sync),
) -> Result<(), ImageError> {
    progress(SetupEvent::Step {
        runtime: None,
        message: format!("building {BASE_IMAGE} from {source} (security updates, labels)"),
    });
    let dockerfile = BASE_DOCKERFILE
        .replace("{{SOURCE_LABEL}}", &source_label.replace('"', ""))
        .replace("{{SOURCE}}", source);
    let context = crate::builder::build_context(&dockerfile, &[])?;
    crate::builder::build_image(docker, BASE_IMAGE, context, None, nocache, progress).await
}

/// Whether a pull error means no registry could be reached at all (as opposed to, say, a
/// missing tag or a rate limit).
pub fn registry_unreachable(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "no such host",
        "dial tcp",
        "i/o timeout",
        "timeout exceeded",
        "tls handshake timeout",
        "connection refused",
        "connection reset",
        "network is unreachable",
        "no route to host",
        "temporary failure in name resolution",
        "server misbehaving",
        "proxyconnect",
        "certificate signed by unknown authority",
    ]
    .iter()
    .any(|s| m.contains(s))
}

/// The first line of `s`, at most 200 characters.
fn one_line(s: &str) -> String {
    let line = s
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let mut out: String = line.chars().take(200).collect();
    if line.chars().count() > 200 {
        out.push('…');
    }
    out
}

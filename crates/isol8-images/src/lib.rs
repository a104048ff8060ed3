//! isol8-images: building isol8's runtime images (`isol8 setup`), custom images with
//! baked-in packages (`isol8 build`), and checking them (`isol8 doctor`).
//!
//! * Five images, `isol8:python`, `isol8:node`, `isol8:bun`, `isol8:deno` and `isol8:bash`,
//!   all built from one Dockerfile template (`images/runtime.Dockerfile`, see [`recipe`])
//!   on one base, `isol8-base:bookworm`; and, when asked for (`--runtime agent`),
//!   `isol8:agent`: the node recipe plus the pi coding agent pinned by its lockfile (see
//!   [`pi`]).
//! * The base is `debian:bookworm-slim` pulled through the Engine API, or with `--offline`
//!   a `debootstrap --variant=minbase bookworm` rootfs from the host's Debian mirror,
//!   slimmed like the registry image and imported through the Engine API (see [`base`]).
//!   After the base, both paths run the same Dockerfiles, so what CI tests offline is what
//!   users run.
//! * Node.js, Bun and Deno are official upstream builds fetched on the host from npm and
//!   PyPI, pinned by version and digest, verified and cached (see [`artifacts`]).
//! * Every image carries a content hash (schema version, Dockerfile text, pinned artifact
//!   identities, agent bytes, base image id) in its `isol8.content-hash` label. `setup`
//!   skips an image whose label matches without touching the network, rebuilds it when it
//!   differs, and always rebuilds with `force`.
//! * Images are built with the Docker build API (classic builder) from a tar context made
//!   in memory; the daemon's build output is forwarded as [`SetupEvent::Output`] lines
//!   (see [`builder`]).
//!
//! Where it sits: this crate depends on the engine (`isol8`: labels, the runtime registry,
//! package-name checks, Docker housekeeping), never the other way round, so embedding the
//! engine does not compile image building. The CLI (`isol8 setup`, `isol8 build`,
//! `isol8 doctor`) is its dependent. Both sides name images and labels from the engine
//! (its runtime registry, [`BASE_IMAGE`], the `isol8::LABEL_*` constants), so what this
//! crate writes is what the engine looks up.

pub mod agent;
pub mod artifacts;
pub mod base;
pub mod builder;
pub mod custom;
pub mod event;
pub mod pi;
pub mod recipe;
pub mod setup;
pub mod status;

use std::path::{Path, PathBuf};

use isol8::RuntimeRegistry;

pub use agent::locate_agent;
pub use event::SetupEvent;
pub use recipe::Recipe;
pub use setup::{setup, ImageReport, SetupOptions};
pub use status::{checks, status, ImageStatus};

pub use isol8::BASE_IMAGE;

/// Registry image the base is taken from when a registry is reachable.
pub const REGISTRY_BASE: &str = "debian:bookworm-slim";

/// Command that builds the static agent binary (quoted in error messages).
pub const AGENT_BUILD_COMMAND: &str = "RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --profile agent -p isol8-agent --target x86_64-unknown-linux-gnu";

/// Where `cargo build --profile agent` puts the agent, relative to the workspace root.
pub const AGENT_BUILD_OUTPUT: &str = "target/x86_64-unknown-linux-gnu/agent/isol8-agent";

/// Why an image could not be built or checked. Each variant names the operation that
/// failed and its message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Pulling the base image failed because no container registry could be reached.
    #[error("no container registry is reachable (pulling {image}: {detail}); run `isol8 setup --offline` to bootstrap the images from the Debian mirror instead")]
    NoRegistry {
        /// The image being pulled.
        image: String,
        /// The daemon's error, on one line.
        detail: String,
    },
    /// Pulling the base image failed for another reason.
    #[error("pulling {image} failed: {detail}; retry, or run `isol8 setup --offline` to bootstrap from the Debian mirror")]
    Pull {
        /// The image being pulled.
        image: String,
        /// The daemon's error, on one line.
        detail: String,
    },
    /// The static agent binary was not found.
    #[error("the isol8-agent binary was not found (looked at {searched}); build it with `{AGENT_BUILD_COMMAND}`, or set ISOL8_AGENT_BIN to its path")]
    AgentMissing {
        /// The paths tried, comma-separated.
        searched: String,
    },
    /// The file given as the agent is not a Linux executable.
    #[error("{} is not an ELF executable, so it cannot be the isol8-agent; build the agent with `{AGENT_BUILD_COMMAND}`", path.display())]
    AgentInvalid {
        /// The file.
        path: PathBuf,
    },
    /// The runtime has no image recipe.
    #[error("no image recipe for runtime `{runtime}`; the built-in runtimes are {known}")]
    UnknownRuntime {
        /// The name asked for.
        runtime: String,
        /// The built-in runtimes.
        known: String,
    },
    /// A runtime binary could not be downloaded from its registry.
    #[error(
        "downloading {url} failed: {reason}; check the network (HTTPS_PROXY is honoured) and retry"
    )]
    Download {
        /// What was being downloaded.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// A downloaded runtime binary does not match its pinned digest.
    #[error("{package} downloaded from {url} does not match its pinned digest {expected}; the registry or a proxy served different bytes, so it is not used")]
    DigestMismatch {
        /// `name@version`.
        package: String,
        /// Where it came from.
        url: String,
        /// The pinned digest.
        expected: String,
    },
    /// The binary could not be taken out of a verified download.
    #[error("taking `{member}` out of {package} failed: {reason}")]
    Extract {
        /// `name@version`.
        package: String,
        /// The path inside the archive.
        member: String,
        /// Why it failed.
        reason: String,
    },
    /// Bootstrapping the offline base with debootstrap failed.
    #[error("offline bootstrap failed: {0}")]
    Bootstrap(String),
    /// Importing the bootstrapped rootfs into Docker failed.
    #[error("importing the bootstrapped rootfs as {BASE_IMAGE} failed: {0}")]
    Import(String),
    /// The Docker build of an image failed.
    #[error("building {image} failed: {message}{}; run `isol8 setup` with verbose output to see the whole build log", if tail.is_empty() { String::new() } else { format!(" (last output: {tail})") })]
    Build {
        /// Image being built.
        image: String,
        /// The daemon's error.
        message: String,
        /// The last lines of build output, joined with ` | `.
        tail: String,
    },
    /// A Docker API call failed.
    #[error(
        "docker {op} failed: {detail}; check that the Docker daemon is running (`isol8 doctor`)"
    )]
    Docker {
        /// The operation.
        op: &'static str,
        /// The daemon's error.
        detail: String,
    },
    /// A local file operation failed.
    #[error("cannot {op} {}: {error}", path.display())]
    Io {
        /// What was being done.
        op: String,
        /// On what.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// An internal task failed (a bug).
    #[error("internal error while building images: {0}")]
    Internal(String),
}

impl ImageError {
    pub(crate) fn io(op: &str, path: &Path, error: std::io::Error) -> Self {
        ImageError::Io {
            op: op.to_string(),
            path: path.to_path_buf(),
            error,
        }
    }

    /// `runtime` is not one of the engine's built-in runtimes.
    pub(crate) fn unknown_runtime(runtime: &str) -> Self {
        ImageError::UnknownRuntime {
            runtime: runtime.to_string(),
            known: RuntimeRegistry::builtin().names().join(", "),
        }
    }

    fn docker(op: &'static str, e: &bollard::errors::Error) -> Self {
        ImageError::Docker {
            op,
            detail: docker_message(e),
        }
    }
}

/// The daemon's own message for an API error (without bollard's wrapping).
pub(crate) fn docker_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        bollard::errors::Error::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

/// Image reference of a built-in runtime (`isol8:<runtime>`), as the engine's
/// [`RuntimeRegistry::builtin`] names it.
pub fn image_for(runtime: &str) -> Result<String, ImageError> {
    RuntimeRegistry::builtin()
        .get(runtime)
        .map(|r| r.image.clone())
        .map_err(|_| ImageError::unknown_runtime(runtime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_named_after_runtimes() {
        assert_eq!(image_for("python").expect("built-in"), "isol8:python");
        assert!(image_for("cobol").is_err());
        let builtin = RuntimeRegistry::builtin();
        assert_eq!(
            builtin.names(),
            ["python", "node", "bun", "bash", "deno", "agent"]
        );
        assert_eq!(image_for("agent").expect("built-in"), "isol8:agent");
        for rt in builtin.names() {
            assert!(Recipe::for_runtime(rt).is_ok(), "{rt} has a recipe");
        }
    }

    #[test]
    fn the_no_registry_error_is_one_line_naming_offline() {
        let e = ImageError::NoRegistry {
            image: REGISTRY_BASE.into(),
            detail: "Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup registry-1.docker.io: no such host".into(),
        };
        let msg = e.to_string();
        assert!(!msg.contains('\n'), "{msg}");
        assert!(msg.contains("isol8 setup --offline"), "{msg}");
        assert!(
            msg.starts_with("no container registry is reachable"),
            "{msg}"
        );
    }

    #[test]
    fn build_errors_are_one_line_with_the_last_output() {
        let e = ImageError::Build {
            image: "isol8:python".into(),
            message: "The command '/bin/sh -c apt-get update' returned a non-zero code: 100".into(),
            tail: "E: Unable to locate package python3".into(),
        };
        let msg = e.to_string();
        assert!(!msg.contains('\n'));
        assert!(msg.contains("Unable to locate package python3"), "{msg}");
    }
}

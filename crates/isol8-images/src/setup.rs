//! `isol8 setup`: the base image, then each runtime image that is missing or out of date,
//! built from its recipe with the pinned runtime binaries and the agent.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bollard::query_parameters::{PruneImagesOptionsBuilder, RemoveImageOptionsBuilder};
use bollard::Docker;
use isol8::RuntimeRegistry;

use crate::agent::{self, locate_agent};
use crate::builder::{append_file, build_image};
use crate::event::SetupEvent;
use crate::status::image_info;
use crate::{artifacts, base, image_for, ImageError, Recipe, AGENT_BUILD_COMMAND, BASE_IMAGE};

/// What `isol8 setup` should do.
#[derive(Debug, Clone, Default)]
pub struct SetupOptions {
    /// Runtimes to build; empty means the five language runtimes (the `agent` image, large
    /// and needed only for agent runs, is built when named).
    pub runtimes: Vec<String>,
    /// Recreate the base (pull or bootstrap again) and rebuild every image without the
    /// layer cache.
    pub force: bool,
    /// Bootstrap the base from the Debian mirror instead of pulling it from a registry.
    pub offline: bool,
    /// Agent binary to bake in (default: [`locate_agent`]).
    pub agent_path: Option<PathBuf>,
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
        names.extend(
            builtin
                .names()
                .into_iter()
                .filter(|n| *n != isol8::runtime::agent::NAME),
        );
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
        let pi = if recipe.pi {
            progress(SetupEvent::Step {
                runtime: Some(recipe.runtime.to_string()),
                message: format!(
                    "fetching pi {} and its dependencies (pinned by images/agent/package-lock.json)",
                    crate::pi::version()
                ),
            });
            crate::pi::fetch_all(progress).await?
        } else {
            Vec::new()
        };
        let dockerfile = recipe.dockerfile();
        let files = recipe.files;
        let context = {
            let agent = agent.bytes.clone();
            tokio::task::spawn_blocking(move || {
                runtime_context(&dockerfile, &agent, &downloads, files, &pi)
            })
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
    } else if let Err(e) = base::pull(docker, opts.force, progress).await {
        // `--force` on a machine that cannot reach a registry: the runtime images are
        // still rebuilt, on the base image already here.
        let Some(id) = previous else {
            return Err(e);
        };
        tracing::debug!(error = %e, "pulling a newer base image failed");
        progress(SetupEvent::Step {
            runtime: None,
            message: format!(
                "keeping the base image {BASE_IMAGE} already here: no newer one could be pulled \
                 (no registry reachable; `--offline` bootstraps a new one from the Debian mirror)"
            ),
        });
        return Ok(id);
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

/// The build context of a runtime image: `Dockerfile`, `isol8-agent` and
/// `bin/<binary>` for each cached runtime binary (all executable), each of `files` at
/// [`crate::recipe::context_path`] (mode 0644); with `pi` tarballs,
/// also `pi/package.json`, `pi/package-lock.json` and `pi/tarballs/<name>` (see
/// [`crate::pi`]).
fn runtime_context(
    dockerfile: &str,
    agent: &[u8],
    binaries: &[(&'static str, PathBuf)],
    files: &[isol8::runtime::ImageFile],
    pi: &[(String, PathBuf)],
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
    for file in files {
        let name = crate::recipe::context_path(file);
        append_file(&mut tar, &name, file.contents, 0o644).map_err(io(Path::new(&name)))?;
    }
    if !pi.is_empty() {
        for (name, text) in [
            ("pi/package.json", crate::pi::PACKAGE_JSON),
            ("pi/package-lock.json", crate::pi::LOCKFILE),
        ] {
            append_file(&mut tar, name, text.as_bytes(), 0o644).map_err(io(Path::new(name)))?;
        }
    }
    for (name, path) in pi {
        let data = std::fs::read(path).map_err(io(path))?;
        append_file(&mut tar, &format!("pi/tarballs/{name}"), &data, 0o644).map_err(io(path))?;
    }
    tar.into_inner().map_err(io(Path::new("build context")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_context_holds_dockerfile_agent_binaries_and_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let node = tmp.path().join("node-22");
        std::fs::write(&node, b"node").expect("write");
        let tgz = tmp.path().join("a.tgz");
        std::fs::write(&tgz, b"tgz").expect("write");
        let ctx = runtime_context(
            "FROM x\n",
            b"\x7fELFagent",
            &[("node", node)],
            &[isol8::runtime::NODE_LOADER],
            &[("0123.tgz".to_string(), tgz)],
        )
        .expect("context");
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
                (
                    "files/usr/local/lib/isol8/prestart.js".to_string(),
                    0o644,
                    isol8::runtime::NODE_LOADER.contents.len() as u64
                ),
                (
                    "pi/package.json".to_string(),
                    0o644,
                    crate::pi::PACKAGE_JSON.len() as u64
                ),
                (
                    "pi/package-lock.json".to_string(),
                    0o644,
                    crate::pi::LOCKFILE.len() as u64
                ),
                ("pi/tarballs/0123.tgz".to_string(), 0o644, 3),
            ]
        );
    }
}

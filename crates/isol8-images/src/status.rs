//! Whether a runtime image is present and current (`isol8 doctor`, `isol8 setup`'s
//! "up to date"), read from the image's content-hash label without touching the network.

use std::collections::HashMap;
use std::path::Path;

use bollard::Docker;
use isol8::maintenance::Check;
use isol8::RuntimeRegistry;

use crate::agent::{self, locate_agent};
use crate::{image_for, ImageError, Recipe, BASE_IMAGE};

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

/// Id and labels of an image, or None when it does not exist.
pub(crate) async fn image_info(
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
        // The agent image is optional (built on request): missing or outdated, it is a
        // note, not a failure.
        let agent = runtime == isol8::runtime::agent::NAME;
        let setup = if agent {
            "isol8 setup --runtime agent"
        } else {
            "isol8 setup"
        };
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
                detail: format!("present but outdated; run `{setup}`"),
                essential: false,
            },
            Ok(s) => Check {
                name: s.image,
                ok: false,
                detail: if agent {
                    format!("missing (needed only for the agent runtime); run `{setup}`")
                } else {
                    format!("missing; run `{setup}`")
                },
                essential: !agent,
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

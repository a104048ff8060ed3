//! Housekeeping on the daemon: listing and removing isol8's containers and images (only
//! ever those labelled as isol8's), reaping containers orphaned by dead isol8 processes,
//! finding a built image whose packages cover a request, and `isol8 doctor`'s checks of
//! the daemon itself (the images are checked by `isol8-images`, which builds them).
//!
//! Everything here goes through a [`ContainerApi`]; front ends pass the Docker client
//! ([`super::connect`]), which is one.

use std::collections::BTreeSet;

use super::backend::{ContainerApi, ContainerFilter};
use crate::error::{ApiError, SandboxError};
use crate::{
    Error, Result, BASE_IMAGE, LABEL_BUILD_PACKAGES, LABEL_BUILD_RUNTIME, LABEL_HOST,
    LABEL_MANAGED, LABEL_OWNER, LABEL_PERSIST, LABEL_PID,
};

/// One isol8 container on the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedContainer {
    /// Container id.
    pub id: String,
    /// Container name.
    pub name: String,
    /// Image it runs.
    pub image: String,
    /// Docker state (`running`, `exited`…).
    pub state: String,
    /// Engine or server instance that owns it.
    pub owner: Option<String>,
}

/// What `cleanup` removes.
#[derive(Debug, Clone, Default)]
pub struct CleanupOptions {
    /// Also remove isol8's images.
    pub images: bool,
    /// Only containers of this owner (engine/server instance).
    pub owner: Option<String>,
}

/// What `cleanup` removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Containers removed.
    pub containers: usize,
    /// Images removed.
    pub images: usize,
}

/// The labels of isol8's objects (of one owner, if given).
fn managed_labels(owner: Option<&str>) -> Vec<String> {
    let mut labels = vec![format!("{LABEL_MANAGED}=true")];
    if let Some(owner) = owner {
        labels.push(format!("{LABEL_OWNER}={owner}"));
    }
    labels
}

/// isol8's containers (optionally of one owner), running or not.
pub async fn list_containers(
    api: &dyn ContainerApi,
    owner: Option<&str>,
) -> Result<Vec<ManagedContainer>> {
    let filter = ContainerFilter {
        labels: managed_labels(owner),
        ..Default::default()
    };
    let list = api
        .list_containers(&filter)
        .await
        .map_err(|e| Error::docker("list containers", e))?;
    Ok(list
        .into_iter()
        .map(|c| ManagedContainer {
            id: c.id,
            name: c
                .names
                .first()
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_default(),
            image: c.image,
            state: c.state,
            owner: c.labels.get(LABEL_OWNER).cloned(),
        })
        .collect())
}

/// isol8's images (`isol8.managed=true`), as references or ids.
pub async fn list_images(api: &dyn ContainerApi) -> Result<Vec<String>> {
    let list = api
        .list_images(&managed_labels(None))
        .await
        .map_err(|e| Error::docker("list images", e))?;
    let mut images: Vec<String> = list
        .into_iter()
        .flat_map(|i| {
            if i.tags.is_empty() {
                vec![i.id]
            } else {
                i.tags
            }
        })
        .collect();
    // The base image is imported or pulled, so it may carry no label: include it by name.
    if api.image_exists(BASE_IMAGE).await && !images.iter().any(|i| i == BASE_IMAGE) {
        images.push(BASE_IMAGE.to_string());
    }
    Ok(images)
}

/// Removes isol8's containers (force, with their volumes) and, if asked, its images.
pub async fn cleanup(api: &dyn ContainerApi, opts: &CleanupOptions) -> Result<CleanupReport> {
    let mut report = CleanupReport::default();
    for c in list_containers(api, opts.owner.as_deref()).await? {
        remove_container(api, &c.id).await?;
        report.containers += 1;
    }
    if opts.images {
        for image in list_images(api).await? {
            match api.remove_image(&image).await {
                Ok(()) => report.images += 1,
                Err(ApiError::NotFound(_)) => {}
                Err(e) => return Err(Error::docker("remove image", e)),
            }
        }
    }
    Ok(report)
}

/// Force-removes a container (with its volumes). Returns once it is gone: when another
/// caller is already removing it (409), waits for that removal instead of returning early.
/// A container that does not exist counts as removed.
pub async fn remove_container(api: &dyn ContainerApi, id: &str) -> Result<()> {
    match api.remove_container(id).await {
        Ok(()) | Err(ApiError::NotFound(_)) => Ok(()),
        Err(ApiError::Conflict(_)) => {
            for _ in 0..200 {
                if api.inspect_container(id).await.is_err() {
                    return Ok(());
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(SandboxError::StillRemoving { id: id.to_string() }.into())
        }
        Err(e) => Err(Error::docker("remove container", e)),
    }
}

/// How a package spec is compared and recorded in [`LABEL_BUILD_PACKAGES`]: trimmed and
/// lower-cased (package names compare case-insensitively).
pub fn package_key(spec: &str) -> String {
    spec.trim().to_ascii_lowercase()
}

/// A built image of `runtime` (labelled [`LABEL_BUILD_RUNTIME`] by `isol8 build`) whose
/// [`LABEL_BUILD_PACKAGES`] include every one of `wanted`, if any: the one with the fewest
/// extra packages, the newest among equals. `None` too when the daemon cannot list images
/// (the request then installs its packages at run time).
pub async fn covering_image(
    api: &dyn ContainerApi,
    runtime: &str,
    wanted: &[String],
) -> Option<String> {
    let images = api
        .list_images(&[format!("{LABEL_BUILD_RUNTIME}={runtime}")])
        .await
        .ok()?;
    let wanted: BTreeSet<String> = wanted.iter().map(|p| package_key(p)).collect();
    images
        .into_iter()
        .filter_map(|img| {
            let baked: BTreeSet<String> =
                serde_json::from_str(img.labels.get(LABEL_BUILD_PACKAGES)?).ok()?;
            let tag = img.tags.into_iter().find(|t| t != "<none>:<none>")?;
            // Fewest extra packages first, then the newest build.
            wanted
                .is_subset(&baked)
                .then_some((baked.len(), std::cmp::Reverse(img.created), tag))
        })
        .min()
        .map(|(_, _, tag)| tag)
}

/// A custom image on the daemon: one built by `isol8 build` or from `prebuiltImages`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomImageInfo {
    /// Its tag (`repo:tag`); the image id when it has none.
    pub tag: String,
    /// The runtime whose image it is based on.
    pub runtime: String,
    /// The baked-in packages, normalised and sorted (empty: setup commands only).
    pub packages: Vec<String>,
    /// Creation time, seconds since the epoch.
    pub created: i64,
}

/// The custom images on the daemon (labelled by `isol8 build`), one entry per tag,
/// sorted by tag.
pub async fn custom_images(api: &dyn ContainerApi) -> Result<Vec<CustomImageInfo>> {
    let list = api
        .list_images(&managed_labels(None))
        .await
        .map_err(|e| Error::docker("list images", e))?;
    let mut out = Vec::new();
    for img in list {
        let Some(runtime) = img.labels.get(LABEL_BUILD_RUNTIME) else {
            continue;
        };
        let packages: Vec<String> = img
            .labels
            .get(LABEL_BUILD_PACKAGES)
            .and_then(|p| serde_json::from_str(p).ok())
            .unwrap_or_default();
        let mut tags: Vec<String> = img
            .tags
            .iter()
            .filter(|t| t.as_str() != "<none>:<none>")
            .cloned()
            .collect();
        if tags.is_empty() {
            tags.push(img.id.clone());
        }
        for tag in tags {
            out.push(CustomImageInfo {
                tag,
                runtime: runtime.clone(),
                packages: packages.clone(),
                created: img.created,
            });
        }
    }
    out.sort_by(|a, b| a.tag.cmp(&b.tag));
    Ok(out)
}

/// This machine's host name (as the kernel knows it).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Removes containers orphaned by isol8 processes of this host that no longer exist
/// (an engine killed with SIGKILL cannot clean up after itself). Containers of live
/// processes, of other hosts sharing the daemon, and kept with `persist` are untouched.
/// Returns how many were removed.
pub async fn reap_orphans(api: &dyn ContainerApi) -> Result<usize> {
    let filter = ContainerFilter {
        labels: vec![
            format!("{LABEL_MANAGED}=true"),
            format!("{LABEL_HOST}={}", hostname()),
        ],
        ..Default::default()
    };
    let list = api
        .list_containers(&filter)
        .await
        .map_err(|e| Error::docker("list containers", e))?;
    let mut removed = 0;
    for c in list {
        if c.labels.get(LABEL_PERSIST).is_some_and(|v| v == "true") {
            continue;
        }
        let Some(pid) = c.labels.get(LABEL_PID).and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if pid <= 0 || process_alive(pid) {
            continue;
        }
        if remove_container(api, &c.id).await.is_ok() {
            tracing::info!(container = %c.id, pid, "removed a container orphaned by a dead isol8 process");
            removed += 1;
        }
    }
    Ok(removed)
}

/// One line of the doctor's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Whether it is fine.
    pub ok: bool,
    /// Details or the fix.
    pub detail: String,
    /// False for checks whose failure does not stop isol8 from working.
    pub essential: bool,
}

/// The doctor's checks of a daemon that answered: its version, and its seccomp and
/// cgroup support.
pub async fn daemon_checks(api: &dyn ContainerApi) -> Vec<Check> {
    let info = api.daemon_info().await.ok();
    let v = info.clone().unwrap_or_default();
    let mut checks = vec![Check {
        name: "Docker daemon".into(),
        ok: true,
        detail: format!(
            "reachable: Docker {} (API {}, negotiated {}), {} {}",
            v.version, v.api_version, v.client_api_version, v.os, v.kernel_version,
        ),
        essential: true,
    }];
    let Some(info) = info else {
        return checks;
    };
    let seccomp = info.security_options.iter().any(|s| s.contains("seccomp"));
    checks.push(Check {
        name: "seccomp".into(),
        ok: seccomp,
        detail: if seccomp {
            "supported".into()
        } else {
            "not supported by the daemon: the strict profile cannot be applied".into()
        },
        essential: true,
    });
    let cgroup = format!(
        "cgroup v{} ({} driver)",
        info.cgroup_version.as_deref().unwrap_or("?"),
        info.cgroup_driver.as_deref().unwrap_or("?"),
    );
    let limits = [
        ("memory", info.memory_limit),
        ("swap", info.swap_limit),
        ("pids", info.pids_limit),
        ("cpu quota", info.cpu_cfs_quota),
    ];
    let missing: Vec<&str> = limits
        .iter()
        .filter(|(_, ok)| *ok != Some(true))
        .map(|(n, _)| *n)
        .collect();
    checks.push(Check {
        name: "cgroup limits".into(),
        ok: missing.is_empty(),
        detail: if missing.is_empty() {
            format!("{cgroup}: memory, swap, pids and cpu limits supported")
        } else {
            format!("{cgroup}: not supported: {}", missing.join(", "))
        },
        essential: missing.iter().any(|m| *m != "swap"),
    });
    checks
}

//! Housekeeping on the daemon: listing and removing isol8's containers and images (only
//! ever those labelled as isol8's), finding a built image whose packages cover a request,
//! and `isol8 doctor`'s checks of the daemon itself (the images are checked by
//! `isol8-images`, which builds them).

use std::collections::{BTreeSet, HashMap};

use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListImagesOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveImageOptionsBuilder,
};
use bollard::Docker;

use crate::{
    Error, Result, BASE_IMAGE, LABEL_BUILD_PACKAGES, LABEL_BUILD_RUNTIME, LABEL_MANAGED,
    LABEL_OWNER,
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

fn label_filter(owner: Option<&str>) -> HashMap<String, Vec<String>> {
    let mut labels = vec![format!("{LABEL_MANAGED}=true")];
    if let Some(owner) = owner {
        labels.push(format!("{LABEL_OWNER}={owner}"));
    }
    HashMap::from([("label".to_string(), labels)])
}

/// Containers (running or not) matching Docker `filters`.
async fn containers_labelled(
    docker: &Docker,
    filters: HashMap<String, Vec<String>>,
) -> Result<Vec<bollard::models::ContainerSummary>> {
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(opts))
        .await
        .map_err(|e| Error::docker("list containers", e))
}

/// isol8's containers (optionally of one owner), running or not.
pub async fn list_containers(
    docker: &Docker,
    owner: Option<&str>,
) -> Result<Vec<ManagedContainer>> {
    let list = containers_labelled(docker, label_filter(owner)).await?;
    Ok(list
        .into_iter()
        .map(|c| ManagedContainer {
            id: c.id.unwrap_or_default(),
            name: c
                .names
                .and_then(|n| n.first().cloned())
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string(),
            image: c.image.unwrap_or_default(),
            state: c.state.map(|s| s.to_string()).unwrap_or_default(),
            owner: c.labels.and_then(|l| l.get(LABEL_OWNER).cloned()),
        })
        .collect())
}

/// isol8's images (`isol8.managed=true`), as references or ids.
pub async fn list_images(docker: &Docker) -> Result<Vec<String>> {
    let filters = label_filter(None);
    let opts = ListImagesOptionsBuilder::default()
        .filters(&filters)
        .build();
    let list = docker
        .list_images(Some(opts))
        .await
        .map_err(|e| Error::docker("list images", e))?;
    let mut images: Vec<String> = list
        .into_iter()
        .flat_map(|i| {
            if i.repo_tags.is_empty() {
                vec![i.id]
            } else {
                i.repo_tags
            }
        })
        .collect();
    // The base image is imported or pulled, so it may carry no label: include it by name.
    if docker.inspect_image(BASE_IMAGE).await.is_ok() && !images.iter().any(|i| i == BASE_IMAGE) {
        images.push(BASE_IMAGE.to_string());
    }
    Ok(images)
}

/// Removes isol8's containers (force, with their volumes) and, if asked, its images.
pub async fn cleanup(docker: &Docker, opts: &CleanupOptions) -> Result<CleanupReport> {
    let mut report = CleanupReport::default();
    for c in list_containers(docker, opts.owner.as_deref()).await? {
        remove_container(docker, &c.id).await?;
        report.containers += 1;
    }
    if opts.images {
        for image in list_images(docker).await? {
            let ro = RemoveImageOptionsBuilder::default().force(true).build();
            match docker.remove_image(&image, Some(ro), None).await {
                Ok(_) => report.images += 1,
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(e) => return Err(Error::docker("remove image", e)),
            }
        }
    }
    Ok(report)
}

/// Force-removes a container (with its volumes). Returns once it is gone: when another
/// caller is already removing it (409), waits for that removal instead of returning early.
/// A container that does not exist counts as removed.
pub async fn remove_container(docker: &Docker, id: &str) -> Result<()> {
    let opts = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(opts)).await {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => {
            for _ in 0..200 {
                if docker.inspect_container(id, None).await.is_err() {
                    return Ok(());
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(Error::Sandbox(format!(
                "container {id} is still being removed after 10 s"
            )))
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
pub async fn covering_image(docker: &Docker, runtime: &str, wanted: &[String]) -> Option<String> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("{LABEL_BUILD_RUNTIME}={runtime}")],
    )]);
    let opts = ListImagesOptionsBuilder::default()
        .filters(&filters)
        .build();
    let images = docker.list_images(Some(opts)).await.ok()?;
    let wanted: BTreeSet<String> = wanted.iter().map(|p| package_key(p)).collect();
    images
        .into_iter()
        .filter_map(|img| {
            let baked: BTreeSet<String> =
                serde_json::from_str(img.labels.get(LABEL_BUILD_PACKAGES)?).ok()?;
            let tag = img.repo_tags.into_iter().find(|t| t != "<none>:<none>")?;
            // Fewest extra packages first, then the newest build.
            wanted
                .is_subset(&baked)
                .then_some((baked.len(), std::cmp::Reverse(img.created), tag))
        })
        .min()
        .map(|(_, _, tag)| tag)
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
pub async fn reap_orphans(docker: &Docker) -> Result<usize> {
    let host = hostname();
    let filters = HashMap::from([(
        "label".to_string(),
        vec![
            format!("{LABEL_MANAGED}=true"),
            format!("{}={host}", crate::LABEL_HOST),
        ],
    )]);
    let list = containers_labelled(docker, filters).await?;
    let mut removed = 0;
    for c in list {
        let labels = c.labels.unwrap_or_default();
        if labels
            .get(crate::LABEL_PERSIST)
            .is_some_and(|v| v == "true")
        {
            continue;
        }
        let Some(pid) = labels
            .get(crate::LABEL_PID)
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if pid <= 0 || process_alive(pid) {
            continue;
        }
        let Some(id) = c.id else { continue };
        if remove_container(docker, &id).await.is_ok() {
            tracing::info!(container = %id, pid, "removed a container orphaned by a dead isol8 process");
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

/// Checks that the Docker daemon answers, its version, and its seccomp and cgroup support.
/// Returns the checks and, when the daemon answered, the client, for the checks of the
/// runtime images that follow (`isol8-images`' `status::checks`).
pub async fn doctor() -> (Vec<Check>, Option<Docker>) {
    let mut checks = Vec::new();
    let docker = match crate::docker::connect().await {
        Ok(d) => d,
        Err(e) => {
            checks.push(Check {
                name: "Docker daemon".into(),
                ok: false,
                detail: e.to_string(),
                essential: true,
            });
            return (checks, None);
        }
    };
    let version = docker.version().await.ok();
    let info = docker.info().await.ok();
    let v = version.as_ref();
    checks.push(Check {
        name: "Docker daemon".into(),
        ok: true,
        detail: format!(
            "reachable: Docker {} (API {}, negotiated {}), {} {}",
            v.and_then(|v| v.version.clone()).unwrap_or_default(),
            v.and_then(|v| v.api_version.clone()).unwrap_or_default(),
            docker.client_version(),
            v.and_then(|v| v.os.clone()).unwrap_or_default(),
            v.and_then(|v| v.kernel_version.clone()).unwrap_or_default(),
        ),
        essential: true,
    });
    if let Some(info) = &info {
        let security = info.security_options.clone().unwrap_or_default();
        let seccomp = security.iter().any(|s| s.contains("seccomp"));
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
            info.cgroup_version
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_else(|| "?".into()),
            info.cgroup_driver
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_else(|| "?".into())
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
    }
    (checks, Some(docker))
}

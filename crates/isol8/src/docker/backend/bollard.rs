//! [`ContainerApi`] on the Docker daemon, through the `bollard` client: the one module of
//! this crate that names `bollard` types. It maps isol8's reduced API types to the
//! client's and back, and the client's errors to [`ApiError`]s by what the engine does
//! about them (daemon unreachable, not found, conflict, anything else).

use std::collections::HashMap;
use std::sync::Arc;

use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, MountType, ResourcesUlimits};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, EventsOptionsBuilder,
    ListContainersOptionsBuilder, ListImagesOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveImageOptionsBuilder,
};
pub use bollard::Docker;
use futures_util::TryStreamExt;

use super::{
    ApiStream, Attached, ContainerApi, ContainerEvent, ContainerFilter, ContainerSpec,
    ContainerState, ContainerSummary, DaemonInfo, EventFilter, ImageSummary, Output,
};
use crate::docker::host_config::HostConfig;
use crate::docker::housekeeping::{self, Check};
use crate::docker::DockerEngine;
use crate::error::ApiError;
use crate::{Error, Result};

/// Connects to the Docker daemon `DOCKER_HOST` names (`unix://…` or `tcp://…`; the
/// default socket `/var/run/docker.sock` when unset) and
/// negotiates the API version, so daemons from 20.10 (API 1.41) up to current work.
pub async fn connect() -> Result<Docker> {
    let unavailable = |e: BollardError| Error::DockerUnavailable {
        detail: e.to_string(),
    };
    let docker = Docker::connect_with_defaults().map_err(unavailable)?;
    let docker = docker.negotiate_version().await.map_err(unavailable)?;
    docker.ping().await.map_err(unavailable)?;
    Ok(docker)
}

/// Checks that the Docker daemon answers, its version, and its seccomp and cgroup support
/// (`isol8 doctor`). Returns the checks and, when the daemon answered, the client, for
/// the checks of the runtime images that follow (`isol8-images`' `status::checks`).
pub async fn doctor() -> (Vec<Check>, Option<Docker>) {
    match connect().await {
        Ok(docker) => (housekeeping::daemon_checks(&docker).await, Some(docker)),
        Err(e) => (
            vec![Check {
                name: "Docker daemon".into(),
                ok: false,
                detail: e.to_string(),
                essential: true,
            }],
            None,
        ),
    }
}

impl DockerEngine {
    /// The Docker client the engine drives.
    ///
    /// # Panics
    /// When the engine runs on another [`ContainerApi`] (a test backend given to
    /// [`DockerEngine::with_backend`]); use [`DockerEngine::backend`] there.
    pub fn docker(&self) -> &Docker {
        self.backend()
            .as_any()
            .downcast_ref::<Docker>()
            .expect("this engine does not run on the Docker daemon (a test backend)")
    }
}

impl From<BollardError> for ApiError {
    fn from(e: BollardError) -> Self {
        match &e {
            BollardError::HyperResponseError { .. }
            | BollardError::IOError { .. }
            | BollardError::SocketNotFoundError(_)
            | BollardError::RequestTimeoutError => ApiError::Unreachable(e.into()),
            // Connection refused on an existing socket: the daemon is stopping or restarting.
            BollardError::HyperLegacyError { err } if err.is_connect() => {
                ApiError::Unreachable(e.into())
            }
            BollardError::DockerResponseServerError {
                status_code: 404, ..
            } => ApiError::NotFound(e.into()),
            BollardError::DockerResponseServerError {
                status_code: 409, ..
            } => ApiError::Conflict(e.into()),
            _ => ApiError::Failed(e.into()),
        }
    }
}

impl From<&HostConfig> for bollard::models::HostConfig {
    fn from(h: &HostConfig) -> Self {
        bollard::models::HostConfig {
            mounts: h.mounts.as_ref().map(|mounts| {
                mounts
                    .iter()
                    .map(|m| bollard::models::Mount {
                        target: Some(m.target.clone()),
                        source: Some(m.source.clone()),
                        typ: Some(MountType::BIND),
                        read_only: Some(m.read_only),
                        ..Default::default()
                    })
                    .collect()
            }),
            network_mode: h.network_mode.clone(),
            readonly_rootfs: h.readonly_rootfs,
            tmpfs: h
                .tmpfs
                .as_ref()
                .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            cap_drop: h.cap_drop.clone(),
            cap_add: h.cap_add.clone(),
            security_opt: h.security_opt.clone(),
            memory: h.memory,
            memory_swap: h.memory_swap,
            nano_cpus: h.nano_cpus,
            pids_limit: h.pids_limit,
            ipc_mode: h.ipc_mode.clone(),
            shm_size: h.shm_size,
            ulimits: h.ulimits.as_ref().map(|u| {
                u.iter()
                    .map(|u| ResourcesUlimits {
                        name: Some(u.name.clone()),
                        soft: Some(u.soft),
                        hard: Some(u.hard),
                    })
                    .collect()
            }),
            init: h.init,
            runtime: h.runtime.clone(),
            ..Default::default()
        }
    }
}

impl From<HostConfig> for bollard::models::HostConfig {
    fn from(h: HostConfig) -> Self {
        (&h).into()
    }
}

/// Docker's `filters` query: `key` → values.
fn filters(pairs: &[(&str, &[String])]) -> HashMap<String, Vec<String>> {
    pairs
        .iter()
        .filter(|(_, values)| !values.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect()
}

#[async_trait::async_trait]
impl ContainerApi for Docker {
    async fn ping(&self) -> Result<(), ApiError> {
        Docker::ping(self).await.map(drop).map_err(ApiError::from)
    }

    async fn create_container(&self, spec: ContainerSpec) -> Result<String, ApiError> {
        let body = ContainerCreateBody {
            image: Some(spec.image),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(true),
            stdin_once: Some(false),
            tty: Some(false),
            working_dir: Some(spec.working_dir),
            network_disabled: Some(spec.network_disabled),
            env: (!spec.env.is_empty()).then_some(spec.env),
            labels: Some(spec.labels.into_iter().collect()),
            host_config: Some((&spec.host).into()),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        let created = Docker::create_container(self, Some(opts), body).await?;
        Ok(created.id)
    }

    async fn attach_container(&self, id: &str) -> Result<Attached, ApiError> {
        let opts = AttachContainerOptionsBuilder::default()
            .stdin(true)
            .stdout(true)
            .stderr(true)
            .stream(true)
            .build();
        let attach = Docker::attach_container(self, id, Some(opts)).await?;
        let output = attach
            .output
            .map_err(ApiError::from)
            .try_filter_map(|chunk| async move {
                Ok(match chunk {
                    LogOutput::StdOut { message } => Some(Output::Stdout(message.into())),
                    LogOutput::StdErr { message } => Some(Output::Stderr(message.into())),
                    LogOutput::StdIn { .. } | LogOutput::Console { .. } => None,
                })
            });
        Ok(Attached {
            input: attach.input,
            output: Box::pin(output),
        })
    }

    async fn start_container(&self, id: &str) -> Result<(), ApiError> {
        Ok(Docker::start_container(self, id, None).await?)
    }

    async fn inspect_container(&self, id: &str) -> Result<ContainerState, ApiError> {
        let info = Docker::inspect_container(self, id, None).await?;
        // Docker always reports a state; were it missing, nothing is known, which the
        // engine treats as a container running normally.
        let Some(state) = info.state else {
            return Ok(ContainerState {
                running: true,
                ..Default::default()
            });
        };
        Ok(ContainerState {
            running: state.running.unwrap_or(false),
            paused: state.paused.unwrap_or(false),
            oom_killed: state.oom_killed.unwrap_or(false),
            exit_code: state.exit_code,
        })
    }

    async fn remove_container(&self, id: &str) -> Result<(), ApiError> {
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        Ok(Docker::remove_container(self, id, Some(opts)).await?)
    }

    async fn list_containers(
        &self,
        filter: &ContainerFilter,
    ) -> Result<Vec<ContainerSummary>, ApiError> {
        let filters = filters(&[("label", &filter.labels), ("status", &filter.states)]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = Docker::list_containers(self, Some(opts)).await?;
        Ok(list
            .into_iter()
            .map(|c| ContainerSummary {
                id: c.id.unwrap_or_default(),
                names: c.names.unwrap_or_default(),
                image: c.image.unwrap_or_default(),
                state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                labels: c.labels.unwrap_or_default().into_iter().collect(),
            })
            .collect())
    }

    fn container_events(&self, filter: &EventFilter) -> ApiStream<ContainerEvent> {
        let container = ["container".to_string()];
        let filters = filters(&[
            ("type", &container),
            ("label", &filter.labels),
            ("event", &filter.actions),
        ]);
        let opts = EventsOptionsBuilder::default().filters(&filters).build();
        let events = self
            .events(Some(opts))
            .map_err(ApiError::from)
            .try_filter_map(|ev| async move {
                let action = ev.action.unwrap_or_default();
                Ok(ev
                    .actor
                    .and_then(|a| a.id)
                    .map(|id| ContainerEvent { id, action }))
            });
        Box::pin(events)
    }

    async fn list_images(&self, labels: &[String]) -> Result<Vec<ImageSummary>, ApiError> {
        let filters = filters(&[("label", labels)]);
        let opts = ListImagesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let list = Docker::list_images(self, Some(opts)).await?;
        Ok(list
            .into_iter()
            .map(|i| ImageSummary {
                id: i.id,
                tags: i.repo_tags,
                labels: i.labels.into_iter().collect(),
                created: i.created,
            })
            .collect())
    }

    async fn image_exists(&self, reference: &str) -> bool {
        self.inspect_image(reference).await.is_ok()
    }

    async fn remove_image(&self, reference: &str) -> Result<(), ApiError> {
        let opts = RemoveImageOptionsBuilder::default().force(true).build();
        Docker::remove_image(self, reference, Some(opts), None).await?;
        Ok(())
    }

    async fn daemon_info(&self) -> Result<DaemonInfo, ApiError> {
        // The version is only reported; the capabilities are what the checks need.
        let version = self.version().await.unwrap_or_default();
        let info = self.info().await?;
        Ok(DaemonInfo {
            version: version.version.unwrap_or_default(),
            api_version: version.api_version.unwrap_or_default(),
            client_api_version: self.client_version().to_string(),
            os: version.os.unwrap_or_default(),
            kernel_version: version.kernel_version.unwrap_or_default(),
            security_options: info.security_options.unwrap_or_default(),
            cgroup_version: info.cgroup_version.map(|v| v.to_string()),
            cgroup_driver: info.cgroup_driver.map(|v| v.to_string()),
            memory_limit: info.memory_limit,
            swap_limit: info.swap_limit,
            pids_limit: info.pids_limit,
            cpu_cfs_quota: info.cpu_cfs_quota,
        })
    }

    fn detached(&self) -> Result<Arc<dyn ContainerApi>, ApiError> {
        Ok(Arc::new(Docker::connect_with_defaults()?))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    /// A daemon reached through a Unix socket (`DOCKER_HOST` unset, the default socket,
    /// or `unix://…`) runs on this host; one over TCP or SSH may not.
    fn shares_host_files(&self) -> bool {
        std::env::var("DOCKER_HOST")
            .map(|h| h.is_empty() || h.starts_with("unix://"))
            .unwrap_or(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_daemon_connection_is_docker_unavailable() {
        // A socket file nobody listens on: what a stopping or restarting daemon leaves.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("docker.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        let docker = Docker::connect_with_unix(
            path.to_str().expect("utf-8 path"),
            5,
            bollard::API_DEFAULT_VERSION,
        )
        .expect("client");
        let err = ContainerApi::inspect_container(&docker, "isol8-none")
            .await
            .expect_err("nobody listens");
        assert!(matches!(err, ApiError::Unreachable(_)), "{err:?}");
        let err = Error::docker("inspect container", err);
        assert!(matches!(err, Error::DockerUnavailable { .. }), "{err:?}");
    }

    #[test]
    fn the_host_config_reaches_the_client_field_by_field() {
        let settings =
            crate::settings::SandboxSettings::resolve(&Default::default()).expect("defaults");
        let ours = crate::docker::host_config(&settings).expect("host config");
        let theirs: bollard::models::HostConfig = (&ours).into();
        assert_eq!(theirs.memory, ours.memory);
        assert_eq!(theirs.pids_limit, ours.pids_limit);
        assert_eq!(theirs.security_opt, ours.security_opt);
        assert_eq!(theirs.readonly_rootfs, ours.readonly_rootfs);
        assert_eq!(theirs.init, Some(false));
        assert_eq!(
            theirs.tmpfs.map(|t| t.len()),
            ours.tmpfs.map(|t| t.len()),
            "every tmpfs mount"
        );
        assert_eq!(theirs.ulimits.map(|u| u.len()), Some(2));
    }
}

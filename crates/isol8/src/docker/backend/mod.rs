//! The container operations the engine uses, as a trait: [`ContainerApi`].
//!
//! The engine asks a container daemon for very little: create a container, attach to its
//! stdio, start it, inspect its state, remove it, list containers by label, follow its
//! containers' events, and list images by label. Those calls are named and shaped after
//! the Docker Engine API, reduced to what isol8 sets and reads.
//!
//! Two implementations exist (youki's `Syscall` trait with its real and test
//! implementations is the model):
//! * [`bollard`] — the Docker daemon, through the `bollard` client. It is the only module
//!   of this crate that names `bollard` types;
//! * `fake` (feature `testing`, and this crate's unit tests) — an in-memory daemon whose
//!   containers run the real agent frame protocol over in-process pipes, with knobs for
//!   the failures that are hard to provoke on a real daemon.

pub mod bollard;
#[cfg(any(test, feature = "testing"))]
pub mod fake;

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use tokio::io::AsyncWrite;

use super::host_config::HostConfig;
use crate::error::ApiError;

/// A stream of a backend's results.
pub type ApiStream<T> = Pin<Box<dyn Stream<Item = Result<T, ApiError>> + Send>>;

/// What a sandbox container is created from (Docker's `ContainerCreateBody`, reduced to
/// what isol8 sets). Its stdio is always attachable (stdin open, no TTY): the agent
/// speaks frames on it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    /// Container name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Labels (`isol8.managed`, `isol8.owner`…).
    pub labels: BTreeMap<String, String>,
    /// Environment, as `NAME=value`.
    pub env: Vec<String>,
    /// Working directory of the agent.
    pub working_dir: String,
    /// True when the container gets no network at all.
    pub network_disabled: bool,
    /// Limits, mounts and security settings.
    pub host: HostConfig,
}

/// One chunk of an attached container's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Bytes the container wrote to its stdout (the agent's frames).
    Stdout(Vec<u8>),
    /// Bytes the container wrote to its stderr (the agent's diagnostics).
    Stderr(Vec<u8>),
}

/// The attached stdio of a container.
pub struct Attached {
    /// The container's stdin.
    pub input: Pin<Box<dyn AsyncWrite + Send>>,
    /// The container's stdout and stderr, until the container ends (or the attachment
    /// breaks: an error item).
    pub output: ApiStream<Output>,
}

impl std::fmt::Debug for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attached").finish_non_exhaustive()
    }
}

/// A container's state, as inspecting it reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerState {
    /// Its processes run (true for a paused container too).
    pub running: bool,
    /// It is paused (frozen by the cgroup freezer).
    pub paused: bool,
    /// Its main process was killed by the memory limit.
    pub oom_killed: bool,
    /// Exit code of its main process, once it has ended.
    pub exit_code: Option<i64>,
}

/// One container of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSummary {
    /// Container id.
    pub id: String,
    /// Container names (Docker's, with their leading `/`).
    pub names: Vec<String>,
    /// Image it runs.
    pub image: String,
    /// Docker state (`running`, `exited`, `paused`…).
    pub state: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// Which containers a listing returns (stopped ones included).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerFilter {
    /// Labels every container must carry, as `key=value`.
    pub labels: Vec<String>,
    /// States a container must be in (`paused`, `exited`…); empty: any.
    pub states: Vec<String>,
}

/// Which container events a subscription returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Labels the container must carry, as `key=value`.
    pub labels: Vec<String>,
    /// Actions to report (`pause`, `die`…).
    pub actions: Vec<String>,
}

/// Something that happened to a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    /// The container.
    pub id: String,
    /// What happened (`pause`, `kill`, `die`, `oom`, `stop`, `destroy`…).
    pub action: String,
}

/// One image of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageSummary {
    /// Image id.
    pub id: String,
    /// Its tags (`repo:tag`), possibly none.
    pub tags: Vec<String>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Creation time, seconds since the epoch.
    pub created: i64,
}

/// What the daemon says about itself (for `isol8 doctor`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaemonInfo {
    /// Daemon version.
    pub version: String,
    /// Highest API version the daemon speaks.
    pub api_version: String,
    /// API version negotiated by this client.
    pub client_api_version: String,
    /// Operating system.
    pub os: String,
    /// Kernel version.
    pub kernel_version: String,
    /// Security options the daemon supports (`name=seccomp,profile=…`).
    pub security_options: Vec<String>,
    /// Cgroup version (`1`, `2`), if known.
    pub cgroup_version: Option<String>,
    /// Cgroup driver (`systemd`, `cgroupfs`), if known.
    pub cgroup_driver: Option<String>,
    /// Memory limits are supported.
    pub memory_limit: Option<bool>,
    /// Swap limits are supported.
    pub swap_limit: Option<bool>,
    /// Pids limits are supported.
    pub pids_limit: Option<bool>,
    /// CPU quotas are supported.
    pub cpu_cfs_quota: Option<bool>,
}

/// The container operations the engine uses. Calls never retry: errors are reported as
/// [`ApiError`]s, which the engine maps to [`crate::Error`]s by what failed.
#[async_trait::async_trait]
pub trait ContainerApi: Send + Sync + std::fmt::Debug + 'static {
    /// Checks that the daemon answers.
    async fn ping(&self) -> Result<(), ApiError>;

    /// Creates a container; returns its id. [`ApiError::NotFound`] when the image does
    /// not exist.
    async fn create_container(&self, spec: ContainerSpec) -> Result<String, ApiError>;

    /// Attaches to a created container's stdin, stdout and stderr (before it starts, so
    /// no output is missed).
    async fn attach_container(&self, id: &str) -> Result<Attached, ApiError>;

    /// Starts a created container.
    async fn start_container(&self, id: &str) -> Result<(), ApiError>;

    /// A container's state. [`ApiError::NotFound`] when it does not exist.
    async fn inspect_container(&self, id: &str) -> Result<ContainerState, ApiError>;

    /// Force-removes a container and its anonymous volumes. [`ApiError::NotFound`] when
    /// it does not exist, [`ApiError::Conflict`] when a removal is already in progress.
    async fn remove_container(&self, id: &str) -> Result<(), ApiError>;

    /// Containers (running or not) matching `filter`.
    async fn list_containers(
        &self,
        filter: &ContainerFilter,
    ) -> Result<Vec<ContainerSummary>, ApiError>;

    /// Events of containers matching `filter`, from now on, until the subscription breaks
    /// (e.g. the daemon restarts).
    fn container_events(&self, filter: &EventFilter) -> ApiStream<ContainerEvent>;

    /// Images carrying every one of `labels` (`key=value`).
    async fn list_images(&self, labels: &[String]) -> Result<Vec<ImageSummary>, ApiError>;

    /// True when an image with this reference exists.
    async fn image_exists(&self, reference: &str) -> bool;

    /// Force-removes an image. [`ApiError::NotFound`] when it does not exist.
    async fn remove_image(&self, reference: &str) -> Result<(), ApiError>;

    /// Versions and capabilities of the daemon.
    async fn daemon_info(&self) -> Result<DaemonInfo, ApiError>;

    /// A handle usable from another async runtime than the one this one was made on
    /// (for the clean-up of a dropped engine, which runs on a runtime of its own). The
    /// Docker client connects anew.
    fn detached(&self) -> Result<Arc<dyn ContainerApi>, ApiError>;

    /// The backend as [`std::any::Any`], to reach its own API
    /// ([`crate::DockerEngine::docker`]).
    fn as_any(&self) -> &dyn std::any::Any;

    /// True when a bind mount's source is a path on this host (the daemon runs here),
    /// so the engine can hand a sandbox its data socket
    /// ([`crate::docker::data_socket`]). Default false: everything goes through the
    /// attached stdio.
    fn shares_host_files(&self) -> bool {
        false
    }
}

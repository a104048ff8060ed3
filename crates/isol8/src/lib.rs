//! isol8: run untrusted code in hardened Docker sandboxes.
//!
//! The [`Engine`] trait is the one interface every front end drives (the CLI, the HTTP
//! server and the remote client). [`DockerEngine`] implements it on a local Docker daemon
//! through the Engine API: each sandbox container runs `isol8-agent` as PID 1 and the
//! engine talks to it over the container's attached stdio (see [`isol8_protocol::agent`]).
//!
//! Modules, by boundary:
//! * [`runtime`] — the runtime registry (python, node, bun, deno, bash, and your own);
//! * [`settings`] — engine options resolved into validated sandbox settings;
//! * [`seccomp`] — isol8's default-deny seccomp profile;
//! * [`docker`] — [`DockerEngine`]: containers (through the [`docker::ContainerApi`]
//!   trait, on Docker or on an in-memory fake for tests), the pool, one execution's run,
//!   persistent sessions;
//! * [`control`] — stdin and signals for a running interactive execution;
//! * [`maintenance`] — housekeeping on the daemon (cleanup, orphans, the built image that
//!   covers a request's packages, `isol8 doctor`'s Docker checks), under the path front
//!   ends use;
//! * [`config`] — the configuration file and its JSON Schema;
//! * [`stats`] — the hook through which a front end counts what the engine does.
//!
//! Building the images is not part of the engine: the `isol8-images` crate builds them
//! (`isol8 setup`, `isol8 build`) on top of this one, and `isol8-bench` measures it.

pub mod audit;
pub mod code_url;
pub mod config;
pub mod control;
pub mod docker;
pub mod egress;
pub mod engine;
pub mod error;
pub mod maintenance;
pub mod outcome;
pub mod output;
pub mod prepare;
pub mod remote;
pub mod runtime;
pub mod seccomp;
pub mod settings;
pub mod stats;
pub mod trace;

pub use docker::DockerEngine;
pub use engine::{Engine, EventStream, PendingResult};
pub use error::{Error, Result};
pub use isol8_protocol::{
    EngineOptions, ExecutionRequest, ExecutionResult, ExitReason, Phase, ResourceUsage,
    StreamEvent, StreamEventType,
};
pub use remote::RemoteEngine;
pub use runtime::{Runtime, RuntimeRegistry};

/// Label put on every container and image isol8 creates.
pub const LABEL_MANAGED: &str = "isol8.managed";
/// Label naming the engine instance that owns a container.
pub const LABEL_OWNER: &str = "isol8.owner";
/// Label carrying the process id of the engine that created a container.
pub const LABEL_PID: &str = "isol8.pid";
/// Label naming the host whose process created a container (with [`LABEL_PID`], it lets a
/// restarted engine find containers orphaned by a crashed one).
pub const LABEL_HOST: &str = "isol8.host";
/// Label marking a container kept on purpose (`persist`): never reaped as an orphan.
pub const LABEL_PERSIST: &str = "isol8.persist";
/// Label carrying an image's content hash.
pub const LABEL_CONTENT_HASH: &str = "isol8.content-hash";
/// Label naming the runtime an image or container serves.
pub const LABEL_RUNTIME: &str = "isol8.runtime";
/// Label: the runtime a custom image (`isol8 build`) extends.
pub const LABEL_BUILD_RUNTIME: &str = "isol8.build.runtime";
/// Label: the packages baked into a custom image (JSON array of
/// [`maintenance::package_key`]s, sorted).
pub const LABEL_BUILD_PACKAGES: &str = "isol8.build.packages";
/// Where a custom image keeps its `setupScript` (config `prebuiltImages[].setupScript`):
/// run before every execution in a custom image that has it.
pub const IMAGE_SETUP_SCRIPT: &str = "/opt/isol8/setup.sh";

/// Tag of the base image every runtime image is built on (`isol8-images` creates it;
/// `isol8 cleanup --images` removes it with isol8's other images).
pub const BASE_IMAGE: &str = "isol8-base:bookworm";

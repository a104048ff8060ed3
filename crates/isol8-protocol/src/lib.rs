//! Wire types shared by every isol8 component.
//!
//! * [`wire`] — the public JSON contract: [`ExecutionRequest`], [`ExecutionResult`],
//!   [`StreamEvent`]. Field names are exact: existing isol8 clients depend on them.
//! * [`options`] — engine options as they appear in the library, CLI and the server's
//!   `options` object.
//! * [`agent`] — the versioned frame protocol spoken between the engine and the in-sandbox
//!   agent (`isol8-agent`) over the container's attached stdio.
//! * [`layout`] — the inside of a sandbox both sides rely on: the sandbox user, `/sandbox`,
//!   the directories a reset wipes, where the CA bundle and the egress socket appear, the
//!   timeout markers.
//! * [`seccomp`] — the strict seccomp policy: the engine asks for it, the agent compiles
//!   and installs it.

pub mod agent;
pub mod layout;
pub mod options;
pub mod seccomp;
pub mod wire;

pub use options::{EngineOptions, NetworkFilter, NetworkMode, PoolSize, PoolStrategy, SeccompMode};
pub use wire::{
    ExecutionRequest, ExecutionResult, ExitReason, NetworkLog, Phase, ResourceUsage, StreamEvent,
    StreamEventType,
};

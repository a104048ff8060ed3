//! [`EngineObserver`]: what an engine reports about its own work, for a front end that
//! keeps statistics (the server's `GET /metrics`). The engine knows nothing of how they
//! are kept or exported: it calls the observer it was given (if any) at a few points —
//! an execution's wait for a slot, a sandbox taken from the pool or started, a run's
//! end, a container created or removed, a failed reset, an egress request allowed or
//! refused. Every method has an empty default and must return at once (no I/O, no
//! locks held for long): it runs on the engine's hot path.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Receives the engine's events. Installed with `EngineConfig::observer`; sibling engines
/// (a server's sessions) share their parent's.
pub trait EngineObserver: Send + Sync + fmt::Debug {
    /// An execution got its `maxConcurrent` slot after waiting `waited` (zero when one was
    /// free). Not called for a request refused while queued.
    fn queue_wait(&self, waited: Duration) {
        let _ = waited;
    }

    /// An execution of `runtime` got its sandbox after `took`: from the warm pool
    /// (`warm`, a pool hit) or started for it (a miss).
    fn sandbox_acquired(&self, runtime: &str, took: Duration, warm: bool) {
        let _ = (runtime, took, warm);
    }

    /// An execution of `runtime` ran for `took`: from sending it to the sandbox until it
    /// ended (normally or not).
    fn run_finished(&self, runtime: &str, took: Duration) {
        let _ = (runtime, took);
    }

    /// The program of an execution of `runtime` ran for `took`, as the agent timed it
    /// (the code step; microsecond resolution, unlike the result's `durationMs`).
    fn program_finished(&self, runtime: &str, took: Duration) {
        let _ = (runtime, took);
    }

    /// The engine created a container.
    fn container_created(&self) {}

    /// The engine removed one of its containers.
    fn container_destroyed(&self) {}

    /// Resetting a used sandbox failed; it is destroyed instead of going back to the pool.
    fn reset_failed(&self) {}

    /// The egress proxy of a `filtered` sandbox decided on one request: `allowed`, or
    /// refused (by the rules or the address policy) before anything was dialled.
    fn egress(&self, allowed: bool) {
        let _ = allowed;
    }
}

/// An observer shared by an engine, its background tasks and its siblings.
pub type Observer = Arc<dyn EngineObserver>;

/// Calls `f` on the observer, if there is one.
pub(crate) fn notify(observer: &Option<Observer>, f: impl FnOnce(&dyn EngineObserver)) {
    if let Some(o) = observer {
        f(o.as_ref());
    }
}

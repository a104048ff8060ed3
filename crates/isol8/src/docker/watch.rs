//! Docker's word on an engine's containers: one `events` subscription per engine, filtered
//! to its `isol8.owner` label, that flags a sandbox as unusable as soon as Docker reports
//! it paused (frozen), killed, dead, OOM-killed or removed. Flagged sandboxes waiting in
//! the pool are evicted at once, and [`super::pool::acquire`] never hands one out — with
//! no Docker round trip on the warm path.
//!
//! The subscription is renewed (with backoff) whenever it ends, e.g. when the Docker
//! daemon restarts; after a renewal the engine's containers are listed once, so what
//! happened while nobody listened is flagged too. The task ends with the engine.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;

use super::backend::{ContainerApi, ContainerFilter, EventFilter};
use super::Inner;
use crate::LABEL_OWNER;

/// Container events that make a sandbox unusable.
const EVENTS: [&str; 6] = ["pause", "kill", "die", "oom", "stop", "destroy"];

/// Container states that make a sandbox unusable (for the sweep after a renewal).
const STATES: [&str; 4] = ["paused", "exited", "dead", "removing"];

/// Longest wait between two subscription attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Watches `owner`'s containers until the engine is stopped or dropped (`halt` says so).
pub(crate) async fn run(
    engine: Weak<Inner>,
    api: Arc<dyn ContainerApi>,
    owner: String,
    mut halt: watch::Receiver<bool>,
) {
    let label = format!("{LABEL_OWNER}={owner}");
    let filter = EventFilter {
        labels: vec![label.clone()],
        actions: EVENTS.iter().map(|e| e.to_string()).collect(),
    };
    let mut backoff = Duration::from_millis(200);
    let mut renewed = false;
    loop {
        let mut events = api.container_events(&filter);
        if renewed {
            sweep(&engine, api.as_ref(), &label).await;
        }
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    Some(Ok(ev)) => {
                        backoff = Duration::from_millis(200);
                        let Some(inner) = engine.upgrade() else { return };
                        tracing::debug!(container = %ev.id, action = %ev.action, "Docker reports the sandbox unusable");
                        flag(&inner, &ev.id);
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "Docker event subscription failed; renewing it");
                        break;
                    }
                    None => break,
                },
                changed = halt.changed() => {
                    if changed.is_err() || *halt.borrow() {
                        return;
                    }
                }
            }
        }
        renewed = true;
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            changed = halt.changed() => {
                if changed.is_err() || *halt.borrow() {
                    return;
                }
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Flags every container of the engine Docker lists as paused, exited, dead or being
/// removed.
async fn sweep(engine: &Weak<Inner>, api: &dyn ContainerApi, label: &str) {
    let filter = ContainerFilter {
        labels: vec![label.to_string()],
        states: STATES.iter().map(|s| s.to_string()).collect(),
    };
    let Ok(list) = api.list_containers(&filter).await else {
        return;
    };
    let Some(inner) = engine.upgrade() else {
        return;
    };
    for c in list {
        flag(&inner, &c.id);
    }
}

/// Marks a container of the engine as unusable and evicts it from the pool if it waits
/// there. Containers the engine no longer tracks (already removed) are ignored, so the
/// set only holds live ones.
fn flag(inner: &Arc<Inner>, id: &str) {
    // Under the `live` lock (then `flagged`, the order `sandbox::remove` takes them in),
    // so a removal racing with this event cannot leave the id behind.
    let tracked = match inner.live.lock() {
        Ok(live) if live.contains(id) => {
            if let Ok(mut flagged) = inner.flagged.lock() {
                flagged.insert(id.to_string());
            }
            true
        }
        _ => false,
    };
    if tracked {
        super::pool::evict(inner, id);
    }
}

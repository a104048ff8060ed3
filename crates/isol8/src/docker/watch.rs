//! Docker's word on an engine's containers: one `events` subscription per engine, filtered
//! to its `isol8.owner` label, that flags a sandbox as unusable as soon as Docker reports
//! it paused (frozen), killed, dead, OOM-killed or removed. Flagged sandboxes waiting in
//! the pool are evicted at once, and [`super::pool::acquire`] never hands one out — with
//! no Docker round trip on the warm path.
//!
//! The subscription is renewed (with backoff) whenever it ends, e.g. when the Docker
//! daemon restarts; after a renewal the engine's containers are listed once, so what
//! happened while nobody listened is flagged too. The task ends with the engine.

use std::collections::HashMap;
use std::sync::Weak;
use std::time::Duration;

use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::sync::watch;

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
    docker: Docker,
    owner: String,
    mut halt: watch::Receiver<bool>,
) {
    let label = format!("{LABEL_OWNER}={owner}");
    let filters = HashMap::from([
        ("type".to_string(), vec!["container".to_string()]),
        ("label".to_string(), vec![label.clone()]),
        (
            "event".to_string(),
            EVENTS.iter().map(|e| e.to_string()).collect(),
        ),
    ]);
    let mut backoff = Duration::from_millis(200);
    let mut renewed = false;
    loop {
        let opts = EventsOptionsBuilder::default().filters(&filters).build();
        let mut events = docker.events(Some(opts));
        if renewed {
            sweep(&engine, &docker, &label).await;
        }
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    Some(Ok(ev)) => {
                        backoff = Duration::from_millis(200);
                        let Some(id) = ev.actor.and_then(|a| a.id) else { continue };
                        let Some(inner) = engine.upgrade() else { return };
                        tracing::debug!(container = %id, action = ?ev.action, "Docker reports the sandbox unusable");
                        flag(&inner, &id);
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
async fn sweep(engine: &Weak<Inner>, docker: &Docker, label: &str) {
    let filters = HashMap::from([
        ("label".to_string(), vec![label.to_string()]),
        (
            "status".to_string(),
            STATES.iter().map(|s| s.to_string()).collect(),
        ),
    ]);
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let Ok(list) = docker.list_containers(Some(opts)).await else {
        return;
    };
    let Some(inner) = engine.upgrade() else {
        return;
    };
    for id in list.into_iter().filter_map(|c| c.id) {
        flag(&inner, &id);
    }
}

/// Marks a container of the engine as unusable and evicts it from the pool if it waits
/// there. Containers the engine no longer tracks (already removed) are ignored, so the
/// set only holds live ones.
fn flag(inner: &std::sync::Arc<Inner>, id: &str) {
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

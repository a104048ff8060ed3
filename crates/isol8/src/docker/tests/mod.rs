//! Unit tests of the engine on the in-memory backend ([`FakeDocker`]): the pool, one
//! run's state machine, persistent sessions, housekeeping, and the races that are hard
//! to provoke on a real daemon. No Docker daemon is needed. The clock is paused, so the
//! engine's timeouts (the watchdog, reset and hello limits, queue waits) pass instantly
//! and in order.

mod audit;
mod housekeeping;
mod outcome;
mod pool;
mod races;
mod run;
mod session;
mod trace;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use isol8_protocol::{
    EngineOptions, ExecutionRequest, PoolSize, PoolStrategy, StreamEvent, StreamEventType,
};

use super::backend::fake::FakeDocker;
use super::{DockerEngine, EngineConfig};
use crate::engine::EventStream;

/// An engine on `fake` with these options.
async fn engine_on(fake: &FakeDocker, options: EngineOptions) -> DockerEngine {
    engine_with(
        fake,
        EngineConfig {
            options,
            ..Default::default()
        },
    )
    .await
}

/// An engine on `fake` with this configuration.
async fn engine_with(fake: &FakeDocker, config: EngineConfig) -> DockerEngine {
    DockerEngine::with_backend(Arc::new(fake.clone()), config)
        .await
        .expect("an engine on the fake daemon")
}

/// Options of a pool of `size` ready sandboxes with `strategy`.
fn pooled(strategy: PoolStrategy, size: PoolSize) -> EngineOptions {
    EngineOptions {
        pool_strategy: Some(strategy),
        pool_size: Some(size),
        ..Default::default()
    }
}

/// A bash request running a fake-agent script (see `backend::fake::agent`).
fn bash(script: &str) -> ExecutionRequest {
    ExecutionRequest {
        runtime: "bash".into(),
        code: Some(script.into()),
        ..Default::default()
    }
}

/// Waits (in paused time: as long as the engine needs) until `cond` holds; fails the
/// test after a generous virtual minute.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let wait = async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .is_err()
    {
        panic!("timed out waiting until {what}");
    }
}

/// Awaits `f` with a generous limit, so a hang fails the test instead of stalling it.
async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(600), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish"))
}

/// Every event of a stream.
async fn all_events(stream: EventStream) -> Vec<StreamEvent> {
    bounded("the stream", stream.collect::<Vec<_>>()).await
}

/// The text of the events of one kind, concatenated.
fn text(events: &[StreamEvent], kind: StreamEventType) -> String {
    events
        .iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.data.as_str())
        .collect()
}

/// The only container the fake daemon holds.
fn only_container(fake: &FakeDocker) -> String {
    let ids = fake.running();
    assert_eq!(ids.len(), 1, "expected exactly one container: {ids:?}");
    ids[0].clone()
}

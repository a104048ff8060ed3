//! Helpers shared by the server's integration tests: [`router`] for the router tests
//! (`router*.rs`), [`load`] for the load and fault tests (`load*.rs`) and [`reference`]
//! for the key databases of isol8 v0.20 (`keys.rs`, `router_keys.rs`); [`serve_on_loopback`]
//! for the tests that talk to a listening server (`stdin.rs`, `websocket.rs`).

#![allow(dead_code)]

pub mod load;
pub mod reference;
pub mod router;

use std::sync::Arc;

use isol8::EngineOptions;
use isol8_server::{app, AppState};

/// Serves the API over the real engine on a loopback port, with master key `key`: the
/// state and the address it listens on.
pub async fn serve_on_loopback(key: &str) -> (Arc<AppState>, std::net::SocketAddr) {
    let engine = isol8_testkit::engine(EngineOptions::default()).await;
    let state = AppState::new(engine, EngineOptions::default(), key.into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = app(state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (state, addr)
}

/// A stream event without its `resourceUsage` (the figures differ run to run; an
/// agent that does not measure sends none), for comparing events exactly.
pub fn without_usage(mut event: serde_json::Value) -> serde_json::Value {
    if let Some(o) = event.as_object_mut() {
        o.remove("resourceUsage");
    }
    event
}

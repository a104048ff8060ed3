//! `GET /metrics`: every series of [`crate::metrics`] in the Prometheus text format, the
//! gauges (pool sizes, live sessions) read now. It needs a key unless the configuration
//! says `metrics.public: true` (the router decides).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::metrics::CONTENT_TYPE;
use crate::state::AppState;

/// `GET /metrics`: every series in the Prometheus text format.
pub async fn serve(State(state): State<Arc<AppState>>) -> Response {
    let metrics = state.metrics();
    metrics.set_gauges(state.engine().pool_sizes(), state.sessions.len().await);
    match metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "encoding /metrics failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding the metrics failed; see the server log",
            )
                .into_response()
        }
    }
}

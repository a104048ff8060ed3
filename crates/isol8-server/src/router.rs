//! The router ([`app`]) of the isol8 API, separate from any socket so tests drive it
//! with `tower::ServiceExt::oneshot`: the routes of [`crate::routes`], the key check of
//! [`crate::auth`] in front of all but `/health` and `/openapi.json` (and `/metrics` when
//! the operator made it public), the refusal of everything while the server drains, and
//! the count of every request for `GET /metrics`.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;

use crate::auth::require_key;
use crate::error::ApiError;
use crate::routes::{cleanup, execute, files, health, keys, metrics, sessions, MAX_BODY_BYTES};
use crate::state::AppState;

/// The router of the isol8 API.
pub fn app(state: Arc<AppState>) -> Router {
    let mut protected = Router::new();
    let mut public = Router::new()
        .route("/health", get(health::health))
        .route("/openapi.json", get(crate::openapi::serve));
    if state.metrics_public() {
        public = public.route("/metrics", get(metrics::serve));
    } else {
        protected = protected.route("/metrics", get(metrics::serve));
    }
    let protected = protected
        .route("/execute", post(execute::execute))
        .route("/execute/stream", post(execute::execute_stream))
        .route("/execute/ws", get(execute::execute_ws))
        .route("/file", post(files::put_file).get(files::get_file))
        .route("/sessions", get(sessions::list_sessions))
        .route("/session/{id}", delete(sessions::delete_session))
        .route("/cleanup", post(cleanup::cleanup))
        .route("/auth/keys", post(keys::create_key).get(keys::list_keys))
        .route("/auth/keys/{id}", delete(keys::revoke_key))
        .route("/auth/login", post(keys::login))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    public
        .merge(protected)
        .fallback(|| async { ApiError::NoRoute })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            refuse_when_draining,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Every answer is counted, refusals while draining included.
        .layer(middleware::from_fn_with_state(state.clone(), count_http))
        // Outermost: everything a request does is inside its span.
        .layer(middleware::from_fn(crate::trace::in_request_span))
        .with_state(state)
}

/// While the server drains for shutdown, every request (health checks included, so load
/// balancers move away) gets 503 with `Retry-After`.
async fn refuse_when_draining(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    if state.is_draining() {
        return ApiError::ShuttingDown.into_response();
    }
    next.run(req).await
}

/// The middleware that counts every HTTP request by its matched route template (not
/// its raw path: the label stays bounded), method and final status.
pub async fn count_http(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = req.method().clone();
    let response = next.run(req).await;
    state
        .metrics()
        .http_request(&route, &method, response.status());
    response
}

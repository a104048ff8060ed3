//! Authentication: the middleware in front of every route but `/health` and
//! `/openapi.json`; who it found is a [`Caller`].
//!
//! `Authorization: Bearer KEY` with the master key (compared in constant time, with the
//! `subtle` crate) or, when a key store is configured, a valid database key (known,
//! unrevoked, unexpired; [`crate::keys::Keys::authenticate`]). Unknown, revoked and
//! expired keys all get the same `403 {"error":"Invalid API key"}`. The header is read
//! as the reference server reads it ([`bearer_token`]): the scheme in any case, any
//! whitespace after it, and a bare key without a scheme.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::caller::Caller;
use crate::error::{ApiError, AuthError};
use crate::state::AppState;
use crate::trace::Trace;

/// True when `token` is the master key; the time taken does not depend on where they
/// differ.
pub fn is_master_key(token: &str, master_key: &str) -> bool {
    crate::keys::constant_time_eq(token.as_bytes(), master_key.as_bytes())
}

/// The key in an `Authorization` header value, as the reference server takes it: a
/// leading `Bearer` in any letter case followed by whitespace is removed; anything else
/// (a bare key) is the key itself, and is then simply not a valid one unless it is.
pub fn bearer_token(value: &str) -> &str {
    let scheme = "bearer";
    match value.get(..scheme.len()) {
        Some(head) if head.eq_ignore_ascii_case(scheme) => {
            let rest = &value[scheme.len()..];
            let key = rest.trim_start();
            if key.len() < rest.len() {
                key
            } else {
                value
            }
        }
        _ => value,
    }
}

/// The caller a request's `Authorization` header names.
async fn identify(state: &AppState, req: &mut Request) -> Result<Caller, ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Err(AuthError::MissingHeader.into());
    };
    let token = value.to_str().map(bearer_token).unwrap_or("").to_string();
    if is_master_key(&token, state.master_key()) {
        return Ok(Caller::master());
    }
    let Some(keys) = state.keys() else {
        return Err(AuthError::InvalidKey.into());
    };
    match keys.authenticate(&token).await {
        Ok(Some(info)) => Ok(Caller {
            tenant: info.tenant_id,
            key_id: Some(info.id),
        }),
        Ok(None) => Err(AuthError::InvalidKey.into()),
        Err(e) => Err(ApiError::key_store(e, &Trace::of_request(req))),
    }
}

/// The auth middleware: identifies the caller (see the module docs) and hands it to the
/// route as a request extension ([`Caller`] is an extractor), or answers 401/403.
pub async fn require_key(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    match identify(&state, &mut req).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => {
            // The request's body was never read. hyper then closes the connection after
            // this answer, and a client that sends its next request on it (a keep-alive
            // pool) races that close and sees "disconnected without a response". Saying
            // `Connection: close` makes the client open a new connection instead.
            let mut resp = e.into_response();
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            resp
        }
    }
}

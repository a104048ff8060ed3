//! Database key management: `POST /auth/keys`, `GET /auth/keys`,
//! `DELETE /auth/keys/{id}` and `POST /auth/login` (see [`crate::keys`]).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::caller::Caller;
use crate::error::{ApiError, AuthError, InputError, KeyError};
use crate::extractors::{optional_json, ApiJson};
use crate::keys::{self, KeyView};
use crate::routes::Done;
use crate::state::AppState;
use crate::trace::Trace;

/// Lifetime of a key issued by `POST /auth/login` when neither the body nor
/// `auth.defaultTtlMs` gives one.
pub const DEFAULT_LOGIN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Body of `POST /auth/keys`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateKey {
    /// Label, 1-128 printable characters.
    pub name: String,
    /// Tenant the key acts as (owner of its sessions); default: a tenant of its own (the
    /// key's id).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Lifetime in milliseconds (1 to ten years); default `auth.defaultTtlMs`, else no
    /// expiry.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub ttl_ms: Option<u64>,
}

/// Body of `POST /auth/login` (every field optional; an empty body means `{}`).
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Login {
    /// Label; default `login`.
    #[serde(default)]
    pub name: Option<String>,
    /// Tenant the key acts as; default the caller's (`master`).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Lifetime in milliseconds; default `auth.defaultTtlMs`, else 30 days.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub ttl_ms: Option<u64>,
}

/// Reply of `POST /auth/keys` and `POST /auth/login`: the new key and its metadata.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct IssuedKey {
    /// The key's metadata.
    #[serde(flatten)]
    pub info: KeyView,
    /// `isol8_` + 64 hex characters; shown only in this reply.
    pub key: String,
}

/// Reply of `GET /auth/keys`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct KeyList {
    /// Every key's metadata, oldest first (never a key or its hash).
    pub keys: Vec<KeyView>,
}

fn key_store(state: &AppState) -> Result<&keys::Keys, ApiError> {
    state.keys().ok_or(ApiError::Keys(KeyError::Disabled))
}

/// Checks a name or tenant: 1-128 printable characters.
fn check_label(field: &'static str, v: &str) -> Result<(), InputError> {
    if v.trim().is_empty() || v.chars().count() > 128 || v.chars().any(char::is_control) {
        return Err(InputError::Label(field));
    }
    Ok(())
}

fn check_ttl(ttl_ms: Option<u64>) -> Result<Option<Duration>, InputError> {
    match ttl_ms {
        None => Ok(None),
        Some(ms) if ms == 0 || Duration::from_millis(ms) > keys::MAX_TTL => Err(InputError::Ttl),
        Some(ms) => Ok(Some(Duration::from_millis(ms))),
    }
}

/// The reply to a new key: 201 with the plaintext key (shown only here) and its metadata.
fn issued(key: String, info: &keys::KeyInfo) -> (StatusCode, axum::Json<IssuedKey>) {
    (
        StatusCode::CREATED,
        axum::Json(IssuedKey {
            info: info.view(),
            key,
        }),
    )
}

/// `POST /auth/keys` (master key): creates a database key.
pub async fn create_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    trace: Trace,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<(StatusCode, axum::Json<IssuedKey>), ApiError> {
    caller.require_master()?;
    let keys = key_store(&state)?;
    check_label("name", &body.name)?;
    if let Some(t) = &body.tenant {
        check_label("tenant", t)?;
    }
    let ttl = check_ttl(body.ttl_ms)?;
    let (key, info) = keys
        .create(&body.name, body.tenant.as_deref(), ttl)
        .await
        .map_err(|e| ApiError::key_store(e, &trace))?;
    tracing::info!(id = %info.id, tenant = %info.tenant, "API key created");
    Ok(issued(key, &info))
}

/// `GET /auth/keys` (master key): every key's metadata, never a key.
pub async fn list_keys(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    trace: Trace,
) -> Result<axum::Json<KeyList>, ApiError> {
    caller.require_master()?;
    let list = key_store(&state)?
        .store()
        .list()
        .await
        .map_err(|e| ApiError::key_store(e, &trace))?;
    Ok(axum::Json(KeyList {
        keys: list.iter().map(keys::KeyInfo::view).collect(),
    }))
}

/// `DELETE /auth/keys/{id}`: revokes a key (idempotent); the master key revokes any, a
/// database key only itself (`isol8 logout`).
pub async fn revoke_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    trace: Trace,
    Path(id): Path<String>,
) -> Result<axum::Json<Done>, ApiError> {
    let keys = key_store(&state)?;
    if !caller.is_master() && caller.key_id.as_deref() != Some(id.as_str()) {
        return Err(AuthError::RevokeOther.into());
    }
    let found = keys
        .store()
        .revoke(&id)
        .await
        .map_err(|e| ApiError::key_store(e, &trace))?;
    if !found {
        return Err(KeyError::NotFound(id).into());
    }
    tracing::info!(id = %id, "API key revoked");
    Ok(Done::reply())
}

/// `POST /auth/login` (master key): issues an expiring key acting as the caller.
pub async fn login(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    trace: Trace,
    req: Request,
) -> Result<(StatusCode, axum::Json<IssuedKey>), ApiError> {
    caller.require_master()?;
    let keys = key_store(&state)?;
    let body: Login = optional_json(req, &state).await?;
    let name = body.name.unwrap_or_else(|| "login".into());
    check_label("name", &name)?;
    // The issued key acts as the caller: the master's tenant unless told otherwise.
    let tenant = body.tenant.unwrap_or_else(|| caller.tenant.clone());
    check_label("tenant", &tenant)?;
    let ttl = check_ttl(body.ttl_ms)?
        .or(keys.default_ttl())
        .unwrap_or(DEFAULT_LOGIN_TTL);
    let (key, info) = keys
        .create(&name, Some(&tenant), Some(ttl))
        .await
        .map_err(|e| ApiError::key_store(e, &trace))?;
    tracing::info!(id = %info.id, tenant = %info.tenant, "login key issued");
    Ok(issued(key, &info))
}

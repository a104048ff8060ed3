//! Database key management, answered as isol8 v0.20 answers it: `POST /auth/keys`,
//! `GET /auth/keys`, `DELETE /auth/keys/{id}` and `POST /auth/login` (see
//! [`crate::keys`]). All need the master key, except that a database key may revoke
//! itself (what `isol8 logout` does); without a key store they answer
//! `400 {"error":"DB-backed auth is not enabled"}`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::caller::Caller;
use crate::error::{ApiError, AuthError, InputError, KeyError};
use crate::extractors::{optional_json, ApiJson};
use crate::keys::{self, KeyInfo};
use crate::state::AppState;
use crate::trace::Trace;

/// Body of `POST /auth/keys`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
// Parsed as optional so that a missing name gets isol8 v0.20's answer, but required.
#[schemars(extend("required" = ["name"]))]
pub struct CreateKey {
    /// Label, 1-128 printable characters (required: `400 name is required` without it).
    #[serde(default)]
    pub name: Option<String>,
    /// Tenant the key acts as (owner of its sessions; 1-128 printable characters);
    /// default `"default"`. `tenant` is accepted too.
    #[serde(default, alias = "tenant")]
    pub tenant_id: Option<String>,
    /// Lifetime in milliseconds (1 to ten years); default `auth.defaultTtlMs` (24 hours
    /// when not set).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub ttl_ms: Option<u64>,
}

/// Body of `POST /auth/login` (every field optional; an empty body means `{}`).
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Login {
    /// Label; default `login-` and the current time (RFC 3339).
    #[serde(default)]
    pub name: Option<String>,
    /// Tenant the key acts as; default `"default"`. `tenant` is accepted too.
    #[serde(default, alias = "tenant")]
    pub tenant_id: Option<String>,
    /// Lifetime in milliseconds; default `auth.defaultTtlMs` (24 hours when not set).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub ttl_ms: Option<u64>,
}

/// Query of `GET /auth/keys`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListKeysQuery {
    /// Only this tenant's keys (empty or absent: every key).
    #[serde(default)]
    pub tenant_id: Option<String>,
}

/// Reply of `POST /auth/keys` (201): the new key, shown only here, and its metadata.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuedKey {
    /// The key's id (used to revoke it).
    pub id: String,
    /// `isol8_` + 64 hex characters; shown only in this reply.
    pub key: String,
    /// Its label.
    pub name: String,
    /// Its first 10 characters and `...`.
    pub key_prefix: String,
    /// The tenant it acts as.
    pub tenant_id: String,
    /// When it expires, RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub expires_at: String,
}

/// Reply of `POST /auth/login` (200): the new key, shown only here.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginReply {
    /// The issued key, `isol8_` + 64 hex characters: the bearer token to use.
    pub token: String,
    /// When it expires, RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub expires_at: String,
    /// Its id (what `isol8 logout` revokes).
    pub key_id: String,
}

/// Reply of `GET /auth/keys`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct KeyList {
    /// The keys' metadata, oldest first (never a key or its hash).
    pub keys: Vec<KeyInfo>,
}

/// Reply of `DELETE /auth/keys/{id}`: `{ok: true, id}`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Revoked {
    /// Always `true`.
    pub ok: bool,
    /// The revoked key's id.
    pub id: String,
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

/// `POST /auth/keys` (master key): creates a database key.
pub async fn create_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    trace: Trace,
    body: Result<ApiJson<CreateKey>, ApiError>,
) -> Result<(StatusCode, axum::Json<IssuedKey>), ApiError> {
    caller.require_master()?;
    let keys = key_store(&state)?;
    let ApiJson(body) = body?;
    let name = body
        .name
        .filter(|n| !n.is_empty())
        .ok_or(InputError::NameRequired)?;
    check_label("name", &name)?;
    if let Some(t) = &body.tenant_id {
        check_label("tenantId", t)?;
    }
    let ttl = check_ttl(body.ttl_ms)?;
    let (key, info) = keys
        .create(&name, body.tenant_id.as_deref(), ttl)
        .await
        .map_err(|e| ApiError::key_store(e, &trace))?;
    tracing::info!(id = %info.id, tenant = %info.tenant_id, "API key created");
    Ok((
        StatusCode::CREATED,
        axum::Json(IssuedKey {
            id: info.id,
            key,
            name: info.name,
            key_prefix: info.key_prefix,
            tenant_id: info.tenant_id,
            expires_at: info.expires_at,
        }),
    ))
}

/// `GET /auth/keys` (master key): the keys' metadata (`?tenantId=` for one tenant's),
/// never a key.
pub async fn list_keys(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    trace: Trace,
    query: Result<Query<ListKeysQuery>, QueryRejection>,
) -> Result<axum::Json<KeyList>, ApiError> {
    caller.require_master()?;
    let keys = key_store(&state)?;
    let Query(q) = query.map_err(|e| InputError::Rejected {
        status: StatusCode::BAD_REQUEST,
        message: e.body_text(),
    })?;
    let tenant = q.tenant_id.filter(|t| !t.is_empty());
    let list = keys
        .store()
        .list(tenant.as_deref())
        .await
        .map_err(|e| ApiError::key_store(e, &trace))?;
    Ok(axum::Json(KeyList { keys: list }))
}

/// `DELETE /auth/keys/{id}`: revokes a key (idempotent until the next cleanup deletes
/// it); the master key revokes any, a database key only itself (`isol8 logout`).
pub async fn revoke_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    trace: Trace,
    Path(id): Path<String>,
) -> Result<axum::Json<Revoked>, ApiError> {
    if !caller.is_master() && caller.key_id.as_deref() != Some(id.as_str()) {
        return Err(AuthError::RevokeOther.into());
    }
    let keys = key_store(&state)?;
    let found = keys
        .store()
        .revoke(&id)
        .await
        .map_err(|e| ApiError::key_store(e, &trace))?;
    if !found {
        return Err(KeyError::NotFound.into());
    }
    tracing::info!(id = %id, "API key revoked");
    Ok(axum::Json(Revoked { ok: true, id }))
}

/// `POST /auth/login` (master key): issues an expiring key, answered as
/// `{token, expiresAt, keyId}`.
pub async fn login(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    trace: Trace,
    req: Request,
) -> Result<axum::Json<LoginReply>, ApiError> {
    caller.require_master()?;
    let keys = key_store(&state)?;
    let body: Login = optional_json(req, &state).await?;
    let name = body
        .name
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("login-{}", keys::format_time(chrono::Utc::now())));
    check_label("name", &name)?;
    if let Some(t) = &body.tenant_id {
        check_label("tenantId", t)?;
    }
    let ttl = check_ttl(body.ttl_ms)?;
    let (key, info) = keys
        .create(&name, body.tenant_id.as_deref(), ttl)
        .await
        .map_err(|e| ApiError::key_store(e, &trace))?;
    tracing::info!(id = %info.id, tenant = %info.tenant_id, "login key issued");
    Ok(axum::Json(LoginReply {
        token: key,
        expires_at: info.expires_at,
        key_id: info.id,
    }))
}

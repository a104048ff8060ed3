//! Persistent sessions: keyed by tenant and id (each tenant has its own namespace of
//! ids, so two tenants may both use `job-1` and neither can observe the other's),
//! created on first use within the caps (`serverPolicy.maxSessions`,
//! `maxSessionsPerTenant`), and pruned when idle.
//!
//! Who addresses which session (`Sessions::key`): a database key, its own tenant's
//! (every key of a tenant shares them); the master key, every tenant's. The reference
//! server has one flat namespace of ids, so the master key names a session by its id
//! alone: its own tenant's (`master`) when there is one, else the one session of any
//! tenant with that id (409 when several tenants hold it); `tenantId` (a body field or
//! query parameter on the session routes) names the tenant explicitly. A database key
//! that names another tenant is refused (403).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use isol8::EngineOptions;
use isol8_protocol::options::Mode;
use tokio::sync::Mutex;

use crate::backend::{Backend, Executor};
use crate::caller::Caller;
use crate::error::{ApiError, AuthError, SessionError};
use crate::trace::Trace;

/// Sessions alive at once when `serverPolicy.maxSessions` is not set.
pub const DEFAULT_MAX_SESSIONS: usize = isol8::config::ServerPolicy::DEFAULT_MAX_SESSIONS as usize;

/// Sessions one tenant may hold when `serverPolicy.maxSessionsPerTenant` is not set.
pub const DEFAULT_MAX_SESSIONS_PER_TENANT: usize =
    isol8::config::ServerPolicy::DEFAULT_MAX_SESSIONS_PER_TENANT as usize;

/// A session's key: (tenant, id).
pub(crate) type SessionKey = (String, String);

/// One persistent session (its tenant is the first half of its key).
pub(crate) struct Session {
    pub(crate) engine: Arc<dyn Executor>,
    pub(crate) last_accessed: chrono::DateTime<chrono::Utc>,
}

/// One entry of a session list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    pub(crate) tenant: String,
    pub(crate) id: String,
    pub(crate) is_active: bool,
    pub(crate) last_accessed: chrono::DateTime<chrono::Utc>,
}

/// Every session of the server. The lock is held only for map operations, never across
/// an engine call.
pub(crate) struct Sessions {
    map: Mutex<HashMap<SessionKey, Session>>,
    max_total: usize,
    max_per_tenant: usize,
}

/// Checks a client-chosen `sessionId` (public for the request fuzzer in `fuzz/`).
pub fn check_session_id(id: &str) -> Result<(), SessionError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(SessionError::InvalidId)
    }
}

/// Checks a `tenantId` naming a session's tenant: 1-128 printable characters.
fn check_tenant(tenant: &str) -> Result<(), SessionError> {
    let ok = !tenant.is_empty() && tenant.len() <= 128 && !tenant.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(SessionError::InvalidTenant)
    }
}

impl Sessions {
    /// No sessions yet; caps from `policy`.
    pub(crate) fn new(policy: &isol8::config::ServerPolicy) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            max_total: policy
                .max_sessions
                .map_or(DEFAULT_MAX_SESSIONS, |n| n as usize),
            max_per_tenant: policy
                .max_sessions_per_tenant
                .map_or(DEFAULT_MAX_SESSIONS_PER_TENANT, |n| n as usize),
        }
    }

    /// The sessions `caller` sees, sorted by tenant and id: a database key's tenant's,
    /// or every tenant's for the master key.
    pub(crate) async fn list(&self, caller: &Caller) -> Vec<Listed> {
        let map = self.map.lock().await;
        let mut list: Vec<Listed> = map
            .iter()
            .filter(|((t, _), _)| caller.is_master() || *t == caller.tenant)
            .map(|((t, id), s)| Listed {
                tenant: t.clone(),
                id: id.clone(),
                is_active: s.engine.running() > 0,
                last_accessed: s.last_accessed,
            })
            .collect();
        list.sort_by(|a, b| (&a.tenant, &a.id).cmp(&(&b.tenant, &b.id)));
        list
    }

    /// Removes the session `id` that `caller` addresses (in `tenant`, if named), if
    /// there is one.
    pub(crate) async fn remove(
        &self,
        caller: &Caller,
        id: &str,
        tenant: Option<&str>,
    ) -> Result<Option<Session>, ApiError> {
        let mut map = self.map.lock().await;
        let key = Self::key(&map, caller, id, tenant)?;
        Ok(map.remove(&key))
    }

    /// The key of the session `id` that `caller` addresses, given the sessions in `map`
    /// and the `tenantId` the request named, if any (see the module docs).
    fn key(
        map: &HashMap<SessionKey, Session>,
        caller: &Caller,
        id: &str,
        tenant: Option<&str>,
    ) -> Result<SessionKey, ApiError> {
        if let Some(t) = tenant {
            check_tenant(t)?;
            if !caller.is_master() && t != caller.tenant {
                return Err(AuthError::OtherTenant.into());
            }
            return Ok((t.to_string(), id.to_string()));
        }
        let own = (caller.tenant.clone(), id.to_string());
        if !caller.is_master() || map.contains_key(&own) {
            return Ok(own);
        }
        let mut holders: Vec<&String> = map
            .keys()
            .filter(|(_, i)| i == id)
            .map(|(t, _)| t)
            .collect();
        match holders.len() {
            0 => Ok(own),
            1 => Ok((holders[0].clone(), id.to_string())),
            _ => {
                holders.sort();
                Err(SessionError::Ambiguous {
                    id: id.to_string(),
                    tenants: holders
                        .iter()
                        .map(|t| t.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                }
                .into())
            }
        }
    }

    /// Sessions alive now.
    pub(crate) async fn len(&self) -> usize {
        self.map.lock().await.len()
    }

    /// Removes every session.
    pub(crate) async fn take_all(&self) -> Vec<Session> {
        self.map.lock().await.drain().map(|(_, s)| s).collect()
    }

    /// Removes every session, with its key, sorted by tenant and id.
    pub(crate) async fn take_all_keyed(&self) -> Vec<(SessionKey, Session)> {
        let mut all: Vec<(SessionKey, Session)> = self.map.lock().await.drain().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Removes the sessions with no execution running, unused for longer than `max_age`.
    pub(crate) async fn take_idle(&self, max_age: Duration) -> Vec<(SessionKey, Session)> {
        let cutoff = chrono::Utc::now()
            - chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
        let mut map = self.map.lock().await;
        let ids: Vec<SessionKey> = map
            .iter()
            .filter(|(_, s)| s.engine.running() == 0 && s.last_accessed < cutoff)
            .map(|(id, _)| id.clone())
            .collect();
        ids.into_iter()
            .filter_map(|id| map.remove(&id).map(|s| (id, s)))
            .collect()
    }
}

impl Sessions {
    /// The engine of the session `id` that `caller` addresses (in `tenant`, if named;
    /// see `Sessions::key`). When there is none and `create` holds the client's
    /// options, a new persistent one is made by `backend` with them laid over
    /// `defaults` (the server's options), within the caps; without `create`, 404. The
    /// flag is true when the session was made by this call.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn session(
        &self,
        backend: &dyn Backend,
        defaults: &EngineOptions,
        caller: &Caller,
        id: &str,
        tenant: Option<&str>,
        create: Option<&EngineOptions>,
        trace: &Trace,
    ) -> Result<(Arc<dyn Executor>, bool), ApiError> {
        check_session_id(id)?;
        let mut map = self.map.lock().await;
        let key = Self::key(&map, caller, id, tenant)?;
        // Only the sessions this caller may address are looked at: another tenant's `id`
        // is not there for a database key, busy or not.
        if let Some(s) = map.get_mut(&key) {
            s.last_accessed = chrono::Utc::now();
            return Ok((s.engine.clone(), false));
        }
        let Some(client) = create else {
            return Err(SessionError::NotFound(id.to_string()).into());
        };
        if map.len() >= self.max_total {
            return Err(SessionError::ServerFull(self.max_total).into());
        }
        let max_tenant = self.max_per_tenant;
        if map.keys().filter(|(t, _)| *t == key.0).count() >= max_tenant {
            return Err(SessionError::TenantFull(max_tenant).into());
        }
        // No engine call under the lock: a session engine is created without one, and
        // its container is started by its first execution, outside this lock.
        let engine = backend
            .new_session(EngineOptions {
                mode: Some(Mode::Persistent),
                ..defaults.overlay(client)
            })
            .map_err(|e| ApiError::engine(e, trace))?;
        map.insert(
            key,
            Session {
                engine: engine.clone(),
                last_accessed: chrono::Utc::now(),
            },
        );
        Ok((engine, true))
    }
}

//! Persistent sessions: keyed by tenant and id (each tenant has its own namespace of
//! ids, so two tenants may both use `job-1` and neither can observe the other's),
//! created on first use within the caps (`serverPolicy.maxSessions`,
//! `maxSessionsPerTenant`), and pruned when idle.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use isol8::EngineOptions;
use isol8_protocol::options::Mode;
use tokio::sync::Mutex;

use crate::backend::{Backend, Executor};
use crate::caller::Caller;
use crate::error::{ApiError, SessionError};
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

/// One entry of a tenant's session list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
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

    /// `tenant`'s sessions, sorted by id.
    pub(crate) async fn list(&self, tenant: &str) -> Vec<Listed> {
        let map = self.map.lock().await;
        let mut list: Vec<Listed> = map
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|((_, id), s)| Listed {
                id: id.clone(),
                is_active: s.engine.running() > 0,
                last_accessed: s.last_accessed,
            })
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// Removes `tenant`'s session `id`, if there is one.
    pub(crate) async fn remove(&self, tenant: &str, id: &str) -> Option<Session> {
        self.map
            .lock()
            .await
            .remove(&(tenant.to_string(), id.to_string()))
    }

    /// Removes every session.
    pub(crate) async fn take_all(&self) -> Vec<Session> {
        self.map.lock().await.drain().map(|(_, s)| s).collect()
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
    /// The engine of session `id` for `caller`; if `create`, a new persistent one made
    /// by `backend` with `options` when the caller's tenant has none by that id (within
    /// the caps).
    pub(crate) async fn session(
        &self,
        backend: &dyn Backend,
        options: &EngineOptions,
        caller: &Caller,
        id: &str,
        create: bool,
        trace: &Trace,
    ) -> Result<Arc<dyn Executor>, ApiError> {
        check_session_id(id)?;
        let key = (caller.tenant.clone(), id.to_string());
        let mut map = self.map.lock().await;
        // Only the caller's tenant's sessions are looked at: another tenant's `id` is not
        // there, busy or not.
        if let Some(s) = map.get_mut(&key) {
            s.last_accessed = chrono::Utc::now();
            return Ok(s.engine.clone());
        }
        if !create {
            return Err(SessionError::NotFound(id.to_string()).into());
        }
        if map.len() >= self.max_total {
            return Err(SessionError::ServerFull(self.max_total).into());
        }
        let max_tenant = self.max_per_tenant;
        if map.keys().filter(|(t, _)| *t == caller.tenant).count() >= max_tenant {
            return Err(SessionError::TenantFull(max_tenant).into());
        }
        // No engine call under the lock: a session engine is created without one, and
        // its container is started by its first execution, outside this lock.
        let engine = backend
            .new_session(EngineOptions {
                mode: Some(Mode::Persistent),
                ..options.clone()
            })
            .map_err(|e| ApiError::engine(e, trace))?;
        map.insert(
            key,
            Session {
                engine: engine.clone(),
                last_accessed: chrono::Utc::now(),
            },
        );
        Ok(engine)
    }
}

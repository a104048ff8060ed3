//! The persistent sessions models opened, and who owns them.
//!
//! A session belongs to the MCP connection that created it (the stdio client, or one
//! streamable-HTTP session): when that connection goes away — stdio end-of-file, an HTTP
//! session closed or expired — its [`Connection`] is dropped and its sessions end (their
//! containers are removed). A session created by a stateless HTTP request (protocol
//! versions without MCP sessions) has no connection to follow: it ends on `end_session`,
//! when idle for longer than the prune age, or at shutdown. Every session ends at
//! shutdown ([`Sessions::end_all`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use isol8::Engine;
use tokio_util::task::TaskTracker;

/// One open session.
struct Entry {
    engine: Arc<dyn Engine>,
    runtime: String,
    owner: Option<u64>,
    last_used: Instant,
}

/// Every open session of this server.
pub struct Sessions {
    map: Mutex<HashMap<String, Entry>>,
    max: usize,
    next_owner: AtomicU64,
    /// Session endings under way (from a dropped connection), awaited at shutdown.
    endings: TaskTracker,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("open", &self.lock().len())
            .field("max", &self.max)
            .finish()
    }
}

/// A session found by id: its engine and the runtime it is bound to.
pub type Found = (Arc<dyn Engine>, String);

impl Sessions {
    /// An empty table allowing at most `max` open sessions.
    pub fn new(max: usize) -> Arc<Sessions> {
        Arc::new(Sessions {
            map: Mutex::new(HashMap::new()),
            max,
            next_owner: AtomicU64::new(1),
            endings: TaskTracker::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // A panic under this lock leaves a consistent map: keep using it.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new connection owning the sessions it creates; dropping it ends them.
    pub fn connect(self: &Arc<Self>) -> Arc<Connection> {
        Arc::new(Connection {
            id: self.next_owner.fetch_add(1, Ordering::Relaxed),
            sessions: self.clone(),
        })
    }

    /// Registers session `id`; refused (nothing registered) when `max` are open.
    pub fn insert(
        &self,
        id: &str,
        engine: Arc<dyn Engine>,
        runtime: &str,
        owner: Option<&Connection>,
    ) -> Result<(), String> {
        let mut map = self.lock();
        if map.len() >= self.max {
            return Err(format!(
                "{} sessions are open, the most this server allows (serverPolicy.maxSessions): end one with end_session first",
                self.max
            ));
        }
        map.insert(
            id.to_string(),
            Entry {
                engine,
                runtime: runtime.to_string(),
                owner: owner.map(|c| c.id),
                last_used: Instant::now(),
            },
        );
        Ok(())
    }

    /// The session `id` (marked used now).
    pub fn get(&self, id: &str) -> Result<Found, String> {
        let mut map = self.lock();
        let entry = map.get_mut(id).ok_or_else(|| unknown(id))?;
        entry.last_used = Instant::now();
        Ok((entry.engine.clone(), entry.runtime.clone()))
    }

    /// Removes session `id` from the table (the caller ends it).
    pub fn remove(&self, id: &str) -> Result<Arc<dyn Engine>, String> {
        self.lock()
            .remove(id)
            .map(|e| e.engine)
            .ok_or_else(|| unknown(id))
    }

    /// How many sessions are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn take(&self, pick: impl Fn(&Entry) -> bool) -> Vec<(String, Arc<dyn Engine>)> {
        let mut map = self.lock();
        let ids: Vec<String> = map
            .iter()
            .filter(|(_, e)| pick(e))
            .map(|(id, _)| id.clone())
            .collect();
        ids.into_iter()
            .filter_map(|id| map.remove(&id).map(|e| (id, e.engine)))
            .collect()
    }

    /// Ends the sessions not used for `max_age` and not running anything now (a call in
    /// progress holds a clone of the engine). Returns how many.
    pub async fn prune(&self, max_age: Duration) -> usize {
        let idle =
            self.take(|e| e.last_used.elapsed() >= max_age && Arc::strong_count(&e.engine) == 1);
        let n = idle.len();
        for (id, engine) in idle {
            tracing::info!(session = %id, "ending an idle MCP session");
            end(&id, engine).await;
        }
        n
    }

    /// Ends every session (shutdown), and waits for endings already under way.
    pub async fn end_all(&self) {
        for (id, engine) in self.take(|_| true) {
            end(&id, engine).await;
        }
        self.endings.close();
        self.endings.wait().await;
    }
}

/// Stops a session's engine (removing its container); a failure is logged.
pub async fn end(id: &str, engine: Arc<dyn Engine>) {
    if let Err(e) = engine.stop().await {
        tracing::warn!(session = %id, error = %e, "ending a session");
    }
}

fn unknown(id: &str) -> String {
    format!("no session `{id}`: it was ended, or never created; create one with create_session")
}

/// One MCP connection: the owner of the sessions it created, which end when it is
/// dropped (the client went away).
pub struct Connection {
    id: u64,
    sessions: Arc<Sessions>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("id", &self.id).finish()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let id = self.id;
        let owned = self.sessions.take(|e| e.owner == Some(id));
        if owned.is_empty() {
            return;
        }
        tracing::info!(
            sessions = owned.len(),
            "MCP client gone: ending its sessions"
        );
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no runtime to end the sessions of a closed connection on");
            return;
        };
        for (sid, engine) in owned {
            self.sessions
                .endings
                .spawn_on(async move { end(&sid, engine).await }, &rt);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    use isol8::control::Controller;
    use isol8::{EngineOptions, EventStream, ExecutionRequest, ExecutionResult};

    /// An engine that only counts its stops.
    #[derive(Debug, Default)]
    struct Counting(Arc<AtomicUsize>);

    #[async_trait::async_trait]
    impl Engine for Counting {
        async fn start(&self) -> isol8::Result<()> {
            Ok(())
        }
        async fn stop(&self) -> isol8::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        async fn execute_with(
            &self,
            _: ExecutionRequest,
            _: &EngineOptions,
        ) -> isol8::Result<ExecutionResult> {
            Err(isol8::Error::NotSupported("test".into()))
        }
        async fn execute_stream_with(
            &self,
            _: ExecutionRequest,
            _: &EngineOptions,
        ) -> isol8::Result<EventStream> {
            Err(isol8::Error::NotSupported("test".into()))
        }
        async fn execute_interactive(
            &self,
            _: ExecutionRequest,
            _: &EngineOptions,
        ) -> isol8::Result<(EventStream, Controller)> {
            Err(isol8::Error::NotSupported("test".into()))
        }
        async fn put_file(&self, _: &str, _: &[u8]) -> isol8::Result<()> {
            Ok(())
        }
        async fn get_file(&self, _: &str) -> isol8::Result<Vec<u8>> {
            Ok(Vec::new())
        }
    }

    fn engine(stops: &Arc<AtomicUsize>) -> Arc<dyn Engine> {
        Arc::new(Counting(stops.clone()))
    }

    #[tokio::test]
    async fn a_dropped_connection_ends_its_own_sessions_only() {
        let stops = Arc::new(AtomicUsize::new(0));
        let sessions = Sessions::new(10);
        let a = sessions.connect();
        let b = sessions.connect();
        sessions
            .insert("a1", engine(&stops), "python", Some(&a))
            .expect("a1");
        sessions
            .insert("a2", engine(&stops), "python", Some(&a))
            .expect("a2");
        sessions
            .insert("b1", engine(&stops), "bash", Some(&b))
            .expect("b1");
        sessions
            .insert("free", engine(&stops), "bash", None)
            .expect("free");
        drop(a);
        sessions.endings.close();
        sessions.endings.wait().await;
        assert_eq!(stops.load(Ordering::SeqCst), 2);
        assert!(sessions.get("a1").is_err() && sessions.get("a2").is_err());
        assert_eq!(sessions.get("b1").expect("b1").1, "bash");
        assert_eq!(sessions.len(), 2);
        // Shutdown ends the rest, with or without an owner.
        sessions.end_all().await;
        assert_eq!(stops.load(Ordering::SeqCst), 4);
        assert!(sessions.is_empty());
        drop(b);
        assert_eq!(stops.load(Ordering::SeqCst), 4, "nothing is ended twice");
    }

    #[tokio::test]
    async fn the_cap_holds_and_idle_sessions_in_use_are_not_pruned() {
        let stops = Arc::new(AtomicUsize::new(0));
        let sessions = Sessions::new(2);
        sessions
            .insert("x", engine(&stops), "python", None)
            .expect("x");
        sessions
            .insert("y", engine(&stops), "python", None)
            .expect("y");
        let full = sessions
            .insert("z", engine(&stops), "python", None)
            .expect_err("over the cap");
        assert!(full.contains("serverPolicy.maxSessions"), "{full}");
        // `x` is being used (a call holds its engine): only `y` is pruned.
        let (held, _) = sessions.get("x").expect("x");
        assert_eq!(sessions.prune(Duration::ZERO).await, 1);
        assert!(sessions.get("x").is_ok() && sessions.get("y").is_err());
        drop(held);
        assert_eq!(
            sessions.prune(Duration::from_secs(3600)).await,
            0,
            "x was just used"
        );
        assert_eq!(sessions.prune(Duration::ZERO).await, 1);
        assert_eq!(stops.load(Ordering::SeqCst), 2);
        let Err(unknown) = sessions.remove("x") else {
            panic!("x was pruned")
        };
        assert!(unknown.contains("create_session"), "{unknown}");
    }
}

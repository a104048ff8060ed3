//! The warm pool: started sandboxes waiting for work, per image and security settings.
//!
//! * `fast`: after an execution the agent resets the sandbox (see "What a reset clears"
//!   in `docs/SECURITY.md`: processes, relayed connections, `/sandbox`, `/tmp`,
//!   `/dev/shm`, POSIX message queues, every System V IPC object) and it goes back to the
//!   pool; a failed or slow reset destroys it instead. A sandbox with a writable root
//!   filesystem is never reset: it is destroyed after one execution.
//! * `secure`: a sandbox serves one execution and is destroyed; the pool refills in the
//!   background.
//!
//! Sandboxes are only shared between executions whose key — image and a hash of the
//! complete `HostConfig` (limits, network, seccomp profile, capabilities) — is identical.
//!
//! `clean` is the number of ready sandboxes kept per key; `dirty` bounds how many resets
//! run at once per key (beyond it, used sandboxes are destroyed rather than reset).
//! A request finding no ready sandbox waits for one that is being reset or started when
//! there is one it can have, and otherwise starts its own (a cold start).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use isol8_protocol::{PoolSize, PoolStrategy};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tracing::Instrument as _;

use super::host_config::HostConfig;
use super::sandbox::Sandbox;
use super::Inner;
use crate::Result;

/// Longest a request waits for a pooled sandbox before starting its own.
const MAX_POOL_WAIT: Duration = Duration::from_secs(15);

/// What a pooled sandbox must match to be shared.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Image reference.
    pub image: String,
    /// SHA-256 of the serialised `HostConfig`.
    pub config_hash: String,
}

impl PoolKey {
    /// The key of sandboxes of `image` created with `host`.
    pub fn new(image: &str, host: &HostConfig) -> PoolKey {
        PoolKey {
            image: image.to_string(),
            config_hash: Self::hash_of(host),
        }
    }

    /// The key of sandboxes of `image` whose `HostConfig` hashes to `config_hash` (see
    /// [`PoolKey::hash_of`]); lets the hash be computed once per settings, not per request.
    pub fn with_hash(image: &str, config_hash: &str) -> PoolKey {
        PoolKey {
            image: image.to_string(),
            config_hash: config_hash.to_string(),
        }
    }

    /// SHA-256 (hex) of a `HostConfig`'s JSON (its maps are ordered, so equal configs
    /// hash alike).
    pub fn hash_of(host: &HostConfig) -> String {
        let json = serde_json::to_vec(host).unwrap_or_default();
        hex::encode(Sha256::digest(&json))
    }
}

#[derive(Default)]
struct Slot {
    idle: Vec<Sandbox>,
    resetting: usize,
    warming: usize,
    waiting: usize,
    /// Sandboxes of this key handed to executions and not yet given back ([`Lease`]).
    leased: usize,
    runtime: String,
    host: Option<HostConfig>,
}

/// Per-engine pool of warm sandboxes.
pub struct Pool {
    slots: Mutex<HashMap<PoolKey, Slot>>,
    changed: Notify,
    strategy: PoolStrategy,
    clean: usize,
    dirty: usize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("strategy", &self.strategy)
            .field("clean", &self.clean)
            .finish_non_exhaustive()
    }
}

/// Counts of one key's sandboxes, for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Ready sandboxes.
    pub idle: usize,
    /// Sandboxes being reset.
    pub resetting: usize,
    /// Sandboxes being started.
    pub warming: usize,
}

impl Pool {
    /// A pool with this strategy and size.
    pub fn new(strategy: PoolStrategy, size: PoolSize) -> Pool {
        let (clean, dirty) = match size {
            PoolSize::Total(n) => (n as usize, n as usize),
            PoolSize::Split { clean, dirty } => (clean as usize, dirty as usize),
        };
        Pool {
            slots: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            strategy,
            clean,
            dirty,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PoolKey, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts for `key`.
    pub fn stats(&self, key: &PoolKey) -> PoolStats {
        self.lock()
            .get(key)
            .map(|s| PoolStats {
                idle: s.idle.len(),
                resetting: s.resetting,
                warming: s.warming,
            })
            .unwrap_or_default()
    }

    /// Counts summed over every key.
    pub fn totals(&self) -> PoolStats {
        self.lock()
            .values()
            .fold(PoolStats::default(), |t, s| PoolStats {
                idle: t.idle + s.idle.len(),
                resetting: t.resetting + s.resetting,
                warming: t.warming + s.warming,
            })
    }

    /// True when requests for `key` are waiting for a sandbox.
    pub fn has_waiters(&self, key: &PoolKey) -> bool {
        self.lock().get(key).is_some_and(|s| s.waiting > 0)
    }

    /// Ready sandboxes kept per key (the `clean` part of the pool size).
    pub fn clean_target(&self) -> usize {
        self.clean
    }

    /// True while a sandbox is being started or reset in the background.
    pub fn busy(&self) -> bool {
        self.lock()
            .values()
            .any(|s| s.resetting > 0 || s.warming > 0)
    }

    /// Removes every idle sandbox from the pool (for `stop`).
    pub fn drain(&self) -> Vec<Sandbox> {
        self.lock()
            .values_mut()
            .flat_map(|s| std::mem::take(&mut s.idle))
            .collect()
    }
}

/// An execution's hold on a sandbox of its key, from [`acquire`] until the execution has
/// given the sandbox back, kept or destroyed it (dropping the lease). While it is held,
/// the sandbox counts against what [`replenish`] starts: with `maxConcurrent` slots and
/// `leased` sandboxes of a key running, at most `maxConcurrent − leased` more
/// executions of that key can start, so no more than that are kept ready. Without it a
/// pool whose `poolSize.clean` reached `maxConcurrent` started a container for every
/// reset that finished while the others ran, and destroyed one when they came back:
/// about 4 containers a second under warm load on 2 cores, a third of their CPU.
pub struct Lease {
    inner: Arc<Inner>,
    key: PoolKey,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("key", &self.key).finish()
    }
}

impl Lease {
    /// Counts a lease in `slot`, the pool's entry for `key` (its lock held).
    fn take(slot: &mut Slot, inner: &Arc<Inner>, key: &PoolKey) -> Lease {
        slot.leased += 1;
        Lease {
            inner: inner.clone(),
            key: key.clone(),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(slot) = self.inner.pool.lock().get_mut(&self.key) {
            slot.leased = slot.leased.saturating_sub(1);
        }
    }
}

/// How many sandboxes of a key to keep ready or on their way: `poolSize.clean`, but no
/// more than the executions that could still start (`max_concurrent − leased`).
fn ready_target(clean: usize, max_concurrent: usize, leased: usize) -> usize {
    clean.min(max_concurrent.saturating_sub(leased))
}

/// A sandbox for one execution: from the pool when one is ready (or about to be), else
/// started now. The flag says whether it came warm; hold the lease until the sandbox is
/// given back, kept or destroyed.
pub async fn acquire(
    inner: &Arc<Inner>,
    key: &PoolKey,
    runtime: &str,
    host: &HostConfig,
) -> Result<(Sandbox, bool, Lease)> {
    let pool = &inner.pool;
    let deadline = tokio::time::Instant::now() + MAX_POOL_WAIT;
    let mut counted = false;
    loop {
        let changed = pool.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        {
            let mut slots = pool.lock();
            let slot = slots.entry(key.clone()).or_default();
            if slot.host.is_none() {
                slot.runtime = runtime.to_string();
                slot.host = Some(host.clone());
            }
            if counted {
                slot.waiting -= 1;
                counted = false;
            }
            while let Some(mut sb) = slot.idle.pop() {
                if sb.is_alive() && !inner.is_flagged(&sb.id) {
                    return Ok((sb, true, Lease::take(slot, inner, key)));
                }
                // It died or was frozen while it waited (killed, OOM, `docker pause`,
                // Docker daemon restarted): never hand it out; remove it and look on (or
                // start a new one below).
                tracing::warn!(container = %sb.id, "pooled sandbox is dead or paused; discarding it");
                let inner = inner.clone();
                tokio::spawn(async move { sb.destroy(&inner).await }.in_current_span());
            }
            // Wait only if a sandbox being reset or started is not already promised to an
            // earlier waiter.
            if pool.clean > 0
                && slot.waiting < slot.resetting + slot.warming
                && tokio::time::Instant::now() < deadline
            {
                slot.waiting += 1;
                counted = true;
            }
        }
        if !counted {
            break;
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            let mut slots = pool.lock();
            if let Some(slot) = slots.get_mut(key) {
                slot.waiting -= 1;
            }
            break;
        }
    }
    let lease = Lease::take(pool.lock().entry(key.clone()).or_default(), inner, key);
    let sb = Sandbox::start(inner, &key.image, runtime, host.clone()).await?;
    Ok((sb, false, lease))
}

/// Gives a sandbox back after an execution. `reusable` is false when the execution did
/// not end cleanly (protocol error, consumer gone, watchdog): such a sandbox is destroyed,
/// as is one a reset cannot make fresh (writable root filesystem), whatever the strategy.
pub fn release(inner: &Arc<Inner>, key: PoolKey, mut sb: Sandbox, reusable: bool) {
    let pool = &inner.pool;
    let reset = reusable
        && sb.resettable
        && pool.strategy == PoolStrategy::Fast
        && pool.clean > 0
        && !inner.is_stopped()
        && {
            let mut slots = pool.lock();
            let slot = slots.entry(key.clone()).or_default();
            if slot.resetting < pool.dirty.max(1) {
                slot.resetting += 1;
                true
            } else {
                false
            }
        };
    let (inner, inner2, key2) = (inner.clone(), inner.clone(), key.clone());
    let runtime = pool
        .lock()
        .get(&key)
        .map(|s| s.runtime.clone())
        .unwrap_or_default();
    // In the span of the execution that used the sandbox (the current one): a failed
    // reset is that execution's doing. The refill it starts is no one's.
    let cleanup = async move {
        if reset {
            let ok = match sb.reset().await {
                // A request already waiting for this sandbox would wait for the
                // interpreter's start-up either way (before its run, not in it), and the
                // longer the sandbox stays out of the pool, the more arrivals start cold
                // containers: under load it goes back at once and its program starts
                // fresh.
                Ok(()) if inner.pool.has_waiters(&key) => true,
                Ok(()) => prestart(&inner, &runtime, &mut sb).await,
                Err(e) => {
                    tracing::warn!(container = %sb.id, error = %e, "reset failed; destroying the sandbox");
                    inner.observe(|o| o.reset_failed());
                    false
                }
            };
            sb.uses += 1;
            let (back, refill) = {
                let mut slots = inner.pool.lock();
                let slot = slots.entry(key.clone()).or_default();
                slot.resetting -= 1;
                let back = if ok && slot.idle.len() < inner.pool.clean && !inner.is_stopped() {
                    slot.idle.push(sb);
                    None
                } else {
                    Some(sb)
                };
                // Planned with the sandbox just given back still counted, under the same
                // lock: a request that takes it the moment waiters are woken would
                // otherwise leave the pool short and start another container, which
                // the next release then destroys (sequential requests would alternate
                // between two containers).
                (back, plan_refill(&inner, slot))
            };
            inner.pool.changed.notify_waiters();
            if let Some(sb) = back {
                sb.destroy(&inner).await;
            }
            refill
        } else {
            sb.destroy(&inner).await;
            plan_refill_of(&inner, &key)
        }
    }
    .in_current_span();
    tokio::spawn(async move {
        if let Some(refill) = cleanup.await {
            start_refill(&inner2, &key2, refill);
        }
    });
}

/// Takes the sandbox of container `id` out of the pool if it waits there, destroys it and
/// refills its key (Docker reported it paused or dead). False when it was not idle.
pub fn evict(inner: &Arc<Inner>, id: &str) -> bool {
    let found = {
        let mut slots = inner.pool.lock();
        slots.iter_mut().find_map(|(key, slot)| {
            let i = slot.idle.iter().position(|sb| sb.id == id)?;
            Some((key.clone(), slot.idle.remove(i)))
        })
    };
    let Some((key, sb)) = found else {
        return false;
    };
    tracing::warn!(container = %id, "pooled sandbox was paused or died; evicting it");
    let inner = inner.clone();
    tokio::spawn(async move {
        sb.destroy(&inner).await;
        replenish(&inner, &key);
    });
    true
}

/// Starts sandboxes in the background until `clean` are ready or on their way.
pub fn replenish(inner: &Arc<Inner>, key: &PoolKey) {
    if let Some(refill) = plan_refill_of(inner, key) {
        start_refill(inner, key, refill);
    }
}

/// [`plan_refill`] for `key`'s slot, taking the pool's lock.
fn plan_refill_of(inner: &Inner, key: &PoolKey) -> Option<Refill> {
    let mut slots = inner.pool.lock();
    plan_refill(inner, slots.entry(key.clone()).or_default())
}

/// Sandboxes a key lacks, counted as warming in its slot when planned ([`plan_refill`]),
/// to be started by [`start_refill`].
struct Refill {
    need: usize,
    runtime: String,
    host: HostConfig,
}

/// What `slot` lacks of its ready target ([`ready_target`] against its idle, resetting
/// and warming sandboxes), counted as warming from now on; `None` when nothing (or the
/// engine stopped, or the slot does not know how its sandboxes are made). Call with the
/// pool's lock held.
fn plan_refill(inner: &Inner, slot: &mut Slot) -> Option<Refill> {
    if inner.is_stopped() {
        return None;
    }
    let host = slot.host.clone()?;
    let have = slot.idle.len() + slot.resetting + slot.warming;
    let target = ready_target(inner.pool.clean, inner.slots.max(), slot.leased);
    let need = target.saturating_sub(have);
    if need == 0 {
        return None;
    }
    slot.warming += need;
    Some(Refill {
        need,
        runtime: slot.runtime.clone(),
        host,
    })
}

/// Starts the sandboxes of a planned refill in the background.
fn start_refill(inner: &Arc<Inner>, key: &PoolKey, refill: Refill) {
    let Refill {
        need,
        runtime,
        host,
    } = refill;
    for _ in 0..need {
        let inner = inner.clone();
        let key = key.clone();
        let runtime = runtime.clone();
        let host = host.clone();
        tokio::spawn(async move {
            let started = match Sandbox::start(&inner, &key.image, &runtime, host).await {
                Ok(mut sb) => {
                    if prestart(&inner, &runtime, &mut sb).await {
                        Ok(sb)
                    } else {
                        let id = sb.id.clone();
                        sb.destroy(&inner).await;
                        Err(crate::Error::SandboxLost(format!(
                            "the agent of {id} went away while the sandbox was warmed"
                        )))
                    }
                }
                Err(e) => Err(e),
            };
            let extra = {
                let mut slots = inner.pool.lock();
                let slot = slots.entry(key.clone()).or_default();
                slot.warming -= 1;
                match started {
                    Ok(sb) if slot.idle.len() < inner.pool.clean && !inner.is_stopped() => {
                        slot.idle.push(sb);
                        None
                    }
                    Ok(sb) => Some(sb),
                    Err(e) => {
                        tracing::warn!(image = %key.image, error = %e, "could not warm a sandbox");
                        None
                    }
                }
            };
            inner.pool.changed.notify_waiters();
            if let Some(sb) = extra {
                sb.destroy(&inner).await;
            }
        });
    }
}

/// Has a clean pooled sandbox of `runtime` pre-start its interpreter, where the runtime
/// has one (an engine with `fresh_starts` has none: its registry is
/// [`crate::runtime::RuntimeRegistry::plain_starts`]), and waits until it is ready (so a
/// sandbox in the pool is ready to run its program at once). False when the agent is
/// gone or did not answer (the sandbox is then of no use).
async fn prestart(inner: &Inner, runtime: &str, sb: &mut Sandbox) -> bool {
    let Ok(rt) = inner.registry.get(runtime) else {
        return true;
    };
    let filtered = sb.egress.is_some();
    let Some(spec) =
        crate::prepare::prestart_spec(rt, filtered, inner.settings.ca_bundle.is_some())
    else {
        return true;
    };
    match sb.prestart(&spec).await {
        Ok(None) => true,
        Ok(Some(problem)) => {
            tracing::warn!(container = %sb.id, %problem, "no pre-started interpreter; programs start fresh");
            true
        }
        Err(e) => {
            tracing::warn!(container = %sb.id, error = %e, "could not pre-start an interpreter");
            false
        }
    }
}

/// Records how sandboxes of `key` are made, so the pool can refill it, and fills it.
pub fn prewarm(inner: &Arc<Inner>, key: &PoolKey, runtime: &str, host: &HostConfig) {
    {
        let mut slots = inner.pool.lock();
        let slot = slots.entry(key.clone()).or_default();
        slot.runtime = runtime.to_string();
        slot.host = Some(host.clone());
    }
    replenish(inner, key);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandboxes_with_different_security_settings_never_share_a_key() {
        let base = HostConfig {
            memory: Some(512 << 20),
            pids_limit: Some(64),
            ..Default::default()
        };
        let same = PoolKey::new("isol8:python", &base.clone());
        assert_eq!(PoolKey::new("isol8:python", &base), same);
        let variants = [
            HostConfig {
                memory: Some(256 << 20),
                ..base.clone()
            },
            HostConfig {
                pids_limit: Some(65),
                ..base.clone()
            },
            HostConfig {
                network_mode: Some("host".into()),
                ..base.clone()
            },
            HostConfig {
                security_opt: Some(vec!["seccomp=unconfined".into()]),
                ..base.clone()
            },
        ];
        for v in variants {
            assert_ne!(PoolKey::new("isol8:python", &v), same, "{v:?}");
        }
        assert_ne!(PoolKey::new("isol8:node", &base), same);
    }

    #[test]
    fn the_pool_keeps_ready_only_what_could_still_start() {
        // Nothing running: poolSize.clean, capped by maxConcurrent.
        assert_eq!(ready_target(4, 10, 0), 4);
        assert_eq!(ready_target(8, 4, 0), 4);
        // Three of four slots' executions hold sandboxes of the key: one more can start.
        assert_eq!(ready_target(4, 4, 3), 1);
        assert_eq!(ready_target(4, 4, 4), 0);
        // More leased than slots (executions of sibling engines sharing the budget
        // ended): nothing, not an underflow.
        assert_eq!(ready_target(4, 2, 3), 0);
    }

    #[test]
    fn keys_do_not_depend_on_hash_map_order() {
        let settings =
            crate::settings::SandboxSettings::resolve(&Default::default()).expect("defaults");
        let first = PoolKey::new(
            "isol8:python",
            &super::super::host_config(&settings).expect("host"),
        );
        for _ in 0..50 {
            let again = PoolKey::new(
                "isol8:python",
                &super::super::host_config(&settings).expect("host"),
            );
            assert_eq!(again, first);
        }
    }
}

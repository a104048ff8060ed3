//! Execution slots (`maxConcurrent`): one budget of concurrent executions that several
//! engines can share. A server gives its shared engine and every session engine the same
//! [`Slots`], so executions in sessions queue for the same slots as every other execution.
//!
//! A slot is held from the moment an execution may start (after its queue wait) until it
//! has ended and its sandbox has been handed back. [`Slots::close`] refuses every queued
//! and future acquisition at once (a server draining for shutdown) while executions that
//! already hold a slot run on.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::{Error, Result};

/// A budget of concurrent executions, cheap to clone (clones share the budget).
#[derive(Clone)]
pub struct Slots {
    sem: Arc<Semaphore>,
    max: usize,
    closed: Arc<watch::Sender<bool>>,
}

impl std::fmt::Debug for Slots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slots")
            .field("max", &self.max)
            .field("in_use", &self.in_use())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Slots {
    /// A budget of `max` concurrent executions; `max` must be at least 1.
    pub fn new(max: usize) -> Result<Slots> {
        if max == 0 {
            return Err(Error::option("maxConcurrent", "must be at least 1"));
        }
        Ok(Slots {
            sem: Arc::new(Semaphore::new(max)),
            max,
            closed: Arc::new(watch::Sender::new(false)),
        })
    }

    /// The number of slots.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Slots held by executions right now (across every engine sharing the budget).
    pub fn in_use(&self) -> usize {
        self.max.saturating_sub(self.sem.available_permits())
    }

    /// Refuses every queued and later acquisition with [`Error::Stopped`]; executions
    /// holding a slot are not affected. Irreversible.
    pub fn close(&self) {
        self.closed.send_replace(true);
        self.sem.close();
    }

    /// True once [`Slots::close`] was called.
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Resolves once the budget is closed.
    pub(crate) async fn wait_closed(&self) {
        let mut rx = self.closed.subscribe();
        // The sender lives as long as `self`: an error cannot happen while we wait.
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Waits up to `wait` for a slot. Errors: [`Error::Stopped`] once the budget is
    /// closed, [`Error::QueueTimeout`] when no slot came free in time.
    pub(crate) async fn acquire(&self, wait: Duration) -> Result<OwnedSemaphorePermit> {
        match tokio::time::timeout(wait, self.sem.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(Error::Stopped),
            Err(_) => Err(Error::QueueTimeout {
                waited_ms: wait.as_millis() as u64,
                max_concurrent: self.max,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn clones_share_one_budget_and_closing_refuses_the_queue_at_once() {
        let a = Slots::new(2).expect("slots");
        let b = a.clone();
        let p1 = a.acquire(Duration::from_secs(1)).await.expect("first");
        let p2 = b.acquire(Duration::from_secs(1)).await.expect("second");
        assert_eq!((a.in_use(), b.in_use()), (2, 2));
        let e = b
            .acquire(Duration::from_millis(50))
            .await
            .expect_err("no third slot");
        assert!(
            matches!(
                e,
                Error::QueueTimeout {
                    max_concurrent: 2,
                    ..
                }
            ),
            "{e:?}"
        );
        // A waiter queued for a long time is refused as soon as the budget closes.
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.acquire(Duration::from_secs(3600)).await }
        });
        tokio::task::yield_now().await;
        a.close();
        let refused = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the waiter must not wait out its timeout")
            .expect("join");
        assert!(matches!(refused, Err(Error::Stopped)), "{refused:?}");
        a.wait_closed().await;
        // Slots already held stay held until released.
        assert_eq!(a.in_use(), 2);
        drop((p1, p2));
        assert_eq!(a.in_use(), 0);
        assert!(Slots::new(0).is_err());
    }
}

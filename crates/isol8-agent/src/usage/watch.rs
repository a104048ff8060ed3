//! The memory watch: a thread that samples program memory while an execution's steps
//! run, records its peak, and kills every process of the sandbox user when it exceeds
//! `memoryLimit`.
//!
//! The cgroup limit of the container is larger than `memoryLimit` (it has room for the
//! tmpfs mounts at full size), so without the watch a program could use that room as
//! memory. The kernel offers no unprivileged notification for a threshold of a read-only
//! cgroup, so the watch polls, at an interval that shrinks as the headroom does: with
//! `headroom` bytes left before the limit, the next sample comes after the time memory
//! would take to grow by that much at [`FASTEST_GROWTH_PER_MS`] (between
//! [`MIN_INTERVAL`] and [`MAX_INTERVAL`]). A quiet program far below its limit costs ~50
//! samples a second (each a few `pread`s and `statvfs`es, ~20 µs); one racing towards the
//! limit is sampled every 2 ms and stopped within a few MiB of it. A program faster than
//! that only reaches the cgroup limit, where the kernel's OOM killer picks it (the agent
//! writes `oom_score_adj` 1000 for every program; the agent keeps 0).
//!
//! The watch sleeps on a condition variable between executions; [`Watch::begin`] and
//! [`Watch::end`] cost a lock and a signal. Everything it does while awake, the kill
//! included, happens under the lock, so once [`Watch::end`] returns it cannot kill
//! anything until the next [`Watch::begin`].

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::Memory;
use crate::proc::{self, Identity, Reaper};

/// Fastest growth of program memory the sampling interval is planned for, in bytes per
/// millisecond (page faults of one thread run at roughly 1-4 GiB/s).
pub const FASTEST_GROWTH_PER_MS: u64 = 4 << 20;

/// Shortest interval between samples.
pub const MIN_INTERVAL: Duration = Duration::from_millis(2);

/// Longest interval between samples (also the interval without a limit: the peak is
/// still sampled).
pub const MAX_INTERVAL: Duration = Duration::from_millis(20);

/// After a kill, memory that outlives the processes (a System V segment) keeps program
/// memory over the limit: kill again at most this often.
const KILL_GAP: Duration = Duration::from_millis(50);

/// How long to wait before the next sample with `headroom` bytes left below the limit.
pub fn interval(headroom: u64) -> Duration {
    let ms = headroom / FASTEST_GROWTH_PER_MS;
    Duration::from_millis(ms).clamp(MIN_INTERVAL, MAX_INTERVAL)
}

/// What the watch saw during one execution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Watched {
    /// Highest program memory sampled, in bytes.
    pub peak: u64,
    /// The watch killed the programs for exceeding the limit.
    pub killed: bool,
}

#[derive(Debug, Default)]
struct State {
    active: bool,
    limit: Option<u64>,
    seen: Watched,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Handle of the watch thread.
pub struct Watch {
    shared: Arc<Shared>,
}

impl Watch {
    /// Starts the (idle) watch thread.
    pub fn start(memory: Arc<Memory>, ident: Identity, reaper: Reaper) -> Watch {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let theirs = shared.clone();
        thread::spawn(move || run(&theirs, &memory, &ident, &reaper));
        Watch { shared }
    }

    /// Starts watching an execution held to `limit` bytes of program memory (`None`:
    /// only the peak is sampled).
    pub fn begin(&self, limit: Option<u64>) {
        let mut st = self.shared.lock();
        *st = State {
            active: true,
            limit,
            seen: Watched::default(),
        };
        drop(st);
        self.shared.wake.notify_one();
    }

    /// Stops watching; what was seen since [`Watch::begin`].
    pub fn end(&self) -> Watched {
        let mut st = self.shared.lock();
        st.active = false;
        std::mem::take(&mut st.seen)
    }
}

fn run(shared: &Shared, memory: &Memory, ident: &Identity, reaper: &Reaper) {
    let mut last_kill: Option<Instant> = None;
    let mut st = shared.lock();
    loop {
        if !st.active {
            st = shared.wake.wait(st).unwrap_or_else(|p| p.into_inner());
            if st.active {
                // The first sample waits one short interval: a program that is over by
                // then (most quick runs) costs no sample at all, and its peak comes from
                // its `ru_maxrss`.
                st = shared
                    .wake
                    .wait_timeout(st, MIN_INTERVAL)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            continue;
        }
        let next = match memory.program() {
            None => MAX_INTERVAL,
            Some(now) => {
                st.seen.peak = st.seen.peak.max(now);
                match st.limit {
                    None => MAX_INTERVAL,
                    Some(limit) if now > limit => {
                        if last_kill.is_none_or(|t| t.elapsed() >= KILL_GAP) {
                            proc::kill_all(ident, reaper);
                            last_kill = Some(Instant::now());
                            st.seen.killed = true;
                        }
                        MIN_INTERVAL
                    }
                    Some(limit) => interval(limit - now),
                }
            }
        };
        st = shared
            .wake
            .wait_timeout(st, next)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

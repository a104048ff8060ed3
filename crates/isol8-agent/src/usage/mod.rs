//! What an execution used, measured from inside the sandbox, and the programs' memory
//! held to `memoryLimit`.
//!
//! [`Meter::begin`] and [`Meter::end`] bracket an execution's steps. Between them:
//!
//! * **CPU time** is the delta of the cgroup's CPU counter; **wall time** the elapsed time.
//! * **Network** bytes are the delta of the namespace's non-loopback interface counters
//!   (0 in network `none` and `filtered`, whose only interface is loopback).
//! * **OOM kills**: the delta of the memory cgroup's `oom_kill` counter, or the agent's own
//!   kill (below).
//! * **Memory at the end** is the cgroup's charged memory when the steps are over.
//! * **Peak memory** of this execution only. The cgroup's lifetime peak files cannot be
//!   reset from a read-only mount, and a pooled container served earlier runs, so the
//!   peak is the larger of (a) the highest *program memory* sampled while the steps ran
//!   ([`watch`]) and (b) the highest `ru_maxrss` of the execution's processes the agent
//!   reaped (`wait4`), which catches a single process's spike between two samples.
//!
//! *Program memory* is what the programs hold themselves: the cgroup's charged memory
//! minus its page cache (reclaimable) minus the files in the tmpfs mounts (bounded by
//! their own sizes), minus what the container held when the agent started (the agent and
//! the kernel's bookkeeping). That leaves anonymous memory, shared memory outside the
//! tmpfs mounts (System V segments, `memfd`s) and the kernel memory the programs cause
//! (page tables, sockets, inodes). See [`program_memory`].
//!
//! The container's memory cgroup is sized `memoryLimit` + the tmpfs sizes + a reserve by
//! the engine (`isol8::docker::host_config::container_memory_bytes`), so a full tmpfs is
//! `ENOSPC` and never an OOM kill. While a step runs the [`watch`] thread samples program
//! memory and kills every process of the sandbox user when it exceeds `memoryLimit`
//! ([`isol8_protocol::agent::ExecSpec::memory_limit_bytes`]); the kernel's limit is the
//! hard backstop.
//!
//! Cost on the warm path: a handful of `pread`s of small files at the start and at the end
//! (kept open since the agent started), a lock and a condition-variable signal to wake
//! the watch thread, and the watch thread's own samples while the program runs.

pub mod cgroup;
pub mod watch;

#[cfg(test)]
mod tests;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use isol8_protocol::agent::AgentUsage;

use crate::proc::{Identity, Reaper};
use cgroup::{Cgroup, MemoryStat};
use watch::Watch;

/// `f_type` of a tmpfs in `statfs`.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// What the agent needs to measure memory: the cgroup, the tmpfs mounts whose files are
/// not the programs' memory, and what the container held before any program ran.
#[derive(Debug)]
pub struct Memory {
    cgroup: Arc<Cgroup>,
    tmpfs: Vec<CString>,
    baseline: u64,
}

impl Memory {
    /// Program memory now, in bytes ([`program_memory`] minus the baseline); `None` when
    /// the cgroup cannot be read.
    pub fn program(&self) -> Option<u64> {
        let usage = self.cgroup.memory_usage()?;
        let stat = self.cgroup.memory_stat()?;
        let held = program_memory(usage, stat, tmpfs_used(&self.tmpfs));
        Some(held.saturating_sub(self.baseline))
    }
}

/// Memory the programs hold themselves, in bytes: `usage` minus the page cache that is
/// not shared memory (`file - shmem`: reclaimable) minus `tmpfs_used` (the files in the
/// tmpfs mounts, which are shared memory bounded by the mounts' sizes).
pub fn program_memory(usage: u64, stat: MemoryStat, tmpfs_used: u64) -> u64 {
    let cache = stat.file.saturating_sub(stat.shmem);
    usage.saturating_sub(cache).saturating_sub(tmpfs_used)
}

/// Bytes in use in each of `mounts` (tmpfs: their files' pages), summed.
fn tmpfs_used(mounts: &[CString]) -> u64 {
    mounts
        .iter()
        .filter_map(|m| {
            // SAFETY: statvfs is plain data; the path is NUL-terminated.
            let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
            (unsafe { libc::statvfs(m.as_ptr(), &mut s) } == 0).then(|| {
                (s.f_blocks.saturating_sub(s.f_bfree) as u64).saturating_mul(s.f_frsize as u64)
            })
        })
        .sum()
}

/// Those of `dirs` that are tmpfs mount points (not merely directories on a tmpfs: the
/// agent's tests run it in a directory of the host's `/tmp`).
fn tmpfs_mounts(dirs: &[String]) -> Vec<CString> {
    dirs.iter()
        .filter(|d| is_tmpfs_mount(Path::new(d)))
        .filter_map(|d| CString::new(Path::new(d).as_os_str().as_bytes()).ok())
        .collect()
}

fn is_tmpfs_mount(dir: &Path) -> bool {
    let Ok(path) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain data; the path is NUL-terminated.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut s) } != 0 || s.f_type as i64 != TMPFS_MAGIC {
        return false;
    }
    let parent = dir.parent().unwrap_or(Path::new("/"));
    match (std::fs::metadata(dir), std::fs::metadata(parent)) {
        (Ok(d), Ok(p)) => d.dev() != p.dev(),
        _ => false,
    }
}

/// Counters read when an execution begins.
#[derive(Debug)]
pub struct Begun {
    at: Instant,
    measure: bool,
    cpu_us: Option<u64>,
    oom_kills: Option<u64>,
    net: Option<(u64, u64)>,
}

/// What [`Meter::end`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Measured {
    /// The figures, when measured and the cgroup could be read.
    pub usage: Option<AgentUsage>,
    /// The OOM killer killed a process of the sandbox, or the agent killed the programs
    /// for exceeding the memory limit.
    pub oom_killed: bool,
}

/// Measures executions and enforces `memoryLimit`.
pub struct Meter {
    memory: Arc<Memory>,
    watch: Option<Watch>,
}

impl Meter {
    /// Detects the cgroup, opens its files, takes the baseline and starts the watch
    /// thread. Call before any program runs.
    pub fn start(ident: &Identity, reaper: &Reaper) -> Meter {
        let cgroup = Arc::new(Cgroup::detect());
        let tmpfs = tmpfs_mounts(&ident.writable);
        let mut memory = Memory {
            cgroup,
            tmpfs,
            baseline: 0,
        };
        let now = memory.program();
        memory.baseline = now.unwrap_or(0);
        let memory = Arc::new(memory);
        let watch = now
            .is_some()
            .then(|| Watch::start(memory.clone(), ident.clone(), reaper.clone()));
        Meter { memory, watch }
    }

    /// Starts measuring an execution (when `measure`) and holding its programs to
    /// `memory_limit` (when given).
    pub fn begin(&self, measure: bool, memory_limit: Option<u64>) -> Begun {
        let cg = &self.memory.cgroup;
        let begun = Begun {
            at: Instant::now(),
            measure,
            cpu_us: measure.then(|| cg.cpu_time_us()).flatten(),
            oom_kills: measure.then(|| cg.oom_kills()).flatten(),
            net: measure.then(|| cg.network()).flatten(),
        };
        if let Some(w) = &self.watch {
            if measure || memory_limit.is_some() {
                w.begin(memory_limit);
            }
        }
        begun
    }

    /// Stops the watch and reads the counters again. `rss_peak` is the highest
    /// `ru_maxrss` of the execution's reaped processes, in bytes.
    pub fn end(&self, begun: Begun, rss_peak: u64) -> Measured {
        let watched = self.watch.as_ref().map(Watch::end).unwrap_or_default();
        let mut out = Measured {
            usage: None,
            oom_killed: watched.killed,
        };
        if !begun.measure {
            return out;
        }
        let cg = &self.memory.cgroup;
        let wall_time_us = begun.at.elapsed().as_micros() as u64;
        let cpu = begun.cpu_us.zip(cg.cpu_time_us());
        let memory = cg.memory_usage();
        if let (Some(before), Some(after)) = (begun.oom_kills, cg.oom_kills()) {
            out.oom_killed |= after > before;
        }
        if cpu.is_none() && memory.is_none() {
            return out;
        }
        let net = begun.net.zip(cg.network());
        out.usage = Some(usage(
            wall_time_us,
            cpu,
            memory,
            watched.peak.max(rss_peak),
            net,
        ));
        out
    }
}

/// The figures of an execution from its counters before and after (deltas saturate at
/// 0: a counter that went backwards is no usage, not a wrap-around).
pub fn usage(
    wall_time_us: u64,
    cpu_us: Option<(u64, u64)>,
    memory_bytes: Option<u64>,
    peak_memory_bytes: u64,
    net: Option<((u64, u64), (u64, u64))>,
) -> AgentUsage {
    let delta = |(a, b): (u64, u64)| b.saturating_sub(a);
    let ((rx0, tx0), (rx1, tx1)) = net.unwrap_or_default();
    AgentUsage {
        cpu_time_us: cpu_us.map(delta).unwrap_or(0),
        wall_time_us,
        memory_bytes: memory_bytes.unwrap_or(0),
        peak_memory_bytes,
        network_rx_bytes: delta((rx0, rx1)),
        network_tx_bytes: delta((tx0, tx1)),
    }
}

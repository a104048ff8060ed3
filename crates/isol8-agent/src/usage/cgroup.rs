//! The container's own cgroup and network counters, read from inside.
//!
//! Docker mounts the container's cgroup (read-only) at `/sys/fs/cgroup`: with cgroup v1
//! one directory per controller (`memory/`, `cpuacct/`…) holding the container's group
//! at its root; with cgroup v2 the unified group itself. The agent detects which once, at
//! start ([`Cgroup::detect`]), and keeps the few files it reads open, re-reading each
//! with `pread` at offset 0 (the kernel regenerates the text on every read from the start).
//!
//! | figure | cgroup v1 | cgroup v2 |
//! |---|---|---|
//! | memory charged | `memory/memory.usage_in_bytes` | `memory.current` |
//! | breakdown | `memory/memory.stat` (`total_cache`, `total_shmem`) | `memory.stat` (`file`, `shmem`) |
//! | OOM kills | `memory/memory.oom_control` (`oom_kill`) | `memory.events` (`oom_kill`) |
//! | CPU time | `cpuacct/cpuacct.usage` (ns) | `cpu.stat` (`usage_usec`) |
//!
//! Network counters come from `/proc/net/dev`, which shows the interfaces of the reader's
//! network namespace: the sandbox's.
//!
//! The parsers are pure functions of the files' text, unit-tested on fixtures of both
//! versions (`usage/tests.rs`).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Where cgroup filesystems are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The cgroup version in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// One hierarchy per controller.
    V1,
    /// The unified hierarchy.
    V2,
}

/// The open counter files of the agent's cgroup; each is `None` when it cannot be opened
/// (its figures are then absent, nothing fails).
#[derive(Debug)]
pub struct Cgroup {
    /// Which layout the files follow.
    pub version: Version,
    usage: Option<File>,
    stat: Option<File>,
    events: Option<File>,
    cpu: Option<File>,
    net: Net,
}

/// How the network counters are read.
#[derive(Debug)]
enum Net {
    /// Only loopback (network `none` and `filtered`): always 0, nothing to read. Nothing
    /// in the sandbox can add an interface (that takes `CAP_NET_ADMIN`).
    LoopbackOnly,
    /// `/proc/net/dev`, open.
    Dev(File),
    /// Unreadable.
    Unknown,
}

impl Net {
    fn open() -> Net {
        let Some(file) = open(Path::new("/proc/net/dev")) else {
            return Net::Unknown;
        };
        match read(&file)
            .as_deref()
            .map(|t| (parse_net_dev(t), interfaces(t)))
        {
            Some((Some(_), 0)) => Net::LoopbackOnly,
            Some((Some(_), _)) => Net::Dev(file),
            _ => Net::Unknown,
        }
    }
}

/// What `memory.stat` says about the charged memory, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStat {
    /// Page cache, tmpfs and other shared memory included (v1 `total_cache`, v2 `file`).
    pub file: u64,
    /// Shared memory: tmpfs files, System V segments, `memfd`s (v1 `total_shmem`, v2
    /// `shmem`).
    pub shmem: u64,
}

impl Cgroup {
    /// Finds the agent's cgroup (v2 when `/sys/fs/cgroup/cgroup.controllers` exists) and
    /// opens its counter files.
    pub fn detect() -> Cgroup {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let root = Path::new(CGROUP_ROOT);
        if root.join("cgroup.controllers").exists() {
            let dir = group_dir(root, v2_path(&own), "memory.current");
            Cgroup {
                version: Version::V2,
                usage: open(&dir.join("memory.current")),
                stat: open(&dir.join("memory.stat")),
                events: open(&dir.join("memory.events")),
                cpu: open(&dir.join("cpu.stat")),
                net: Net::open(),
            }
        } else {
            let memory = group_dir(
                &root.join("memory"),
                v1_path(&own, "memory"),
                "memory.usage_in_bytes",
            );
            // cpuacct is often co-mounted with cpu (`cpu,cpuacct`, with a `cpuacct`
            // symlink); try the names in turn.
            let cpuacct = ["cpuacct", "cpu,cpuacct", "cpuacct,cpu"]
                .iter()
                .map(|name| group_dir(&root.join(name), v1_path(&own, "cpuacct"), "cpuacct.usage"))
                .find(|dir| dir.join("cpuacct.usage").exists())
                .unwrap_or_else(|| root.join("cpuacct"));
            Cgroup {
                version: Version::V1,
                usage: open(&memory.join("memory.usage_in_bytes")),
                stat: open(&memory.join("memory.stat")),
                events: open(&memory.join("memory.oom_control")),
                cpu: open(&cpuacct.join("cpuacct.usage")),
                net: Net::open(),
            }
        }
    }

    /// Memory charged to the cgroup, in bytes.
    pub fn memory_usage(&self) -> Option<u64> {
        parse_number(&read(self.usage.as_ref()?)?)
    }

    /// The breakdown of the charged memory the agent needs.
    pub fn memory_stat(&self) -> Option<MemoryStat> {
        parse_memory_stat(self.version, &read(self.stat.as_ref()?)?)
    }

    /// How many processes the kernel's OOM killer has killed in this cgroup.
    pub fn oom_kills(&self) -> Option<u64> {
        keyed(&read(self.events.as_ref()?)?, "oom_kill")
    }

    /// CPU time used by the cgroup's processes so far, in microseconds.
    pub fn cpu_time_us(&self) -> Option<u64> {
        parse_cpu_us(self.version, &read(self.cpu.as_ref()?)?)
    }

    /// Bytes received and sent on the network namespace's interfaces but loopback.
    pub fn network(&self) -> Option<(u64, u64)> {
        match &self.net {
            Net::LoopbackOnly => Some((0, 0)),
            Net::Dev(file) => parse_net_dev(&read(file)?),
            Net::Unknown => None,
        }
    }
}

fn open(path: &Path) -> Option<File> {
    File::open(path).ok()
}

/// The whole text of a counter file, read from offset 0.
fn read(file: &File) -> Option<String> {
    let mut text = Vec::with_capacity(4096);
    let mut buf = [0u8; 4096];
    loop {
        match file.read_at(&mut buf, text.len() as u64) {
            Ok(0) => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
        if text.len() > 1 << 20 {
            return None;
        }
    }
    String::from_utf8(text).ok()
}

/// The directory of the agent's group below a controller's mount: the path
/// `/proc/self/cgroup` names, when it exists below the mount (a host that mounts whole
/// hierarchies), else the mount itself (a container, whose own group is mounted there).
fn group_dir(mount: &Path, own: Option<&str>, probe: &str) -> PathBuf {
    if let Some(rel) = own.map(|p| p.trim_start_matches('/')) {
        if !rel.is_empty() {
            let dir = mount.join(rel);
            if dir.join(probe).exists() {
                return dir;
            }
        }
    }
    mount.to_path_buf()
}

/// The cgroup v2 path in `/proc/self/cgroup` (the `0::/path` line).
pub fn v2_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))
}

/// The cgroup v1 path of `controller` in `/proc/self/cgroup` (`N:cpu,cpuacct:/path`).
pub fn v1_path<'a>(proc_cgroup: &'a str, controller: &str) -> Option<&'a str> {
    proc_cgroup.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then_some(path)
    })
}

/// A file holding one number (`memory.usage_in_bytes`, `memory.current`,
/// `cpuacct.usage`).
pub fn parse_number(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// The value of `key` in a flat keyed file (`key value` per line: `memory.stat`,
/// `memory.events`, `memory.oom_control`, `cpu.stat`).
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if words.next()? != key {
            return None;
        }
        words.next()?.parse().ok()
    })
}

/// The file and shared-memory figures of a `memory.stat` text. Version 1 prefers the
/// hierarchical `total_*` lines (the group and its descendants), falling back to the
/// group's own.
pub fn parse_memory_stat(version: Version, text: &str) -> Option<MemoryStat> {
    match version {
        Version::V1 => Some(MemoryStat {
            file: keyed(text, "total_cache").or_else(|| keyed(text, "cache"))?,
            shmem: keyed(text, "total_shmem").or_else(|| keyed(text, "shmem"))?,
        }),
        Version::V2 => Some(MemoryStat {
            file: keyed(text, "file")?,
            shmem: keyed(text, "shmem")?,
        }),
    }
}

/// CPU time in microseconds: v1 `cpuacct.usage` counts nanoseconds, v2 `cpu.stat` has
/// `usage_usec`.
pub fn parse_cpu_us(version: Version, text: &str) -> Option<u64> {
    match version {
        Version::V1 => parse_number(text).map(|ns| ns / 1000),
        Version::V2 => keyed(text, "usage_usec"),
    }
}

/// How many interfaces but loopback a `/proc/net/dev` text lists.
pub fn interfaces(text: &str) -> usize {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(name, _)| name.trim())
        .filter(|name| !name.contains('|') && *name != "lo")
        .count()
}

/// Received and sent bytes summed over the interfaces of a `/proc/net/dev` text, loopback
/// excluded. Each interface line is `name: rx_bytes rx_packets … (8 receive fields)
/// tx_bytes …`.
pub fn parse_net_dev(text: &str) -> Option<(u64, u64)> {
    let mut total = (0u64, 0u64);
    let mut seen_interface = false;
    for line in text.lines() {
        let Some((name, fields)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.contains('|') || name.starts_with("Inter") {
            continue;
        }
        seen_interface = true;
        if name == "lo" {
            continue;
        }
        let numbers: Vec<u64> = fields
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        if numbers.len() < 9 {
            return None;
        }
        total.0 = total.0.saturating_add(numbers[0]);
        total.1 = total.1.saturating_add(numbers[8]);
    }
    seen_interface.then_some(total)
}

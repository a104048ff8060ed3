//! The cgroup parsers on fixture text of both versions (v1 as read inside a Docker 28
//! container on a cgroupfs host; v2 in the kernel's documented format), and the usage
//! arithmetic.

use std::time::Duration;

use super::cgroup::{
    interfaces, keyed, parse_cpu_us, parse_memory_stat, parse_net_dev, parse_number, v1_path,
    v2_path, MemoryStat, Version,
};
use super::watch::{interval, MAX_INTERVAL, MIN_INTERVAL};
use super::{program_memory, usage};

const MIB: u64 = 1 << 20;

/// `memory.stat` of a v1 container (its group mounted at the root of the hierarchy).
const V1_MEMORY_STAT: &str = "\
cache 3743744
rss 229376
rss_huge 0
shmem 0
mapped_file 1998848
dirty 0
writeback 0
swap 0
inactive_anon 110592
active_anon 4096
inactive_file 1507328
active_file 2236416
unevictable 0
hierarchical_memory_limit 67108864
hierarchical_memsw_limit 134217728
total_cache 540672000
total_rss 229376
total_rss_huge 0
total_shmem 536870912
total_mapped_file 1998848
total_dirty 0
total_inactive_file 1507328
total_active_file 2236416
total_unevictable 0
";

const V1_OOM_CONTROL: &str = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";

/// `memory.stat` of a v2 group.
const V2_MEMORY_STAT: &str = "\
anon 104857600
file 69206016
kernel 1232896
kernel_stack 65536
pagetables 163840
percpu 0
sock 0
vmalloc 0
shmem 52428800
zswap 0
zswapped 0
file_mapped 1335296
file_dirty 0
file_writeback 0
swapcached 0
anon_thp 0
file_thp 0
shmem_thp 0
inactive_anon 1126400
active_anon 24576
inactive_file 1363968
active_file 270336
unevictable 0
slab_reclaimable 713048
slab_unreclaimable 237168
slab 950216
";

const V2_MEMORY_EVENTS: &str = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";

const V2_CPU_STAT: &str = "\
usage_usec 2345678
user_usec 1234567
system_usec 1111111
nr_periods 0
nr_throttled 0
throttled_usec 0
nr_bursts 0
burst_usec 0
";

const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  987654     100    0    0    0     0          0         0   987654     100    0    0    0     0       0          0
  eth0: 1048576     800    0    0    0     0          0         0     4096      40    0    0    0     0       0          0
 veth1:     100       1    0    0    0     0          0         0       50       1    0    0    0     0       0          0
";

#[test]
fn v1_files_give_the_hierarchical_figures_the_oom_count_and_microseconds() {
    assert_eq!(
        parse_memory_stat(Version::V1, V1_MEMORY_STAT),
        Some(MemoryStat {
            file: 540_672_000,
            shmem: 512 * MIB,
        }),
        "total_* lines win over the group's own"
    );
    let own_only = "cache 4096\nrss 8192\nshmem 1024\n";
    assert_eq!(
        parse_memory_stat(Version::V1, own_only),
        Some(MemoryStat {
            file: 4096,
            shmem: 1024
        })
    );
    assert_eq!(keyed(V1_OOM_CONTROL, "oom_kill"), Some(3));
    assert_eq!(keyed(V1_OOM_CONTROL, "oom_kill_disable"), Some(0));
    assert_eq!(parse_number("1433600\n"), Some(1_433_600));
    assert_eq!(
        parse_cpu_us(Version::V1, "43235439\n"),
        Some(43_235),
        "ns to µs"
    );
    assert_eq!(parse_number(""), None);
    assert_eq!(parse_memory_stat(Version::V1, "rss 1\n"), None);
}

#[test]
fn v2_files_give_file_shmem_the_oom_count_and_usage_usec() {
    assert_eq!(
        parse_memory_stat(Version::V2, V2_MEMORY_STAT),
        Some(MemoryStat {
            file: 66 * MIB,
            shmem: 50 * MIB,
        }),
        "`file` and `shmem`, not `file_mapped` or `shmem_thp`"
    );
    assert_eq!(keyed(V2_MEMORY_EVENTS, "oom_kill"), Some(1));
    assert_eq!(keyed(V2_MEMORY_EVENTS, "oom"), Some(2));
    assert_eq!(parse_cpu_us(Version::V2, V2_CPU_STAT), Some(2_345_678));
    assert_eq!(parse_number("max\n"), None);
    assert_eq!(parse_cpu_us(Version::V2, "user_usec 5\n"), None);
}

#[test]
fn the_groups_path_is_found_in_proc_self_cgroup() {
    let v1 = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n0::/docker/abc\n";
    assert_eq!(v1_path(v1, "memory"), Some("/docker/abc"));
    assert_eq!(v1_path(v1, "cpuacct"), Some("/docker/abc"));
    assert_eq!(v1_path(v1, "pids"), None);
    assert_eq!(v2_path("0::/\n"), Some("/"));
    assert_eq!(v2_path(v1), Some("/docker/abc"));
    assert_eq!(v2_path("3:memory:/x\n"), None);
}

#[test]
fn network_counts_every_interface_but_loopback() {
    assert_eq!(parse_net_dev(NET_DEV), Some((1_048_676, 4146)));
    let only_lo: String = NET_DEV.lines().take(3).collect::<Vec<_>>().join("\n");
    assert_eq!(
        parse_net_dev(&only_lo),
        Some((0, 0)),
        "network none: loopback only"
    );
    assert_eq!(interfaces(NET_DEV), 2);
    assert_eq!(interfaces(&only_lo), 0);
    assert_eq!(parse_net_dev(""), None);
    assert_eq!(parse_net_dev("  eth0: 1 2 3\n"), None, "truncated line");
}

#[test]
fn program_memory_leaves_out_page_cache_and_tmpfs_files() {
    // 600 MiB charged: 40 MiB of page cache, 512 MiB of shared memory of which 500 MiB
    // are files in the tmpfs mounts; the program holds 48 MiB anonymous + 12 MiB in a
    // System V segment.
    let stat = MemoryStat {
        file: 552 * MIB,
        shmem: 512 * MIB,
    };
    assert_eq!(program_memory(600 * MIB, stat, 500 * MIB), 60 * MIB);
    // No tmpfs content and no cache: everything is the program's.
    assert_eq!(
        program_memory(100 * MIB, MemoryStat::default(), 0),
        100 * MIB
    );
    // Counters read at slightly different moments never underflow.
    assert_eq!(program_memory(MIB, stat, 500 * MIB), 0);
    let odd = MemoryStat { file: 1, shmem: 5 };
    assert_eq!(program_memory(10, odd, 0), 10);
}

#[test]
fn usage_is_the_delta_of_each_counter() {
    let u = usage(
        2_000_000,
        Some((1_000, 751_000)),
        Some(300 * MIB),
        120 * MIB,
        Some(((10, 20), (1_010, 2_020))),
    );
    assert_eq!(u.cpu_time_us, 750_000);
    assert_eq!(u.wall_time_us, 2_000_000);
    assert_eq!(u.memory_bytes, 300 * MIB);
    assert_eq!(u.peak_memory_bytes, 120 * MIB);
    assert_eq!((u.network_rx_bytes, u.network_tx_bytes), (1_000, 2_000));
    // Unreadable counters are 0; one that went backwards is no usage.
    let u = usage(5, Some((10, 3)), None, 0, None);
    assert_eq!(
        (u.cpu_time_us, u.memory_bytes, u.network_rx_bytes),
        (0, 0, 0)
    );
}

#[test]
fn sampling_speeds_up_as_the_headroom_shrinks() {
    assert_eq!(interval(0), MIN_INTERVAL);
    assert_eq!(interval(4 * MIB), MIN_INTERVAL);
    assert_eq!(interval(40 * MIB), Duration::from_millis(10));
    assert_eq!(interval(500 * MIB), MAX_INTERVAL);
    assert_eq!(interval(u64::MAX), MAX_INTERVAL);
}

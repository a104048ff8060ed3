//! The `HostConfig` of a sandbox container: SPEC section 4 (limits, mounts, capabilities,
//! seccomp, no network) as the Docker Engine API takes it, computed from resolved
//! [`SandboxSettings`]. [`HostConfig`] holds exactly the fields isol8 sets, named as in
//! the API; the bollard backend copies them into the client's own type.
//!
//! Its hash ([`super::PoolKey::hash_of`]) decides which executions may share a pooled
//! sandbox, so everything that makes two sandboxes differ belongs here.

use std::collections::BTreeMap;

use isol8_protocol::layout::{self, SANDBOX_GID, SANDBOX_UID};
use isol8_protocol::NetworkMode;
use serde::Serialize;

use crate::egress;
use crate::settings::SandboxSettings;
use crate::Result;

/// A bind mount.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Mount {
    /// Path on the host (or [`egress::MOUNT_PLACEHOLDER`] until the sandbox's own
    /// proxy directory is known).
    pub source: String,
    /// Path inside the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// A resource limit (`setrlimit`) of the container's processes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Ulimit {
    /// Resource name (`nofile`, `core`).
    pub name: String,
    /// Soft limit.
    pub soft: i64,
    /// Hard limit.
    pub hard: i64,
}

/// The host-side settings of a container (Docker's `HostConfig`, reduced to the fields
/// isol8 sets; `None` leaves the daemon's default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostConfig {
    /// Bind mounts.
    pub mounts: Option<Vec<Mount>>,
    /// `none` or `host`.
    pub network_mode: Option<String>,
    /// Read-only root filesystem.
    pub readonly_rootfs: Option<bool>,
    /// tmpfs mounts: path → mount options.
    pub tmpfs: Option<BTreeMap<String, String>>,
    /// Capabilities dropped.
    pub cap_drop: Option<Vec<String>>,
    /// Capabilities added back.
    pub cap_add: Option<Vec<String>>,
    /// Security options (`no-new-privileges`, `seccomp=…`).
    pub security_opt: Option<Vec<String>>,
    /// Memory limit of the container's cgroup, bytes ([`container_memory_bytes`]:
    /// `memoryLimit` plus the tmpfs sizes plus the agent's reserve).
    pub memory: Option<i64>,
    /// Memory plus swap limit, bytes (equal to `memory`: no swap).
    pub memory_swap: Option<i64>,
    /// CPU limit, billionths of a CPU.
    pub nano_cpus: Option<i64>,
    /// Process limit.
    pub pids_limit: Option<i64>,
    /// IPC namespace mode.
    pub ipc_mode: Option<String>,
    /// Size of `/dev/shm`, bytes.
    pub shm_size: Option<i64>,
    /// Resource limits.
    pub ulimits: Option<Vec<Ulimit>>,
    /// Run Docker's init as PID 1 (never: the agent is PID 1).
    pub init: Option<bool>,
    /// OCI runtime (`runsc`…); `None` for the daemon's default.
    pub runtime: Option<String>,
    /// isol8's own, not Docker's: the agent installs the strict seccomp filter
    /// ([`isol8_protocol::seccomp`]) before anything else runs, and the sandbox fails to
    /// start unless its hello says so. Part of the pool key like every other field.
    pub seccomp_filter: bool,
}

/// Size of the container's private `/dev/shm` (Docker's `ShmSize`), in bytes.
pub const SHM_BYTES: u64 = 64 << 20;

/// Memory the container's cgroup holds beyond `memoryLimit` and the tmpfs sizes, in
/// bytes: the agent (a few MiB while it serves, more while it reads output files back)
/// and the kernel's own bookkeeping of a sandbox whose programs and tmpfs are both full.
pub const AGENT_MEMORY_RESERVE: u64 = 32 << 20;

/// The limit of the container's memory cgroup (and of memory plus swap: no swap) for
/// these settings: `memoryLimit` + `sandboxSize` + `tmpSize` + [`SHM_BYTES`] +
/// [`AGENT_MEMORY_RESERVE`] (saturating at `i64::MAX`). With the defaults: 512m + 512m +
/// 256m + 64m + 32m = 1376 MiB.
///
/// Files in the tmpfs mounts are memory charged to the container's cgroup. Were the
/// cgroup limit `memoryLimit` itself, a full `/sandbox` would push the whole container,
/// agent included, into the kernel's OOM killer instead of failing the write with
/// `ENOSPC` (the tmpfs's own size limit). With room for every tmpfs at its full size, a
/// full tmpfs is only ever `ENOSPC`; the programs' own memory is held to `memoryLimit`
/// by the agent ([`isol8_protocol::agent::ExecSpec::memory_limit_bytes`]), which kills
/// them when their memory (anonymous, shared memory outside the tmpfs mounts, kernel
/// memory) exceeds it; this cgroup limit stays the kernel's hard backstop.
pub fn container_memory_bytes(settings: &SandboxSettings) -> i64 {
    let memory = u64::try_from(settings.memory_bytes).unwrap_or(0);
    let total = memory
        .saturating_add(settings.sandbox_bytes)
        .saturating_add(settings.tmp_bytes)
        .saturating_add(SHM_BYTES)
        .saturating_add(AGENT_MEMORY_RESERVE);
    i64::try_from(total).unwrap_or(i64::MAX)
}

/// The `HostConfig` implementing SPEC section 4 for these settings.
pub fn host_config(settings: &SandboxSettings) -> Result<HostConfig> {
    let seccomp =
        crate::seccomp::security_opt(settings.seccomp, settings.custom_profile_path.as_deref())?;
    let tmpfs = BTreeMap::from([
        (
            layout::SANDBOX_ROOT.to_string(),
            format!(
                "rw,exec,nosuid,nodev,size={},uid={SANDBOX_UID},gid={SANDBOX_GID},mode=0755",
                settings.sandbox_bytes
            ),
        ),
        (
            layout::TMP_DIR.to_string(),
            format!(
                "rw,noexec,nosuid,nodev,size={},mode=1777",
                settings.tmp_bytes
            ),
        ),
    ]);
    let mut mounts = Vec::new();
    if settings.network == NetworkMode::Filtered {
        // The per-sandbox proxy socket directory; `Sandbox::start` fills in the source.
        mounts.push(read_only_bind(
            egress::MOUNT_PLACEHOLDER,
            layout::EGRESS_SOCKET_DIR,
        ));
    }
    if let Some(bundle) = &settings.ca_bundle {
        mounts.push(read_only_bind(bundle, layout::CA_BUNDLE));
    }
    Ok(HostConfig {
        mounts: (!mounts.is_empty()).then_some(mounts),
        network_mode: Some(match settings.network {
            NetworkMode::Host => "host".to_string(),
            _ => "none".to_string(),
        }),
        readonly_rootfs: Some(settings.readonly_root_fs),
        tmpfs: Some(tmpfs),
        cap_drop: Some(vec!["ALL".to_string()]),
        // The agent's: SETUID and SETGID to become the sandbox user in its children,
        // SETPCAP to empty its bounding set, KILL to end the sandbox user's processes
        // without a child (it is PID 1 of the container's own PID namespace, so it can
        // reach nothing outside; the agent's docs say why this grants it nothing new).
        cap_add: Some(
            ["SETUID", "SETGID", "SETPCAP", "KILL"]
                .map(str::to_string)
                .to_vec(),
        ),
        security_opt: Some(vec!["no-new-privileges:true".to_string(), seccomp]),
        memory: Some(container_memory_bytes(settings)),
        memory_swap: Some(container_memory_bytes(settings)),
        nano_cpus: Some(settings.nano_cpus),
        pids_limit: Some(settings.pids_limit),
        ipc_mode: Some("private".to_string()),
        shm_size: Some(SHM_BYTES as i64),
        ulimits: Some(vec![
            Ulimit {
                name: "nofile".into(),
                soft: 4096,
                hard: 4096,
            },
            Ulimit {
                name: "core".into(),
                soft: 0,
                hard: 0,
            },
        ]),
        init: Some(false),
        runtime: settings.oci_runtime.clone(),
        seccomp_filter: crate::seccomp::agent_filters(settings.seccomp),
    })
}

fn read_only_bind(source: &str, target: &str) -> Mount {
    Mount {
        source: source.to_string(),
        target: target.to_string(),
        read_only: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use isol8_protocol::EngineOptions;

    #[test]
    fn empty_per_request_options_give_the_engine_own_settings() {
        let base = EngineOptions::default();
        let own = SandboxSettings::resolve(&base).expect("defaults");
        let merged =
            SandboxSettings::resolve(&base.overlay(&EngineOptions::default())).expect("merged");
        assert_eq!(own, merged);
        let a = super::super::PoolKey::new("isol8:python", &host_config(&own).expect("host"));
        let b = super::super::PoolKey::new("isol8:python", &host_config(&merged).expect("host"));
        assert_eq!(a, b);
    }

    #[test]
    fn an_empty_client_security_object_keeps_the_operators_oci_runtime() {
        // What `isol8 serve` with `security.runtime: "runsc"` does with a client's
        // `options: {"security": {}, "networkFilter": {}}`: the container it would create
        // keeps the runtime, and the filter keeps the operator's lists.
        let operator = EngineOptions {
            security: Some(isol8_protocol::options::SecurityOptions {
                runtime: Some("runsc".into()),
                ..Default::default()
            }),
            network: Some(NetworkMode::Filtered),
            network_filter: Some(isol8_protocol::NetworkFilter {
                whitelist: vec![r"^pypi\.org$".into()],
                blacklist: vec![r"^evil\.example$".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let client: EngineOptions =
            serde_json::from_str(r#"{"security": {}, "networkFilter": {}, "memoryLimit": "256m"}"#)
                .expect("json");
        let s = SandboxSettings::resolve(&operator.overlay(&client)).expect("merged");
        assert_eq!(s.oci_runtime.as_deref(), Some("runsc"));
        let host = host_config(&s).expect("host config");
        assert_eq!(host.runtime.as_deref(), Some("runsc"));
        assert_eq!(s.network_filter.whitelist, [r"^pypi\.org$"]);
        assert_eq!(s.network_filter.blacklist, [r"^evil\.example$"]);
        assert_eq!(
            s.memory_bytes,
            256 << 20,
            "the client's own value still applies"
        );
    }

    #[test]
    fn the_minimum_limits_reach_the_container_as_resolved() {
        let s = SandboxSettings::resolve(&crate::settings::minimum_options())
            .expect("the minimum is valid");
        let h = host_config(&s).expect("host config");
        let cgroup = (6 << 20) + s.sandbox_bytes + s.tmp_bytes + SHM_BYTES + AGENT_MEMORY_RESERVE;
        let cgroup = Some(cgroup as i64);
        assert_eq!(
            (h.memory, h.memory_swap, h.nano_cpus, h.pids_limit),
            (cgroup, cgroup, Some(10_000_000), Some(1)),
        );
    }

    #[test]
    fn the_cgroup_holds_the_memory_limit_every_tmpfs_at_full_size_and_the_reserve() {
        let defaults = SandboxSettings::resolve(&EngineOptions::default()).expect("defaults");
        let h = host_config(&defaults).expect("host config");
        assert_eq!(h.memory, Some(1376 << 20), "512m + 512m + 256m + 64m + 32m");
        assert_eq!(h.memory_swap, h.memory, "no swap");
        assert_eq!(h.shm_size, Some(64 << 20));
        let small = SandboxSettings::resolve(&EngineOptions {
            memory_limit: Some("64m".into()),
            sandbox_size: Some("1g".into()),
            tmp_size: Some("300m".into()),
            ..Default::default()
        })
        .expect("custom");
        let h = host_config(&small).expect("host config");
        assert_eq!(h.memory, Some((64 + 1024 + 300 + 64 + 32) << 20));
        let huge = SandboxSettings {
            memory_bytes: i64::MAX,
            ..small
        };
        assert_eq!(container_memory_bytes(&huge), i64::MAX, "saturates");
    }

    #[test]
    fn the_sandbox_is_locked_down_and_mounts_follow_the_layout() {
        let mut s = SandboxSettings::resolve(&EngineOptions {
            network: Some(NetworkMode::Filtered),
            ..Default::default()
        })
        .expect("filtered");
        s.ca_bundle = Some("/etc/ssl/corp.pem".into());
        let h = host_config(&s).expect("host config");
        assert_eq!(h.network_mode.as_deref(), Some("none"));
        assert_eq!(h.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(
            h.cap_add,
            Some(
                ["SETUID", "SETGID", "SETPCAP", "KILL"]
                    .map(str::to_string)
                    .to_vec()
            )
        );
        assert_eq!(h.readonly_rootfs, Some(true));
        assert_eq!(h.init, Some(false));
        let opts = h.security_opt.expect("security options");
        assert!(
            opts.iter().any(|o| o == "no-new-privileges:true"),
            "{opts:?}"
        );
        assert!(opts.iter().any(|o| o.starts_with("seccomp=")), "{opts:?}");
        let tmpfs = h.tmpfs.expect("tmpfs");
        assert!(tmpfs[layout::SANDBOX_ROOT].contains("uid=1000,gid=1000"));
        assert!(tmpfs[layout::TMP_DIR].contains("noexec"));
        let mounts = h.mounts.expect("mounts");
        assert_eq!(
            mounts,
            [
                read_only_bind(egress::MOUNT_PLACEHOLDER, layout::EGRESS_SOCKET_DIR),
                read_only_bind("/etc/ssl/corp.pem", layout::CA_BUNDLE),
            ]
        );
    }
}

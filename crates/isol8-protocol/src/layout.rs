//! The inside of a sandbox, as the engine and the agent both rely on it: who runs the
//! code, where it may write, what a reset wipes, where the operator's CA bundle and the
//! egress proxy's socket appear, and the texts that mark a timed-out run.
//!
//! The images (`isol8-images`) create the sandbox user with these ids; the engine mounts
//! the tmpfs areas, the CA bundle and the socket directory at these paths
//! (`isol8::docker::host_config`) and the agent (`isol8-agent`) drops privileges to this
//! user, wipes these directories and relays [`EGRESS_PORT`] to the socket. Changing a
//! value here changes both sides at once; images built with another agent must then be
//! rebuilt (`isol8 setup --force`).

/// Uid of the sandbox user inside every image.
pub const SANDBOX_UID: u32 = 1000;

/// Gid of the sandbox user inside every image.
pub const SANDBOX_GID: u32 = 1000;

/// Root of the sandbox's writable working area (a tmpfs owned by the sandbox user); the
/// programs' working directory and `HOME`.
pub const SANDBOX_ROOT: &str = "/sandbox";

/// The sandbox's temporary directory (a `noexec` tmpfs).
pub const TMP_DIR: &str = "/tmp";

/// The container's shared-memory mount.
pub const SHM_DIR: &str = "/dev/shm";

/// Where the container's POSIX message queues appear (Docker mounts an mqueue filesystem
/// there in every container with a private IPC namespace).
pub const MQUEUE_DIR: &str = "/dev/mqueue";

/// Where paths of a request's `files`, its `outputPaths` and a session's file transfers
/// may lie (strictly below one of these): the places the sandbox user can write. The
/// engine checks them lexically (`isol8::prepare::writable_path`) and the agent again,
/// component by component without following a symlink, as the sandbox user. The working
/// directory stays under [`SANDBOX_ROOT`]; `/dev/mqueue` is not a place for files.
pub const WRITABLE_DIRS: [&str; 3] = [SANDBOX_ROOT, TMP_DIR, SHM_DIR];

/// Directories a reset empties: the writable tmpfs mounts, and the container's POSIX
/// message queues (the agent adds the last itself when it runs as PID 1).
pub const WIPED_DIRS: [&str; 4] = [SANDBOX_ROOT, TMP_DIR, SHM_DIR, MQUEUE_DIR];

/// Where the operator's CA bundle (`caBundle`) is mounted, read-only, inside the sandbox.
pub const CA_BUNDLE: &str = "/etc/isol8/ca-certificates.crt";

/// Directory inside the sandbox where the engine's egress-proxy socket is mounted
/// (network mode `filtered`).
pub const EGRESS_SOCKET_DIR: &str = "/run/isol8";

/// File name of the egress-proxy socket in [`EGRESS_SOCKET_DIR`].
pub const EGRESS_SOCKET_NAME: &str = "egress.sock";

/// Container environment variable naming the engine's egress-proxy socket (network mode
/// `filtered`); when set, the agent relays `127.0.0.1:`[`EGRESS_PORT`] to it.
pub const EGRESS_SOCKET_ENV: &str = "ISOL8_EGRESS_SOCKET";

/// Directory inside the sandbox where the engine's data socket for this sandbox is
/// mounted, read-only (a directory only root may enter, holding one socket the engine
/// removes once the agent has connected).
pub const DATA_SOCKET_DIR: &str = "/run/isol8-data";

/// File name of the data socket in [`DATA_SOCKET_DIR`].
pub const DATA_SOCKET_NAME: &str = "agent.sock";

/// Container environment variable naming the data socket: when set, the agent connects
/// to it before its hello and, if that works, carries every frame after the hello over
/// it instead of its stdin and stdout (see `isol8_protocol::agent::Hello::data_socket`).
pub const DATA_SOCKET_ENV: &str = "ISOL8_DATA_SOCKET";

/// Port of the agent's egress relay inside the sandbox (the programs' HTTP(S) proxy).
pub const EGRESS_PORT: u16 = 3128;

/// Data of the `error` stream event that marks a run killed by its timeout.
pub const TIMEOUT_EVENT: &str = "EXECUTION TIMED OUT";

/// Line appended to a buffered result's stderr (and printed by the CLI) when the run was
/// killed by its timeout.
pub const TIMEOUT_TRAILER: &str = "--- EXECUTION TIMED OUT ---";

/// Data of the `error` stream event that marks a run whose program was killed for using
/// more memory than its limit (exit reason `memoryLimit`).
pub const MEMORY_LIMIT_EVENT: &str = "MEMORY LIMIT EXCEEDED";

/// Start of the data of the `error` stream event that marks a run whose program a signal
/// ended (exit reason `signal`); the signal's name follows (`KILLED BY SIGNAL SIGSEGV`).
pub const SIGNAL_EVENT_PREFIX: &str = "KILLED BY SIGNAL ";

/// Data of the `error` stream event that marks a run whose output was cut at
/// `maxOutputSize` (exit reason `outputLimit`).
pub const OUTPUT_LIMIT_EVENT: &str = "OUTPUT LIMIT EXCEEDED";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wiped_directories_are_absolute_and_the_socket_dir_is_not_wiped() {
        for dir in WIPED_DIRS {
            assert!(dir.starts_with('/'), "{dir}");
            assert!(!EGRESS_SOCKET_DIR.starts_with(dir), "{dir}");
            assert!(!DATA_SOCKET_DIR.starts_with(dir), "{dir}");
            assert!(!CA_BUNDLE.starts_with(dir), "{dir}");
        }
        assert!(WIPED_DIRS.contains(&SANDBOX_ROOT));
        assert!(WIPED_DIRS.contains(&MQUEUE_DIR));
    }

    #[test]
    fn every_writable_directory_is_wiped_by_a_reset() {
        // A file left in one by a request must not reach the next execution.
        for dir in WRITABLE_DIRS {
            assert!(WIPED_DIRS.contains(&dir), "{dir}");
        }
    }
}

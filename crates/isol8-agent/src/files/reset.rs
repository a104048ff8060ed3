//! Resetting a sandbox between runs: the cheap check whether anything was left
//! ([`needs_wipe`]), and, in the helper, emptying the directories to wipe, removing the
//! sandbox user's System V IPC objects and scrubbing the sandbox root's extended
//! attributes, ACLs and timestamps.

use std::ffi::CString;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use super::ipc::{ipc_objects, remove_ipc_of};
use super::walk::open_root;
use crate::proc::Identity;

/// The status-change time (seconds, nanoseconds) of `path`. It moves whenever anything
/// about the directory changes (entries, mode, owner, extended attributes, timestamps set
/// explicitly) and never merely because it is read.
pub fn change_time(path: &str) -> Option<(i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.ctime(), m.ctime_nsec()))
}

/// True unless the agent can see, without the helper, that the run left nothing: every
/// directory to wipe is empty and readable, the sandbox root has its original owner and
/// mode and has not changed since it was last known clean (`clean_root`, its
/// [`change_time`] then), and no System V IPC object exists. Checking costs a few
/// syscalls; the helper costs a fork and an exec, so most resets skip it.
pub fn needs_wipe(ident: &Identity, wipe: &[String], clean_root: Option<(i64, i64)>) -> bool {
    use std::os::unix::fs::MetadataExt;
    let root_ok = std::fs::metadata(&ident.root)
        .map(|m| m.uid() == ident.uid && m.mode() & 0o7777 == 0o755)
        .unwrap_or(false);
    if !root_ok || clean_root.is_none() || change_time(&ident.root) != clean_root {
        return true;
    }
    let dirty_dir = |d: &String| {
        std::fs::read_dir(d)
            .map(|mut it| it.next().is_some())
            .unwrap_or(true)
    };
    if wipe.iter().any(dirty_dir) {
        return true;
    }
    !ipc_objects().is_empty()
}

/// Removes everything inside `dir` without following symlinks, making read-only
/// directories writable first (the sandbox user owns what it created).
fn wipe_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        let path = entry.path();
        let meta =
            std::fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.is_dir() {
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700));
            wipe_dir(&path)?;
            std::fs::remove_dir(&path)
                .map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
        } else {
            std::fs::remove_file(&path)
                .map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
        }
    }
    Ok(())
}

pub(super) fn reset(root: &str, wipe: &[String]) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    // The sandbox user owns the root of its working area and may have locked it.
    let _ = std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755));
    let mut problems = Vec::new();
    for dir in wipe {
        let dir = Path::new(dir);
        if !dir.is_dir() {
            continue;
        }
        if let Err(e) = wipe_dir(dir) {
            problems.push(e);
        } else if std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
        {
            problems.push(format!("{} is not empty after the wipe", dir.display()));
        }
    }
    // SAFETY: getuid has no preconditions.
    remove_ipc_of(unsafe { libc::getuid() });
    if let Err(e) = scrub_root(root) {
        problems.push(e);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Names of the extended attributes of `fd` (ACLs included, as `system.posix_acl_*`).
pub(super) fn xattr_names(fd: &OwnedFd) -> Result<Vec<Vec<u8>>, String> {
    use std::os::fd::AsRawFd;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: valid fd; buf is writable for its length.
        let n = unsafe { libc::flistxattr(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf
                .split(|b| *b == 0)
                .filter(|n| !n.is_empty())
                .map(<[u8]>::to_vec)
                .collect());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(format!("cannot list extended attributes: {e}")),
        }
    }
}

/// The sandbox root survives every reset (it is a mount point), so what its owner may
/// attach to it must go: extended attributes in `user.*`, POSIX ACLs (which can carry
/// data in their uids), and explicitly set timestamps (reset to now). `security.*`
/// attributes are the kernel's and out of the sandbox user's reach.
pub(super) fn scrub_root(root: &str) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let fd = open_root(root)?;
    let removable = |names: Vec<Vec<u8>>| -> Vec<Vec<u8>> {
        names
            .into_iter()
            .filter(|n| !n.starts_with(b"security."))
            .collect()
    };
    for name in removable(xattr_names(&fd)?) {
        let Ok(c) = CString::new(name) else { continue };
        // SAFETY: valid fd and C string.
        unsafe { libc::fremovexattr(fd.as_raw_fd(), c.as_ptr()) };
    }
    let left = removable(xattr_names(&fd)?);
    if !left.is_empty() {
        let names: Vec<String> = left
            .iter()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect();
        return Err(format!(
            "extended attributes of {root} remain: {}",
            names.join(", ")
        ));
    }
    let now = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
    ];
    // SAFETY: valid fd and a two-element timespec array.
    if unsafe { libc::futimens(fd.as_raw_fd(), now.as_ptr()) } != 0 {
        return Err(format!(
            "cannot reset the timestamps of {root}: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

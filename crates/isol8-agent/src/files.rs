//! Files: writing the request's files and reading output paths back, always *as the
//! sandbox user* and without ever following a symlink.
//!
//! The agent re-executes itself in helper mode (`isol8-agent __files`) as the sandbox user;
//! the helper takes one JSON request on stdin and answers on stdout. Every path is opened
//! component by component from the sandbox root with `O_NOFOLLOW`, so a symlink planted
//! by sandboxed code (at any depth) is refused instead of redirecting the write or read.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use base64::Engine as _;
use isol8_protocol::agent::FileWrite;
use serde::{Deserialize, Serialize};

use crate::proc::{self, Identity, Reaper};

/// First argument selecting helper mode.
pub const HELPER_ARG: &str = "__files";

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
enum Request {
    Write {
        root: String,
        cwd: String,
        files: Vec<FileWrite>,
    },
    Read {
        root: String,
        paths: Vec<String>,
        max: u64,
    },
    Reset {
        root: String,
        wipe: Vec<String>,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Response {
    error: Option<String>,
    files: BTreeMap<String, String>,
    errors: BTreeMap<String, String>,
}

/// Writes `files` and creates `cwd`, as the sandbox user.
pub fn write_all(
    ident: &Identity,
    reaper: &Reaper,
    cwd: &str,
    files: &[FileWrite],
) -> Result<(), String> {
    // Nothing to write and the working directory is the sandbox root, which exists:
    // skip the helper entirely (this is the warm path of most executions).
    if files.is_empty() && cwd.trim_end_matches('/') == ident.root.trim_end_matches('/') {
        return Ok(());
    }
    let req = Request::Write {
        root: ident.root.clone(),
        cwd: cwd.to_string(),
        files: files.to_vec(),
    };
    let resp = call(ident, reaper, &req)?;
    match resp.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Reads `paths` back as the sandbox user: (path → base64, path → reason).
pub fn read_all(
    ident: &Identity,
    reaper: &Reaper,
    paths: &[String],
    max: u64,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let req = Request::Read {
        root: ident.root.clone(),
        paths: paths.to_vec(),
        max,
    };
    match call(ident, reaper, &req) {
        Ok(resp) => (resp.files, resp.errors),
        Err(e) => (
            BTreeMap::new(),
            paths.iter().map(|p| (p.clone(), e.clone())).collect(),
        ),
    }
}

fn call(ident: &Identity, reaper: &Reaper, req: &Request) -> Result<Response, String> {
    let input = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg(HELPER_ARG)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if ident.drop_privileges {
        let (uid, gid) = (ident.uid, ident.gid);
        // SAFETY: drop_to only makes async-signal-safe system calls.
        unsafe { cmd.pre_exec(move || proc::drop_to(uid, gid)) };
    }
    let (mut child, done) = reaper
        .spawn_waited(&mut cmd)
        .map_err(|e| format!("cannot start the file helper: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("file helper has no stdin")?;
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut out = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_end(&mut out);
    }
    let _ = writer.join();
    let status = done.recv().unwrap_or(-1);
    serde_json::from_slice(&out).map_err(|_| {
        format!(
            "the file helper failed (exit code {})",
            proc::exit_code(status)
        )
    })
}

/// Empties `wipe`, removes every System V IPC object the sandbox user may remove and
/// scrubs the sandbox root (extended attributes, ACLs, timestamps), as the sandbox user;
/// fails if anything is left.
pub fn reset_all(ident: &Identity, reaper: &Reaper, wipe: &[String]) -> Result<(), String> {
    let req = Request::Reset {
        root: ident.root.clone(),
        wipe: wipe.to_vec(),
    };
    match call(ident, reaper, &req)?.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

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

/// True when `path` is the mount point of an mqueue filesystem (where `mq_open` queues
/// of the caller's IPC namespace appear as files).
pub fn is_mqueue_fs(path: &str) -> bool {
    const MQUEUE_MAGIC: i64 = 0x1980_0202;
    let Ok(c) = CString::new(path) else {
        return false;
    };
    // SAFETY: statfs is plain data, filled by the call.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out pointer.
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == MQUEUE_MAGIC }
}

/// The three kinds of System V IPC object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpcKind {
    /// Shared memory segment.
    Shm,
    /// Semaphore set.
    Sem,
    /// Message queue.
    Msg,
}

/// One System V IPC object of the agent's IPC namespace, as `/proc/sysvipc` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpcObject {
    /// Which kind.
    pub kind: IpcKind,
    /// Its id (for `*ctl`).
    pub id: i32,
    /// Owner uid (changeable by the owner or creator with `IPC_SET`).
    pub uid: u32,
    /// Creator uid (fixed).
    pub cuid: u32,
}

impl std::fmt::Display for IpcObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            IpcKind::Shm => "shared memory",
            IpcKind::Sem => "semaphore set",
            IpcKind::Msg => "message queue",
        };
        write!(
            f,
            "{kind} {} (owner {}, creator {})",
            self.id, self.uid, self.cuid
        )
    }
}

/// Parses one `/proc/sysvipc/{shm,sem,msg}` listing: columns id, uid and cuid are
/// 1, 7, 9 for shm and msg and 1, 4, 6 for sem. Unparseable lines are skipped.
pub fn parse_sysvipc(kind: IpcKind, text: &str) -> Vec<IpcObject> {
    let (uid_col, cuid_col) = match kind {
        IpcKind::Sem => (4, 6),
        IpcKind::Shm | IpcKind::Msg => (7, 9),
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            Some(IpcObject {
                kind,
                id: cols.get(1)?.parse().ok()?,
                uid: cols.get(uid_col)?.parse().ok()?,
                cuid: cols.get(cuid_col)?.parse().ok()?,
            })
        })
        .collect()
}

/// Every System V IPC object of the caller's IPC namespace (listed whatever their modes).
pub fn ipc_objects() -> Vec<IpcObject> {
    [
        (IpcKind::Shm, "/proc/sysvipc/shm"),
        (IpcKind::Sem, "/proc/sysvipc/sem"),
        (IpcKind::Msg, "/proc/sysvipc/msg"),
    ]
    .iter()
    .flat_map(|(kind, file)| {
        std::fs::read_to_string(file)
            .map(|t| parse_sysvipc(*kind, &t))
            .unwrap_or_default()
    })
    .collect()
}

/// Removes every System V IPC object whose owner *or creator* is `me`: exactly what
/// `IPC_RMID` permits without CAP_SYS_ADMIN. An object whose owner was moved to another
/// uid with `IPC_SET` is still removed by its creator. Errors are left to the caller's
/// check of what remains.
pub fn remove_ipc_of(me: u32) {
    for obj in ipc_objects() {
        if obj.uid != me && obj.cuid != me {
            continue;
        }
        // SAFETY: IPC_RMID with a null buffer is valid for all three calls.
        unsafe {
            match obj.kind {
                IpcKind::Shm => libc::shmctl(obj.id, libc::IPC_RMID, std::ptr::null_mut()),
                IpcKind::Sem => libc::semctl(obj.id, 0, libc::IPC_RMID),
                IpcKind::Msg => libc::msgctl(obj.id, libc::IPC_RMID, std::ptr::null_mut()),
            };
        }
    }
}

/// Entry point of helper mode.
pub fn helper_main() -> i32 {
    let mut input = Vec::new();
    if io::stdin().read_to_end(&mut input).is_err() {
        return 2;
    }
    let resp = match serde_json::from_slice::<Request>(&input) {
        Ok(Request::Write { root, cwd, files }) => {
            let error = write_files(&root, &cwd, &files).err();
            Response {
                error,
                ..Default::default()
            }
        }
        Ok(Request::Read { root, paths, max }) => {
            let mut resp = Response::default();
            for path in paths {
                match read_file(&root, &path, max) {
                    Ok(bytes) => {
                        resp.files.insert(
                            path,
                            base64::engine::general_purpose::STANDARD.encode(bytes),
                        );
                    }
                    Err(e) => {
                        resp.errors.insert(path, e);
                    }
                }
            }
            resp
        }
        Ok(Request::Reset { root, wipe }) => Response {
            error: reset(&root, &wipe).err(),
            ..Default::default()
        },
        Err(e) => Response {
            error: Some(format!("bad helper request: {e}")),
            ..Default::default()
        },
    };
    let out = serde_json::to_vec(&resp).unwrap_or_default();
    if io::stdout().write_all(&out).is_err() {
        return 2;
    }
    0
}

/// Splits `path` into its components below `root`, refusing anything that is not a plain
/// name (`.`, `..`, empty) or lies outside `root`.
pub fn components<'a>(root: &str, path: &'a str) -> Result<Vec<&'a str>, String> {
    let root = root.trim_end_matches('/');
    let rest = path
        .strip_prefix(root)
        .filter(|r| r.is_empty() || r.starts_with('/'))
        .ok_or_else(|| format!("`{path}` is outside {root}"))?;
    let parts: Vec<&str> = rest.split('/').skip(1).collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(format!("`{path}` is not a normalised path"));
    }
    Ok(parts)
}

fn cstr(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("`{s}` contains a NUL byte"))
}

fn open_root(root: &str) -> Result<OwnedFd, String> {
    let c = cstr(root)?;
    // SAFETY: valid C string; the fd is owned by the returned OwnedFd.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(format!(
            "cannot open {root}: {}",
            io::Error::last_os_error()
        ));
    }
    // SAFETY: fd is a fresh, valid descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens (optionally creating) the directory `name` inside `dir`, refusing symlinks.
fn open_dir(dir: &OwnedFd, name: &str, create: bool, shown: &str) -> Result<OwnedFd, String> {
    use std::os::fd::AsRawFd;
    let c = cstr(name)?;
    for attempt in 0..2 {
        // SAFETY: valid dirfd and C string.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd >= 0 {
            // SAFETY: fd is a fresh, valid descriptor.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENOENT) if create && attempt == 0 => {
                // SAFETY: valid dirfd and C string.
                if unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o755) } != 0 {
                    let e = io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::EEXIST) {
                        return Err(format!("cannot create directory {shown}: {e}"));
                    }
                }
            }
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => {
                return Err(format!("{shown} is a symlink or not a directory"));
            }
            _ => return Err(format!("cannot open {shown}: {err}")),
        }
    }
    Err(format!("cannot open {shown}"))
}

/// Walks to the parent directory of `path`, returning it and the final name.
fn walk<'a>(root: &str, path: &'a str, create: bool) -> Result<(OwnedFd, &'a str), String> {
    let parts = components(root, path)?;
    let (name, dirs) = parts
        .split_last()
        .ok_or_else(|| format!("`{path}` names the sandbox root, not a file"))?;
    let mut dir = open_root(root)?;
    let mut shown = root.trim_end_matches('/').to_string();
    for d in dirs {
        shown.push('/');
        shown.push_str(d);
        dir = open_dir(&dir, d, create, &shown)?;
    }
    Ok((dir, name))
}

fn write_files(root: &str, cwd: &str, files: &[FileWrite]) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    // The working directory (created if missing, refusing symlinks).
    let mut dir = open_root(root)?;
    let mut shown = root.trim_end_matches('/').to_string();
    for d in components(root, cwd)? {
        shown.push('/');
        shown.push_str(d);
        dir = open_dir(&dir, d, true, &shown)?;
    }
    drop(dir);
    for f in files {
        let content = base64::engine::general_purpose::STANDARD
            .decode(&f.content)
            .map_err(|e| format!("content of {} is not base64: {e}", f.path))?;
        let (dir, name) = walk(root, &f.path, true)?;
        let c = cstr(name)?;
        let mode = f.mode.unwrap_or(0o644) & 0o777;
        // O_NONBLOCK: a FIFO planted by earlier code must not hang the helper (opening one
        // for writing with no reader would wait forever; non-blocking, it fails with
        // ENXIO). Anything that opens but is not a regular file is refused below, before
        // a byte is written.
        // SAFETY: valid dirfd and C string.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                c.as_ptr(),
                libc::O_WRONLY
                    | libc::O_CREAT
                    | libc::O_NOFOLLOW
                    | libc::O_NONBLOCK
                    | libc::O_NOCTTY
                    | libc::O_CLOEXEC,
                mode,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ELOOP) => format!("cannot write {}: it is a symlink", f.path),
                Some(libc::EISDIR) => format!("cannot write {}: it is a directory", f.path),
                Some(libc::ENXIO) => format!(
                    "cannot write {}: it is not a regular file (a FIFO or socket)",
                    f.path
                ),
                _ => format!("cannot write {}: {e}", f.path),
            });
        }
        // SAFETY: fd is a fresh, valid descriptor.
        let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let meta = file
            .metadata()
            .map_err(|e| format!("cannot write {}: {e}", f.path))?;
        if !meta.is_file() {
            return Err(format!("cannot write {}: it is not a regular file", f.path));
        }
        // Truncate only once the file is known to be a regular one.
        file.set_len(0)
            .map_err(|e| format!("cannot write {}: {e}", f.path))?;
        file.write_all(&content)
            .map_err(|e| format!("cannot write {}: {e}", f.path))?;
    }
    Ok(())
}

fn read_file(root: &str, path: &str, max: u64) -> Result<Vec<u8>, String> {
    use std::os::fd::AsRawFd;
    let (dir, name) = walk(root, path, false)?;
    let c = cstr(name)?;
    // O_NONBLOCK: opening a FIFO planted by the program must not hang the helper.
    // SAFETY: valid dirfd and C string.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENOENT) => "not found".to_string(),
            Some(libc::ELOOP) => "is a symlink".to_string(),
            _ => e.to_string(),
        });
    }
    // SAFETY: fd is a fresh, valid descriptor.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("is not a regular file".to_string());
    }
    if meta.len() > max {
        return Err(format!("is larger than {max} bytes"));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > max {
        return Err(format!("is larger than {max} bytes"));
    }
    Ok(bytes)
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

fn reset(root: &str, wipe: &[String]) -> Result<(), String> {
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
fn xattr_names(fd: &OwnedFd) -> Result<Vec<Vec<u8>>, String> {
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
fn scrub_root(root: &str) -> Result<(), String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};

    #[test]
    fn components_stay_below_the_root() {
        assert_eq!(
            components("/sandbox", "/sandbox/a/b.txt").expect("ok"),
            vec!["a", "b.txt"]
        );
        assert_eq!(
            components("/sandbox/", "/sandbox/x").expect("ok"),
            vec!["x"]
        );
        assert!(components("/sandbox", "/sandbox").expect("root").is_empty());
        for bad in [
            "/etc/passwd",
            "/sandboxed/x",
            "/sandbox/../etc",
            "/sandbox/a//b",
            "/sandbox/./a",
            "relative",
        ] {
            assert!(components("/sandbox", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn writes_and_reads_refuse_symlinks() {
        let dir = std::env::temp_dir().join(format!("isol8-agent-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let root = dir.to_str().expect("utf-8").to_string();
        let f = |p: &str, c: &str| FileWrite {
            path: format!("{root}/{p}"),
            content: base64::engine::general_purpose::STANDARD.encode(c),
            mode: None,
        };
        write_files(&root, &format!("{root}/work"), &[f("a/b/c.txt", "hello")]).expect("write");
        assert_eq!(
            read_file(&root, &format!("{root}/a/b/c.txt"), 100).expect("read"),
            b"hello"
        );
        assert!(
            read_file(&root, &format!("{root}/a/b/c.txt"), 3).is_err(),
            "size limit"
        );
        std::os::unix::fs::symlink("/etc", dir.join("link")).expect("symlink");
        std::os::unix::fs::symlink("/etc/hostname", dir.join("a/host")).expect("symlink");
        assert!(read_file(&root, &format!("{root}/link/hostname"), 1 << 20).is_err());
        assert!(read_file(&root, &format!("{root}/a/host"), 1 << 20).is_err());
        assert!(write_files(&root, &root, &[f("link/evil", "x")]).is_err());
        assert!(write_files(&root, &root, &[f("a/host", "x")]).is_err());
        assert!(
            read_file(&root, &format!("{root}/a"), 1 << 20).is_err(),
            "directory"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sysvipc_listings_give_id_owner_and_creator() {
        let shm = "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap\n         0          7     0               1048576     8     0      0     0     0  1000  1000          0          0 1795993081                     0                     0\n";
        let msg = "       key      msqid perms      cbytes       qnum lspid lrpid   uid   gid  cuid  cgid      stime      rtime      ctime\n         0          3   600          5          1     9     0     0     0  1000  1000          0          0 1795993081\n";
        let sem = "       key      semid perms      nsems   uid   gid  cuid  cgid      otime      ctime\n  12345678         32768   600          1  1000  1000  1000  1000          0 1795993081\n";
        assert_eq!(
            parse_sysvipc(IpcKind::Shm, shm),
            vec![IpcObject {
                kind: IpcKind::Shm,
                id: 7,
                uid: 0,
                cuid: 1000
            }]
        );
        assert_eq!(
            parse_sysvipc(IpcKind::Msg, msg),
            vec![IpcObject {
                kind: IpcKind::Msg,
                id: 3,
                uid: 0,
                cuid: 1000
            }]
        );
        assert_eq!(
            parse_sysvipc(IpcKind::Sem, sem),
            vec![IpcObject {
                kind: IpcKind::Sem,
                id: 32768,
                uid: 1000,
                cuid: 1000
            }]
        );
        assert!(parse_sysvipc(IpcKind::Msg, "header only\n").is_empty());
        assert!(parse_sysvipc(IpcKind::Msg, "header\ngarbage line\n").is_empty());
    }

    fn temp_root(name: &str) -> (std::path::PathBuf, String) {
        let dir = std::env::temp_dir().join(format!("isol8-agent-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let root = dir.to_str().expect("utf-8").to_string();
        (dir, root)
    }

    #[test]
    fn writing_over_a_fifo_or_socket_fails_at_once_instead_of_hanging() {
        let (dir, root) = temp_root("fifo");
        let fifo = dir.join("in.txt");
        let c = CString::new(fifo.to_str().expect("utf-8")).expect("c path");
        // SAFETY: valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
        let _sock = std::os::unix::net::UnixListener::bind(dir.join("sock")).expect("bind");
        let file = |name: &str| FileWrite {
            path: format!("{root}/{name}"),
            content: base64::engine::general_purpose::STANDARD.encode("data"),
            mode: None,
        };
        // In a thread: a regression would block forever, and the test must say so.
        let (tx, rx) = std::sync::mpsc::channel();
        let r = root.clone();
        let files = [file("in.txt"), file("sock")];
        std::thread::spawn(move || {
            let out: Vec<_> = files
                .iter()
                .map(|f| write_files(&r, &r, std::slice::from_ref(f)))
                .collect();
            let _ = tx.send(out);
        });
        let results = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("writing to a FIFO hung");
        for r in &results {
            let e = r.as_ref().expect_err("not a regular file");
            assert!(e.contains("not a regular file"), "{e}");
        }
        assert!(
            std::fs::symlink_metadata(&fifo)
                .expect("fifo")
                .file_type()
                .is_fifo(),
            "the FIFO is left as it was"
        );
        // A FIFO with a reader opens fine without blocking, and is still refused.
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .expect("open reader");
        let e = write_files(&root, &root, &[file("in.txt")]).expect_err("fifo with a reader");
        assert!(e.contains("not a regular file"), "{e}");
        drop(reader);
        // Regular files are still written, and truncated first.
        std::fs::write(dir.join("plain"), "a much longer old content").expect("seed");
        write_files(&root, &root, &[file("plain")]).expect("regular file");
        assert_eq!(std::fs::read(dir.join("plain")).expect("read"), b"data");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn scrubbing_the_root_removes_extended_attributes_and_set_timestamps() {
        let (dir, root) = temp_root("scrub");
        let c = CString::new(root.clone()).expect("c path");
        let name = c"user.isol8-leak";
        // SAFETY: valid C strings and buffer.
        let set =
            unsafe { libc::setxattr(c.as_ptr(), name.as_ptr(), b"secret".as_ptr().cast(), 6, 0) };
        if set != 0 {
            // The temp directory's filesystem has no user attributes: nothing to scrub.
            eprintln!(
                "extended attributes unsupported here: {}",
                io::Error::last_os_error()
            );
        }
        let old = [
            libc::timespec {
                tv_sec: 1_000_000,
                tv_nsec: 0,
            },
            libc::timespec {
                tv_sec: 2_000_000,
                tv_nsec: 0,
            },
        ];
        // SAFETY: valid C string and two timespecs.
        assert_eq!(
            unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), old.as_ptr(), 0) },
            0
        );
        scrub_root(&root).expect("scrub");
        let fd = open_root(&root).expect("open");
        let left: Vec<_> = xattr_names(&fd)
            .expect("list")
            .into_iter()
            .filter(|n| !n.starts_with(b"security."))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&dir).expect("meta");
        assert!(
            meta.mtime() > 2_000_000 && meta.atime() > 1_000_000,
            "{meta:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

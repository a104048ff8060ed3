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

/// Empties `wipe` (and removes the sandbox user's System V IPC objects), as the sandbox
/// user; fails if anything is left.
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

/// True unless the agent can see, without the helper, that the run left nothing: every
/// directory to wipe is empty and readable, the sandbox root has its original owner and
/// mode, and no System V IPC object exists. Checking costs a few syscalls; the helper
/// costs a fork and an exec, so most resets skip it.
pub fn needs_wipe(ident: &Identity, wipe: &[String]) -> bool {
    use std::os::unix::fs::MetadataExt;
    let root_ok = std::fs::metadata(&ident.root)
        .map(|m| m.uid() == ident.uid && m.mode() & 0o7777 == 0o755)
        .unwrap_or(false);
    if !root_ok {
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
    [
        "/proc/sysvipc/shm",
        "/proc/sysvipc/sem",
        "/proc/sysvipc/msg",
    ]
    .iter()
    .any(|f| {
        std::fs::read_to_string(f)
            .map(|t| t.lines().count() > 1)
            .unwrap_or(false)
    })
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
        // SAFETY: valid dirfd and C string.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                c.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                mode,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ELOOP) => format!("cannot write {}: it is a symlink", f.path),
                Some(libc::EISDIR) => format!("cannot write {}: it is a directory", f.path),
                _ => format!("cannot write {}: {e}", f.path),
            });
        }
        // SAFETY: fd is a fresh, valid descriptor.
        let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
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
    remove_sysv_ipc();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Removes the System V shared memory segments, semaphore sets and message queues the
/// sandbox user created (they outlive processes within the container's IPC namespace).
fn remove_sysv_ipc() {
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() }.to_string();
    for (file, uid_col) in [
        ("/proc/sysvipc/shm", 7),
        ("/proc/sysvipc/sem", 4),
        ("/proc/sysvipc/msg", 7),
    ] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(id), Some(uid)) = (
                cols.get(1).and_then(|c| c.parse::<i32>().ok()),
                cols.get(uid_col),
            ) else {
                continue;
            };
            if *uid != me {
                continue;
            }
            // SAFETY: IPC_RMID with a null buffer is valid for all three calls.
            unsafe {
                match file {
                    "/proc/sysvipc/shm" => libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()),
                    "/proc/sysvipc/sem" => libc::semctl(id, 0, libc::IPC_RMID),
                    _ => libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

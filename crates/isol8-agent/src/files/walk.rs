//! Paths below the sandbox root (or another writable directory), opened component by
//! component with `O_NOFOLLOW` so a planted symlink is refused at any depth; writing the
//! request's files and reading output files through them (FIFOs and sockets refused
//! without blocking).

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};

use base64::Engine as _;
use isol8_protocol::agent::FileWrite;

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

pub(super) fn open_root(root: &str) -> Result<OwnedFd, String> {
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

/// The writable directory `path` lies in, and its components below it: the first of
/// `roots` that [`components`] accepts. A path below none of them (or not normalised)
/// is refused.
pub fn within<'r, 'a>(
    roots: &'r [String],
    path: &'a str,
) -> Result<(&'r str, Vec<&'a str>), String> {
    let mut first_error = None;
    for root in roots {
        match components(root, path) {
            Ok(parts) => return Ok((root, parts)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    // A path below a root but not normalised says so; otherwise it is outside them all.
    let normalised = roots.iter().any(|r| {
        let r = r.trim_end_matches('/');
        path.strip_prefix(r)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    });
    Err(match first_error {
        Some(e) if normalised => e,
        _ => format!("`{path}` is outside {}", roots.join(", ")),
    })
}

/// Walks to the parent directory of `path` (below one of `roots`), returning it and the
/// final name.
fn walk<'a>(roots: &[String], path: &'a str, create: bool) -> Result<(OwnedFd, &'a str), String> {
    let (root, parts) = within(roots, path)?;
    let (name, dirs) = parts
        .split_last()
        .ok_or_else(|| format!("`{path}` names {root} itself, not a file"))?;
    let mut dir = open_root(root)?;
    let mut shown = root.trim_end_matches('/').to_string();
    for d in dirs {
        shown.push('/');
        shown.push_str(d);
        dir = open_dir(&dir, d, create, &shown)?;
    }
    Ok((dir, name))
}

/// Creates the working directory `cwd` (below `root`) and writes `files` (each below one
/// of `writable`), refusing symlinks, FIFOs and anything not a regular file.
pub(super) fn write_files(
    root: &str,
    writable: &[String],
    cwd: &str,
    files: &[FileWrite],
) -> Result<(), String> {
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
        let (dir, name) = walk(writable, &f.path, true)?;
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

/// Reads the regular file `path` (below one of `writable`), at most `max` bytes.
pub(super) fn read_file(writable: &[String], path: &str, max: u64) -> Result<Vec<u8>, String> {
    use std::os::fd::AsRawFd;
    let (dir, name) = walk(writable, path, false)?;
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

//! Files: writing the request's files and reading output paths back, always *as the
//! sandbox user* and without ever following a symlink.
//!
//! Writes and reads run on the agent's calling thread while its *filesystem* identity
//! is the sandbox user's ([`as_sandbox_user`]). The reset needs the sandbox user's
//! effective uid too (removing System V IPC objects checks it): it runs on a thread
//! that becomes the sandbox user entirely and ends with the work ([`as_sandbox_thread`])
//! once no process of the sandbox is left, else in the agent re-executed in helper mode
//! (`isol8-agent __files`) as the sandbox user, which takes one JSON request on stdin
//! and answers on stdout. A file path must lie
//! below one of the writable directories (`/sandbox`, `/tmp`, `/dev/shm`; the working
//! directory below `/sandbox`), and is opened component by component from that
//! directory with `O_NOFOLLOW`, so a symlink planted by sandboxed code (at any depth) is
//! refused instead of redirecting the write or read.
//!
//! This file holds the helper's protocol: the requests the agent sends (write, read,
//! reset), the helper's entry point, and the agent-side calls that start it. The work is
//! in [`walk`] (opening paths without following symlinks, writing and reading files),
//! [`reset`](mod@reset) (wiping directories and scrubbing the sandbox root between runs)
//! and [`ipc`] (listing and removing System V IPC objects).

mod ipc;
mod reset;
#[cfg(test)]
mod tests;
mod walk;

pub use ipc::{ipc_objects, is_mqueue_fs, remove_ipc_of};
pub use reset::{change_time, needs_wipe};

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use base64::Engine as _;
use isol8_protocol::agent::FileWrite;
use serde::{Deserialize, Serialize};

use crate::proc::{self, Identity, Reaper};
use reset::reset;
use walk::{read_file, write_files};

/// First argument selecting helper mode.
pub const HELPER_ARG: &str = "__files";

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
enum Request {
    Write {
        root: String,
        writable: Vec<String>,
        cwd: String,
        files: Vec<FileWrite>,
    },
    Read {
        writable: Vec<String>,
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
pub fn write_all(ident: &Identity, cwd: &str, files: &[FileWrite]) -> Result<(), String> {
    // Nothing to write and the working directory is the sandbox root, which exists:
    // skip the helper entirely (this is the warm path of most executions).
    if files.is_empty() && cwd.trim_end_matches('/') == ident.root.trim_end_matches('/') {
        return Ok(());
    }
    let req = Request::Write {
        root: ident.root.clone(),
        writable: ident.writable.clone(),
        cwd: cwd.to_string(),
        files: files.to_vec(),
    };
    let resp = as_sandbox_user(ident, move || serve(req))?;
    match resp.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Reads `paths` back as the sandbox user: (path → base64, path → reason).
pub fn read_all(
    ident: &Identity,
    paths: &[String],
    max: u64,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let req = Request::Read {
        writable: ident.writable.clone(),
        paths: paths.to_vec(),
        max,
    };
    match as_sandbox_user(ident, move || serve(req)) {
        Ok(resp) => (resp.files, resp.errors),
        Err(e) => (
            BTreeMap::new(),
            paths.iter().map(|p| (p.clone(), e.clone())).collect(),
        ),
    }
}

/// Runs `f` on the calling thread with the sandbox user's filesystem identity (when the
/// agent runs as root; as it is otherwise): no supplementary groups, fsgid and fsuid the
/// sandbox user's, given back when `f` returns or unwinds ([`proc::FsIdentity`]). Every
/// file access of `f` is checked as the sandbox user's and creates files it owns,
/// exactly as a helper process running as that user would, without a fork and exec
/// (about 2 ms a call) or a thread (about 0.1–0.3 ms with its start and join, most of
/// Deno's extra warm overhead, which writes its code file). Errors: the identity could
/// not be taken (nothing ran).
fn as_sandbox_user<T>(ident: &Identity, f: impl FnOnce() -> T) -> Result<T, String> {
    if !ident.drop_privileges {
        return Ok(f());
    }
    let _identity = proc::FsIdentity::take(ident.uid, ident.gid)
        .map_err(|e| format!("cannot take the sandbox user's identity: {e}"))?;
    Ok(f())
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
        let (uid, gid, clear) = (ident.uid, ident.gid, !ident.bounding_set_clear);
        // SAFETY: become_user only makes async-signal-safe system calls.
        unsafe { cmd.pre_exec(move || proc::become_user(uid, gid, clear)) };
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
///
/// With `no_processes` (the caller found no process of the sandbox left) the work runs
/// on a thread of the agent's own that becomes the sandbox user ([`as_sandbox_thread`]),
/// else, and when that thread cannot be started, in the helper process (a fork and an
/// exec of the agent, whose start-up alone runs glibc's CPU feature detection: back-to-back
/// requests whose runs leave a file took about 1 ms longer with it on the bench's VM).
pub fn reset_all(
    ident: &Identity,
    reaper: &Reaper,
    wipe: &[String],
    no_processes: bool,
) -> Result<(), String> {
    if no_processes {
        let (root, dirs) = (ident.root.clone(), wipe.to_vec());
        if let Some(done) = as_sandbox_thread(ident, move || reset(&root, &dirs)) {
            return done.and_then(|r| r);
        }
    }
    let req = Request::Reset {
        root: ident.root.clone(),
        wipe: wipe.to_vec(),
    };
    match call(ident, reaper, &req)?.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Runs `f` on a new thread that first takes the sandbox user's whole identity (real,
/// effective and saved ids, no supplementary groups: [`proc::become_user`], whose raw
/// system calls change that thread's credentials only) and ends when `f` returns, so the
/// identity ends with it; the calling thread waits. When the agent does not run as root,
/// `f` runs on the calling thread with the agent's own identity.
///
/// This is the helper process's identity without its fork and exec, for work that
/// needs the effective uid too (removing System V IPC objects checks it, not the fsuid
/// [`as_sandbox_user`] changes). While the thread is the sandbox user, that user's
/// processes could signal it (a signal to a thread is checked against the thread's
/// credentials), not trace it or read its memory (the agent is not dumpable): call it
/// only when no process of the sandbox user exists.
///
/// `None` when the thread could not be started (nothing ran); `Some(Err)` when it could
/// not take the identity (nothing ran) or `f` panicked.
fn as_sandbox_thread<T: Send + 'static>(
    ident: &Identity,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<Result<T, String>> {
    if !ident.drop_privileges {
        return Some(Ok(f()));
    }
    let (uid, gid, clear) = (ident.uid, ident.gid, !ident.bounding_set_clear);
    let thread = std::thread::Builder::new()
        .name("isol8-as-user".into())
        // The helper's main thread had the default 8 MiB: the wipe recurses once per
        // directory level of what the run left.
        .stack_size(8 << 20)
        .spawn(move || {
            proc::become_user(uid, gid, clear)
                .map_err(|e| format!("cannot take the sandbox user's identity: {e}"))?;
            Ok(f())
        })
        .ok()?;
    Some(
        thread
            .join()
            .unwrap_or_else(|_| Err("the sandbox user's thread panicked".to_string())),
    )
}

/// Entry point of helper mode.
pub fn helper_main() -> i32 {
    let mut input = Vec::new();
    if io::stdin().read_to_end(&mut input).is_err() {
        return 2;
    }
    let resp = match serde_json::from_slice::<Request>(&input) {
        Ok(req) => serve(req),
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

/// Carries out one request with the caller's identity.
fn serve(req: Request) -> Response {
    match req {
        Request::Write {
            root,
            writable,
            cwd,
            files,
        } => {
            let error = write_files(&root, &writable, &cwd, &files).err();
            Response {
                error,
                ..Default::default()
            }
        }
        Request::Read {
            writable,
            paths,
            max,
        } => {
            let mut resp = Response::default();
            for path in paths {
                match read_file(&writable, &path, max) {
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
        Request::Reset { root, wipe } => Response {
            error: reset(&root, &wipe).err(),
            ..Default::default()
        },
    }
}

//! Pre-started interpreters: a process started (like a step) while the sandbox is idle,
//! waiting for the next execution's code on a pipe, so that execution does not pay for
//! the interpreter's start-up.
//!
//! What makes this safe is *when* it starts: only on the engine's [`Kind::Prestart`]
//! frame, which comes after a successful reset or in a new container, so no process of an
//! earlier execution exists and its files are gone. The next execution either hands its
//! code to it or kills it before anything of that execution runs; either way a waiting
//! process serves at most one execution, and no user code ever runs while a waiting
//! process that a later execution could use exists.
//!
//! The protocol between the agent and the waiting process (its three descriptors, the
//! request's layout) is [`isol8_protocol::agent::PrestartSpec`]'s.
//!
//! [`Kind::Prestart`]: isol8_protocol::agent::Kind::Prestart

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use isol8_protocol::agent::{encode_prestart_request, PrestartSpec, PRESTART_READY_TIMEOUT_MS};

use crate::proc::{self, Identity, Reaper};
use crate::spawn;

/// Capacity asked for the request pipe (the unprivileged maximum, `fs.pipe-max-size`'s
/// default): the whole request must fit, so handing it over never blocks the agent.
const REQUEST_PIPE_BYTES: libc::c_int = 1 << 20;

/// A started interpreter waiting for its program.
pub struct Waiting {
    /// Its pid (and process group: it leads its own session).
    pub pid: libc::pid_t,
    spec: PrestartSpec,
    /// Write end of the request pipe (non-blocking).
    request: File,
    /// Write end of the stdin pipe (none when the request comes on stdin).
    stdin: Option<File>,
    stdout: File,
    stderr: File,
}

/// The program's side of a handed-over execution: the agent's ends of its pipes.
pub struct Handed {
    /// Pid of the process now running the program.
    pub pid: libc::pid_t,
    /// Its stdin, when the execution feeds one.
    pub stdin: Option<File>,
    /// Its stdout.
    pub stdout: File,
    /// Its stderr.
    pub stderr: File,
}

/// Which end of a [`pipe`] the child gets.
#[derive(Clone, Copy)]
enum ChildEnd {
    Read,
    Write,
}

/// A pipe between the agent and a child, both ends close-on-exec: `(child's end, agent's
/// end)`. The child's end is at descriptor `above` or higher (at least 10), so it can be
/// copied to the descriptors below `above` in the child without overwriting another.
fn pipe(child: ChildEnd, above: i32) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: a valid two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just opened and are owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let (low, agent) = match child {
        ChildEnd::Read => (read, write),
        ChildEnd::Write => (write, read),
    };
    // SAFETY: F_DUPFD_CLOEXEC on an open descriptor.
    let high = unsafe { libc::fcntl(low.as_raw_fd(), libc::F_DUPFD_CLOEXEC, above.max(10)) };
    if high < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just duplicated, owned by nobody else. `low` closes here: only the child's
    // copy may remain, or the agent would never see the child's end of file.
    Ok((unsafe { OwnedFd::from_raw_fd(high) }, agent))
}

/// Starts `spec.argv` as a step would start, with the request, stdin and ready pipes at
/// `spec.first_fd` and the two descriptors after it (with `spec.stdio`: the request pipe
/// as its stdin, the ready byte on its stdout), and waits until it says it is ready.
/// Errors when it cannot be started, ends before it is ready, or is not ready within
/// [`PRESTART_READY_TIMEOUT_MS`] (it is then killed).
pub fn start(ident: &Identity, reaper: &Reaper, spec: PrestartSpec) -> io::Result<Waiting> {
    let env = with_preload(&spec.env, spec.preload.as_deref());
    let (child, request, stdin, ready) = if spec.stdio {
        let mut child = spawn::spawn_step(ident, &spec.argv, &env, &spec.cwd, true, 3, &[])?;
        let request = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("no stdin pipe"))?;
        (child, request, None, None)
    } else {
        let above = spec.first_fd.saturating_add(3);
        let (request_r, request_w) = pipe(ChildEnd::Read, above)?;
        let (stdin_r, stdin_w) = pipe(ChildEnd::Read, above)?;
        let (ready_w, ready_r) = pipe(ChildEnd::Write, above)?;
        let child = spawn::spawn_step(
            ident,
            &spec.argv,
            &env,
            &spec.cwd,
            false,
            spec.first_fd,
            &[
                request_r.as_raw_fd(),
                stdin_r.as_raw_fd(),
                ready_w.as_raw_fd(),
            ],
        )?;
        // The child has its copies; the agent keeps only its own ends (`ready_w` and the
        // others close here).
        (child, request_w, Some(stdin_w), Some(ready_r))
    };
    // SAFETY: fcntl on an open descriptor; a smaller pipe only means larger requests are
    // refused (they then start fresh).
    unsafe {
        libc::fcntl(request.as_raw_fd(), libc::F_SETPIPE_SZ, REQUEST_PIPE_BYTES);
        let flags = libc::fcntl(request.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(request.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    let pid = child.pid;
    let ready = wait_ready(ready.as_ref().unwrap_or(&child.stdout));
    if let Err(e) = ready {
        proc::signal_as_sandbox(ident, reaper, -pid, libc::SIGKILL);
        return Err(e);
    }
    Ok(Waiting {
        pid,
        spec,
        request: File::from(request),
        stdin: stdin.map(File::from),
        stdout: File::from(child.stdout),
        stderr: File::from(child.stderr),
    })
}

/// The environment of a process that loads `preload` ([`PrestartSpec::preload`],
/// `agent::Step::preload`): `env`, plus `LD_PRELOAD` naming `preload` when that file
/// exists (an image built before the library existed lacks it, and the dynamic loader
/// would complain on stderr) and `env` has no `LD_PRELOAD` of its own (an image's or a
/// request's own preload is left alone).
pub fn with_preload<'a>(
    env: &'a BTreeMap<String, String>,
    preload: Option<&str>,
) -> Cow<'a, BTreeMap<String, String>> {
    match preload {
        Some(path) if !env.contains_key("LD_PRELOAD") && std::path::Path::new(path).is_file() => {
            let mut env = env.clone();
            env.insert("LD_PRELOAD".to_string(), path.to_string());
            Cow::Owned(env)
        }
        _ => Cow::Borrowed(env),
    }
}

/// Waits for the ready byte on `ready` and reads it, only it (see
/// [`PRESTART_READY_TIMEOUT_MS`]).
fn wait_ready(ready: &OwnedFd) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd: ready.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_millis(PRESTART_READY_TIMEOUT_MS);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(io::Error::other(format!(
                "not ready within {PRESTART_READY_TIMEOUT_MS} ms"
            )));
        }
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            continue;
        }
        let mut byte = [0u8; 1];
        // SAFETY: reads at most one byte into a valid buffer.
        let got = unsafe { libc::read(ready.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
        return match got {
            1 => Ok(()),
            0 => Err(io::Error::other("it ended before it was ready")),
            _ => Err(io::Error::last_os_error()),
        };
    }
}

impl Waiting {
    /// What it was started as (its [`PrestartSpec::serves`] says which executions it may
    /// serve).
    pub fn spec(&self) -> &PrestartSpec {
        &self.spec
    }

    /// Hands the program over: writes the request in one non-blocking write and closes
    /// the pipe. On failure (the request does not fit the pipe, or the process is gone)
    /// the caller must [`discard`](Waiting::discard) it and start the step fresh.
    pub fn hand_over(
        mut self,
        env: &BTreeMap<String, String>,
        code: &str,
        feed_stdin: bool,
    ) -> Result<Handed, Box<(Waiting, io::Error)>> {
        let request = encode_prestart_request(feed_stdin, env, code);
        match self.request.write(&request) {
            Ok(n) if n == request.len() => {}
            Ok(_) => {
                let e = io::Error::other("the request did not fit the pipe");
                return Err(Box::new((self, e)));
            }
            Err(e) => return Err(Box::new((self, e))),
        }
        // End of file: the request is complete.
        drop(self.request);
        Ok(Handed {
            pid: self.pid,
            stdin: self.stdin.filter(|_| feed_stdin),
            stdout: self.stdout,
            stderr: self.stderr,
        })
    }

    /// Kills the waiting process (its whole process group) and drops the pipes. Its exit
    /// is reported by the reaper like any other; the caller ignores it.
    pub fn discard(self, ident: &Identity, reaper: &Reaper) -> libc::pid_t {
        // Killed before its pipes close, so it never sees an empty request.
        proc::signal_as_sandbox(ident, reaper, -self.pid, libc::SIGKILL);
        self.pid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preload_is_added_only_when_its_file_exists_and_env_has_none() {
        let exe = std::env::current_exe().expect("the test binary");
        let exe = exe.to_str().expect("a UTF-8 path");
        let env = BTreeMap::from([("A".to_string(), "1".to_string())]);
        let added = with_preload(&env, Some(exe));
        assert_eq!(added.get("LD_PRELOAD").map(String::as_str), Some(exe));
        assert_eq!(added.get("A").map(String::as_str), Some("1"));
        assert_eq!(*with_preload(&env, Some("/nowhere/lib.so")), env);
        assert_eq!(*with_preload(&env, None), env);
        let own = BTreeMap::from([("LD_PRELOAD".to_string(), "/x.so".to_string())]);
        assert_eq!(*with_preload(&own, Some(exe)), own);
    }
}

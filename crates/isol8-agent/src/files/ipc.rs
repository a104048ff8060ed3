//! Inter-process communication objects that outlive a run: System V IPC objects (listed
//! from `/proc/sysvipc`, removed by owner or creator) and the mqueue mount where POSIX
//! message queues appear.

use std::ffi::CString;

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

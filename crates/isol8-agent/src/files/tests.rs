//! Unit tests of the file helper's work: path walking, symlinks, FIFOs and sockets,
//! System V IPC listings, and scrubbing the sandbox root.

use std::ffi::CString;
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};

use base64::Engine as _;
use isol8_protocol::agent::FileWrite;

use super::ipc::{parse_sysvipc, IpcKind, IpcObject};
use super::reset::{scrub_root, xattr_names};
use super::walk::{components, open_root, read_file, within, write_files};
use crate::proc::own_groups;

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
    let roots = [root.clone()];
    write_files(
        &root,
        &roots,
        &format!("{root}/work"),
        &[f("a/b/c.txt", "hello")],
    )
    .expect("write");
    assert_eq!(
        read_file(&roots, &format!("{root}/a/b/c.txt"), 100).expect("read"),
        b"hello"
    );
    assert!(
        read_file(&roots, &format!("{root}/a/b/c.txt"), 3).is_err(),
        "size limit"
    );
    std::os::unix::fs::symlink("/etc", dir.join("link")).expect("symlink");
    std::os::unix::fs::symlink("/etc/hostname", dir.join("a/host")).expect("symlink");
    assert!(read_file(&roots, &format!("{root}/link/hostname"), 1 << 20).is_err());
    assert!(read_file(&roots, &format!("{root}/a/host"), 1 << 20).is_err());
    assert!(write_files(&root, &roots, &root, &[f("link/evil", "x")]).is_err());
    assert!(write_files(&root, &roots, &root, &[f("a/host", "x")]).is_err());
    assert!(
        read_file(&roots, &format!("{root}/a"), 1 << 20).is_err(),
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

#[test]
fn paths_may_lie_below_any_writable_directory_and_escape_none() {
    let (_d1, sandbox) = temp_root("multi-sandbox");
    let (d2, tmp) = temp_root("multi-tmp");
    let (d3, shm) = temp_root("multi-shm");
    let roots = [sandbox.clone(), tmp.clone(), shm.clone()];
    assert_eq!(
        within(&roots, &format!("{tmp}/a/b")).expect("tmp"),
        (tmp.as_str(), vec!["a", "b"])
    );
    assert_eq!(
        within(&roots, &format!("{shm}/x")).expect("shm"),
        (shm.as_str(), vec!["x"])
    );
    let b64 = |c: &str| base64::engine::general_purpose::STANDARD.encode(c);
    let file = |path: String, c: &str| FileWrite {
        path,
        content: b64(c),
        mode: None,
    };
    // Written and read back in every root; the working directory stays in the sandbox.
    for root in &roots {
        let p = format!("{root}/dir/f.txt");
        write_files(&sandbox, &roots, &sandbox, &[file(p.clone(), root)]).expect("write");
        assert_eq!(
            read_file(&roots, &p, 1 << 20).expect("read"),
            root.as_bytes()
        );
    }
    assert!(write_files(&sandbox, &roots, &format!("{tmp}/work"), &[]).is_err());

    // Escapes from each root: `..`, the root itself, near-miss names, symlinks at any
    // depth (to a directory and to a file), FIFOs.
    std::os::unix::fs::symlink("/etc", d2.join("etc")).expect("symlink");
    std::fs::create_dir_all(d3.join("deep")).expect("dir");
    std::os::unix::fs::symlink("/etc/hostname", d3.join("deep/host")).expect("symlink");
    std::os::unix::fs::symlink(&sandbox, d3.join("to-sandbox")).expect("symlink");
    let fifo = CString::new(d2.join("fifo").to_str().expect("utf-8")).expect("c path");
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0, "mkfifo");
    for bad in [
        format!("{tmp}/../etc/passwd"),
        format!("{tmp}/a/../../x"),
        format!("{shm}/./x"),
        format!("{shm}//x"),
        tmp.clone(),
        format!("{tmp}/"),
        format!("{tmp}x/f"),
        format!("{shm}-other/f"),
        format!("{tmp}/etc/hostname"),
        format!("{tmp}/etc/isol8-evil"),
        format!("{shm}/deep/host"),
        format!("{shm}/to-sandbox/dir/f.txt"),
        format!("{tmp}/fifo"),
        "/etc/passwd".to_string(),
        "relative/f".to_string(),
    ] {
        let w = write_files(&sandbox, &roots, &sandbox, &[file(bad.clone(), "evil")]);
        assert!(w.is_err(), "write {bad} was accepted");
        let r = read_file(&roots, &bad, 1 << 20);
        assert!(r.is_err(), "read {bad} was accepted");
    }
    assert!(!std::path::Path::new("/etc/isol8-evil").exists());
    assert_eq!(
        std::fs::read_to_string(format!("{sandbox}/dir/f.txt")).expect("kept"),
        sandbox,
        "nothing was written through the symlink to the sandbox"
    );
    for d in [&sandbox, &tmp, &shm] {
        let _ = std::fs::remove_dir_all(d);
    }
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
            .map(|f| write_files(&r, std::slice::from_ref(&r), &r, std::slice::from_ref(f)))
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
    let roots = [root.clone()];
    let e = write_files(&root, &roots, &root, &[file("in.txt")]).expect_err("fifo with a reader");
    assert!(e.contains("not a regular file"), "{e}");
    drop(reader);
    // Regular files are still written, and truncated first.
    std::fs::write(dir.join("plain"), "a much longer old content").expect("seed");
    write_files(&root, &roots, &root, &[file("plain")]).expect("regular file");
    assert_eq!(std::fs::read(dir.join("plain")).expect("read"), b"data");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn scrubbing_the_root_removes_extended_attributes_and_set_timestamps() {
    let (dir, root) = temp_root("scrub");
    let c = CString::new(root.clone()).expect("c path");
    let name = c"user.isol8-leak";
    // SAFETY: valid C strings and buffer.
    let set = unsafe { libc::setxattr(c.as_ptr(), name.as_ptr(), b"secret".as_ptr().cast(), 6, 0) };
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

#[test]
fn file_work_runs_as_the_sandbox_user_and_the_agent_gets_its_identity_back() {
    // As root (the agent's case) the work runs on the calling thread with the sandbox
    // user's fsuid, fsgid and no groups; afterwards the thread is itself again.
    let mut ident = crate::proc::Identity::from_env();
    (ident.uid, ident.gid) = (4242, 4343);
    let before = (crate::proc::fs_ids(), own_groups().expect("groups"));
    if !ident.drop_privileges {
        // Not root: nothing to take, the work runs with the caller's own identity.
        let inside = super::as_sandbox_user(&ident, || {
            (crate::proc::fs_ids(), own_groups().expect("groups"))
        })
        .expect("ran");
        assert_eq!(inside, before);
        return;
    }
    let dir = std::env::temp_dir().join(format!("isol8-agent-fsid-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    // Owned by root, mode 0755: the sandbox user may not create a file in it.
    let denied = dir.join("denied");
    let (inside, write) = super::as_sandbox_user(&ident, || {
        let ids = (crate::proc::fs_ids(), own_groups().expect("groups"));
        (ids, std::fs::write(&denied, b"x"))
    })
    .expect("identity taken");
    assert_eq!(inside, ((4242, 4343), vec![]));
    assert_eq!(
        write
            .expect_err("root's directory refuses the sandbox user")
            .kind(),
        io::ErrorKind::PermissionDenied
    );
    assert_eq!(
        (crate::proc::fs_ids(), own_groups().expect("groups")),
        before
    );
    // And root may again.
    std::fs::write(&denied, b"x").expect("the agent writes as itself");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_reset_on_the_sandbox_users_thread_removes_only_what_that_user_may() {
    // As root (the agent's case) the reset's thread takes the sandbox user's whole
    // identity: it removes the user's own files, cannot remove root's, and the calling
    // thread stays root.
    use std::os::unix::fs::PermissionsExt;
    let mut ident = crate::proc::Identity::from_env();
    (ident.uid, ident.gid) = (4242, 4343);
    let ids = || {
        let (mut r, mut e, mut s) = (0, 0, 0);
        // SAFETY: three valid out-pointers.
        unsafe { libc::getresuid(&mut r, &mut e, &mut s) };
        (r, e, s)
    };
    let before = ids();
    let (dir, wipe) = temp_root("as-user-reset");
    if !ident.drop_privileges {
        // Not root: the reset runs on the calling thread as the caller.
        let uid = super::as_sandbox_thread(&ident, ids)
            .expect("ran")
            .expect("ran");
        assert_eq!(uid, before);
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let chown = |p: &std::path::Path, uid: u32, gid: u32| {
        std::os::unix::fs::chown(p, Some(uid), Some(gid)).expect("chown");
    };
    // Two directories to wipe, both the sandbox user's: one holds its own file, the
    // other a directory of root's with a file in it.
    let (mine, other) = (dir.join("mine"), dir.join("other"));
    for d in [&dir, &mine, &other] {
        std::fs::create_dir_all(d).expect("mkdir");
        chown(d, 4242, 4343);
    }
    let own = mine.join("own.txt");
    std::fs::write(&own, b"x").expect("write");
    chown(&own, 4242, 4343);
    let roots = other.join("roots");
    std::fs::create_dir(&roots).expect("mkdir");
    std::fs::set_permissions(&roots, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let kept = roots.join("kept.txt");
    std::fs::write(&kept, b"x").expect("write");

    let path = |p: &std::path::Path| p.to_str().expect("utf-8").to_string();
    let (root, dirs) = (wipe.clone(), vec![path(&mine), path(&other)]);
    let inside =
        super::as_sandbox_thread(&ident, move || (ids(), super::reset::reset(&root, &dirs)))
            .expect("thread started")
            .expect("identity taken");
    assert_eq!(
        inside.0,
        (4242, 4242, 4242),
        "the thread is the sandbox user"
    );
    let err = inside
        .1
        .expect_err("root's file is out of the sandbox user's reach");
    assert!(err.contains("kept.txt"), "{err}");
    assert!(!own.exists(), "the sandbox user's own file is removed");
    assert!(kept.exists(), "root's file is not removed");
    assert_eq!(ids(), before, "the calling thread keeps its identity");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_reset_on_the_sandbox_users_thread_wipes_a_tree_as_deep_as_paths_allow() {
    // The wipe recurses once per directory level; a run can nest directories until
    // their paths reach PATH_MAX (4096 bytes). The thread's stack holds that.
    let mut ident = crate::proc::Identity::from_env();
    (ident.uid, ident.gid) = (4242, 4343);
    let (dir, wipe) = temp_root("as-user-deep");
    let owner = |p: &std::path::Path| {
        if ident.drop_privileges {
            std::os::unix::fs::chown(p, Some(4242), Some(4343)).expect("chown");
        }
    };
    owner(&dir);
    let mut deep = dir.clone();
    while deep.as_os_str().len() + 2 < 4000 {
        deep.push("d");
        std::fs::create_dir(&deep).expect("mkdir");
        owner(&deep);
    }
    let (root, dirs) = (wipe.clone(), vec![wipe.clone()]);
    let done = super::as_sandbox_thread(&ident, move || super::reset::reset(&root, &dirs))
        .expect("thread started")
        .expect("identity taken");
    assert_eq!(done, Ok(()));
    assert_eq!(std::fs::read_dir(&dir).expect("list").count(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

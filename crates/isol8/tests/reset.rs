//! What a reset clears (`docs/SECURITY.md`, "What a reset clears"): for every place an
//! execution can leave state in its container, one run plants it and the next run of the
//! same engine looks for it, under both pool strategies.
//!
//! With `fast` the second run must get the *same* container (equal `containerId`): the
//! reset really ran, and succeeded (a failed reset destroys the container). With `secure`
//! it gets a new one, and the planted state must be absent all the same.

use isol8::{DockerEngine, EngineOptions, ExecutionRequest, ExecutionResult};
use isol8_protocol::{NetworkMode, PoolSize, PoolStrategy};
use isol8_testkit::{assert_clean, code, engine, run};

const STRATEGIES: [PoolStrategy; 2] = [PoolStrategy::Fast, PoolStrategy::Secure];

/// One warm sandbox per key, so the second run waits for the first run's container.
fn pooled(strategy: PoolStrategy) -> EngineOptions {
    EngineOptions {
        pool_strategy: Some(strategy),
        pool_size: Some(PoolSize::Split { clean: 1, dirty: 1 }),
        ..Default::default()
    }
}

fn python(source: &str) -> ExecutionRequest {
    code("python", source)
}

fn shell(script: &str) -> ExecutionRequest {
    let mut req = code("python", "");
    req.code = None;
    req.cmd = Some(script.to_string());
    req
}

/// Runs `plant`, then `look`, on `engine`; checks which container `look` got.
async fn plant_then_look(
    engine: &DockerEngine,
    strategy: PoolStrategy,
    plant: ExecutionRequest,
    look: ExecutionRequest,
) -> (ExecutionResult, ExecutionResult) {
    let planted = run(engine, plant).await;
    let seen = run(engine, look).await;
    let (a, b) = (planted.container_id.clone(), seen.container_id.clone());
    assert!(a.is_some() && b.is_some(), "{planted:?} {seen:?}");
    match strategy {
        PoolStrategy::Fast => assert_eq!(
            a, b,
            "fast: the next run must reuse the reset container (a failed reset destroys it): {planted:?}"
        ),
        PoolStrategy::Secure => assert_ne!(a, b, "secure: a container serves one run"),
    }
    (planted, seen)
}

/// Runs `plant` then `look` under both strategies and returns, per strategy, what the
/// two runs printed (each run must exit 0).
async fn both_strategies(
    options: EngineOptions,
    plant: ExecutionRequest,
    look: ExecutionRequest,
) -> Vec<(PoolStrategy, String, String)> {
    let mut out = Vec::new();
    for strategy in STRATEGIES {
        let engine = engine(pooled(strategy).overlay(&options)).await;
        let (p, l) = plant_then_look(&engine, strategy, plant.clone(), look.clone()).await;
        assert_eq!(p.exit_code, 0, "{strategy:?} plant: {p:?}");
        assert_eq!(l.exit_code, 0, "{strategy:?} look: {l:?}");
        out.push((strategy, p.stdout, l.stdout));
        assert_clean(&engine).await;
    }
    out
}

/// `/sandbox`, `/tmp`, `/dev/shm` and the sandbox root itself: files (hidden, read-only,
/// in locked directories), a FIFO, extended attributes and explicitly set timestamps on
/// `/sandbox` (the one directory the sandbox user owns and a wipe cannot remove).
#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn files_and_the_sandbox_roots_attributes_do_not_survive() {
    let plant = python(
        r#"
import os
os.makedirs("/sandbox/.hidden/deep")
open("/sandbox/.hidden/deep/secret", "w").write("tenant-a")
os.mkdir("/sandbox/locked"); open("/sandbox/locked/f", "w").write("x")
os.chmod("/sandbox/locked/f", 0o400); os.chmod("/sandbox/locked", 0o500)
os.mkfifo("/sandbox/fifo")
open("/tmp/.left", "w").write("tmp"); open("/dev/shm/left", "w").write("shm")
os.setxattr("/sandbox", "user.leak", b"tenant-a-secret")
os.utime("/sandbox", (1234567, 7654321))
print("planted", os.listxattr("/sandbox"), int(os.stat("/sandbox").st_mtime))
"#,
    );
    let look = python(
        r#"
import os
st = os.stat("/sandbox")
print(sorted(os.listdir("/sandbox")), os.listdir("/tmp"), os.listdir("/dev/shm"),
      os.listxattr("/sandbox"), oct(st.st_mode & 0o7777), st.st_mtime in (1234567, 7654321),
      st.st_atime in (1234567, 7654321))
"#,
    );
    let runs = both_strategies(EngineOptions::default(), plant, look).await;
    for (strategy, planted, seen) in runs {
        assert_eq!(planted, "planted ['user.leak'] 7654321\n", "{strategy:?}");
        assert_eq!(
            seen, "[] [] [] [] 0o755 False False\n",
            "{strategy:?}: traces of the previous run"
        );
    }
}

/// POSIX message queues live in the container's IPC namespace, outside every tmpfs.
#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn posix_message_queues_do_not_survive() {
    let plant = python(
        r#"
import ctypes, os
libc = ctypes.CDLL("libc.so.6", use_errno=True)
q = libc.mq_open(b"/q", os.O_CREAT | os.O_RDWR, 0o600, None)
sent = libc.mq_send(q, b"tenant-a-secret", 15, 0)
locked = libc.mq_open(b"/locked", os.O_CREAT | os.O_RDWR, 0o000, None)
print("planted", q >= 0, sent, locked >= 0, sorted(os.listdir("/dev/mqueue")))
"#,
    );
    let look = python(
        r#"
import ctypes, os
libc = ctypes.CDLL("libc.so.6", use_errno=True)
q = libc.mq_open(b"/q", os.O_RDONLY | os.O_NONBLOCK, 0, None)
err = ctypes.get_errno()
got = b""
if q >= 0:
    buf = ctypes.create_string_buffer(1 << 16)
    n = libc.mq_receive(q, buf, 1 << 16, None)
    got = buf.raw[:max(n, 0)]
print(q, os.strerror(err) if q < 0 else "opened", got, os.listdir("/dev/mqueue"))
"#,
    );
    let runs = both_strategies(EngineOptions::default(), plant, look).await;
    for (strategy, planted, seen) in runs {
        assert_eq!(
            planted, "planted True 0 True ['locked', 'q']\n",
            "{strategy:?}"
        );
        assert_eq!(
            seen, "-1 No such file or directory b'' []\n",
            "{strategy:?}: the previous run's message queue is still there"
        );
    }
}

/// System V IPC objects handed to root with `IPC_SET` (which their creator may do without
/// privilege): a message queue holding a message, a 300 MiB shared memory segment that
/// would starve the next run's memory, and a semaphore set.
#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn system_v_ipc_objects_do_not_survive_even_when_given_to_root() {
    let plant = python(
        r#"
import ctypes
libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.shmat.restype = ctypes.c_void_p
IPC_CREAT, IPC_SET, IPC_STAT, KEY = 0o1000, 1, 2, 0x150A
def to_root(ctl, ident, *semnum):
    buf = ctypes.create_string_buffer(512)
    assert ctl(ident, *semnum, IPC_STAT, buf) == 0
    raw = bytearray(buf.raw)
    raw[4:12] = bytes(8)   # ipc_perm.uid, ipc_perm.gid = 0
    raw[20:22] = bytes(2)  # ipc_perm.mode = 0
    return ctl(ident, *semnum, IPC_SET, ctypes.create_string_buffer(bytes(raw), 512))
class Msg(ctypes.Structure):
    _fields_ = [("mtype", ctypes.c_long), ("mtext", ctypes.c_char * 64)]
mq = libc.msgget(KEY, IPC_CREAT | 0o600)
sent = libc.msgsnd(mq, ctypes.byref(Msg(1, b"tenant-a-secret")), 15, 0)
size = 300 << 20
shm = libc.shmget(KEY, ctypes.c_size_t(size), IPC_CREAT | 0o600)
addr = libc.shmat(shm, None, 0)
ctypes.memset(addr, 0x5A, size)
libc.shmdt(ctypes.c_void_p(addr))
sem = libc.semget(KEY, 1, IPC_CREAT | 0o600)
print("planted", mq >= 0, sent, shm >= 0, sem >= 0,
      to_root(libc.msgctl, mq), to_root(libc.shmctl, shm), to_root(libc.semctl, sem, 0))
owners = [l.split()[7] for l in open("/proc/sysvipc/msg").read().splitlines()[1:]]
print("owners", owners)
"#,
    );
    let look = python(
        r#"
import ctypes
libc = ctypes.CDLL("libc.so.6", use_errno=True)
left = {k: open("/proc/sysvipc/" + k).read().splitlines()[1:] for k in ("msg", "shm", "sem")}
found = libc.msgget(0x150A, 0)
hog = bytearray(300 << 20)
for i in range(0, len(hog), 4096):
    hog[i] = 1
print(left, found, len(hog))
"#,
    );
    let runs = both_strategies(EngineOptions::default(), plant, look).await;
    for (strategy, planted, seen) in runs {
        assert_eq!(
            planted, "planted True 0 True True 0 0 0\nowners ['0']\n",
            "{strategy:?}"
        );
        assert_eq!(
            seen, "{'msg': [], 'shm': [], 'sem': []} -1 314572800\n",
            "{strategy:?}: the previous run's IPC objects are still there"
        );
    }
}

/// Kernel keyrings are not namespaced (the user keyring of uid 1000 is shared by every
/// container on the host), so no run may put anything in them: `add_key`, `keyctl` and
/// `request_key` are refused (EPERM) by the seccomp profile, for planting and for looking.
#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn kernel_keyrings_cannot_carry_anything_between_runs() {
    const KEYS: &str = r#"
import ctypes
libc = ctypes.CDLL("libc.so.6", use_errno=True)
SYS_add_key, SYS_request_key, SYS_keyctl = 248, 249, 250
KEYCTL_GET_KEYRING_ID, KEYCTL_READ = 0, 11
def call(*args):
    r = libc.syscall(*args)
    return (r, ctypes.get_errno() if r < 0 else 0)
out = []
for ring in (-3, -4, -5):  # session, user, user-session keyrings
    out.append(call(SYS_add_key, b"user", b"isol8-leak", b"secret", 6, ring))
    out.append(call(SYS_keyctl, KEYCTL_GET_KEYRING_ID, ring, 0))
    out.append(call(SYS_keyctl, KEYCTL_READ, ring, None, 0))
out.append(call(SYS_request_key, b"user", b"isol8-leak", None, 0))
print(set(out))
"#;
    let runs = both_strategies(EngineOptions::default(), python(KEYS), python(KEYS)).await;
    for (strategy, planted, seen) in runs {
        assert_eq!(
            planted, "{(-1, 1)}\n",
            "{strategy:?}: a keyring call was not refused"
        );
        assert_eq!(
            seen, "{(-1, 1)}\n",
            "{strategy:?}: a keyring call was not refused"
        );
    }
}

/// Processes: double-forked, `setsid`, ignoring SIGTERM and SIGHUP, renamed, sleeping
/// in the background when the step ends.
#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn no_process_survives_into_the_next_run() {
    let plant = shell(
        r#"
(trap '' TERM HUP; setsid sleep 1000 >/dev/null 2>&1 < /dev/null &)
(setsid python3 -c 'import ctypes, time; ctypes.CDLL(None).prctl(15, b"kworker", 0, 0, 0); time.sleep(1000)' >/dev/null 2>&1 < /dev/null &)
nohup sleep 999 >/dev/null 2>&1 &
sleep 0.3
n=0; for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = kworker ] && n=$((n+1)); done
echo "planted $n"
"#,
    );
    let look = python(
        r#"
import os
me, others = os.getpid(), []
for p in os.listdir("/proc"):
    if not p.isdigit() or int(p) in (1, me):
        continue
    try:
        status = open(f"/proc/{p}/status").read()
    except OSError:
        continue
    if "\nState:\tZ" not in status:
        others.append((p, open(f"/proc/{p}/comm").read().strip()))
print(others)
"#,
    );
    let runs = both_strategies(EngineOptions::default(), plant, look).await;
    for (strategy, planted, seen) in runs {
        assert_eq!(planted, "planted 1\n", "{strategy:?}");
        assert_eq!(seen, "[]\n", "{strategy:?}: processes of the previous run");
    }
}

/// Sockets in the container's network namespace: a TCP listener, a UDP socket and an
/// abstract Unix socket held by a detached background process.
#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn listening_and_abstract_sockets_do_not_survive() {
    let plant = python(
        r#"
import os, socket, time
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        t = socket.socket(); t.bind(("127.0.0.1", 7777)); t.listen()
        d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); d.bind(("127.0.0.1", 7778))
        u = socket.socket(socket.AF_UNIX); u.bind("\0isol8-leak"); u.listen()
        os.write(w, b"1")
        time.sleep(1000)
    os._exit(0)
print("planted", os.read(r, 1) == b"1")
"#,
    );
    let look = python(
        r#"
import socket
def dial(family, addr):
    try:
        socket.socket(family).connect(addr)
        return "connected"
    except OSError as e:
        return type(e).__name__
def rows(name):
    return [l.split() for l in open("/proc/net/" + name).read().splitlines()[1:]]
abstract = [c[7] for c in rows("unix") if len(c) > 7 and c[7].startswith("@")]
listening = [c[1] for c in rows("tcp") if c[3] == "0A"]
print(dial(socket.AF_INET, ("127.0.0.1", 7777)), dial(socket.AF_UNIX, "\0isol8-leak"),
      abstract, listening, [c[1] for c in rows("udp")])
"#,
    );
    let runs = both_strategies(EngineOptions::default(), plant, look).await;
    for (strategy, planted, seen) in runs {
        assert_eq!(planted, "planted True\n", "{strategy:?}");
        assert_eq!(
            seen, "ConnectionRefusedError ConnectionRefusedError [] [] []\n",
            "{strategy:?}: sockets of the previous run"
        );
    }
}

/// The agent's egress relay and the engine's proxy (`filtered`): connections the run left
/// half-open, a request it left unfinished, and its proxy log. The next run finds no
/// connection to the relay but its own, the relay working, and only its own log entries.
#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn relayed_connections_and_proxy_logs_do_not_survive() {
    let filtered = EngineOptions {
        network: Some(NetworkMode::Filtered),
        log_network: Some(true),
        ..Default::default()
    };
    const GET: &str = r#"
import socket
def get(path):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=20)
    s.sendall(f"GET http://10.0.0.1/{path} HTTP/1.1\r\nHost: 10.0.0.1\r\nConnection: close\r\n\r\n".encode())
    return s.recv(64).split(b"\r\n")[0].decode()
"#;
    let plant = python(&format!(
        r#"{GET}
held = []
for i in range(40):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=20)
    s.sendall(b"CONNECT unfinished.example:443 HTTP/1.1\r\nHost: unfin")
    held.append(s)
print("planted", get("planted"))
"#
    ));
    let look = python(&format!(
        r#"{GET}
def relay_sockets():
    out = []
    for name in ("tcp", "tcp6"):
        for c in [l.split() for l in open("/proc/net/" + name).read().splitlines()[1:]]:
            ports = (c[1].split(":")[1], c[2].split(":")[1])
            if "0C38" in ports and c[3] not in ("0A", "06"):  # not LISTEN, not TIME_WAIT
                out.append((c[1], c[2], c[3]))
    return out
print(relay_sockets(), get("look"))
"#
    ));
    let mut saw = Vec::new();
    for strategy in STRATEGIES {
        let engine = engine(pooled(strategy).overlay(&filtered)).await;
        let (p, l) = plant_then_look(&engine, strategy, plant.clone(), look.clone()).await;
        assert_eq!(
            p.stdout, "planted HTTP/1.1 403 Forbidden\n",
            "{strategy:?}: {p:?}"
        );
        assert_eq!(
            l.stdout, "[] HTTP/1.1 403 Forbidden\n",
            "{strategy:?}: connections of the previous run: {l:?}"
        );
        let paths: Vec<String> = l
            .network_logs
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(paths, vec!["/look"], "{strategy:?}: {:?}", l.network_logs);
        saw.push(strategy);
        assert_clean(&engine).await;
    }
    assert_eq!(saw, STRATEGIES);
}

/// `readonlyRootFs: false` makes every path the sandbox user may write a place to leave
/// data (`/var/tmp`, `/run/lock`…), which no reset can enumerate: such a container serves
/// one execution and is destroyed, under both strategies.
#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_container_with_a_writable_root_is_never_reused() {
    let writable = EngineOptions {
        readonly_root_fs: Some(false),
        ..Default::default()
    };
    let plant =
        shell("echo tenant-a > /var/tmp/leak && echo tenant-a > /run/lock/leak && echo planted");
    let look = shell("cat /var/tmp/leak /run/lock/leak 2>/dev/null; echo looked");
    for strategy in STRATEGIES {
        let engine = engine(pooled(strategy).overlay(&writable)).await;
        let planted = run(&engine, plant.clone()).await;
        assert_eq!(planted.stdout, "planted\n", "{strategy:?}: {planted:?}");
        let seen = run(&engine, look.clone()).await;
        assert_ne!(
            planted.container_id, seen.container_id,
            "{strategy:?}: a container with a writable root was reused"
        );
        assert_eq!(seen.stdout, "looked\n", "{strategy:?}: {seen:?}");
        assert_clean(&engine).await;
    }
}

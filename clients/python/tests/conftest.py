"""Fixtures: a real ``isol8 serve`` started from the built binary, on loopback, on a free
port, with a master key and a SQLite key store; clients of it.

The binary is ``$ISOL8_BIN``, else the checkout's ``target/debug/isol8``. Without it, or
without a running Docker daemon, the tests skip — except in CI (``CI`` set), where they
fail, as the Rust integration tests do.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import AsyncIterator, Callable, Iterator, List

import pytest

import isol8

MASTER_KEY = "pyclient-master-key-0123456789"
REPO = Path(__file__).resolve().parents[3]


def _unavailable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI is set: a missing prerequisite fails the run)")
    pytest.skip(why)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def docker(*args: str) -> str:
    """Runs the docker CLI; its stdout."""
    return subprocess.run(
        ["docker", *args], check=True, capture_output=True, text=True, timeout=60
    ).stdout


def container_exists(container_id: str) -> bool:
    """True while Docker still has the container (running or not)."""
    out = docker("ps", "-aq", "--no-trunc", "--filter", f"id={container_id}")
    return bool(out.strip())


class Server:
    """``isol8 serve`` as a child process."""

    def __init__(self, binary: str, workdir: Path, extra: List[str]) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log: List[str] = []
        env = dict(os.environ, ISOL8_API_KEY=MASTER_KEY)
        self.proc = subprocess.Popen(
            [binary, "serve", "--port", str(self.port), *extra],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        first = self.proc.stderr.readline()
        if "listening on" not in first:
            self.proc.kill()
            rest = self.proc.stderr.read()
            raise RuntimeError(f"isol8 serve did not start: {first}{rest}")
        self.log.append(first)
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)

    def containers(self) -> List[str]:
        """The ids of this server's containers on the Docker daemon."""
        out = docker(
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            "label=isol8.managed=true",
            "--filter",
            f"label=isol8.pid={self.proc.pid}",
        )
        return out.split()

    def stop(self) -> None:
        """SIGTERM; checks a clean exit that left no container behind."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("isol8 serve did not exit within 90 s of SIGTERM")
        assert code == 0, f"isol8 serve exited {code}: {''.join(self.log[-20:])}"
        left = self.containers()
        assert not left, f"containers left by isol8 serve: {left}"


@pytest.fixture(scope="session")
def isol8_bin() -> str:
    """The isol8 binary under test."""
    binary = os.environ.get("ISOL8_BIN") or str(REPO / "target" / "debug" / "isol8")
    if not os.access(binary, os.X_OK):
        _unavailable(f"no isol8 binary at {binary} (cargo build -p isol8-cli, or set ISOL8_BIN)")
    if shutil.which("docker") is None:
        _unavailable("the docker CLI is not installed")
    probe = subprocess.run(["docker", "version"], capture_output=True, timeout=60)
    if probe.returncode != 0:
        _unavailable("the Docker daemon is not reachable")
    return binary


def _start(binary: str, extra: List[str]) -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="isol8-pyclient-") as tmp:
        # Its own working directory: no isol8.config.json of the checkout applies.
        server = Server(binary, Path(tmp), extra)
        try:
            yield server
        finally:
            if server.proc.poll() is None:
                server.stop()


@pytest.fixture(scope="session")
def server(isol8_bin: str) -> Iterator[Server]:
    """A server with a SQLite key store (keys routes enabled)."""
    db = Path(tempfile.mkdtemp(prefix="isol8-pyclient-keys-")) / "keys.db"
    try:
        yield from _start(isol8_bin, ["--auth-db", str(db)])
    finally:
        shutil.rmtree(db.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def bare_server(isol8_bin: str) -> Iterator[Server]:
    """A server without a key store (only the master key)."""
    yield from _start(isol8_bin, [])


@pytest.fixture
def client(server: Server) -> Iterator[isol8.Client]:
    """A master-key client of ``server``."""
    with isol8.Client(server.url, api_key=MASTER_KEY) as c:
        yield c


@pytest.fixture
async def aclient(server: Server) -> AsyncIterator[isol8.AsyncClient]:
    """A master-key async client of ``server``."""
    async with isol8.AsyncClient(server.url, api_key=MASTER_KEY) as c:
        yield c


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL nothing listens on."""
    return f"http://127.0.0.1:{_free_port()}"


def wait_until(check: Callable[[], bool], what: str, bound: float = 60.0) -> None:
    """Polls ``check`` until it is true; fails after ``bound`` seconds (a hang guard,
    not a timing assertion)."""
    deadline = time.monotonic() + bound
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {bound} s")
        time.sleep(0.2)


def session_ids(c: isol8.Client) -> List[str]:
    """The ids of the sessions ``c`` sees."""
    return [s.id for s in c.list_sessions()]

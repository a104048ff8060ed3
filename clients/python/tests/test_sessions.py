"""Sessions: a context manager that creates the session on enter and ends it (and its
container) on exit, even on exceptions; files in and out as bytes; and nothing left
running when the client goes away (its ``close()``, its ``with`` block, or the end of a
process that never closed it)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import isol8
from conftest import MASTER_KEY, Server, container_exists, session_ids, wait_until

BINARY = bytes(range(256)) * 4


def test_session_keeps_state_and_moves_bytes_both_ways(client: isol8.Client) -> None:
    with client.session("python") as s:
        assert s.is_open and s.id in session_ids(client)
        # Files can go in before any code ran: entering created the container.
        s.put_file("/sandbox/in.bin", BINARY)
        s.put_file("/sandbox/note.txt", "text is UTF-8: é")
        r = s.execute(
            "d = open('/sandbox/in.bin','rb').read()\n"
            "open('/sandbox/out.bin','wb').write(d[::-1])\n"
            "open('/sandbox/state','w').write('kept')\n"
            "print(len(d), open('/sandbox/note.txt', encoding='utf-8').read())"
        )
        assert (r.stdout, r.exit_code) == ("1024 text is UTF-8: é\n", 0)
        assert s.get_file("/sandbox/out.bin") == BINARY[::-1]
        # The same container between executions.
        again = s.execute("print(open('/sandbox/state').read())")
        assert again.stdout == "kept\n" and again.container_id == r.container_id
        container = r.container_id
        assert container and container_exists(container)
    assert not s.is_open
    assert s.id not in session_ids(client)
    assert not container_exists(container), "the session's container outlived the session"


def test_session_ends_when_the_block_raises(client: isol8.Client) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with client.session("bash") as s:
            container = s.execute(cmd="echo hi").container_id
            raise RuntimeError("boom")
    assert container and not container_exists(container)
    assert s.id not in session_ids(client)


def test_session_streams_and_websocket_run_in_the_session(client: isol8.Client) -> None:
    with client.session("python", options={"memory_limit": "256m"}) as s:
        s.put_file("/sandbox/x", b"from the session")
        streamed = s.execute_stream("print(open('/sandbox/x').read())").collect()
        assert streamed.stdout == "from the session\n"
        with s.execute_ws("print(open('/sandbox/x').read(), input())") as run:
            run.send_stdin("and stdin\n", eof=True)
            assert run.collect().stdout == "from the session and stdin\n"


def test_files_of_an_unknown_session_are_not_found(client: isol8.Client) -> None:
    with pytest.raises(isol8.NotFoundError) as e:
        client.get_file("no-such-session", "/sandbox/x")
    assert e.value.status_code == 404 and e.value.message == "Session not found"
    with pytest.raises(isol8.NotFoundError):
        client.put_file("no-such-session", "/sandbox/x", b"x")
    with client.session("bash") as s:
        with pytest.raises(isol8.BadRequestError) as bad:
            s.get_file("/etc/passwd")
        assert "outside /sandbox" in bad.value.message
    # Deleting is idempotent.
    client.delete_session("no-such-session")


def test_client_close_ends_its_open_sessions(server: Server) -> None:
    c = isol8.Client(server.url, api_key=MASTER_KEY)
    s = c.session("python")
    s.create()
    container = s.execute("print(1)").container_id
    assert container and container_exists(container)
    c.close()
    with isol8.Client(server.url, api_key=MASTER_KEY) as other:
        assert s.id not in session_ids(other)
    assert not container_exists(container)


def test_client_with_block_ends_its_open_sessions(server: Server) -> None:
    with isol8.Client(server.url, api_key=MASTER_KEY) as c:
        s = c.session("bash", session_id="py-with-block")
        container = s.create().container_id
        assert s.id == "py-with-block" and container
    with isol8.Client(server.url, api_key=MASTER_KEY) as other:
        assert "py-with-block" not in session_ids(other)
    assert not container_exists(container)


def test_a_process_that_never_closes_its_client_leaves_no_session(server: Server) -> None:
    script = textwrap.dedent(
        f"""
        import isol8
        c = isol8.Client({server.url!r}, api_key={MASTER_KEY!r})
        s = c.session("python", session_id="py-abandoned")
        s.create()
        print(s.execute("print(1)").container_id, flush=True)
        # exits without close(): the client's finalizer ends the session
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=180, check=True
    ).stdout
    container = out.strip()
    assert container
    with isol8.Client(server.url, api_key=MASTER_KEY) as other:
        assert "py-abandoned" not in session_ids(other)
    assert not container_exists(container)


def test_session_creation_refused_leaves_nothing(client: isol8.Client) -> None:
    s = client.session("python", options={"memory_limit": "12q"})
    with pytest.raises(isol8.BadRequestError) as e:
        with s:
            pass
    assert "memoryLimit" in e.value.message
    assert not s.is_open and s.id not in session_ids(client)


async def test_async_session_context_and_files(aclient: isol8.AsyncClient) -> None:
    async with aclient.session("python") as s:
        await s.put_file("/sandbox/in.bin", BINARY)
        r = await s.execute("open('/sandbox/out.bin','wb').write(open('/sandbox/in.bin','rb').read()[:3])")
        assert r.exit_code == 0, r.stderr
        assert await s.get_file("/sandbox/out.bin") == b"\x00\x01\x02"
        container = r.container_id
        assert s.id in [x.id for x in await aclient.list_sessions()]
    assert container and not container_exists(container)
    assert s.id not in [x.id for x in await aclient.list_sessions()]


async def test_async_client_close_ends_its_open_sessions(server: Server) -> None:
    c = isol8.AsyncClient(server.url, api_key=MASTER_KEY)
    s = c.session("bash")
    container = (await s.create()).container_id
    assert container and container_exists(container)
    await c.aclose()
    with isol8.Client(server.url, api_key=MASTER_KEY) as other:
        wait_until(lambda: s.id not in session_ids(other), "the session ended")
    assert not container_exists(container)

"""Streaming: server-sent events (``POST /execute/stream``) and the WebSocket
(``GET /execute/ws``) with standard input and signals, sync and async."""

from __future__ import annotations

import asyncio
import threading
from typing import List

import pytest

import isol8
from conftest import MASTER_KEY, Server

COUNT = "import sys\nfor i in range(3):\n    print(i, flush=True)\nsys.exit(3)\n"

# Prints "ready", then echoes each line upper-cased until end-of-file.
ECHO = (
    "import sys\n"
    "print('ready', flush=True)\n"
    "for line in sys.stdin:\n"
    "    print(line.strip().upper(), flush=True)\n"
    "print('eof', flush=True)\n"
)

# Exits 5 on SIGINT and 6 on SIGTERM, saying which, after printing "ready".
TRAP = (
    "import signal, sys, time\n"
    "def on(sig, frame):\n"
    "    print('got', signal.Signals(sig).name, flush=True)\n"
    "    sys.exit(5 if sig == signal.SIGINT else 6)\n"
    "signal.signal(signal.SIGINT, on)\n"
    "signal.signal(signal.SIGTERM, on)\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)


def test_sse_stream_yields_events_then_one_exit(client: isol8.Client) -> None:
    with client.execute_stream("python", COUNT) as events:
        seen = list(events)
    assert all(isinstance(e, isol8.StreamEvent) for e in seen)
    assert [e.type for e in seen].count("exit") == 1 and seen[-1].type == "exit"
    assert seen[-1].exit_code == 3 and seen[-1].data == "3"
    assert "".join(e.data for e in seen if e.type == "stdout") == "0\n1\n2\n"
    assert {e.phase for e in seen if e.type == "stdout"} == {"code"}
    # The exit event carries why the program ended and what it used.
    assert seen[-1].exit_reason == "exited"
    usage = seen[-1].resource_usage
    assert isinstance(usage, isol8.ResourceUsage), seen[-1].raw
    assert usage.peak_memory_mb > 0 and usage.network_bytes_in == 0
    assert all(e.resource_usage is None for e in seen[:-1])


def test_sse_stream_collects_phases_and_errors(client: isol8.Client) -> None:
    result = client.execute_stream(
        "bash", "echo code-out; sleep 30", setup_script="echo setup-out", timeout_ms=2000
    ).collect()
    assert result.exit_code == 137
    assert "setup-out\n" in result.stdout and "code-out\n" in result.stdout
    by_phase = {
        phase: "".join(e.data for e in result.events if e.type == "stdout" and e.phase == phase)
        for phase in ("setup", "code")
    }
    assert by_phase == {"setup": "setup-out\n", "code": "code-out\n"}
    assert any("TIMED OUT" in m for m in result.errors), result.errors
    assert result.exit_reason == "timeout"
    assert result.resource_usage is not None and result.resource_usage.cpu_percent >= 0


def test_sse_refusal_is_the_servers_error(client: isol8.Client) -> None:
    with pytest.raises(isol8.BadRequestError) as e:
        with client.execute_stream("cobol", "DISPLAY 1"):
            pass
    assert e.value.status_code == 400 and "unknown runtime" in e.value.message


def test_websocket_non_interactive_reads_request_stdin(client: isol8.Client) -> None:
    run = client.execute_ws("python", ECHO, stdin="one\ntwo\n", interactive=False)
    with run:
        result = run.collect()
        with pytest.raises(isol8.Isol8Error):
            run.send_stdin("x")
    assert result.stdout == "ready\nONE\nTWO\neof\n" and result.exit_code == 0


def test_websocket_interactive_stdin_is_answered_before_end_of_file(client: isol8.Client) -> None:
    out = ""
    sent: List[str] = []
    with client.execute_ws("python", ECHO) as run:
        for ev in run:
            if ev.type == "stdout":
                out += ev.data
            # Each line is sent only once the previous answer came back: the program
            # answers while its stdin is still open.
            if "ready\n" in out and not sent:
                sent.append("abc")
                run.send_stdin("abc\n")
            elif "ABC\n" in out and len(sent) == 1:
                sent.append("def")
                run.send_stdin(b"def\n", eof=True)
            if ev.type == "exit":
                assert ev.exit_code == 0
    assert out == "ready\nABC\nDEF\neof\n"


def test_websocket_close_stdin(client: isol8.Client) -> None:
    with client.execute_ws("python", ECHO, stdin="first\n") as run:
        run.close_stdin()
        result = run.collect()
    assert result.stdout == "ready\nFIRST\neof\n"


@pytest.mark.parametrize("sig,code", [("SIGINT", 5), ("SIGTERM", 6)])
def test_websocket_signal_reaches_the_program(client: isol8.Client, sig: str, code: int) -> None:
    out = ""
    with client.execute_ws("python", TRAP) as run:
        for ev in run:
            if ev.type == "stdout":
                out += ev.data
                if out == "ready\n":
                    run.send_signal(sig)
            if ev.type == "exit":
                assert ev.exit_code == code
    assert out == f"ready\ngot {sig}\n"


def test_websocket_signal_from_another_thread(client: isol8.Client) -> None:
    with client.execute_ws("python", TRAP) as run:
        ready = threading.Event()

        def interrupt() -> None:
            ready.wait(60)
            run.send_signal("INT")

        sender = threading.Thread(target=interrupt)
        sender.start()
        out = ""
        for ev in run:
            if ev.type == "stdout":
                out += ev.data
                if "ready\n" in out:
                    ready.set()
        sender.join()
    assert out == "ready\ngot SIGINT\n" and run.collect().exit_code == 5


def test_websocket_refusal_is_the_servers_error(client: isol8.Client) -> None:
    with pytest.raises(isol8.BadRequestError) as e:
        with client.execute_ws("cobol", "DISPLAY 1") as run:
            list(run)
    assert e.value.status_code == 400 and e.value.close_code == 1003
    assert "unknown runtime" in e.value.message


def test_websocket_with_a_wrong_key_is_refused_at_the_handshake(server: Server) -> None:
    with isol8.Client(server.url, api_key="not-the-key") as c:
        with pytest.raises(isol8.PermissionDeniedError) as e:
            c.execute_ws("python", "print(1)").collect()
    assert e.value.status_code == 403 and e.value.message == "Invalid API key"


async def test_async_sse_stream(aclient: isol8.AsyncClient) -> None:
    seen = []
    async with aclient.execute_stream("python", COUNT) as events:
        async for ev in events:
            seen.append(ev)
    assert "".join(e.data for e in seen if e.type == "stdout") == "0\n1\n2\n"
    assert seen[-1].type == "exit" and seen[-1].exit_code == 3
    with pytest.raises(isol8.BadRequestError):
        await aclient.execute_stream("cobol", "x").collect()


async def test_async_websocket_stdin_and_signal(aclient: isol8.AsyncClient) -> None:
    async with aclient.execute_ws("python", ECHO) as run:
        out = ""
        async for ev in run:
            if ev.type == "stdout":
                out += ev.data
                if out == "ready\n":
                    await run.send_stdin("xyz\n", eof=True)
    assert out == "ready\nXYZ\neof\n"

    async with aclient.execute_ws("python", TRAP) as run:
        out = ""
        exit_code = None

        async def reader() -> None:
            nonlocal out, exit_code
            async for ev in run:
                if ev.type == "stdout":
                    out += ev.data
                if ev.type == "exit":
                    exit_code = ev.exit_code

        task = asyncio.create_task(reader())
        while "ready\n" not in out:
            assert not task.done(), "the run ended before it was ready"
            await asyncio.sleep(0.05)
        await run.send_signal("SIGTERM")
        await asyncio.wait_for(task, 60)
    assert (out, exit_code) == ("ready\ngot SIGTERM\n", 6)


async def test_async_websocket_refusal(server: Server) -> None:
    async with isol8.AsyncClient(server.url, api_key=MASTER_KEY) as c:
        with pytest.raises(isol8.BadRequestError) as e:
            await c.execute_ws("python", "print(1)", options={"memory_limit": "12q"}).collect()
    assert e.value.close_code == 1003 and "memoryLimit" in e.value.message

"""``execute``: typed results mapped from the wire, request fields and options by their
Python names, and the wire names checked against the server's own OpenAPI document."""

from __future__ import annotations

import base64
import dataclasses
import re
import uuid

import pytest

import isol8
from isol8 import _core


def test_execute_returns_a_typed_result_mirroring_the_wire(client: isol8.Client) -> None:
    r = client.execute(runtime="python", code="print(6 * 7)")
    assert isinstance(r, isol8.ExecutionResult)
    assert (r.stdout, r.stderr, r.exit_code, r.truncated) == ("42\n", "", 0, False)
    assert r.runtime == "python"
    assert uuid.UUID(r.execution_id)
    assert isinstance(r.duration_ms, int) and r.duration_ms >= 0
    assert re.match(r"^\d{4}-\d\d-\d\dT", r.timestamp), r.timestamp
    # Every field is the wire field of its name, as the server sent it.
    for py, wire in isol8.wire_names(isol8.ExecutionResult).items():
        if wire in r.raw and wire not in ("files", "resourceUsage", "networkLogs"):
            assert getattr(r, py) == r.raw[wire], py
    assert r.raw["exitCode"] == 0 and r.raw["stdout"] == "42\n"


def test_request_fields_by_python_names_reach_the_program(client: isol8.Client) -> None:
    code = (
        "import os, sys\n"
        "data = sys.stdin.read()\n"
        "print(data.upper(), os.environ['GREETING'], open('in/x.txt').read())\n"
        "open('/sandbox/out.bin', 'wb').write(bytes(range(256)))\n"
    )
    r = client.execute(
        "python",
        code,
        stdin="from stdin",
        env={"GREETING": "hello"},
        files={"/sandbox/in/x.txt": "a file"},
        output_paths=["/sandbox/out.bin"],
        timeout_ms=20_000,
    )
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "FROM STDIN hello a file\n"
    # Output files come back as bytes (base64 on the wire).
    assert r.files == {"/sandbox/out.bin": bytes(range(256))}
    assert r.raw["files"]["/sandbox/out.bin"] == base64.b64encode(bytes(range(256))).decode()


def test_wire_names_are_accepted_too_and_cmd_runs_a_shell_command(client: isol8.Client) -> None:
    r = client.execute("bash", cmd="echo $X; exit 3", env={"X": "y"}, timeoutMs=20_000)
    assert (r.stdout, r.exit_code) == ("y\n", 3)


def test_stderr_exit_code_and_setup_script(client: isol8.Client) -> None:
    r = client.execute(
        "python",
        "import sys; print(open('/sandbox/s').read().strip()); sys.stderr.write('oops'); sys.exit(4)",
        setup_script="echo from-setup > /sandbox/s",
    )
    assert (r.stdout, r.stderr, r.exit_code) == ("from-setup\n", "oops", 4)


def test_timeout_is_reported(client: isol8.Client) -> None:
    r = client.execute("python", "while True: pass", timeout_ms=1000)
    assert r.exit_code == 137
    assert "EXECUTION TIMED OUT" in r.stderr
    # exitReason is additive: a server that sends it says "timeout".
    assert r.exit_reason in (None, "timeout")


def test_options_by_python_names_apply(client: isol8.Client) -> None:
    r = client.execute(
        "python",
        "import os; print(os.environ['API_TOKEN'])",
        options={"secrets": {"API_TOKEN": "s3cr3t-value-42"}, "max_output_size": 4096},
    )
    assert r.stdout == "***\n", "the secret was not masked: options did not reach the server"
    r = client.execute("python", "print('x' * 10000)", options={"max_output_size": 100})
    assert r.truncated and len(r.stdout) < 1000


def test_a_bad_option_is_a_bad_request_naming_the_field(client: isol8.Client) -> None:
    with pytest.raises(isol8.BadRequestError) as e:
        client.execute("python", "print(1)", options={"memory_limit": "12q"})
    assert e.value.status_code == 400
    assert "memoryLimit" in e.value.message and "12q" in e.value.message


def test_resource_usage_and_exit_reason_are_typed_when_present(client: isol8.Client) -> None:
    r = client.execute("python", "print(1)")
    # Additive fields: absent on a server that does not send them, typed when present.
    if "resourceUsage" in r.raw:
        assert isinstance(r.resource_usage, isol8.ResourceUsage)
        assert r.resource_usage.peak_memory_mb == r.raw["resourceUsage"]["peakMemoryMB"]
    else:
        assert r.resource_usage is None
    if "exitReason" in r.raw:
        assert r.exit_reason == r.raw["exitReason"] == "exited"
    else:
        assert r.exit_reason is None


def test_additive_fields_parse_present_and_absent() -> None:
    wire = {
        "stdout": "hi\n",
        "stderr": "",
        "exitCode": 137,
        "durationMs": 12,
        "truncated": False,
        "executionId": "e",
        "runtime": "python",
        "timestamp": "2026-01-01T00:00:00Z",
        "exitReason": "memoryLimit",
        "resourceUsage": {
            "cpuPercent": 12.5,
            "memoryMB": 3.0,
            "peakMemoryMB": 510.25,
            "networkBytesIn": 7,
            "networkBytesOut": 9,
        },
        "networkLogs": [
            {
                "timestamp": "t",
                "method": "CONNECT",
                "host": "pypi.org",
                "path": "",
                "action": "BLOCK",
                "durationMs": 3,
            }
        ],
        "maskedFiles": ["/sandbox/a"],
        "files": {"/sandbox/a": base64.b64encode(b"\x00\xff").decode()},
        "someFutureField": {"x": 1},
    }
    r = isol8.ExecutionResult.from_wire(wire)
    assert r.exit_code == 137 and r.exit_reason == "memoryLimit"
    assert r.resource_usage == isol8.ResourceUsage(
        cpu_percent=12.5, memory_mb=3.0, peak_memory_mb=510.25, network_bytes_in=7, network_bytes_out=9
    )
    assert r.network_logs is not None and r.network_logs[0].action == "BLOCK"
    assert r.network_logs[0].duration_ms == 3
    assert r.files == {"/sandbox/a": b"\x00\xff"} and r.masked_files == ["/sandbox/a"]
    assert r.raw["someFutureField"] == {"x": 1}
    bare = {k: v for k, v in wire.items() if k not in ("exitReason", "resourceUsage", "networkLogs", "files", "maskedFiles")}
    r = isol8.ExecutionResult.from_wire(bare)
    assert (r.exit_reason, r.resource_usage, r.network_logs, r.files, r.masked_files) == (None,) * 5
    ev = isol8.StreamEvent.from_wire({"type": "exit", "data": "137", "phase": "code", "exitReason": "timeout"})
    assert (ev.exit_code, ev.exit_reason, ev.phase) == (137, "timeout", "code")
    assert isol8.StreamEvent.from_wire({"type": "stdout", "data": "x"}).exit_code is None


# The client's dataclasses and the server's OpenAPI schemas, by schema name. Fields a
# class reads beyond its schema are additive ones a newer server may send.
SCHEMAS = {
    "ExecutionResult": (isol8.ExecutionResult, set()),
    "ResourceUsage": (isol8.ResourceUsage, set()),
    "NetworkLog": (isol8.NetworkLog, set()),
    "StreamEvent": (isol8.StreamEvent, {"exitReason"}),
    "Health": (isol8.Health, set()),
    "SessionInfo": (isol8.SessionInfo, set()),
    "IssuedKey": (isol8.IssuedKey, set()),
    "KeyInfo": (isol8.KeyInfo, set()),
    "LoginReply": (isol8.LoginToken, set()),
    "CleanupReply": (isol8.CleanupReport, set()),
    "Tally": (isol8.Tally, set()),
}


def test_every_wire_field_of_the_servers_openapi_has_a_python_field(client: isol8.Client) -> None:
    schemas = client.openapi()["components"]["schemas"]
    for name, (cls, additive) in SCHEMAS.items():
        wire = set(schemas[name]["properties"])
        mine = set(isol8.wire_names(cls).values())
        assert wire <= mine, f"{cls.__name__} lacks wire fields {sorted(wire - mine)}"
        assert mine - wire <= additive, f"{cls.__name__} reads unknown fields {sorted(mine - wire - additive)}"
        for f in dataclasses.fields(cls):
            if f.name != "raw":
                assert re.fullmatch(r"[a-z][a-z0-9_]*", f.name), f"{cls.__name__}.{f.name}"


def test_python_names_of_every_request_and_option_field_map_to_the_wire(client: isol8.Client) -> None:
    schemas = client.openapi()["components"]["schemas"]
    for name in ("ExecutionRequest", "EngineOptions", "NetworkFilter", "SecurityOptions"):
        for wire in schemas[name]["properties"]:
            snake = re.sub(r"(?<!^)([A-Z])", lambda m: "_" + m.group(1).lower(), wire)
            assert _core.camel(snake) == wire, (name, wire, snake)
            assert _core.camel(wire) == wire


def test_request_body_keeps_the_users_own_names() -> None:
    body = _core.execute_body(
        _core.request_object(
            "python",
            "x",
            None,
            {"env": {"MY_VAR": "1"}, "files": {"a_b.txt": b"t"}, "metadata": {"run_id": "r"}, "stdin": None},
        ),
        {"secrets": {"API_KEY": "k"}, "network_filter": {"whitelist": ["^a$"]}, "pids_limit": 8},
        "s-1",
        None,
    )
    assert body == {
        "request": {
            "runtime": "python",
            "code": "x",
            "env": {"MY_VAR": "1"},
            "files": {"a_b.txt": "t"},
            "metadata": {"run_id": "r"},
        },
        "options": {"secrets": {"API_KEY": "k"}, "networkFilter": {"whitelist": ["^a$"]}, "pidsLimit": 8},
        "sessionId": "s-1",
    }
    with pytest.raises(TypeError):
        _core.request_object("python", "x", "echo", {})
    with pytest.raises(TypeError):
        _core.request_object("python", None, None, {})
    with pytest.raises(TypeError):
        _core.request_object("python", "x", None, {"timeout_ms": 1, "timeoutMs": 2})


async def test_async_execute(aclient: isol8.AsyncClient) -> None:
    r = await aclient.execute(runtime="node", code="console.log(6 * 7)")
    assert (r.stdout, r.exit_code, r.runtime) == ("42\n", 0, "node")
    health = await aclient.health()
    assert health.status == "ok" and health.version == await aclient.version()

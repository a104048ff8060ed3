"""Errors: exceptions carrying the server's status and message, and a clear exception
naming the URL when no server answers."""

from __future__ import annotations

import traceback

import pytest

import isol8
from conftest import MASTER_KEY, Server


def test_missing_and_wrong_keys(server: Server) -> None:
    with isol8.Client(server.url, api_key="") as c:
        with pytest.raises(isol8.AuthenticationError) as e:
            c.execute("python", "print(1)")
        assert (e.value.status_code, e.value.message) == (401, "Missing Authorization header")
        assert e.value.body == {"error": "Missing Authorization header"}
        assert str(e.value) == "HTTP 401: Missing Authorization header"
        # /health needs no key.
        assert c.health().status == "ok"
    with isol8.Client(server.url, api_key="wrong-key") as c:
        with pytest.raises(isol8.PermissionDeniedError) as e2:
            c.list_sessions()
        assert (e2.value.status, e2.value.message) == (403, "Invalid API key")
        assert isinstance(e2.value, isol8.APIError) and isinstance(e2.value, isol8.Isol8Error)


def test_bad_input_is_400_with_the_servers_message(client: isol8.Client) -> None:
    with pytest.raises(isol8.BadRequestError) as e:
        client.execute("cobol", "DISPLAY 1")
    assert e.value.status_code == 400
    assert e.value.message.startswith("unknown runtime `cobol`") and "python" in e.value.message
    with pytest.raises(isol8.BadRequestError) as e:
        client.execute("python", "print(1)", session_id="not a valid id!")
    assert e.value.status_code == 400


def test_unknown_route_and_session_are_404(client: isol8.Client) -> None:
    with pytest.raises(isol8.NotFoundError) as e:
        client._json("GET", "/no/such/route")
    assert e.value.status_code == 404
    with pytest.raises(isol8.NotFoundError):
        client.get_file("missing-session", "/sandbox/a")


def test_client_side_mistakes_raise_before_sending(client: isol8.Client) -> None:
    with pytest.raises(TypeError, match="give code"):
        client.execute("python")
    with pytest.raises(TypeError, match="not both"):
        client.execute("python", "print(1)", cmd="echo")
    with pytest.raises(ValueError, match="http:// or https://"):
        isol8.Client("127.0.0.1:3000", api_key=MASTER_KEY)
    with pytest.raises(ValueError, match="UTF-8"):
        client.execute("python", "print(1)", files={"/sandbox/b": b"\xff\xfe"})


def _assert_unreachable(e: isol8.ServerUnreachableError, url: str) -> None:
    host_port = url.split("//", 1)[1]
    assert host_port in e.url and host_port in str(e)
    assert str(e).startswith("cannot reach the isol8 server at ")
    # One exception of ours, not a chain ending in httpx's or websockets' traceback.
    assert e.__cause__ is None and e.__suppress_context__
    shown = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    assert "During handling of the above exception" not in shown
    assert "direct cause" not in shown


def test_an_unreachable_server_is_a_clear_error_naming_the_url(closed_port_url: str) -> None:
    with isol8.Client(closed_port_url, api_key=MASTER_KEY, timeout=5) as c:
        for call in (
            lambda: c.execute("python", "print(1)"),
            c.health,
            c.list_keys,
            lambda: c.execute_stream("python", "print(1)").collect(),
            lambda: c.execute_ws("python", "print(1)").collect(),
        ):
            with pytest.raises(isol8.ServerUnreachableError) as e:
                call()
            _assert_unreachable(e.value, closed_port_url)
        # A session cannot be created either, and nothing is left registered.
        with pytest.raises(isol8.ServerUnreachableError):
            with c.session("python"):
                pass


async def test_an_unreachable_server_is_a_clear_error_for_the_async_client(closed_port_url: str) -> None:
    async with isol8.AsyncClient(closed_port_url, api_key=MASTER_KEY, timeout=5) as c:
        with pytest.raises(isol8.ServerUnreachableError) as e:
            await c.execute("python", "print(1)")
        _assert_unreachable(e.value, closed_port_url)
        with pytest.raises(isol8.ServerUnreachableError):
            await c.execute_stream("python", "print(1)").collect()
        with pytest.raises(isol8.ServerUnreachableError) as e:
            await c.execute_ws("python", "print(1)").collect()
        assert e.value.url.startswith("ws://")


def test_unreachable_is_also_a_builtin_connection_error(closed_port_url: str) -> None:
    with isol8.Client(closed_port_url, api_key=MASTER_KEY, timeout=5) as c:
        with pytest.raises(ConnectionError) as e:
            c.health()
    assert isinstance(e.value, isol8.Isol8Error)
    assert str(e.value).startswith(f"cannot reach the isol8 server at {closed_port_url}/health: ")


def test_error_answers_map_to_classes_with_status_message_and_retry_after() -> None:
    from isol8 import _core

    cases = [
        (400, isol8.BadRequestError),
        (401, isol8.AuthenticationError),
        (403, isol8.PermissionDeniedError),
        (404, isol8.NotFoundError),
        (409, isol8.ConflictError),
        (413, isol8.PayloadTooLargeError),
        (429, isol8.RateLimitError),
        (500, isol8.ServerError),
        (502, isol8.ServerError),
        (503, isol8.ServiceUnavailableError),
        (418, isol8.APIError),
    ]
    for status, cls in cases:
        e = _core.error_from_answer(status, b'{"error":"why"}', {"retry-after": "5"})
        assert type(e) is cls and (e.status_code, e.message, e.retry_after) == (status, "why", 5.0)
    lost = _core.error_from_answer(500, b'{"error":"sandbox lost: gone"}', {})
    assert isinstance(lost, isol8.SandboxLostError) and isinstance(lost, isol8.ServerError)
    # A body that is not the server's JSON still gives a message.
    proxy = _core.error_from_answer(502, b"<html>Bad Gateway</html>", {}, "Bad Gateway")
    assert proxy.message == "<html>Bad Gateway</html>" and proxy.retry_after is None
    empty = _core.error_from_answer(504, b"", {}, "Gateway Timeout")
    assert empty.message == "Gateway Timeout"


def test_websocket_close_codes_map_like_the_http_answers() -> None:
    from isol8 import _core

    def ended(frames: "list[str]", code: "int | None", reason: str) -> "tuple[list[str], BaseException | None]":
        state = _core.WsState("ws://h/execute/ws")
        out = [e.data for f in frames for e in state.frame(f)]
        rest, exc = state.closed(code, reason)
        return out + [e.data for e in rest], exc

    # A refusal: the phase-less error becomes the exception, not an event.
    out, exc = ended(['{"type":"error","data":"no slot"}'], 1013, "Busy, try again later")
    assert out == [] and isinstance(exc, isol8.ServiceUnavailableError)
    assert (exc.status_code, exc.message, exc.close_code) == (503, "no slot", 1013)
    out, exc = ended(['{"type":"error","data":"bad"}'], 1003, "Request refused")
    assert out == [] and isinstance(exc, isol8.BadRequestError) and exc.close_code == 1003
    # A lost sandbox mid-run: the output and the error event are delivered, then it raises.
    out, exc = ended(
        ['{"type":"stdout","data":"x","phase":"code"}', '{"type":"error","data":"sandbox lost: gone","phase":"code"}'],
        1011,
        "Sandbox lost",
    )
    assert out == ["x", "sandbox lost: gone"] and isinstance(exc, isol8.SandboxLostError)
    # A connection that broke: what came is delivered, then StreamEndedError.
    out, exc = ended(['{"type":"stdout","data":"x","phase":"code"}'], None, "")
    assert out == ["x"] and isinstance(exc, isol8.StreamEndedError) and exc.close_code is None
    # A phase-less error followed by more events is an event after all.
    state = _core.WsState("ws://h/execute/ws")
    assert state.frame('{"type":"error","data":"Unknown message type: x"}') == []
    got = state.frame('{"type":"exit","data":"0","phase":"code"}')
    assert [e.type for e in got] == ["error", "exit"] and state.done


def test_an_sse_stream_without_exit_raises() -> None:
    from isol8 import _core

    state = _core.SseState("http://h/execute/stream")
    assert state.event("") is None
    state.event('{"type":"stdout","data":"x","phase":"code"}')
    assert isinstance(state.ended(), isol8.StreamEndedError)
    state.event('{"type":"error","data":"sandbox lost: gone","phase":"code"}')
    assert isinstance(state.ended(), isol8.SandboxLostError)

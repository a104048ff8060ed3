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

"""The asynchronous client, :class:`AsyncClient`, with its streams
(:class:`AsyncEventStream`, :class:`AsyncWebSocketRun`) and persistent sessions
(:class:`AsyncSession`): the same API as :class:`isol8.Client`, awaited."""

from __future__ import annotations

import base64
import collections
import json
import os
import types
import weakref
from typing import Any, AsyncIterator, Deque, Dict, List, Mapping, Optional, Type, Union

import httpx
import httpx_sse
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from . import _core
from ._client import _transport_reason
from ._errors import Isol8Error, ServerUnreachableError, StreamEndedError
from ._sessions import OpenSessions, new_session_id
from ._types import (
    CleanupReport,
    ExecutionResult,
    Health,
    IssuedKey,
    KeyInfo,
    LoginToken,
    SessionInfo,
    StreamEvent,
    StreamResult,
)

__all__ = ["AsyncClient", "AsyncEventStream", "AsyncSession", "AsyncWebSocketRun"]


class AsyncClient:
    """An asyncio client of an isol8 server: :class:`isol8.Client`'s API, awaited.

    Use it as an async context manager, or await :meth:`aclose`: closing ends every
    session it opened that is still open (so does the garbage collector, or the
    interpreter's exit, for a client nobody closed).
    """

    def __init__(
        self,
        base_url: str,
        api_key: Optional[str] = None,
        *,
        timeout: float = 60.0,
        verify: _core.Verify = True,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        #: The server's URL, without a trailing slash.
        self.base_url: str = _core.normalize_base_url(base_url)
        self._api_key = api_key if api_key is not None else os.environ.get("ISOL8_API_KEY")
        self._timeout = timeout
        self._verify = verify
        self._headers: Dict[str, str] = {**(headers or {}), **_core.auth_headers(self._api_key)}
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=self._headers,
            timeout=httpx.Timeout(timeout),
            verify=verify,
        )
        self._sessions = OpenSessions(self.base_url, self._headers, verify)
        self._finalizer = weakref.finalize(self, self._sessions.end_leftovers)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Optional[Mapping[str, str]] = None,
        read_timeout: Union[float, None, bool] = True,
    ) -> httpx.Response:
        timeout: Any = httpx.USE_CLIENT_DEFAULT
        if read_timeout is not True:
            timeout = httpx.Timeout(self._timeout, read=read_timeout or None)
        try:
            resp = await self._http.request(
                method, path, json=json, params=params, timeout=timeout
            )
        except httpx.TransportError as e:
            raise ServerUnreachableError(self.base_url + path, _transport_reason(e)) from None
        if resp.status_code >= 400:
            raise _core.error_from_answer(
                resp.status_code, resp.content, resp.headers, resp.reason_phrase
            )
        return resp

    async def _json(self, method: str, path: str, **kw: Any) -> Any:
        resp = await self._send(method, path, **kw)
        return _core.parse_json(resp.content, f"{method} {path}")

    async def health(self) -> Health:
        """``GET /health``: liveness and the server's version (no key needed)."""
        return Health.from_wire(await self._json("GET", "/health"))

    async def version(self) -> str:
        """The server's version, from ``GET /health``."""
        return (await self.health()).version

    async def openapi(self) -> Dict[str, Any]:
        """``GET /openapi.json``: the server's OpenAPI 3 document."""
        doc: Dict[str, Any] = await self._json("GET", "/openapi.json")
        return doc

    async def metrics(self) -> str:
        """``GET /metrics``: the Prometheus text exposition."""
        return (await self._send("GET", "/metrics")).text

    async def execute(
        self,
        runtime: str,
        code: Optional[str] = None,
        *,
        cmd: Optional[str] = None,
        options: Optional[Mapping[str, Any]] = None,
        session_id: Optional[str] = None,
        tenant_id: Optional[str] = None,
        **request_fields: Any,
    ) -> ExecutionResult:
        """``POST /execute``; see :meth:`isol8.Client.execute`."""
        request = _core.request_object(runtime, code, cmd, request_fields)
        body = _core.execute_body(request, options, session_id, tenant_id)
        data = await self._json("POST", "/execute", json=body, read_timeout=None)
        return ExecutionResult.from_wire(data)

    def execute_stream(
        self,
        runtime: str,
        code: Optional[str] = None,
        *,
        cmd: Optional[str] = None,
        options: Optional[Mapping[str, Any]] = None,
        session_id: Optional[str] = None,
        tenant_id: Optional[str] = None,
        **request_fields: Any,
    ) -> "AsyncEventStream":
        """``POST /execute/stream``; see :meth:`isol8.Client.execute_stream`. Use as
        ``async with client.execute_stream(...) as events: async for ev in events``."""
        request = _core.request_object(runtime, code, cmd, request_fields)
        body = _core.execute_body(request, options, session_id, tenant_id)
        return AsyncEventStream(self, body)

    def execute_ws(
        self,
        runtime: str,
        code: Optional[str] = None,
        *,
        cmd: Optional[str] = None,
        options: Optional[Mapping[str, Any]] = None,
        session_id: Optional[str] = None,
        tenant_id: Optional[str] = None,
        interactive: bool = True,
        **request_fields: Any,
    ) -> "AsyncWebSocketRun":
        """``GET /execute/ws``; see :meth:`isol8.Client.execute_ws`. Use as
        ``async with client.execute_ws(...) as run``."""
        request = _core.request_object(runtime, code, cmd, request_fields)
        body = _core.execute_body(request, options, session_id, tenant_id)
        message: Dict[str, Any] = {"type": "execute", **body}
        if interactive:
            message["interactive"] = True
        return AsyncWebSocketRun(self, message, interactive)

    def session(
        self,
        runtime: str,
        *,
        session_id: Optional[str] = None,
        options: Optional[Mapping[str, Any]] = None,
        tenant_id: Optional[str] = None,
    ) -> "AsyncSession":
        """A persistent session; see :meth:`isol8.Client.session`. Use as
        ``async with client.session("python") as s``."""
        return AsyncSession(self, runtime, session_id or new_session_id(), options, tenant_id)

    async def list_sessions(self) -> List[SessionInfo]:
        """``GET /sessions``: the sessions this key sees."""
        data = await self._json("GET", "/sessions")
        return [SessionInfo.from_wire(s) for s in data.get("sessions", [])]

    async def delete_session(self, session_id: str, *, tenant_id: Optional[str] = None) -> None:
        """``DELETE /session/{id}``: ends a session (idempotent)."""
        params = {"tenantId": tenant_id} if tenant_id is not None else None
        await self._send("DELETE", f"/session/{_core.path_segment(session_id)}", params=params)
        self._sessions.discard(session_id, tenant_id)

    async def put_file(
        self,
        session_id: str,
        path: str,
        content: Union[bytes, str],
        *,
        tenant_id: Optional[str] = None,
    ) -> None:
        """``POST /file``: writes ``content`` to ``path`` in a session."""
        raw = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        body: Dict[str, Any] = {
            "sessionId": session_id,
            "path": path,
            "content": base64.b64encode(raw).decode("ascii"),
        }
        if tenant_id is not None:
            body["tenantId"] = tenant_id
        await self._send("POST", "/file", json=body)

    async def get_file(
        self, session_id: str, path: str, *, tenant_id: Optional[str] = None
    ) -> bytes:
        """``GET /file``: the bytes of ``path`` in a session."""
        params = {"sessionId": session_id, "path": path}
        if tenant_id is not None:
            params["tenantId"] = tenant_id
        data = await self._json("GET", "/file", params=params)
        return base64.b64decode(data.get("content", ""))

    async def create_key(
        self, name: str, *, tenant_id: Optional[str] = None, ttl_ms: Optional[int] = None
    ) -> IssuedKey:
        """``POST /auth/keys`` (master key); see :meth:`isol8.Client.create_key`."""
        body = _core.wire_object({"name": name, "tenant_id": tenant_id, "ttl_ms": ttl_ms}, "key")
        return IssuedKey.from_wire(await self._json("POST", "/auth/keys", json=body))

    async def list_keys(self, *, tenant_id: Optional[str] = None) -> List[KeyInfo]:
        """``GET /auth/keys`` (master key): every key's metadata, or one tenant's."""
        params = {"tenantId": tenant_id} if tenant_id is not None else None
        data = await self._json("GET", "/auth/keys", params=params)
        return [KeyInfo.from_wire(k) for k in data.get("keys", [])]

    async def revoke_key(self, key_id: str) -> None:
        """``DELETE /auth/keys/{id}``: revokes a key."""
        await self._send("DELETE", f"/auth/keys/{_core.path_segment(key_id)}")

    async def login(
        self,
        *,
        name: Optional[str] = None,
        tenant_id: Optional[str] = None,
        ttl_ms: Optional[int] = None,
    ) -> LoginToken:
        """``POST /auth/login`` (master key): an expiring key to use as a token."""
        body = _core.wire_object({"name": name, "tenant_id": tenant_id, "ttl_ms": ttl_ms}, "login")
        return LoginToken.from_wire(await self._json("POST", "/auth/login", json=body))

    async def cleanup(self, *, images: Optional[bool] = None) -> CleanupReport:
        """``POST /cleanup`` (master key); see :meth:`isol8.Client.cleanup`."""
        body = {"images": images} if images is not None else {}
        data = await self._json("POST", "/cleanup", json=body, read_timeout=None)
        return CleanupReport.from_wire(data)

    async def aclose(self) -> None:
        """Ends the sessions this client opened that are still open (best effort),
        then closes the connections."""
        self._finalizer.detach()
        try:
            for key in self._sessions.take():
                path, params = OpenSessions.request(key)
                try:
                    await self._http.delete(path, params=params)
                except httpx.HTTPError:
                    pass
        finally:
            await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[types.TracebackType],
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"isol8.AsyncClient({self.base_url!r})"


class AsyncEventStream(AsyncIterator[StreamEvent]):
    """The events of one ``POST /execute/stream`` execution; see
    :class:`isol8.EventStream`."""

    def __init__(self, client: AsyncClient, body: Dict[str, Any]) -> None:
        self._client = client
        self._body = body
        self._url = client.base_url + "/execute/stream"
        self._cm: Any = None
        self._sse: Any = None
        self._state = _core.SseState(self._url)
        self._events: List[StreamEvent] = []
        self._closed = False

    async def _open(self) -> None:
        if self._cm is not None or self._closed:
            return
        c = self._client
        try:
            cm = httpx_sse.aconnect_sse(c._http, "POST", "/execute/stream", json=self._body)
            source = await cm.__aenter__()
        except httpx.TransportError as e:
            self._closed = True
            raise ServerUnreachableError(self._url, _transport_reason(e)) from None
        self._cm = cm
        resp = source.response
        if resp.status_code >= 400:
            await resp.aread()
            await self.aclose()
            raise _core.error_from_answer(
                resp.status_code, resp.content, resp.headers, resp.reason_phrase
            )
        self._sse = source.aiter_sse()

    async def __aenter__(self) -> "AsyncEventStream":
        await self._open()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __aiter__(self) -> "AsyncEventStream":
        return self

    async def __anext__(self) -> StreamEvent:
        await self._open()
        if self._state.done or self._sse is None:
            await self.aclose()
            raise StopAsyncIteration
        while True:
            try:
                sse = await self._sse.__anext__()
            except StopAsyncIteration:
                await self.aclose()
                raise self._state.ended() from None
            except httpx.TransportError as e:
                await self.aclose()
                raise StreamEndedError(
                    f"the event stream of {self._url} broke: {_transport_reason(e)}"
                ) from None
            ev = self._state.event(sse.data)
            if ev is not None:
                self._events.append(ev)
                return ev

    async def collect(self) -> StreamResult:
        """Reads the rest of the stream and puts every event together."""
        async for _ in self:
            pass
        return _core.collect(self._events)

    async def aclose(self) -> None:
        """Drops the connection (a run still going is killed by the server)."""
        self._closed = True
        cm, self._cm = self._cm, None
        sse, self._sse = self._sse, None
        if sse is not None:
            await sse.aclose()
        if cm is not None:
            await cm.__aexit__(None, None, None)


class AsyncWebSocketRun(AsyncIterator[StreamEvent]):
    """One execution over ``GET /execute/ws``; see :class:`isol8.WebSocketRun`.
    Sending from another task while one iterates is fine."""

    def __init__(self, client: AsyncClient, message: Dict[str, Any], interactive: bool) -> None:
        self._client = client
        self._message = message
        self._interactive = interactive
        self._url = _core.ws_url(client.base_url)
        self._ws: Optional[ClientConnection] = None
        self._state = _core.WsState(self._url)
        self._out: Deque[StreamEvent] = collections.deque()
        self._failure: Optional[BaseException] = None
        self._events: List[StreamEvent] = []
        self._closed = False

    async def _open(self) -> ClientConnection:
        if self._ws is not None:
            return self._ws
        if self._closed:
            raise Isol8Error("this WebSocket run is closed")
        c = self._client
        try:
            ws = await ws_connect(
                self._url,
                additional_headers=c._headers,
                open_timeout=c._timeout,
                ssl=_core.ws_ssl(c.base_url, c._verify),
                max_size=None,
            )
        except InvalidStatus as e:
            self._closed = True
            r = e.response
            raise _core.error_from_answer(
                r.status_code, bytes(r.body or b""), r.headers, r.reason_phrase
            ) from None
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as e:
            self._closed = True
            raise ServerUnreachableError(self._url, _transport_reason(e)) from None
        self._ws = ws
        await self._send(self._message)
        return ws

    async def _send(self, message: Dict[str, Any]) -> None:
        ws = await self._open()
        try:
            await ws.send(json.dumps(message))
        except ConnectionClosed as e:
            raise StreamEndedError(
                f"the WebSocket to {self._url} is closed ({e}); the run has ended",
                close_code=e.rcvd.code if e.rcvd else None,
            ) from None

    def _need_interactive(self, what: str) -> None:
        if not self._interactive:
            raise Isol8Error(f"{what} needs an interactive run: execute_ws(..., interactive=True)")

    async def send_stdin(self, data: Union[str, bytes], *, eof: bool = False) -> None:
        """Sends ``data`` to the program's standard input; ``eof=True`` closes it
        afterwards."""
        self._need_interactive("send_stdin")
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        msg: Dict[str, Any] = {"type": "stdin", "data": text}
        if eof:
            msg["eof"] = True
        await self._send(msg)

    async def close_stdin(self) -> None:
        """Closes the program's standard input (end-of-file)."""
        self._need_interactive("close_stdin")
        await self._send({"type": "stdin", "data": "", "eof": True})

    async def send_signal(self, signal: Union[str, int] = "SIGINT") -> None:
        """Sends a signal to the program (``"SIGINT"`` by default, or ``"SIGTERM"``)."""
        self._need_interactive("send_signal")
        await self._send({"type": "signal", "signal": _core.signal_name(signal)})

    async def __aenter__(self) -> "AsyncWebSocketRun":
        await self._open()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __aiter__(self) -> "AsyncWebSocketRun":
        return self

    async def __anext__(self) -> StreamEvent:
        while True:
            if self._out:
                ev = self._out.popleft()
                self._events.append(ev)
                return ev
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure
            if self._state.done or self._closed:
                await self.aclose()
                raise StopAsyncIteration
            ws = await self._open()
            try:
                frame = await ws.recv()
            except ConnectionClosed as e:
                code = e.rcvd.code if e.rcvd else None
                reason = e.rcvd.reason if e.rcvd else ""
                rest, ended = self._state.closed(code, reason)
                self._out.extend(rest)
                self._failure = ended
                await self.aclose()
                continue
            self._out.extend(self._state.frame(frame))

    async def collect(self) -> StreamResult:
        """Reads the rest of the run and puts every event together."""
        async for _ in self:
            pass
        return _core.collect(self._events)

    async def aclose(self) -> None:
        """Closes the socket (a run still going is killed by the server)."""
        self._closed = True
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()


class AsyncSession:
    """A persistent session; see :class:`isol8.Session`. Use as
    ``async with client.session("python") as s``."""

    def __init__(
        self,
        client: AsyncClient,
        runtime: str,
        session_id: str,
        options: Optional[Mapping[str, Any]],
        tenant_id: Optional[str],
    ) -> None:
        self._client = client
        #: The session's id.
        self.id = session_id
        #: The runtime it is bound to.
        self.runtime = runtime
        #: The tenant it belongs to, when named explicitly.
        self.tenant_id = tenant_id
        self._options = options
        self._open = False

    @property
    def is_open(self) -> bool:
        """True between :meth:`create` and :meth:`close`."""
        return self._open

    async def create(self) -> ExecutionResult:
        """Creates the session on the server; see :meth:`isol8.Session.create`."""
        if self._open:
            raise Isol8Error(f"session {self.id} is already created")
        self._open = True
        self._client._sessions.add(self.id, self.tenant_id)
        try:
            result = await self._client.execute(
                self.runtime,
                cmd="true",
                options=self._options,
                session_id=self.id,
                tenant_id=self.tenant_id,
            )
        except BaseException:
            await self._close_quietly()
            raise
        if result.exit_code != 0:
            await self._close_quietly()
            raise Isol8Error(
                f"session {self.id}: creating it ran `true` in {self.runtime}, which "
                f"exited {result.exit_code}: {result.stderr.strip()}"
            )
        return result

    async def execute(
        self,
        code: Optional[str] = None,
        *,
        cmd: Optional[str] = None,
        options: Optional[Mapping[str, Any]] = None,
        **request_fields: Any,
    ) -> ExecutionResult:
        """Runs ``code`` (or ``cmd``) in the session."""
        return await self._client.execute(
            self.runtime,
            code,
            cmd=cmd,
            options=options,
            session_id=self.id,
            tenant_id=self.tenant_id,
            **request_fields,
        )

    def execute_stream(
        self,
        code: Optional[str] = None,
        *,
        cmd: Optional[str] = None,
        options: Optional[Mapping[str, Any]] = None,
        **request_fields: Any,
    ) -> AsyncEventStream:
        """Streams an execution in the session (server-sent events)."""
        return self._client.execute_stream(
            self.runtime,
            code,
            cmd=cmd,
            options=options,
            session_id=self.id,
            tenant_id=self.tenant_id,
            **request_fields,
        )

    def execute_ws(
        self,
        code: Optional[str] = None,
        *,
        cmd: Optional[str] = None,
        options: Optional[Mapping[str, Any]] = None,
        interactive: bool = True,
        **request_fields: Any,
    ) -> AsyncWebSocketRun:
        """Runs in the session over a WebSocket."""
        return self._client.execute_ws(
            self.runtime,
            code,
            cmd=cmd,
            options=options,
            session_id=self.id,
            tenant_id=self.tenant_id,
            interactive=interactive,
            **request_fields,
        )

    async def put_file(self, path: str, content: Union[bytes, str]) -> None:
        """Writes ``content`` (bytes, or text as UTF-8) to ``path`` in the session."""
        await self._client.put_file(self.id, path, content, tenant_id=self.tenant_id)

    async def get_file(self, path: str) -> bytes:
        """The bytes of ``path`` in the session."""
        return await self._client.get_file(self.id, path, tenant_id=self.tenant_id)

    async def close(self) -> None:
        """Ends the session and removes its container (idempotent)."""
        if not self._open:
            return
        self._open = False
        await self._client.delete_session(self.id, tenant_id=self.tenant_id)

    async def _close_quietly(self) -> None:
        try:
            await self.close()
        except Isol8Error:
            pass

    async def __aenter__(self) -> "AsyncSession":
        await self.create()
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[types.TracebackType],
    ) -> None:
        try:
            await self.close()
        except Isol8Error:
            if exc is None:
                raise

    def __repr__(self) -> str:
        return f"isol8.AsyncSession(id={self.id!r}, runtime={self.runtime!r}, open={self._open})"

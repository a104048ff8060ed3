"""The synchronous client, :class:`Client`, with its streams (:class:`EventStream`,
:class:`WebSocketRun`) and persistent sessions (:class:`Session`)."""

from __future__ import annotations

import base64
import collections
import json
import os
import types
import weakref
from typing import Any, Deque, Dict, Iterator, List, Mapping, Optional, Type, Union

import httpx
import httpx_sse
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from . import _core
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

__all__ = ["Client", "EventStream", "Session", "WebSocketRun"]


def _transport_reason(e: BaseException) -> str:
    text = str(e).strip()
    if isinstance(e, httpx.TimeoutException):
        return f"timed out ({type(e).__name__}{': ' + text if text else ''})"
    return text or type(e).__name__


class Client:
    """A synchronous client of an isol8 server (``isol8 serve``).

    ``base_url`` is the server's URL (``http://127.0.0.1:3000``); ``api_key`` its master
    key or a database key (default: the ``ISOL8_API_KEY`` environment variable).
    ``timeout`` (seconds) bounds connecting and every answer except an execution's,
    which the server bounds by the request's ``timeoutMs``; on a stream it is the
    longest wait between two events (the server sends a keep-alive every 15 s).
    ``verify`` is httpx's TLS setting (``True``, ``False``, a CA bundle path, or an
    ``ssl.SSLContext``); ``headers`` are sent with every request.

    Use it as a context manager, or call :meth:`close`: closing ends every session it
    opened that is still open (so does the garbage collector, or the interpreter's exit,
    for a client nobody closed).
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
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=self._headers,
            timeout=httpx.Timeout(timeout),
            verify=verify,
        )
        self._sessions = OpenSessions(self.base_url, self._headers, verify)
        self._finalizer = weakref.finalize(self, self._sessions.end_leftovers)

    # -- plumbing ---------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Optional[Mapping[str, str]] = None,
        read_timeout: Union[float, None, bool] = True,
    ) -> httpx.Response:
        """Sends a request; raises the error of an error answer, or
        :class:`ServerUnreachableError` when there is no answer."""
        timeout: Any = httpx.USE_CLIENT_DEFAULT
        if read_timeout is not True:
            timeout = httpx.Timeout(self._timeout, read=read_timeout or None)
        try:
            resp = self._http.request(method, path, json=json, params=params, timeout=timeout)
        except httpx.TransportError as e:
            raise ServerUnreachableError(self.base_url + path, _transport_reason(e)) from None
        if resp.status_code >= 400:
            raise _core.error_from_answer(
                resp.status_code, resp.content, resp.headers, resp.reason_phrase
            )
        return resp

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        resp = self._send(method, path, **kw)
        return _core.parse_json(resp.content, f"{method} {path}")

    # -- server -----------------------------------------------------------------

    def health(self) -> Health:
        """``GET /health``: liveness and the server's version (no key needed)."""
        return Health.from_wire(self._json("GET", "/health"))

    def version(self) -> str:
        """The server's version, from ``GET /health``."""
        return self.health().version

    def openapi(self) -> Dict[str, Any]:
        """``GET /openapi.json``: the server's OpenAPI 3 document."""
        doc: Dict[str, Any] = self._json("GET", "/openapi.json")
        return doc

    def metrics(self) -> str:
        """``GET /metrics``: the Prometheus text exposition."""
        return self._send("GET", "/metrics").text

    # -- executions -------------------------------------------------------------

    def execute(
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
        """``POST /execute``: runs ``code`` (or the shell command ``cmd``) in ``runtime``
        and returns its :class:`ExecutionResult`.

        ``request_fields`` are the other fields of the request, by their Python names
        or their wire names (``timeout_ms`` or ``timeoutMs``, ``stdin``, ``env``,
        ``files`` (path -> text), ``output_paths``, ``install_packages``,
        ``setup_script``, ``workdir``, ``file_extension``, ``metadata``…); ``options``
        the engine options (``network``, ``memory_limit``, ``secrets``…), by either name
        too. ``session_id`` runs it in that persistent session (created on first use;
        :meth:`session` manages one for you). Raises :class:`isol8.APIError` (with the
        server's status and message) when the server refuses or fails.
        """
        request = _core.request_object(runtime, code, cmd, request_fields)
        body = _core.execute_body(request, options, session_id, tenant_id)
        data = self._json("POST", "/execute", json=body, read_timeout=None)
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
    ) -> "EventStream":
        """``POST /execute/stream``: the execution's events as server-sent events.

        Takes what :meth:`execute` takes; returns an :class:`EventStream` to iterate
        (or ``collect()``), best used as a context manager. The request is sent when
        the stream is entered or first read; a refusal raises then.
        """
        request = _core.request_object(runtime, code, cmd, request_fields)
        body = _core.execute_body(request, options, session_id, tenant_id)
        return EventStream(self, body)

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
    ) -> "WebSocketRun":
        """``GET /execute/ws``: the execution over a WebSocket.

        Takes what :meth:`execute` takes. With ``interactive`` (the default) the
        program's standard input stays open after the request's ``stdin`` for
        :meth:`WebSocketRun.send_stdin` until :meth:`WebSocketRun.close_stdin`, and
        :meth:`WebSocketRun.send_signal` reaches it; without, it reads ``stdin`` (if
        any) and then end-of-file. Returns a :class:`WebSocketRun` (iterate its events),
        best used as a context manager; it connects when entered or first used.
        """
        request = _core.request_object(runtime, code, cmd, request_fields)
        body = _core.execute_body(request, options, session_id, tenant_id)
        message: Dict[str, Any] = {"type": "execute", **body}
        if interactive:
            message["interactive"] = True
        return WebSocketRun(self, message, interactive)

    # -- sessions and files -----------------------------------------------------

    def session(
        self,
        runtime: str,
        *,
        session_id: Optional[str] = None,
        options: Optional[Mapping[str, Any]] = None,
        tenant_id: Optional[str] = None,
    ) -> "Session":
        """A persistent session bound to ``runtime`` (one container kept between
        executions), as a context manager: entering creates it on the server (with
        ``options``: ``memory_limit``, ``network``…), leaving ends it and its container,
        whatever happened inside. ``session_id`` defaults to a fresh random id."""
        return Session(self, runtime, session_id or new_session_id(), options, tenant_id)

    def list_sessions(self) -> List[SessionInfo]:
        """``GET /sessions``: the sessions this key sees."""
        data = self._json("GET", "/sessions")
        return [SessionInfo.from_wire(s) for s in data.get("sessions", [])]

    def delete_session(self, session_id: str, *, tenant_id: Optional[str] = None) -> None:
        """``DELETE /session/{id}``: ends a session and removes its container
        (idempotent)."""
        params = {"tenantId": tenant_id} if tenant_id is not None else None
        self._send("DELETE", f"/session/{_core.path_segment(session_id)}", params=params)
        self._sessions.discard(session_id, tenant_id)

    def put_file(
        self,
        session_id: str,
        path: str,
        content: Union[bytes, str],
        *,
        tenant_id: Optional[str] = None,
    ) -> None:
        """``POST /file``: writes ``content`` (bytes, or text as UTF-8) to ``path`` in a
        session (below ``/sandbox``, ``/tmp`` or ``/dev/shm``)."""
        raw = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        body: Dict[str, Any] = {
            "sessionId": session_id,
            "path": path,
            "content": base64.b64encode(raw).decode("ascii"),
        }
        if tenant_id is not None:
            body["tenantId"] = tenant_id
        self._send("POST", "/file", json=body)

    def get_file(self, session_id: str, path: str, *, tenant_id: Optional[str] = None) -> bytes:
        """``GET /file``: the bytes of ``path`` in a session."""
        params = {"sessionId": session_id, "path": path}
        if tenant_id is not None:
            params["tenantId"] = tenant_id
        data = self._json("GET", "/file", params=params)
        return base64.b64decode(data.get("content", ""))

    # -- keys -------------------------------------------------------------------

    def create_key(
        self, name: str, *, tenant_id: Optional[str] = None, ttl_ms: Optional[int] = None
    ) -> IssuedKey:
        """``POST /auth/keys`` (master key): a new database key for ``tenant_id``
        (default ``"default"``), valid ``ttl_ms`` (default: the server's). The key
        itself is shown only in this answer."""
        body = _core.wire_object({"name": name, "tenant_id": tenant_id, "ttl_ms": ttl_ms}, "key")
        return IssuedKey.from_wire(self._json("POST", "/auth/keys", json=body))

    def list_keys(self, *, tenant_id: Optional[str] = None) -> List[KeyInfo]:
        """``GET /auth/keys`` (master key): every key's metadata (never the keys), or
        one tenant's."""
        params = {"tenantId": tenant_id} if tenant_id is not None else None
        data = self._json("GET", "/auth/keys", params=params)
        return [KeyInfo.from_wire(k) for k in data.get("keys", [])]

    def revoke_key(self, key_id: str) -> None:
        """``DELETE /auth/keys/{id}``: revokes a key (the master key any; a database
        key only itself). :class:`isol8.NotFoundError` for an unknown id."""
        self._send("DELETE", f"/auth/keys/{_core.path_segment(key_id)}")

    def login(
        self,
        *,
        name: Optional[str] = None,
        tenant_id: Optional[str] = None,
        ttl_ms: Optional[int] = None,
    ) -> LoginToken:
        """``POST /auth/login`` (master key): an expiring key to use as a token."""
        body = _core.wire_object({"name": name, "tenant_id": tenant_id, "ttl_ms": ttl_ms}, "login")
        return LoginToken.from_wire(self._json("POST", "/auth/login", json=body))

    def cleanup(self, *, images: Optional[bool] = None) -> CleanupReport:
        """``POST /cleanup`` (master key): ends every session and removes this server's
        containers and — unless ``images=False`` (the server's default is ``True``) —
        isol8's images, the runtime images included."""
        body = {"images": images} if images is not None else {}
        data = self._json("POST", "/cleanup", json=body, read_timeout=None)
        return CleanupReport.from_wire(data)

    # -- lifetime ---------------------------------------------------------------

    def close(self) -> None:
        """Ends the sessions this client opened that are still open (best effort:
        a server that is gone has ended them), then closes the connections."""
        self._finalizer.detach()
        try:
            self._sessions.end_all(self._http)
        finally:
            self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[types.TracebackType],
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"isol8.Client({self.base_url!r})"


class EventStream(Iterator[StreamEvent]):
    """The events of one ``POST /execute/stream`` execution (server-sent events).

    Iterate it for :class:`StreamEvent` s; the last is the ``exit`` event. A stream that
    ends without one raises :class:`isol8.StreamEndedError` (or
    :class:`isol8.SandboxLostError`). Leaving the ``with`` block, or :meth:`close`,
    drops the connection, which kills a run still going.
    """

    def __init__(self, client: Client, body: Dict[str, Any]) -> None:
        self._client = client
        self._body = body
        self._url = client.base_url + "/execute/stream"
        self._cm: Any = None
        self._sse: Optional[Iterator[httpx_sse.ServerSentEvent]] = None
        self._state = _core.SseState(self._url)
        self._events: List[StreamEvent] = []
        self._closed = False

    def _open(self) -> None:
        if self._cm is not None or self._closed:
            return
        c = self._client
        try:
            cm = httpx_sse.connect_sse(c._http, "POST", "/execute/stream", json=self._body)
            source = cm.__enter__()
        except httpx.TransportError as e:
            self._closed = True
            raise ServerUnreachableError(self._url, _transport_reason(e)) from None
        self._cm = cm
        resp = source.response
        if resp.status_code >= 400:
            resp.read()
            self.close()
            raise _core.error_from_answer(
                resp.status_code, resp.content, resp.headers, resp.reason_phrase
            )
        self._sse = source.iter_sse()

    def __enter__(self) -> "EventStream":
        self._open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __iter__(self) -> "EventStream":
        return self

    def __next__(self) -> StreamEvent:
        self._open()
        if self._state.done or self._sse is None:
            self.close()
            raise StopIteration
        while True:
            try:
                sse = next(self._sse)
            except StopIteration:
                self.close()
                raise self._state.ended() from None
            except httpx.TransportError as e:
                self.close()
                raise StreamEndedError(
                    f"the event stream of {self._url} broke: {_transport_reason(e)}"
                ) from None
            ev = self._state.event(sse.data)
            if ev is not None:
                self._events.append(ev)
                return ev

    def collect(self) -> StreamResult:
        """Reads the rest of the stream and puts every event together."""
        for _ in self:
            pass
        return _core.collect(self._events)

    def close(self) -> None:
        """Drops the connection (a run still going is killed by the server)."""
        self._closed = True
        cm, self._cm = self._cm, None
        self._sse = None
        if cm is not None:
            cm.__exit__(None, None, None)


class WebSocketRun(Iterator[StreamEvent]):
    """One execution over ``GET /execute/ws``: its events, and (interactive runs) the
    program's standard input and signals.

    Iterate it for :class:`StreamEvent` s; the last is the ``exit`` event. A refused
    request raises the :class:`isol8.APIError` the HTTP routes would (400, 500, 503,
    with the WebSocket ``close_code``); a socket that closes without an ``exit`` event
    raises :class:`isol8.StreamEndedError` or :class:`isol8.SandboxLostError`. Leaving
    the ``with`` block, or :meth:`close`, closes the socket, which kills a run still
    going. Sending from another thread while one iterates is fine.
    """

    def __init__(self, client: Client, message: Dict[str, Any], interactive: bool) -> None:
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

    def _open(self) -> ClientConnection:
        if self._ws is not None:
            return self._ws
        if self._closed:
            raise Isol8Error("this WebSocket run is closed")
        c = self._client
        try:
            ws = ws_connect(
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
        ws.__enter__()
        self._ws = ws
        self._send(self._message)
        return ws

    def _send(self, message: Dict[str, Any]) -> None:
        ws = self._open()
        try:
            ws.send(json.dumps(message))
        except ConnectionClosed as e:
            raise StreamEndedError(
                f"the WebSocket to {self._url} is closed ({e}); the run has ended",
                close_code=e.rcvd.code if e.rcvd else None,
            ) from None

    def _need_interactive(self, what: str) -> None:
        if not self._interactive:
            raise Isol8Error(f"{what} needs an interactive run: execute_ws(..., interactive=True)")

    def send_stdin(self, data: Union[str, bytes], *, eof: bool = False) -> None:
        """Sends ``data`` (text, or UTF-8 bytes) to the program's standard input;
        ``eof=True`` closes it afterwards."""
        self._need_interactive("send_stdin")
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        msg: Dict[str, Any] = {"type": "stdin", "data": text}
        if eof:
            msg["eof"] = True
        self._send(msg)

    def close_stdin(self) -> None:
        """Closes the program's standard input (end-of-file)."""
        self._need_interactive("close_stdin")
        self._send({"type": "stdin", "data": "", "eof": True})

    def send_signal(self, signal: Union[str, int] = "SIGINT") -> None:
        """Sends a signal to the program: ``"SIGINT"`` (default) or ``"SIGTERM"`` (the
        server also takes ``SIGKILL``, ``SIGHUP``, ``SIGQUIT``); a name without ``SIG``
        or a ``signal.Signals`` works too."""
        self._need_interactive("send_signal")
        self._send({"type": "signal", "signal": _core.signal_name(signal)})

    def __enter__(self) -> "WebSocketRun":
        self._open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __iter__(self) -> "WebSocketRun":
        return self

    def __next__(self) -> StreamEvent:
        while True:
            if self._out:
                ev = self._out.popleft()
                self._events.append(ev)
                return ev
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure
            if self._state.done or self._closed:
                self.close()
                raise StopIteration
            ws = self._open()
            try:
                frame = ws.recv()
            except ConnectionClosed as e:
                code = e.rcvd.code if e.rcvd else None
                reason = e.rcvd.reason if e.rcvd else ""
                rest, ended = self._state.closed(code, reason)
                self._out.extend(rest)
                self._failure = ended
                self.close()
                continue
            self._out.extend(self._state.frame(frame))

    def collect(self) -> StreamResult:
        """Reads the rest of the run and puts every event together."""
        for _ in self:
            pass
        return _core.collect(self._events)

    def close(self) -> None:
        """Closes the socket (a run still going is killed by the server)."""
        self._closed = True
        ws, self._ws = self._ws, None
        if ws is not None:
            ws.close()


class Session:
    """A persistent session: one container, bound to one runtime, kept between
    executions, with files in and out as bytes.

    Use it as a context manager (:meth:`Client.session`): entering creates it on the
    server, leaving ends it and removes its container even when the block raised.
    :meth:`create` and :meth:`close` do the same by hand.
    """

    def __init__(
        self,
        client: Client,
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

    def create(self) -> ExecutionResult:
        """Creates the session on the server with its options: runs ``true`` in it, so
        its container exists (files can go in before any code runs). Returns that
        execution's result."""
        if self._open:
            raise Isol8Error(f"session {self.id} is already created")
        # Registered first: whatever happens next, closing the client ends it.
        self._open = True
        self._client._sessions.add(self.id, self.tenant_id)
        try:
            result = self._client.execute(
                self.runtime,
                cmd="true",
                options=self._options,
                session_id=self.id,
                tenant_id=self.tenant_id,
            )
        except BaseException:
            self._close_quietly()
            raise
        if result.exit_code != 0:
            self._close_quietly()
            raise Isol8Error(
                f"session {self.id}: creating it ran `true` in {self.runtime}, which "
                f"exited {result.exit_code}: {result.stderr.strip()}"
            )
        return result

    def execute(
        self,
        code: Optional[str] = None,
        *,
        cmd: Optional[str] = None,
        options: Optional[Mapping[str, Any]] = None,
        **request_fields: Any,
    ) -> ExecutionResult:
        """Runs ``code`` (or ``cmd``) in the session; see :meth:`Client.execute`.
        Only per-execution options (``timeout_ms``, ``max_output_size``, ``secrets``,
        ``network_filter``, ``log_network``) apply to an existing session."""
        return self._client.execute(
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
    ) -> EventStream:
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
    ) -> WebSocketRun:
        """Runs in the session over a WebSocket; see :meth:`Client.execute_ws`."""
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

    def put_file(self, path: str, content: Union[bytes, str]) -> None:
        """Writes ``content`` (bytes, or text as UTF-8) to ``path`` in the session."""
        self._client.put_file(self.id, path, content, tenant_id=self.tenant_id)

    def get_file(self, path: str) -> bytes:
        """The bytes of ``path`` in the session."""
        return self._client.get_file(self.id, path, tenant_id=self.tenant_id)

    def close(self) -> None:
        """Ends the session and removes its container (idempotent)."""
        if not self._open:
            return
        self._open = False
        self._client.delete_session(self.id, tenant_id=self.tenant_id)

    def _close_quietly(self) -> None:
        try:
            self.close()
        except Isol8Error:
            pass

    def __enter__(self) -> "Session":
        self.create()
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[types.TracebackType],
    ) -> None:
        try:
            self.close()
        except Isol8Error:
            # The block's own exception says more; a failed close without one raises.
            if exc is None:
                raise

    def __repr__(self) -> str:
        return f"isol8.Session(id={self.id!r}, runtime={self.runtime!r}, open={self._open})"

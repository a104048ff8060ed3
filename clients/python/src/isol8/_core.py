"""What the sync and the async client share: building request bodies (Python names to
wire names), reading error answers, and reading the events of a stream (server-sent
events or WebSocket frames), with no I/O of its own."""

from __future__ import annotations

import json
import re
import ssl
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union
from urllib.parse import quote

from ._errors import (
    APIError,
    BadRequestError,
    SandboxLostError,
    ServerError,
    ServiceUnavailableError,
    StreamEndedError,
    api_error,
)
from ._types import ResourceUsage, StreamEvent, StreamResult

#: A TLS setting as httpx takes it: verify (``True``), do not (``False``), a CA bundle
#: path, or a ready context.
Verify = Union[bool, str, ssl.SSLContext]

#: Keys whose values are maps of the user's own names (environment variables, file
#: paths, secrets, metadata): their keys are sent as they are, never renamed.
_DATA_MAPS = frozenset({"env", "files", "metadata", "secrets"})

#: Option keys whose values are objects of wire fields (renamed like the top level).
_STRUCTS = frozenset({"networkFilter", "security", "poolSize"})

#: Python names whose wire name is not the plain camelCase of the name.
_SPECIAL = {"memory_mb": "memoryMB", "peak_memory_mb": "peakMemoryMB"}

_SNAKE = re.compile(r"_([a-z0-9])")


def camel(name: str) -> str:
    """The wire name of a Python keyword: ``timeout_ms`` -> ``timeoutMs``; a name that
    is already camelCase (``timeoutMs``) is kept."""
    if name in _SPECIAL:
        return _SPECIAL[name]
    return _SNAKE.sub(lambda m: m.group(1).upper(), name)


def _text(field: str, value: Union[str, bytes]) -> str:
    """A wire string from ``str`` or UTF-8 ``bytes`` (the wire carries text here)."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(
                f"{field} must be text (str or UTF-8 bytes); binary files go in with "
                "Session.put_file"
            ) from e
    return value


def wire_object(fields: Mapping[str, Any], what: str) -> Dict[str, Any]:
    """``fields`` with Python names turned into wire names (see :func:`camel`), the
    keys of data maps (``env``, ``files``, ``secrets``, ``metadata``) kept, and ``None``
    values dropped (absent on the wire: the server's default)."""
    out: Dict[str, Any] = {}
    for key, value in fields.items():
        if not isinstance(key, str):
            raise TypeError(f"{what}: field names are strings, got {key!r}")
        if value is None:
            continue
        name = camel(key)
        if name in out:
            raise TypeError(f"{what}: `{key}` is given twice (as {name} and another spelling)")
        if name in _DATA_MAPS:
            if not isinstance(value, Mapping):
                raise TypeError(f"{what}: `{key}` must be a mapping")
            if name == "files":
                value = {str(p): _text(f"files[{p!r}]", c) for p, c in value.items()}
            else:
                value = {str(k): v for k, v in value.items()}
        elif name in _STRUCTS and isinstance(value, Mapping):
            value = wire_object(value, f"{what}.{name}")
        elif name == "stdin":
            value = _text("stdin", value)
        elif isinstance(value, tuple):
            value = list(value)
        out[name] = value
    return out


def request_object(
    runtime: str, code: Optional[str], cmd: Optional[str], fields: Mapping[str, Any]
) -> Dict[str, Any]:
    """The ``ExecutionRequest`` wire object of ``execute(runtime, code, **fields)``."""
    if not isinstance(runtime, str) or not runtime:
        raise TypeError("runtime must be a non-empty string, e.g. 'python'")
    if code is not None and cmd is not None:
        raise TypeError("give code or cmd, not both")
    if code is None and cmd is None and "code_url" not in fields and "codeUrl" not in fields:
        raise TypeError("give code (source to run) or cmd (a shell command)")
    request = {"runtime": runtime}
    if code is not None:
        request["code"] = code
    if cmd is not None:
        request["cmd"] = cmd
    for key in ("runtime", "code", "cmd"):
        if key in fields:
            raise TypeError(f"`{key}` is given twice")
    request.update(wire_object(fields, "request"))
    return request


def execute_body(
    request: Dict[str, Any],
    options: Optional[Mapping[str, Any]],
    session_id: Optional[str],
    tenant_id: Optional[str],
) -> Dict[str, Any]:
    """The body of ``POST /execute`` and ``/execute/stream`` (and, with ``type``, of the
    WebSocket ``execute`` message)."""
    body: Dict[str, Any] = {"request": request}
    if options:
        body["options"] = wire_object(options, "options")
    if session_id is not None:
        body["sessionId"] = session_id
    if tenant_id is not None:
        body["tenantId"] = tenant_id
    return body


def normalize_base_url(base_url: str) -> str:
    """``base_url`` without a trailing slash; ``ValueError`` unless http(s)."""
    if not isinstance(base_url, str) or not re.match(r"^https?://[^/]", base_url):
        raise ValueError(
            f"base_url must start with http:// or https:// and name a host, got {base_url!r} "
            "(e.g. 'http://127.0.0.1:3000')"
        )
    return base_url.rstrip("/")


def ws_url(base_url: str) -> str:
    """The URL of ``GET /execute/ws`` on the server at ``base_url``."""
    scheme, rest = base_url.split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/execute/ws"


def ws_ssl(base_url: str, verify: Verify) -> Optional[ssl.SSLContext]:
    """The TLS context of a WebSocket to ``base_url`` matching httpx's ``verify``."""
    if not base_url.startswith("https://"):
        return None
    if isinstance(verify, ssl.SSLContext):
        return verify
    if verify is False:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return ssl.create_default_context()


def path_segment(value: str) -> str:
    """``value`` escaped as one URL path segment."""
    return quote(value, safe="")


def _message_of(body: Any, fallback: str) -> str:
    if isinstance(body, Mapping) and isinstance(body.get("error"), str):
        return str(body["error"])
    if isinstance(body, str) and body.strip():
        return body.strip()[:500]
    return fallback


def error_from_answer(
    status: int, content: bytes, headers: Mapping[str, str], reason: str = ""
) -> APIError:
    """The exception for an error answer: its status, its ``{"error": message}`` (or
    its text), and ``Retry-After``."""
    body: Any
    try:
        body = json.loads(content.decode("utf-8")) if content else None
    except (UnicodeDecodeError, ValueError):
        body = content.decode("utf-8", "replace")
    message = _message_of(body, reason or f"the server answered {status} without a message")
    retry_after: Optional[float] = None
    raw = headers.get("retry-after")
    if raw is not None:
        try:
            retry_after = float(raw)
        except ValueError:
            retry_after = None
    return api_error(status, message, body=body, retry_after=retry_after)


def parse_json(content: bytes, what: str) -> Any:
    """A successful answer's JSON; :class:`ServerError` naming ``what`` otherwise."""
    try:
        return json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ServerError(200, f"{what}: the server's answer is not JSON ({e})") from e


def parse_event(text: Union[str, bytes], where: str) -> StreamEvent:
    """One ``StreamEvent`` from its JSON text."""
    try:
        data = json.loads(text)
        return StreamEvent.from_wire(data)
    except (UnicodeDecodeError, ValueError, TypeError) as e:
        raise StreamEndedError(f"{where}: an event is not a StreamEvent ({e}): {text!r:.200}") from e


class SseState:
    """Reads the events of ``POST /execute/stream``: says when the stream is complete
    (its ``exit`` event) and what a stream that ended before it means."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.done = False
        self.last_error: Optional[str] = None

    def event(self, data: str) -> Optional[StreamEvent]:
        """The event of one ``data:`` field (``None`` for an empty keep-alive)."""
        if not data.strip():
            return None
        ev = parse_event(data, self.url)
        if ev.type == "exit":
            self.done = True
        elif ev.type == "error":
            self.last_error = ev.data
        return ev

    def ended(self) -> Exception:
        """The exception for a stream that ended without its ``exit`` event."""
        if self.last_error is not None and self.last_error.startswith("sandbox lost: "):
            return SandboxLostError(500, self.last_error)
        if self.last_error is not None:
            return StreamEndedError(
                f"the event stream of {self.url} ended without an exit event; "
                f"its last error: {self.last_error}"
            )
        return StreamEndedError(f"the event stream of {self.url} ended without an exit event")


class WsState:
    """Reads the frames of ``GET /execute/ws``.

    An ``error`` event without a phase is how the server refuses a request before
    running it, followed by a close: such an event is held back until the next frame,
    so that a refusal becomes an exception (as the same refusal is an error answer on
    the HTTP routes) instead of an event.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.done = False
        self.held: Optional[StreamEvent] = None
        self.last_error: Optional[str] = None

    def frame(self, text: Union[str, bytes]) -> List[StreamEvent]:
        """The events to hand out for one text frame, in order."""
        ev = parse_event(text, self.url)
        out: List[StreamEvent] = []
        if self.held is not None:
            out.append(self.held)
            self.held = None
        if ev.type == "error":
            self.last_error = ev.data
            if ev.phase is None:
                self.held = ev
                return out
        if ev.type == "exit":
            self.done = True
        out.append(ev)
        return out

    def closed(self, code: Optional[int], reason: str) -> Tuple[List[StreamEvent], Optional[Exception]]:
        """The socket closed (``code`` ``None``: without a close frame) before the
        ``exit`` event: the events still held and the exception to raise."""
        message = self.last_error or reason or "no reason given"
        held = self.held
        self.held = None
        if code == 1003:
            return [], BadRequestError(400, message, close_code=code)
        if code == 1013:
            return [], ServiceUnavailableError(503, message, close_code=code)
        if code == 1011:
            if message.startswith("sandbox lost: "):
                return [], SandboxLostError(500, message, close_code=code)
            return [], ServerError(500, message, close_code=code)
        rest = [held] if held is not None else []
        what = f"close code {code}" if code is not None else "no close frame"
        return rest, StreamEndedError(
            f"the WebSocket to {self.url} closed before the exit event ({what}: {message})",
            close_code=code,
        )


def collect(events: List[StreamEvent]) -> StreamResult:
    """A complete stream's events put together."""
    stdout: List[str] = []
    stderr: List[str] = []
    errors: List[str] = []
    exit_code: Optional[int] = None
    exit_reason: Optional[str] = None
    resource_usage: Optional[ResourceUsage] = None
    for ev in events:
        if ev.type == "stdout":
            stdout.append(ev.data)
        elif ev.type == "stderr":
            stderr.append(ev.data)
        elif ev.type == "error":
            errors.append(ev.data)
        elif ev.type == "exit":
            exit_code = ev.exit_code
            exit_reason = ev.exit_reason
            resource_usage = ev.resource_usage
    if exit_code is None:
        raise StreamEndedError("the stream has no exit event")
    return StreamResult(
        stdout="".join(stdout),
        stderr="".join(stderr),
        exit_code=exit_code,
        exit_reason=exit_reason,
        resource_usage=resource_usage,
        errors=errors,
        events=list(events),
    )


def auth_headers(api_key: Optional[str]) -> Dict[str, str]:
    """The ``Authorization`` header for ``api_key`` (none without a key)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def signal_name(signal: Union[str, int]) -> str:
    """``"SIGINT"`` from ``"SIGINT"``, ``"INT"``, ``signal.SIGINT`` or ``2``."""
    import signal as _signal

    if isinstance(signal, int):
        try:
            return _signal.Signals(signal).name
        except ValueError as e:
            raise ValueError(f"unknown signal number {signal}") from e
    name = signal.upper()
    return name if name.startswith("SIG") else f"SIG{name}"

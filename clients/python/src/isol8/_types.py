"""Typed values of the isol8 HTTP API.

Every class is a frozen dataclass whose field names follow Python conventions
(``exit_code``) and map one to one to the camelCase names on the wire (``exitCode``):
each field records its wire name in its metadata (``WIRE``), :func:`wire_names` lists
them, and ``raw`` keeps the JSON object exactly as the server sent it, so fields a
newer server adds are never lost. Fields the server may leave out are ``Optional``
and ``None`` when absent.
"""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Type, TypeVar

__all__ = [
    "CleanupReport",
    "ExecutionResult",
    "ExitReason",
    "Health",
    "IssuedKey",
    "KeyInfo",
    "LoginToken",
    "NetworkLog",
    "ResourceUsage",
    "SessionInfo",
    "StreamEvent",
    "StreamResult",
    "Tally",
    "wire_names",
]

#: The metadata key holding a field's wire name.
WIRE = "isol8.wire"
#: The metadata key holding a field's decoder (wire value -> Python value).
DECODE = "isol8.decode"

#: Why a program ended (``exitReason``): ``"exited"``, ``"timeout"``, ``"memoryLimit"``,
#: ``"outputLimit"``, ``"signal"`` or ``"sandboxLost"``. Kept as the wire's string, so a
#: value a newer server adds still reads.
ExitReason = str

T = TypeVar("T")


def _wire(name: str, decode: Optional[Callable[[Any], Any]] = None, **kw: Any) -> Any:
    """A dataclass field whose wire name is ``name`` (decoded by ``decode`` if given)."""
    metadata: Dict[str, Any] = {WIRE: name}
    if decode is not None:
        metadata[DECODE] = decode
    return field(metadata=metadata, **kw)


def _raw() -> Any:
    """The ``raw`` field: the wire object as received (not compared, not shown)."""
    return field(default_factory=dict, compare=False, repr=False)


def _decode(cls: Type[T], data: Mapping[str, Any]) -> T:
    """Builds a ``cls`` from its wire object ``data`` (missing optional fields: their
    default; missing required ones: ``TypeError`` naming them)."""
    if not isinstance(data, Mapping):
        raise TypeError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
    kwargs: Dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name == "raw":
            kwargs["raw"] = dict(data)
            continue
        name = f.metadata.get(WIRE)
        if name is None or name not in data:
            continue
        value = data[name]
        decode = f.metadata.get(DECODE)
        kwargs[f.name] = decode(value) if decode is not None and value is not None else value
    return cls(**kwargs)


def wire_names(cls: type) -> Dict[str, str]:
    """``{python_name: wire_name}`` for every field of one of these classes."""
    return {
        f.name: f.metadata[WIRE]
        for f in dataclasses.fields(cls)
        if WIRE in f.metadata
    }


def _b64_files(value: Mapping[str, str]) -> Dict[str, bytes]:
    return {path: base64.b64decode(content) for path, content in value.items()}


@dataclass(frozen=True)
class ResourceUsage:
    """Resource figures measured for one execution (``resourceUsage``)."""

    #: Average CPU use over the run, in percent of one core (``cpuPercent``).
    cpu_percent: float = _wire("cpuPercent", default=0.0)
    #: Memory in use at the end of the run, in MiB (``memoryMB``).
    memory_mb: float = _wire("memoryMB", default=0.0)
    #: Peak memory during the run, in MiB (``peakMemoryMB``).
    peak_memory_mb: float = _wire("peakMemoryMB", default=0.0)
    #: Bytes received over the network (``networkBytesIn``).
    network_bytes_in: int = _wire("networkBytesIn", default=0)
    #: Bytes sent over the network (``networkBytesOut``).
    network_bytes_out: int = _wire("networkBytesOut", default=0)
    #: The wire object as received.
    raw: Dict[str, Any] = _raw()

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> "ResourceUsage":
        """Reads the wire object."""
        return _decode(cls, data)


@dataclass(frozen=True)
class NetworkLog:
    """One request seen by the filtering proxy (an entry of ``networkLogs``)."""

    #: ISO-8601 time of the request.
    timestamp: str = _wire("timestamp", default="")
    #: HTTP method (``CONNECT`` for HTTPS tunnels).
    method: str = _wire("method", default="")
    #: Target host name.
    host: str = _wire("host", default="")
    #: Request path (empty for tunnels).
    path: str = _wire("path", default="")
    #: ``"ALLOW"`` or ``"BLOCK"``.
    action: str = _wire("action", default="")
    #: Time the request took, in milliseconds (``durationMs``).
    duration_ms: int = _wire("durationMs", default=0)
    #: The wire object as received.
    raw: Dict[str, Any] = _raw()

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> "NetworkLog":
        """Reads the wire object."""
        return _decode(cls, data)


@dataclass(frozen=True)
class ExecutionResult:
    """The outcome of one execution (``ExecutionResult`` on the wire)."""

    #: Everything the program wrote to standard output (secrets masked, capped).
    stdout: str = _wire("stdout", default="")
    #: Everything the program wrote to standard error (secrets masked, capped).
    stderr: str = _wire("stderr", default="")
    #: The program's exit code; 137 when it was killed (``exitCode``).
    exit_code: int = _wire("exitCode", default=0)
    #: Wall time of the user code, in milliseconds (``durationMs``).
    duration_ms: int = _wire("durationMs", default=0)
    #: True when stdout or stderr hit ``maxOutputSize``.
    truncated: bool = _wire("truncated", default=False)
    #: The execution's id, a UUID (``executionId``).
    execution_id: str = _wire("executionId", default="")
    #: The runtime that ran the code.
    runtime: str = _wire("runtime", default="")
    #: ISO-8601 time the execution started.
    timestamp: str = _wire("timestamp", default="")
    #: Docker id of the container that ran the code (``containerId``).
    container_id: Optional[str] = _wire("containerId", default=None)
    #: Files read back from ``outputPaths``: path -> bytes (base64 on the wire).
    files: Optional[Dict[str, bytes]] = _wire("files", _b64_files, default=None)
    #: Paths of the ``files`` changed because they held a secret (``maskedFiles``).
    masked_files: Optional[List[str]] = _wire("maskedFiles", default=None)
    #: Resource figures, where measured (``resourceUsage``).
    resource_usage: Optional[ResourceUsage] = _wire(
        "resourceUsage", ResourceUsage.from_wire, default=None
    )
    #: Requests seen by the filtering proxy, with ``logNetwork`` (``networkLogs``).
    network_logs: Optional[List[NetworkLog]] = _wire(
        "networkLogs", lambda v: [NetworkLog.from_wire(x) for x in v], default=None
    )
    #: Why the program ended (``exitReason``; see :data:`ExitReason`), where known.
    exit_reason: Optional[ExitReason] = _wire("exitReason", default=None)
    #: The wire object as received.
    raw: Dict[str, Any] = _raw()

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> "ExecutionResult":
        """Reads the wire object."""
        return _decode(cls, data)


@dataclass(frozen=True)
class StreamEvent:
    """One event of a streamed execution (``StreamEvent`` on the wire).

    A complete stream ends with exactly one ``exit`` event.
    """

    #: ``"stdout"``, ``"stderr"``, ``"exit"`` or ``"error"`` (``type``).
    type: str = _wire("type", default="")
    #: Output text, an error message, or (``exit``) the exit code as a string.
    data: str = _wire("data", default="")
    #: ``"setup"`` or ``"code"``: the phase that produced the event, where it applies.
    phase: Optional[str] = _wire("phase", default=None)
    #: Why the program ended, on an ``exit`` event of a server that says so.
    exit_reason: Optional[ExitReason] = _wire("exitReason", default=None)
    #: The run's resource figures, on an ``exit`` event, where measured.
    resource_usage: Optional[ResourceUsage] = _wire(
        "resourceUsage", ResourceUsage.from_wire, default=None
    )
    #: The wire object as received.
    raw: Dict[str, Any] = _raw()

    @property
    def exit_code(self) -> Optional[int]:
        """The exit code of an ``exit`` event; ``None`` for other events."""
        if self.type != "exit":
            return None
        try:
            return int(self.data)
        except ValueError:
            return None

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> "StreamEvent":
        """Reads the wire object."""
        return _decode(cls, data)


@dataclass(frozen=True)
class StreamResult:
    """A stream's events put together (:meth:`isol8.EventStream.collect`).

    Not a wire type: the server sends only the events.
    """

    #: The standard output of every phase, in order.
    stdout: str
    #: The standard error of every phase, in order.
    stderr: str
    #: The ``exit`` event's code.
    exit_code: int
    #: The ``exit`` event's ``exitReason``, where the server sent one.
    exit_reason: Optional[ExitReason]
    #: The ``exit`` event's ``resourceUsage``, where measured.
    resource_usage: Optional[ResourceUsage]
    #: The messages of the ``error`` events (e.g. ``EXECUTION TIMED OUT``).
    errors: List[str]
    #: Every event, in order.
    events: List[StreamEvent]


@dataclass(frozen=True)
class Health:
    """The reply of ``GET /health``."""

    #: Always ``"ok"``.
    status: str = _wire("status", default="")
    #: The server's version.
    version: str = _wire("version", default="")
    #: The wire object as received.
    raw: Dict[str, Any] = _raw()

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> "Health":
        """Reads the wire object."""
        return _decode(cls, data)


@dataclass(frozen=True)
class SessionInfo:
    """One entry of ``GET /sessions``."""

    #: The session's id.
    id: str = _wire("id", default="")
    #: The tenant it belongs to (``tenantId``).
    tenant_id: Optional[str] = _wire("tenantId", default=None)
    #: True while an execution runs in it (``isActive``).
    is_active: bool = _wire("isActive", default=False)
    #: Last use, RFC 3339 (``lastAccessedAt``).
    last_accessed_at: str = _wire("lastAccessedAt", default="")
    #: The wire object as received.
    raw: Dict[str, Any] = _raw()

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> "SessionInfo":
        """Reads the wire object."""
        return _decode(cls, data)


@dataclass(frozen=True)
class IssuedKey:
    """The reply of ``POST /auth/keys``: a new database key, shown only here."""

    #: The key's id (used to revoke it).
    id: str = _wire("id", default="")
    #: The key itself: ``isol8_`` and 64 hex characters (not shown by ``repr``).
    key: str = _wire("key", default="", repr=False)
    #: Its label.
    name: str = _wire("name", default="")
    #: Its first characters and ``...`` (``keyPrefix``).
    key_prefix: str = _wire("keyPrefix", default="")
    #: The tenant it acts as (``tenantId``).
    tenant_id: str = _wire("tenantId", default="")
    #: When it expires, RFC 3339 (``expiresAt``).
    expires_at: str = _wire("expiresAt", default="")
    #: The wire object as received.
    raw: Dict[str, Any] = _raw()

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> "IssuedKey":
        """Reads the wire object."""
        return _decode(cls, data)


@dataclass(frozen=True)
class KeyInfo:
    """A database key's metadata, as ``GET /auth/keys`` lists it (never the key)."""

    #: The key's id.
    id: str = _wire("id", default="")
    #: Its label.
    name: str = _wire("name", default="")
    #: Its first characters and ``...`` (``keyPrefix``).
    key_prefix: str = _wire("keyPrefix", default="")
    #: The tenant it acts as (``tenantId``).
    tenant_id: str = _wire("tenantId", default="")
    #: Creation time, RFC 3339 (``createdAt``).
    created_at: str = _wire("createdAt", default="")
    #: Expiry time, RFC 3339 (``expiresAt``).
    expires_at: str = _wire("expiresAt", default="")
    #: When it last authenticated a request, RFC 3339; ``None``: never (``lastUsedAt``).
    last_used_at: Optional[str] = _wire("lastUsedAt", default=None)
    #: True once revoked.
    revoked: bool = _wire("revoked", default=False)
    #: The wire object as received.
    raw: Dict[str, Any] = _raw()

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> "KeyInfo":
        """Reads the wire object."""
        return _decode(cls, data)


@dataclass(frozen=True)
class LoginToken:
    """The reply of ``POST /auth/login``: an expiring key, shown only here."""

    #: The key to use as bearer token (not shown by ``repr``).
    token: str = _wire("token", default="", repr=False)
    #: When it expires, RFC 3339 (``expiresAt``).
    expires_at: str = _wire("expiresAt", default="")
    #: Its id, to revoke it (``keyId``).
    key_id: str = _wire("keyId", default="")
    #: The wire object as received.
    raw: Dict[str, Any] = _raw()

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> "LoginToken":
        """Reads the wire object."""
        return _decode(cls, data)


@dataclass(frozen=True)
class Tally:
    """What one part of ``POST /cleanup`` removed."""

    #: How many were removed.
    removed: int = _wire("removed", default=0)
    #: How many could not be.
    failed: int = _wire("failed", default=0)
    #: Why, one ``ID: reason`` per failure.
    errors: List[str] = _wire("errors", default_factory=list)
    #: The wire object as received.
    raw: Dict[str, Any] = _raw()

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> "Tally":
        """Reads the wire object."""
        return _decode(cls, data)


@dataclass(frozen=True)
class CleanupReport:
    """The reply of ``POST /cleanup``."""

    #: Always ``True``.
    ok: bool = _wire("ok", default=False)
    #: Sessions stopped.
    sessions: Tally = _wire("sessions", Tally.from_wire, default_factory=Tally)
    #: This server's other containers removed.
    containers: Tally = _wire("containers", Tally.from_wire, default_factory=Tally)
    #: isol8's images removed; ``None`` when images were kept.
    images: Optional[Tally] = _wire("images", Tally.from_wire, default=None)
    #: The wire object as received.
    raw: Dict[str, Any] = _raw()

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> "CleanupReport":
        """Reads the wire object."""
        return _decode(cls, data)

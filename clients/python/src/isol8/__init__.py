"""A Python client for the HTTP API of an isol8 server (``isol8 serve``), which runs
untrusted code in hardened Docker sandboxes.

>>> import isol8
>>> with isol8.Client("http://127.0.0.1:3000", api_key="...") as client:
...     print(client.execute(runtime="python", code="print(6 * 7)").stdout)
42

:class:`Client` is synchronous, :class:`AsyncClient` the same API for asyncio. Results
and events are typed dataclasses whose field names follow Python conventions and map
one to one to the server's camelCase wire names; errors are :class:`Isol8Error` s.
"""

from ._async_client import AsyncClient, AsyncEventStream, AsyncSession, AsyncWebSocketRun
from ._client import Client, EventStream, Session, WebSocketRun
from ._errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    Isol8Error,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    SandboxLostError,
    ServerError,
    ServerUnreachableError,
    ServiceUnavailableError,
    StreamEndedError,
)
from ._types import (
    CleanupReport,
    ExecutionResult,
    ExitReason,
    Health,
    IssuedKey,
    KeyInfo,
    LoginToken,
    NetworkLog,
    ResourceUsage,
    SessionInfo,
    StreamEvent,
    StreamResult,
    Tally,
    wire_names,
)

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "AsyncClient",
    "AsyncEventStream",
    "AsyncSession",
    "AsyncWebSocketRun",
    "AuthenticationError",
    "BadRequestError",
    "CleanupReport",
    "Client",
    "ConflictError",
    "EventStream",
    "ExecutionResult",
    "ExitReason",
    "Health",
    "Isol8Error",
    "IssuedKey",
    "KeyInfo",
    "LoginToken",
    "NetworkLog",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "ResourceUsage",
    "SandboxLostError",
    "ServerError",
    "ServerUnreachableError",
    "ServiceUnavailableError",
    "Session",
    "SessionInfo",
    "StreamEndedError",
    "StreamEvent",
    "StreamResult",
    "Tally",
    "WebSocketRun",
    "__version__",
    "wire_names",
]

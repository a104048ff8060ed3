"""The exceptions of the isol8 client.

Every error the client raises is an :class:`Isol8Error`:

* :class:`APIError` (and a subclass per status): the server answered with an error; it
  carries the HTTP status (``status_code``) and the server's message (``message``, the
  ``error`` field of its JSON body). A WebSocket execution the server refused carries
  the status the HTTP routes give for the same refusal (400, 500, 503) and the close
  code (``close_code``).
* :class:`ServerUnreachableError`: no answer at all (connection refused, DNS failure,
  timeout); the message names the URL.
* :class:`StreamEndedError`: a stream ended without its ``exit`` event.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Type

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "Isol8Error",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "SandboxLostError",
    "ServerError",
    "ServerUnreachableError",
    "ServiceUnavailableError",
    "StreamEndedError",
]


class Isol8Error(Exception):
    """Base class of every exception this package raises."""


class ServerUnreachableError(Isol8Error, ConnectionError):
    """The server at ``url`` could not be reached (refused, unresolvable, timed out).
    Also a builtin :class:`ConnectionError`."""

    def __init__(self, url: str, reason: str) -> None:
        #: The URL that was tried.
        self.url = url
        #: What failed, as the transport said it.
        self.reason = reason
        super().__init__(
            f"cannot reach the isol8 server at {url}: {reason} "
            "(is `isol8 serve` running there, and is the URL right?)"
        )


class APIError(Isol8Error):
    """The server answered with an error.

    ``str(e)`` is ``"HTTP <status>: <message>"``.
    """

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        body: Any = None,
        retry_after: Optional[float] = None,
        close_code: Optional[int] = None,
    ) -> None:
        #: The HTTP status (for a refused WebSocket run: the status of the same refusal
        #: on the HTTP routes).
        self.status_code = status_code
        #: The server's message (its ``{"error": message}``).
        self.message = message
        #: The decoded JSON body (or text) of the answer, when there was one.
        self.body = body
        #: Seconds to wait before retrying (``Retry-After`` of 429 and 503 answers).
        self.retry_after = retry_after
        #: The WebSocket close code, for errors that ended a WebSocket.
        self.close_code = close_code
        super().__init__(f"HTTP {status_code}: {message}")

    @property
    def status(self) -> int:
        """Alias of :attr:`status_code`."""
        return self.status_code


class BadRequestError(APIError):
    """400: bad input or refused by the server's policy (also a WebSocket close 1003)."""


class AuthenticationError(APIError):
    """401: no key was sent."""


class PermissionDeniedError(APIError):
    """403: the key is unknown, revoked or expired, or may not do this."""


class NotFoundError(APIError):
    """404: unknown session, key or route."""


class ConflictError(APIError):
    """409: the master key named a session id that several tenants hold."""


class PayloadTooLargeError(APIError):
    """413: the request body is too large."""


class RateLimitError(APIError):
    """429: the session caps are reached (see ``retry_after``)."""


class ServerError(APIError):
    """500 (or another 5xx): the server or the sandbox failed."""


class SandboxLostError(ServerError):
    """The sandbox went away while the program ran (``sandbox lost: …``)."""


class ServiceUnavailableError(ServerError):
    """503: busy, shutting down, or Docker or the key store is unreachable (also a
    WebSocket close 1013); see ``retry_after``."""


class StreamEndedError(Isol8Error):
    """A stream ended before its ``exit`` event (the connection broke, or the server
    closed it without one). ``close_code`` is the WebSocket close code, if any."""

    def __init__(self, message: str, *, close_code: Optional[int] = None) -> None:
        #: What happened.
        self.message = message
        #: The WebSocket close code, if the stream was a WebSocket.
        self.close_code = close_code
        super().__init__(message)


_BY_STATUS: Dict[int, Type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def api_error(
    status: int,
    message: str,
    *,
    body: Any = None,
    retry_after: Optional[float] = None,
    close_code: Optional[int] = None,
) -> APIError:
    """The exception for an error answer with ``status`` and ``message``."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        if message.startswith("sandbox lost: "):
            cls = SandboxLostError
        elif status >= 500:
            cls = ServerError
        else:
            cls = APIError
    return cls(status, message, body=body, retry_after=retry_after, close_code=close_code)

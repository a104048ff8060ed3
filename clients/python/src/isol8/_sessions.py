"""The sessions a client opened and has not ended yet, so that closing the client — or
losing it (garbage collection, interpreter exit) — ends them and their containers."""

from __future__ import annotations

import threading
import uuid
from typing import Dict, List, Mapping, Optional, Tuple

import httpx

from ._core import Verify, path_segment

#: A session as the server addresses it: (id, tenantId or None).
SessionKey = Tuple[str, Optional[str]]


def new_session_id() -> str:
    """A fresh session id (``py-`` and 32 hex digits: characters the server accepts)."""
    return f"py-{uuid.uuid4().hex}"


class OpenSessions:
    """The open sessions of one client. Holds no reference to the client, so it can
    end them from a ``weakref.finalize`` callback."""

    def __init__(self, base_url: str, headers: Mapping[str, str], verify: Verify) -> None:
        self._base_url = base_url
        self._headers = dict(headers)
        self._verify = verify
        self._open: Dict[SessionKey, None] = {}
        self._lock = threading.Lock()

    def add(self, session_id: str, tenant_id: Optional[str]) -> None:
        """Records an opened session."""
        with self._lock:
            self._open[(session_id, tenant_id)] = None

    def discard(self, session_id: str, tenant_id: Optional[str]) -> None:
        """Forgets an ended session."""
        with self._lock:
            self._open.pop((session_id, tenant_id), None)

    def take(self) -> List[SessionKey]:
        """Every open session, forgotten."""
        with self._lock:
            keys = list(self._open)
            self._open.clear()
        return keys

    @staticmethod
    def request(key: SessionKey) -> Tuple[str, Optional[Dict[str, str]]]:
        """The path and query of ``DELETE /session/{id}`` for ``key``."""
        session_id, tenant_id = key
        params = {"tenantId": tenant_id} if tenant_id is not None else None
        return f"/session/{path_segment(session_id)}", params

    def end_all(self, http: httpx.Client) -> None:
        """Ends every open session with ``http`` (best effort: one that cannot be
        ended is left to the server, which prunes idle sessions)."""
        for key in self.take():
            path, params = self.request(key)
            try:
                http.delete(path, params=params)
            except httpx.HTTPError:
                pass

    def end_leftovers(self) -> None:
        """Ends every open session of a client nobody closed (its finalizer), over a
        connection of its own with a short timeout."""
        if not self._open:
            return
        try:
            with httpx.Client(
                base_url=self._base_url,
                headers=self._headers,
                timeout=httpx.Timeout(5.0),
                verify=self._verify,
            ) as http:
                self.end_all(http)
        except Exception:  # noqa: BLE001 - a finalizer must not raise
            pass

"""Why a socket was refused, told to the client that was refused.

A browser never sees the HTTP answer to a refused WebSocket handshake: phoenix.js only sees
the socket close, and retries forever. ``GET /socket/refusal``, with the socket's own query
parameters (or its ``authToken`` as ``Authorization: Bearer``), answers why::

    {"refusal": {"status": 403, "code": "socket_limit", "retry": false, "retry_after": null,
                 "reason": "users_socket:alice already has 5 sockets open", "age": 0.2}}

or ``{"refusal": null}``. What depends on the request alone (``unauthorized``: the app's
``connect`` refuses these parameters, e.g. a bad or expired token; ``origin``; ``version``)
it works out from the request itself; the rest (``rate_limited``, ``draining``,
``unavailable``, ``socket_limit``) the transport records here, by client address, for a
minute. ``retry`` says whether retrying can help: after ``rate_limited`` (429; wait
``retry_after`` seconds), ``draining`` and ``unavailable`` (503) it can.

Security note: a refusal naming a socket id (the per-id limit) is only told to a caller
whose parameters ``connect`` as that same id; the others concern the address alone.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from switchboard.server.client_ip import client_ip
from switchboard.server.errors import UnsupportedVersion
from switchboard.server.protocol import negotiate_version
from switchboard.server.socket import ConnectInfo, Socket

#: Refusal codes, and whether retrying can help after each.
RETRY_HELPS = {
    "draining": True,
    "rate_limited": True,
    "unavailable": True,
    "socket_limit": False,
    "unauthorized": False,
    "origin": False,
    "version": False,
}
#: Worked out from the caller's own request, never taken from another client's record.
_FROM_REQUEST = frozenset({"unauthorized", "origin", "version"})


@dataclass(frozen=True, slots=True)
class Refusal:
    code: str
    status: int
    reason: str
    at: float  # time.monotonic()
    retry_after: float | None = None
    socket_id: str | None = None

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "status": self.status,
            "code": self.code,
            "retry": RETRY_HELPS[self.code],
            "retry_after": self.retry_after,
            "reason": self.reason,
            "age": round(now - self.at, 3),
        }


class RefusalLog:
    """The last few refusals per client address, for ``keep_for`` seconds; bounded."""

    def __init__(self, keep_for: float = 60.0, max_addresses: int = 10_000) -> None:
        self.keep_for = keep_for
        self.max_addresses = max_addresses
        self._by_address: OrderedDict[str, deque[Refusal]] = OrderedDict()

    def record(
        self,
        address: str,
        code: str,
        status: int,
        reason: str,
        headers: dict[str, str] | None = None,
        socket_id: str | None = None,
    ) -> None:
        if code not in RETRY_HELPS:
            raise RuntimeError(f"unknown refusal code {code!r}; one of {sorted(RETRY_HELPS)}")
        if code in _FROM_REQUEST:
            return
        retry_after = None
        if headers and "Retry-After" in headers:
            retry_after = float(headers["Retry-After"])
        refusal = Refusal(code, status, reason, time.monotonic(), retry_after, socket_id)
        entries = self._by_address.pop(address, None)
        if entries is None:
            entries = deque(maxlen=4)
        entries.append(refusal)
        self._by_address[address] = entries  # the most recently refused address last
        while len(self._by_address) > self.max_addresses:
            self._by_address.popitem(last=False)

    def latest(self, address: str, socket_id: str | None) -> Refusal | None:
        """The newest recent refusal of ``address`` that is about the address alone or
        about ``socket_id``."""
        entries = self._by_address.get(address)
        if not entries:
            return None
        since = time.monotonic() - self.keep_for
        for refusal in reversed(entries):
            if refusal.at < since:
                return None
            if refusal.socket_id is None or refusal.socket_id == socket_id:
                return refusal
        return None


def refusal_route(socket_class: type[Socket]) -> Route:
    """``GET /socket/refusal`` for sockets of ``socket_class``: see the module docstring."""
    from switchboard.server.transport import _identify, origin_allowed

    async def refusal(request: Request) -> Response:
        node = request.app.state.node
        settings = node.settings
        now = time.monotonic()
        found: Refusal | None = None
        origin = request.headers.get("origin")
        socket_id = None
        if not origin_allowed(origin, settings.allowed_origins):
            found = Refusal("origin", 403, f"origin {origin!r} not allowed", now)
        elif "vsn" in request.query_params:
            try:
                negotiate_version(request.query_params["vsn"])
            except UnsupportedVersion as exc:
                found = Refusal("version", 403, str(exc), now)
        address = client_ip(request.scope, settings.trusted_proxies)
        if found is None:
            handler = socket_class()
            handler._secret = settings.secret
            scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
            info = ConnectInfo(
                address=address,
                headers=dict(request.headers),
                origin=origin,
                auth_token=bearer.strip() if scheme.lower() == "bearer" else None,
            )
            socket_id, why = await _identify(handler, dict(request.query_params), info)
            if why:
                found = Refusal("unauthorized", 403, why, now)
        if found is None:
            found = node.refusals.latest(address, socket_id)
        body = None if found is None else found.to_json(now)
        return JSONResponse({"refusal": body}, headers={"Cache-Control": "no-store"})

    return Route("/socket/refusal", refusal)

"""The WebSocket transport at ``/socket/websocket``: the only module that touches
Starlette's ``WebSocket``.

Before the upgrade it checks the origin, the protocol version and the token (refusals are
HTTP 403 with an empty body, as phoenix.js expects). After it, it feeds frames to a
:class:`~server.socket.Socket` and gives the socket two capabilities: write a frame, and
close the connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from starlette.responses import Response
from starlette.websockets import WebSocket

from server import eager
from server.auth import token_from_subprotocols, verify_token
from server.client_ip import client_ip
from server.codec import Frame
from server.errors import AuthenticationError, UnsupportedVersion
from server.protocol import negotiate_version

if TYPE_CHECKING:
    from server.endpoint import Endpoint

logger = logging.getLogger("switchboard.transport")


def origin_allowed(origin: str | None, allowed: tuple[str, ...]) -> bool:
    """No allow-list allows any origin; a client that sends no Origin (not a browser) passes."""
    if not allowed or origin is None:
        return True
    return origin.rstrip("/") in allowed or "*" in allowed


class _Connection:
    """What a socket may do to its WebSocket: write frames and close it."""

    __slots__ = ("websocket", "task", "closing")

    def __init__(self, websocket: WebSocket, task: asyncio.Task[Any] | None) -> None:
        self.websocket = websocket
        self.task = task
        self.closing = False

    def send(self, frame: Frame) -> Coroutine[Any, Any, None]:
        if type(frame) is str:
            return self.websocket.send({"type": "websocket.send", "text": frame})
        return self.websocket.send({"type": "websocket.send", "bytes": frame})

    def close(self, code: int, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        try:
            rest = eager.start(self.websocket.close(code, reason))
        except Exception:  # already closed by the client: nothing to send
            return
        if rest is not None:
            # The client is not reading (that is why we drop it): don't wait to send the
            # close frame; stop the receive loop and let the server close the transport.
            rest.close()
            if self.task is not None:
                self.task.cancel()


async def websocket_endpoint(websocket: WebSocket) -> None:
    endpoint: Endpoint = websocket.app.state.endpoint
    settings = endpoint.settings
    ip = client_ip(websocket.scope, settings.trusted_proxies)
    if not endpoint.accepting:
        await _refuse(websocket, ip, 503, "node is draining", {"Retry-After": "1"})
        return
    refusal = _refusal(websocket, endpoint)
    if refusal is not None:
        await _refuse(websocket, ip, 403, refusal)
        return
    admission = await endpoint.admit_ip(ip)
    if not admission.admitted:
        await _refuse(websocket, ip, admission.status, admission.reason, admission.headers)
        return
    token = websocket.query_params.get("token") or token_from_subprotocols(
        list(websocket.scope.get("subprotocols", ()))
    )
    try:
        identity = verify_token(settings.secret, token)
    except AuthenticationError as exc:
        await _refuse(websocket, ip, 403, str(exc))
        return
    admission = await endpoint.admit_user(identity.user_id)
    if not admission.admitted:
        await _refuse(websocket, ip, admission.status, admission.reason, admission.headers)
        return
    offered = websocket.scope.get("subprotocols") or ()
    try:
        await websocket.accept(subprotocol="phoenix" if "phoenix" in offered else None)
    except BaseException:
        endpoint.release(admission.serial)
        raise

    connection = _Connection(websocket, asyncio.current_task())
    socket = endpoint.open_socket(
        admission.serial, identity.user_id, connection.send, connection.close
    )
    receive = websocket.receive
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.receive":
                text = message.get("text")
                socket.receive(text if text is not None else message["bytes"])
            else:  # websocket.disconnect
                break
    except asyncio.CancelledError:
        if not connection.closing:
            raise
    finally:
        connection.closing = True
        socket.connection_lost()


def _refusal(websocket: WebSocket, endpoint: Endpoint) -> str | None:
    if not origin_allowed(websocket.headers.get("origin"), endpoint.settings.allowed_origins):
        return f"origin {websocket.headers.get('origin')!r} not allowed"
    try:
        negotiate_version(websocket.query_params.get("vsn"))
    except UnsupportedVersion as exc:
        return str(exc)
    return None


async def _refuse(
    websocket: WebSocket, ip: str, status: int, reason: str, headers: dict[str, str] | None = None
) -> None:
    """Refuse before the upgrade. 403 has an empty body, as phoenix.js expects."""
    logger.info("refused socket from %s with %d: %s", ip, status, reason)
    if status == 403:
        await websocket.close(code=1008)  # before accept, the server answers HTTP 403
    else:
        await websocket.send_denial_response(Response(status_code=status, headers=headers))

"""The WebSocket transport at ``/socket/websocket``: the only module that touches
Starlette's ``WebSocket``.

Before the upgrade it checks the origin, the protocol version and the token (refusals are
HTTP 403 with an empty body, as phoenix.js expects). After it, it feeds frames to a
:class:`~server.socket.Socket` and gives the socket two capabilities: write a frame, and
close the connection.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from starlette.responses import Response
from starlette.websockets import WebSocket

from switchboard.server import direct, eager, logs
from switchboard.server.auth import token_from_subprotocols
from switchboard.server.client_ip import client_ip
from switchboard.server.codec import Frame
from switchboard.server.direct import PROTOCOL_KEY, TRANSPORT_KEY, capture_server_protocol
from switchboard.server.errors import UnsupportedVersion
from switchboard.server.protocol import negotiate_version
from switchboard.server.socket import ConnectInfo, Socket
from switchboard.server.socket_server import SocketServer

if TYPE_CHECKING:
    from switchboard.channels.router import Router
    from switchboard.server.node import Node

logger = logging.getLogger("switchboard.transport")


def origin_allowed(origin: str | None, allowed: tuple[str, ...]) -> bool:
    """No allow-list allows any origin; a client that sends no Origin (not a browser) passes."""
    if not allowed or origin is None:
        return True
    return origin.rstrip("/") in allowed or "*" in allowed


class _Connection:
    """What a socket may do to its WebSocket: write frames, close it gracefully, reset it.

    A graceful close waits for the outbox's last writes, then sends the close frame; if
    that, and the client reading it all, takes longer than ``close_timeout``, the
    connection is reset: a client that does not read must not hold it (and its buffers)
    for ever.
    """

    __slots__ = ("websocket", "task", "closing", "try_write", "close_timeout", "_closer")

    def __init__(
        self,
        websocket: WebSocket,
        task: asyncio.Task[Any] | None,
        close_timeout: float,
        try_write: Callable[[Frame], bool] | None = None,
    ) -> None:
        self.websocket = websocket
        self.task = task
        self.closing = False
        self.try_write = try_write
        self.close_timeout = close_timeout
        self._closer: asyncio.Task[None] | None = None

    def send(self, frame: Frame) -> Coroutine[Any, Any, None]:
        if type(frame) is str:
            return self.websocket.send({"type": "websocket.send", "text": frame})
        return self.websocket.send({"type": "websocket.send", "bytes": frame})

    def close(
        self, code: int, reason: str, pending: asyncio.Task[None] | None
    ) -> asyncio.Task[None] | None:
        if self.closing:
            return None
        self.closing = True
        self._closer = eager.start_task(self._close(code, reason, pending))
        asyncio.get_running_loop().call_later(self.close_timeout, self._expire)
        return self._closer

    async def _close(self, code: int, reason: str, pending: asyncio.Task[None] | None) -> None:
        try:
            if pending is not None:
                await asyncio.wait([pending])
            await self.websocket.close(code, reason)
        except Exception:  # the client is gone already: nothing to send
            pass

    def _unsent(self) -> bool:
        """Whether bytes we wrote still wait, in the transport or the kernel, for the client
        to take them."""
        transport = self._live_transport()
        if transport is None:
            return False
        return transport.get_write_buffer_size() > 0 or direct.kernel_unsent(transport) > 0

    def _live_transport(self) -> Any:
        """The server's transport while its connection is up (its fd is ours only then)."""
        scope = self.websocket.scope
        if getattr(scope.get(PROTOCOL_KEY), "disconnected", False):
            return None
        return scope.get(TRANSPORT_KEY)

    def _expire(self) -> None:
        """The close timeout after a graceful close began: reset a client still not reading."""
        if (self._closer is not None and not self._closer.done()) or self._unsent():
            logger.info("socket did not take its close frame in %.1f s; reset", self.close_timeout)
            self.reset()

    def reset(self) -> None:
        self.closing = True
        if self._closer is not None:
            self._closer.cancel()
        if TRANSPORT_KEY in self.websocket.scope:
            transport = self._live_transport()
            if transport is not None:
                direct.reset(transport)
        elif self.task is not None:
            self.task.cancel()  # no transport to abort: at least stop the receive loop


SocketEndpoint = Callable[[WebSocket], Coroutine[Any, Any, None]]


def serve_scope(
    endpoint: SocketEndpoint, scope: Any, receive: Any, send: Any
) -> Coroutine[Any, Any, None]:
    """Serve a WebSocket ASGI ``scope`` with ``endpoint``, for an app that routes its sockets
    ahead of its middleware."""
    return endpoint(WebSocket(scope, receive, send))


def socket_endpoint(node: Node, socket_class: type[Socket], router: Router) -> SocketEndpoint:
    """The WebSocket endpoint serving ``socket_class`` (its channels routed by ``router``).

    A plain function returning :func:`serve_socket`'s coroutine: each coroutine layer would
    stay suspended, and in memory, for the socket's whole life."""

    def endpoint(websocket: WebSocket) -> Coroutine[Any, Any, None]:
        capture_server_protocol(websocket.scope, websocket._receive, websocket._send)
        return serve_socket(node, socket_class, router, websocket)

    return endpoint


async def serve_socket(
    node: Node, socket_class: type[Socket], router: Router, websocket: WebSocket
) -> None:
    """Admit the client (origin, version, connect rate, ``Socket.connect``, per-id limit),
    upgrade, then feed its frames to a :class:`SocketServer` until it goes."""
    settings = node.settings
    scope = websocket.scope
    ip = client_ip(scope, settings.trusted_proxies)
    # Read from the scope, not websocket.headers and .query_params: those keep decoded
    # copies on the WebSocket for the socket's life.
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
    params = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
    if not node.accepting:
        await _refuse(
            node, websocket, ip, "draining", 503, "node is draining", {"Retry-After": "1"}
        )
        return
    refusal = _refusal(headers.get("origin"), params.get("vsn"), settings.allowed_origins)
    if refusal is not None:
        await _refuse(node, websocket, ip, *refusal)
        return
    admission = node.admission.admit_address(ip)
    if not admission.admitted:
        await _refuse(
            node,
            websocket,
            ip,
            "rate_limited",
            admission.status,
            admission.reason,
            admission.headers,
        )
        return
    handler = socket_class()
    handler._secret = settings.secret
    subprotocols = list(scope.get("subprotocols") or ())
    info = ConnectInfo(
        address=ip,
        headers=headers,
        origin=headers.get("origin"),
        auth_token=token_from_subprotocols(subprotocols),
    )
    socket_id, why = await _identify(handler, params, info)
    if why:
        await _refuse(node, websocket, ip, "unauthorized", 403, why)
        return
    admission = node.admission.admit_socket(socket_id)
    if not admission.admitted:
        await _refuse(
            node,
            websocket,
            ip,
            "socket_limit",
            admission.status,
            admission.reason,
            admission.headers,
            socket_id,
        )
        return
    try:
        await websocket.accept(subprotocol="phoenix" if "phoenix" in subprotocols else None)
    except BaseException:
        node.admission.release(admission.serial)
        raise

    protocol = scope.get(PROTOCOL_KEY)
    direct.release_handshake(protocol)
    scope["headers"] = []  # read above; the server and Starlette would keep them meanwhile
    logs.socket_id.set(socket_id)  # this task's log lines carry it
    if settings.direct_io:
        write_refusal = direct.refusal(protocol)
        read_refusal = direct.refusal(protocol, reading=True)
    else:
        write_refusal = read_refusal = "SWITCHBOARD_DIRECT_IO is off"
    _announce(write_refusal, read_refusal)
    writer = direct.DirectWriter(protocol) if write_refusal is None else None
    connection = _Connection(
        websocket,
        asyncio.current_task(),
        settings.close_timeout,
        writer.try_write if writer is not None else None,
    )
    del headers, params, info  # not kept for the socket's life
    socket = SocketServer(
        node, router, admission.serial, handler, socket_id, connection, address=ip
    )
    try:
        if read_refusal is None:
            reader = direct.DirectReader(protocol, socket.receive, socket.ping_received)
            reader.install()
            await reader.ended
            if reader.error is not None:
                raise reader.error
        else:
            await _receive_through_asgi(websocket, socket)
    except asyncio.CancelledError:
        if not connection.closing:
            raise
    finally:
        connection.closing = True
        socket.connection_lost()


async def _receive_through_asgi(websocket: WebSocket, socket: SocketServer) -> None:
    receive = websocket.receive
    handled = 0
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":  # websocket.disconnect
            return
        text = message.get("text")
        socket.receive(text if text is not None else message["bytes"])
        handled += 1
        if handled % direct.BATCH == 0:
            # uvicorn hands over a whole read's frames without our receive() ever waiting:
            # let the other sockets in between batches.
            await asyncio.sleep(0)


_announced: list[bool] = []


def _announce(write_refusal: str | None, read_refusal: str | None) -> None:
    """Say once, when the first socket opens, which paths its frames take."""
    if _announced:
        return
    _announced.append(True)
    logger.info(
        "frames are written %s and read %s",
        f"through ASGI send ({write_refusal})" if write_refusal else "straight to the transport",
        f"through ASGI receive ({read_refusal})" if read_refusal else "straight from uvicorn",
        extra={
            "event": "io_path",
            "write": "asgi" if write_refusal else "direct",
            "read": "asgi" if read_refusal else "direct",
        },
    )


async def _identify(
    handler: Socket, params: dict[str, str], info: ConnectInfo
) -> tuple[str | None, str]:
    """Run the app's ``connect`` and ``id``: (socket id, "") if accepted, else (None, why).

    An exception in either refuses the socket and is logged with its traceback: a bug in
    the app's socket costs that one client a 403, never the server a 500.
    """
    name = type(handler).__qualname__
    try:
        accepted = handler.connect(params, info)
        if inspect.isawaitable(accepted):
            accepted = await accepted
    except Exception:
        logger.exception("%s.connect raised; refusing the socket", name)
        return None, f"{name}.connect raised"
    if accepted is not True:
        if accepted is not False:
            logger.error("%s.connect returned %r; expected True or False", name, accepted)
        return None, f"{name}.connect refused"
    try:
        socket_id = handler.id()
        if socket_id is not None and not isinstance(socket_id, str):
            raise TypeError(f"id() returned {socket_id!r}; expected a string or None")
    except Exception:
        logger.exception("%s.id raised; refusing the socket", name)
        return None, f"{name}.id raised"
    return socket_id, ""


def _refusal(
    origin: str | None, vsn: str | None, allowed_origins: tuple[str, ...]
) -> tuple[str, int, str] | None:
    if not origin_allowed(origin, allowed_origins):
        return "origin", 403, f"origin {origin!r} not allowed"
    try:
        negotiate_version(vsn)
    except UnsupportedVersion as exc:
        return "version", 403, str(exc)
    return None


async def _refuse(
    node: Node,
    websocket: WebSocket,
    ip: str,
    code: str,
    status: int,
    reason: str,
    headers: dict[str, str] | None = None,
    socket_id: str | None = None,
) -> None:
    """Refuse before the upgrade. 403 has an empty body, as phoenix.js expects; why is kept
    for ``GET /socket/refusal`` (:mod:`switchboard.server.refusals`)."""
    node.refusals.record(ip, code, status, reason, headers, socket_id)
    logger.info("refused socket from %s with %d: %s", ip, status, reason)
    if status == 403:
        await websocket.close(code=1008)  # before accept, the server answers HTTP 403
    else:
        await websocket.send_denial_response(Response(status_code=status, headers=headers))

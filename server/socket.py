"""``Socket``: what a client connection is in your app (Phoenix's ``UserSocket``).

Subclass it to say which channels a client may join, how it authenticates, and what
identifies it::

    class ChatSocket(Socket):
        channels = {"lobby:*": LobbyChannel}

        async def connect(self, params, info):
            if not params.get("name"):
                return False                      # refused: HTTP 403
            self.assigns["name"] = params["name"]
            return True

        def id(self):
            return f"chat:{self.assigns['name']}"

``connect`` runs once per connection, before the WebSocket upgrade, with the query
parameters (phoenix.js ``params``) and a :class:`ConnectInfo`; plain or async. True
accepts; False refuses with 403; an exception refuses too, and is logged. What it puts in
``self.assigns`` every channel of the socket sees as ``self.socket.assigns``.

``id`` names the socket (or returns None for an anonymous one). Sockets with the same id
count toward the per-user socket limit together, and a ``disconnect`` broadcast on the id
(``Channel.broadcast_to(id, "disconnect", {})``, or an emitter's ``disconnect(id)``)
closes every one of them, on every node, with 1001; phoenix.js then reconnects with
whatever credentials it has by then.

The default ``connect`` checks a signed token (:func:`switchboard.issue_token`) from
``params["token"]`` or phoenix.js's ``authToken``, and puts its user in
``assigns["user_id"]``; the default ``id`` is ``users_socket:<user_id>``.

Security note: the origin allow-list, connect rate per client address and the per-user
socket limit apply to every socket class before and after ``connect``; ``connect`` itself
decides only who the client is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from switchboard.server.auth import Identity, verify_token
from switchboard.server.errors import AuthenticationError

if TYPE_CHECKING:
    from switchboard.channels.channel import Channel


@dataclass(frozen=True, slots=True)
class ConnectInfo:
    """What ``connect`` knows of the client beyond its parameters."""

    #: The client's address: the TCP peer, or what a trusted proxy says it is.
    address: str
    #: The upgrade request's headers, names in lower case.
    headers: Mapping[str, str]
    #: The ``Origin`` header (browsers send it; other clients may not).
    origin: str | None
    #: The token phoenix.js sends with its ``authToken`` option (a subprotocol), if any.
    auth_token: str | None


class Socket:
    """Base class of a connection's behaviour; one instance per client connection."""

    #: Topic patterns (``"room:lobby"`` or ``"room:*"``) and the channel class each runs.
    channels: ClassVar[Mapping[str, type[Channel]]] = {}

    def __init__(self) -> None:
        #: Per-connection state for the channels (``self.socket.assigns`` there).
        self.assigns: dict[str, Any] = {}
        self._secret = ""

    def connect(self, params: Mapping[str, str], info: ConnectInfo) -> Any:
        """Accept (True) or refuse (False) the connection; may be a coroutine."""
        identity = self.verify_token(params.get("token") or info.auth_token)
        if identity is None:
            return False
        self.assigns["user_id"] = identity.user_id
        if identity.admin:
            self.assigns["admin"] = True
        return True

    def id(self) -> str | None:
        """The socket's id, or None; see the module docstring."""
        user_id = self.assigns.get("user_id")
        return f"users_socket:{user_id}" if user_id is not None else None

    def verify_token(self, token: str | None) -> Identity | None:
        """The identity in a token signed with this node's secret, or None if it is
        missing, forged or expired (Phoenix's ``Phoenix.Token.verify``)."""
        try:
            return verify_token(self._secret, token)
        except AuthenticationError:
            return None

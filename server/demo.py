"""The demo app a bare ``switchboard serve`` runs: its socket accepts the node's signed
tokens (the default :class:`~switchboard.server.socket.Socket`), and routes the demo
``room:*`` channel and the always-refusing ``secret:*``."""

from __future__ import annotations

from switchboard.channels.room import RoomChannel, SecretChannel
from switchboard.server.socket import Socket


class DemoSocket(Socket):
    channels = {"room:*": RoomChannel, "secret:*": SecretChannel}

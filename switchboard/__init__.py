"""Switchboard: Phoenix Channels for Python.

Write a :class:`Socket` (who may connect, which channels it routes) and your
:class:`Channel` classes; run them with ``switchboard serve module:Socket`` or mount an
:class:`Endpoint` in your Starlette or FastAPI app; publish from other processes with an
:class:`Emitter`. Everything a Switchboard app needs is importable from here::

    from switchboard import Channel, Socket, error, ok

The package's subpackages are the project's folders: ``switchboard.channels``,
``switchboard.server``, ``switchboard.actors``, ``switchboard.presence``.
"""

from switchboard.channels.channel import NOREPLY, Channel, Reply, SocketInfo, Stop, error, ok, reply
from switchboard.server.auth import Identity, issue_token, verify_token
from switchboard.server.config import Settings
from switchboard.server.emitter import AsyncEmitter, Emitter
from switchboard.server.endpoint import Endpoint
from switchboard.server.errors import AuthenticationError
from switchboard.server.socket import ConnectInfo, Socket

__all__ = [
    "NOREPLY",
    "AsyncEmitter",
    "AuthenticationError",
    "Channel",
    "ConnectInfo",
    "Emitter",
    "Endpoint",
    "Identity",
    "Reply",
    "Settings",
    "Socket",
    "SocketInfo",
    "Stop",
    "error",
    "issue_token",
    "ok",
    "reply",
    "verify_token",
]

"""Channels: the ``Channel`` base class, the topic router, and the demo channels."""

from channels.channel import NOREPLY, Channel, Reply, SocketInfo, Stop, error, ok, reply
from channels.router import Router

__all__ = [
    "NOREPLY",
    "Channel",
    "Reply",
    "Router",
    "SocketInfo",
    "Stop",
    "default_router",
    "error",
    "ok",
    "reply",
]


def default_router() -> Router:
    """The routes a plain ``switchboard serve`` offers."""
    from channels.room import RoomChannel, SecretChannel

    return Router().channel("room:*", RoomChannel).channel("secret:*", SecretChannel)

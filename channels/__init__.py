"""Channels: the ``Channel`` base class, the topic router, and the demo channels."""

from switchboard.channels.channel import NOREPLY, Channel, Reply, SocketInfo, Stop, error, ok, reply
from switchboard.channels.router import Router

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


def default_router(profile: str = "dev") -> Router:
    """The routes a plain ``switchboard serve`` offers (plus ``test:*`` in the test profile)."""
    from switchboard.channels.dashboard import DashboardChannel
    from switchboard.channels.room import RoomChannel, SecretChannel

    router = Router().channel("room:*", RoomChannel).channel("secret:*", SecretChannel)
    router.channel("admin:dashboard", DashboardChannel)
    if profile == "test":
        from switchboard.channels.testing import TestChannel

        router.channel("test:*", TestChannel)
    return router

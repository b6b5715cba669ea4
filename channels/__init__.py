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


def default_router(profile: str = "dev") -> Router:
    """The routes a plain ``switchboard serve`` offers (plus ``test:*`` in the test profile)."""
    from channels.dashboard import DashboardChannel
    from channels.room import RoomChannel, SecretChannel

    router = Router().channel("room:*", RoomChannel).channel("secret:*", SecretChannel)
    router.channel("admin:dashboard", DashboardChannel)
    if profile == "test":
        from channels.testing import TestChannel

        router.channel("test:*", TestChannel)
    return router

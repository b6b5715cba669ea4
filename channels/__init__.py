"""Channels: the ``Channel`` base class, the topic router, and the built-in channels
(the demo ``room:*``, the dashboard's ``admin:dashboard``, the test suites' ``test:*``)."""

from switchboard.channels.channel import (
    NOREPLY,
    Channel,
    ChannelHost,
    Payload,
    Reply,
    SocketInfo,
    Stop,
    error,
    ok,
    reply,
)
from switchboard.channels.router import Router

__all__ = [
    "NOREPLY",
    "Channel",
    "ChannelHost",
    "Payload",
    "Reply",
    "Router",
    "SocketInfo",
    "Stop",
    "error",
    "ok",
    "reply",
]

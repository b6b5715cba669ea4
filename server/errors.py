"""Exceptions raised by Switchboard.

Misuse by a programmer raises ``RuntimeError`` (or ``TypeError``/``ValueError``) with a
message that says what was wrong. Behaviour of the other side raises one of these::

    SwitchboardError
    ├── ProtocolError            a client sent something we cannot accept (code, reason)
    │   ├── MalformedFrame       not a V2 frame: bad JSON, wrong shape, bad binary header
    │   ├── FrameTooLarge        over the configured maximum frame size
    │   └── UnsupportedVersion   a ``vsn`` other than 2.x
    ├── AuthenticationError      missing, forged or expired token
    └── BackendError             the pub/sub backend is unreachable
"""

from __future__ import annotations


class SwitchboardError(Exception):
    """Root of every error Switchboard raises on purpose."""


class ProtocolError(SwitchboardError):
    """The client broke the protocol; ``code`` and ``reason`` go into the close frame."""

    code = 1008  # policy violation: the client may reconnect with better input
    reason = "protocol error"

    def __init__(self, reason: str | None = None) -> None:
        if reason is not None:
            self.reason = reason
        super().__init__(self.reason)


class MalformedFrame(ProtocolError):
    reason = "malformed frame"


class FrameTooLarge(ProtocolError):
    code = 1009  # message too big
    reason = "frame too large"


class UnsupportedVersion(ProtocolError):
    reason = "unsupported protocol version"


class AuthenticationError(SwitchboardError):
    """A token could not be verified. The message is safe to log; it never holds the secret."""


class BackendError(SwitchboardError):
    """The pub/sub backend failed; local delivery carries on."""

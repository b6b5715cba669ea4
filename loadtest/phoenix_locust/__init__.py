"""Helpers for the Switchboard locust load test (``loadtest/locustfile.py``)."""

from .client import ConnectError, ConnectionLost, PhoenixSocket, ReplyError, ReplyTimeout

__all__ = ["ConnectError", "ConnectionLost", "PhoenixSocket", "ReplyError", "ReplyTimeout"]

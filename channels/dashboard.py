"""``admin:dashboard``: the live dashboard's channel. Only admin sockets may join (their
token comes from ``POST /api/admin/socket-token`` with the admin bearer token); the node
broadcasts ``stats`` (see :mod:`switchboard.server.stats`) to it every second."""

from __future__ import annotations

from typing import Any

from switchboard.channels.channel import Channel, error, ok


class DashboardChannel(Channel):
    def join(self, payload: Any) -> Any:
        if not self.socket.assigns.get("admin"):
            return error({"reason": "unauthorized"})
        stats = self.endpoint.stats
        return ok(stats.view() if stats is not None else {"nodes": [], "topics": []})

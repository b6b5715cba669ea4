"""``admin:dashboard``: the live dashboard's channel, on the admin socket
(:mod:`switchboard.server.admin`) only. Each node broadcasts ``stats`` (see
:mod:`switchboard.server.stats`) to it every second; the join reply carries the latest view,
which the node keeps in its cache."""

from __future__ import annotations

from typing import Any

from switchboard.channels.channel import Channel, error, ok

#: The cache key under which each node keeps its latest cluster view.
STATS_VIEW_KEY = "switchboard:stats:view"
EMPTY_VIEW: dict[str, Any] = {"nodes": [], "topics": []}


class DashboardChannel(Channel):
    async def join(self, payload: Any) -> Any:
        if not self.socket.assigns.get("admin"):
            return error({"reason": "unauthorized"})
        view = await self.cache_get(STATS_VIEW_KEY)
        return ok(view if view is not None else EMPTY_VIEW)

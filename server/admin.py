"""The admin socket at ``/admin/socket/websocket``, beside every app's own socket: only
admin tokens (``POST /api/admin/socket-token``) connect, and it routes the dashboard."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from switchboard.channels.dashboard import DashboardChannel
from switchboard.server.socket import ConnectInfo, Socket

ADMIN_SOCKET_PATH = "/admin/socket/websocket"


class AdminSocket(Socket):
    channels = {"admin:dashboard": DashboardChannel}

    def connect(self, params: Mapping[str, str], info: ConnectInfo) -> Any:
        identity = self.verify_token(params.get("token") or info.auth_token)
        if identity is None or not identity.admin:
            return False
        self.assigns.update(user_id=identity.user_id, admin=True)
        return True

    def id(self) -> str | None:
        return f"admin_socket:{self.assigns['user_id']}"

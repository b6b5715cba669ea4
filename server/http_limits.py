"""Rate limits for HTTP API calls per client IP (``/api/``, ``/dev/``, ``/socket/``): 429
with a JSON body."""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from switchboard.actors.bridge import ask
from switchboard.actors.errors import ActorError
from switchboard.actors.limiter import Acquire
from switchboard.server.client_ip import client_ip

LIMITED_PREFIXES = ("/api/", "/dev/", "/socket/")  # HTTP only: sockets have their own


class HttpRateLimit:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(LIMITED_PREFIXES):
            await self.app(scope, receive, send)
            return
        node = scope["app"].state.node
        settings = node.settings
        if settings.limits and node.actors is not None:
            ip = client_ip(scope, settings.trusted_proxies)
            try:
                decision = await ask(
                    node.actors.limiter, Acquire("http", ip), timeout=settings.actor_timeout
                )
            except ActorError as exc:
                response = JSONResponse(
                    {"error": "unavailable", "detail": str(exc)}, status_code=503
                )
                await response(scope, receive, send)
                return
            if not decision.allowed:
                node.counters.count_rate_limited("http", ip)
                retry = max(1, round(decision.retry_after))
                body = {"error": "rate_limited", "retry_after": retry}
                response = JSONResponse(body, status_code=429, headers={"Retry-After": str(retry)})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

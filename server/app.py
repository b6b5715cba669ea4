"""The application factory: Starlette routes and the lifespan that starts the node."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from switchboard.server.auth import issue_token
from switchboard.server.config import Settings
from switchboard.server.demo import DemoSocket
from switchboard.server.http_limits import HttpRateLimit
from switchboard.server.logs import RequestId
from switchboard.server.metrics import NodeMetrics
from switchboard.server.refusals import refusal_route
from switchboard.server.resources import STATIC_DIR, phoenix_js_dir
from switchboard.server.routes import api, console, health, testing
from switchboard.server.security import SecurityHeaders
from switchboard.server.socket import Socket
from switchboard.server.transport import SocketEndpoint, serve_scope

if TYPE_CHECKING:
    from switchboard.server.endpoint import Endpoint

logger = logging.getLogger("switchboard.app")
lifecycle = logging.getLogger("switchboard.lifecycle")


class SwitchboardApp(Starlette):
    """Starlette with the request id and security headers outside its error middleware, so
    that a 500 carries them too; and the sockets in front of it all.

    A socket goes straight to its endpoint: every layer in between (Starlette, its error
    middleware, the request id, the security headers: none applies to a WebSocket) would
    keep a suspended frame for the socket's whole life, some KiB per connection.
    """

    hsts = False
    sockets: dict[str, SocketEndpoint] = {}

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(RequestId(super().build_middleware_stack()), hsts=self.hsts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            endpoint = self.sockets.get(scope["path"])
            if endpoint is not None:
                await serve_scope(endpoint, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None, socket: type[Socket] | None = None) -> Starlette:
    """The standalone app serving ``socket`` (default: the demo app's socket)."""
    from switchboard.server.endpoint import Endpoint

    return Endpoint(socket or DemoSocket, settings=settings).app


def build_app(endpoint: Endpoint) -> Starlette:
    settings, node = endpoint.settings, endpoint.node

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with endpoint.lifespan(app):
            lifecycle.info(
                "switchboard node %s listening on http://%s:%d (profile %s, pub/sub %s)",
                node.id,
                settings.host,
                settings.port,
                settings.profile,
                node.pubsub.backend_name,
                extra={"event": "listening", "port": settings.port},
            )
            yield

    metrics = NodeMetrics(node)
    routes = [
        Route("/metrics", metrics.endpoint),
        *endpoint.routes,
        refusal_route(endpoint.socket_class),
        Route("/dashboard", _dashboard),
        *health.routes,
        *api.routes,
        *console.routes,
        Mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static"),
        Mount(
            "/vendor/phoenix",
            StaticFiles(directory=phoenix_js_dir(), check_dir=False),
            name="phoenix",
        ),
    ]
    if endpoint.socket_class is DemoSocket:
        routes.append(Route("/", _index))
    if settings.dev:
        routes.append(Route("/dev/token", _dev_token))
    if settings.profile == "test":
        routes.extend(testing.routes)
    middleware = [Middleware(HttpRateLimit)]
    app = SwitchboardApp(
        routes=routes,
        lifespan=lifespan,
        middleware=middleware,
        exception_handlers={HTTPException: _http_error},
    )
    app.hsts = settings.profile == "prod"
    app.sockets = endpoint.sockets
    app.state.node = node
    app.state.settings = settings
    app.state.metrics = metrics
    return app


async def _http_error(request: Request, exc: Exception) -> Response:
    """Every HTTP error is JSON ``{"error": ...}``, unknown paths and methods (404, 405)
    included, with the headers it came with (``Allow`` on a 405)."""
    assert isinstance(exc, HTTPException)
    return JSONResponse(
        {"error": exc.detail.lower(), "path": request.url.path},
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _index(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html")


async def _dashboard(request: Request) -> Response:
    """The live dashboard page; its data needs the admin token (asked for on the page)."""
    return FileResponse(STATIC_DIR / "dashboard.html")


async def _dev_token(request: Request) -> Response:
    """Dev profile only: a token for any name, so the demo page needs no login."""
    user = request.query_params.get("user", "").strip()
    if not user or len(user) > 64:
        return JSONResponse({"error": "give ?user=NAME (1 to 64 characters)"}, status_code=400)
    settings: Settings = request.app.state.settings
    return JSONResponse({"token": issue_token(settings.secret, user), "user": user})

"""``/health/live``: the process serves. ``/health/ready``: it should get traffic."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from switchboard.server.endpoint import Endpoint


async def live(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    endpoint: Endpoint = request.app.state.endpoint
    reasons = []
    if not endpoint.accepting:
        reasons.append("draining")
    if endpoint.actors is not None and not endpoint.actors.healthy:
        reasons.append(f"actors: {endpoint.actors.status()['gave_up'] or 'not running'}")
    status = endpoint.pubsub.status
    if not status.connected:
        reasons.append(f"pub/sub {endpoint.pubsub.backend.name}: {status.reason or 'disconnected'}")
    if reasons:
        return JSONResponse(
            {"status": "unavailable", "reason": "; ".join(reasons)}, status_code=503
        )
    return JSONResponse({"status": "ok", "node": endpoint.node})


routes = [Route("/health/live", live), Route("/health/ready", ready)]

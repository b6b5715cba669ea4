"""``/health/live``: the process serves. ``/health/ready``: it should get traffic."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from switchboard.server.node import Node


async def live(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    node: Node = request.app.state.node
    reasons = []
    if not node.accepting:
        reasons.append("draining")
    if node.actors is not None and not node.actors.healthy:
        reasons.append(f"actors: {node.actors.status()['gave_up'] or 'not running'}")
    status = node.pubsub.status
    if not status.connected:
        reasons.append(f"pub/sub {node.pubsub.backend_name}: {status.reason or 'disconnected'}")
    if reasons:
        return JSONResponse(
            {"status": "unavailable", "reason": "; ".join(reasons)}, status_code=503
        )
    return JSONResponse({"status": "ok", "node": node.id})


routes = [Route("/health/live", live), Route("/health/ready", ready)]

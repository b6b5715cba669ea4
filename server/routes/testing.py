"""Test-profile-only hooks: make an actor crash or stall on cue, to test supervision."""

from __future__ import annotations

import dataclasses

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from switchboard.actors.bridge import ask, tell
from switchboard.actors.cache import CacheStats
from switchboard.actors.errors import ActorError, ActorUnavailableError
from switchboard.actors.faults import InjectFault, Stall
from switchboard.server.endpoint import Endpoint


def _target(request: Request) -> object:
    endpoint: Endpoint = request.app.state.endpoint
    name = request.path_params["name"]
    if endpoint.actors is None or name not in ("cache", "limiter", "presence"):
        return None
    return getattr(endpoint.actors, name)


async def fault(request: Request) -> Response:
    target = _target(request)
    if target is None:
        return JSONResponse({"error": "no such actor"}, status_code=404)
    try:
        sent = tell(target, InjectFault("injected by test hook"))  # type: ignore[arg-type]
    except ActorUnavailableError:
        sent = False
    return JSONResponse({"sent": sent}, status_code=200 if sent else 503)


async def stall(request: Request) -> Response:
    target = _target(request)
    if target is None:
        return JSONResponse({"error": "no such actor"}, status_code=404)
    seconds = float(request.query_params.get("seconds", "1"))
    sent = tell(target, Stall(seconds))  # type: ignore[arg-type]
    return JSONResponse({"sent": sent}, status_code=200 if sent else 503)


async def restarts(request: Request) -> Response:
    """Supervision status, and the cache's counters (hits show presence_state reuse)."""
    endpoint: Endpoint = request.app.state.endpoint
    if endpoint.actors is None:
        return JSONResponse({})
    status = endpoint.actors.status()
    try:
        stats = await ask(
            endpoint.actors.cache, CacheStats(), timeout=endpoint.settings.actor_timeout
        )
        status["cache"] = dataclasses.asdict(stats)
    except ActorError as exc:
        status["cache"] = {"error": str(exc)}
    if endpoint.presence is not None:
        try:
            status["presence_state_builds"] = (await endpoint.presence.summary())["state_builds"]
        except ActorError as exc:
            status["presence_state_builds"] = str(exc)
    return JSONResponse(status)


async def runtime(request: Request) -> Response:
    """Counts of asyncio tasks and threads, to show an outage leaks neither."""
    import asyncio
    import threading

    endpoint: Endpoint = request.app.state.endpoint
    tasks = [t.get_coro().__qualname__ for t in asyncio.all_tasks()]  # type: ignore[union-attr]
    return JSONResponse(
        {
            "tasks": len(tasks),
            "task_names": sorted(set(tasks)),
            "threads": threading.active_count(),
            "sockets": len(endpoint.sockets),
            "pubsub": {
                "connected": endpoint.pubsub.status.connected,
                "reason": endpoint.pubsub.status.reason,
            },
            "peers": endpoint.presence.peers() if endpoint.presence else {},
        }
    )


routes = [
    Route("/test/runtime", runtime),
    Route("/test/actors/{name}/fault", fault, methods=["POST"]),
    Route("/test/actors/{name}/stall", stall, methods=["POST"]),
    Route("/test/actors", restarts),
]

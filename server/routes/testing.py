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
from switchboard.server.node import Node


def _target(request: Request) -> object:
    node: Node = request.app.state.node
    name = request.path_params["name"]
    if node.actors is None or name not in ("cache", "limiter", "presence"):
        return None
    return getattr(node.actors, name)


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
    """Supervision status, the cache's counters and how joiners got their presence_state."""
    node: Node = request.app.state.node
    if node.actors is None:
        return JSONResponse({})
    status = node.actors.status()
    try:
        stats = await ask(node.actors.cache, CacheStats(), timeout=node.settings.actor_timeout)
        status["cache"] = dataclasses.asdict(stats)
    except ActorError as exc:
        status["cache"] = {"error": str(exc)}
    if node.presence is not None:
        presence = node.presence
        # Counted on the loop: readable while the presence actor is stalled.
        status["presence_states"] = {
            "shared": presence.states_shared,
            "awaited": presence.states_awaited,
        }
        try:
            status["presence_state_builds"] = (await presence.summary())["state_builds"]
        except ActorError as exc:
            status["presence_state_builds"] = str(exc)
    return JSONResponse(status)


async def runtime(request: Request) -> Response:
    """Counts of asyncio tasks and threads, to show an outage leaks neither."""
    import asyncio
    import threading

    node: Node = request.app.state.node
    tasks = [t.get_coro().__qualname__ for t in asyncio.all_tasks()]  # type: ignore[union-attr]
    return JSONResponse(
        {
            "tasks": len(tasks),
            "task_names": sorted(set(tasks)),
            "threads": threading.active_count(),
            "sockets": len(node.sockets),
            "pubsub": {
                "connected": node.pubsub.status.connected,
                "reason": node.pubsub.status.reason,
            },
            "peers": node.presence.peers() if node.presence else {},
        }
    )


routes = [
    Route("/test/runtime", runtime),
    Route("/test/actors/{name}/fault", fault, methods=["POST"]),
    Route("/test/actors/{name}/stall", stall, methods=["POST"]),
    Route("/test/actors", restarts),
]

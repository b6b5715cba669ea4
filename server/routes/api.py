"""The HTTP API for a backend: presence of a topic (broadcast comes with operations)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from actors.errors import ActorError
from server.endpoint import Endpoint


async def presence_of_topic(request: Request) -> Response:
    endpoint: Endpoint = request.app.state.endpoint
    topic = request.path_params["topic"]
    if endpoint.presence is None:
        return JSONResponse({"error": "presence is off on this node"}, status_code=404)
    try:
        presences = await endpoint.presence.list(topic)
    except ActorError as exc:
        return JSONResponse({"error": f"presence unavailable: {exc}"}, status_code=503)
    return JSONResponse({"topic": topic, "presences": presences})


routes = [Route("/api/presence/{topic:path}", presence_of_topic)]

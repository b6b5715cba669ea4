"""The HTTP API for a backend: broadcast to a topic on the whole cluster, read presence.

Both need ``Authorization: Bearer <SWITCHBOARD_API_KEY>`` and are rate-limited per client
IP (see :mod:`switchboard.server.http_limits`). Errors are JSON ``{"error": ...}`` with a 4xx status
that says what to fix.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from switchboard.actors.bridge import ask
from switchboard.actors.cache import CacheDelete, CacheGet, CacheInvalidatePrefix, CachePut
from switchboard.actors.errors import ActorError
from switchboard.server.auth import issue_token
from switchboard.server.codec import broadcast_problems
from switchboard.server.node import Node
from switchboard.server.pubsub import Unavailable
from switchboard.server.security import bearer_matches


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


def _unauthorized(request: Request, key: str, what: str) -> Response | None:
    if not key:
        return _error(404, f"{what} is disabled on this node (no key configured)")
    if not bearer_matches(request, key):
        return JSONResponse(
            {"error": f"missing or wrong bearer token for {what}"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    return None


async def broadcast(request: Request) -> Response:
    """``POST /api/broadcast`` ``{"topic", "event", "payload"}`` -> 202, on every node.

    503 if the topic keeps history and the broadcast cannot be kept, not even buffered
    (a long pub/sub outage filled the buffer): nothing was sent, send it again later.
    """
    node: Node = request.app.state.node
    refusal = _unauthorized(request, node.settings.api_key, "the broadcast API")
    if refusal is not None:
        return refusal
    parsed = parse_broadcast(await request.body(), node.settings.max_frame_size)
    if isinstance(parsed, Response):
        return parsed
    topic, event, payload = parsed
    try:
        node.pubsub.broadcast(topic, event, payload)
    except Unavailable as exc:  # a history topic that cannot even buffer it: try again later
        return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "1"})
    return JSONResponse({"ok": True, "topic": topic, "event": event}, status_code=202)


def parse_broadcast(body: bytes, max_size: int) -> tuple[str, str, dict[str, Any]] | Response:
    """``{"topic", "event", "payload"}`` from a request body, or the 4xx answer saying why not
    (the console's broadcast shares it)."""
    if len(body) > max_size:
        return _error(413, f"body over {max_size} bytes")
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _error(400, "body is not valid JSON")
    if not isinstance(data, dict):
        return _error(422, 'body must be a JSON object {"topic", "event", "payload"}')
    topic, event, payload = data.get("topic"), data.get("event"), data.get("payload", {})
    problems = broadcast_problems(topic, event, payload)
    if problems:
        return JSONResponse({"error": "invalid broadcast", "problems": problems}, status_code=422)
    assert isinstance(topic, str) and isinstance(event, str) and isinstance(payload, dict)
    return topic, event, payload


async def presence_of_topic(request: Request) -> Response:
    """``GET /api/presence/{topic}`` -> the topic's presences, in Phoenix's format."""
    node: Node = request.app.state.node
    refusal = _unauthorized(request, node.settings.api_key, "the presence API")
    if refusal is not None:
        return refusal
    topic = request.path_params["topic"]
    if node.presence is None:
        return _error(404, "presence is off on this node")
    try:
        presences = await node.presence.list(topic)
    except ActorError as exc:
        return _error(503, f"presence unavailable: {exc}")
    return JSONResponse({"topic": topic, "presences": presences})


async def cache_entry(request: Request) -> Response:
    """``GET``/``PUT``/``DELETE /api/cache/{key}``: the node's cache; deletes reach every node."""
    node: Node = request.app.state.node
    refusal = _unauthorized(request, node.settings.api_key, "the cache API")
    if refusal is not None:
        return refusal
    if node.actors is None:
        return _error(404, "no cache on this node")
    key = request.path_params["key"]
    target, timeout = node.actors.cache, node.settings.actor_timeout
    try:
        if request.method == "GET":
            value = await ask(target, CacheGet(key), timeout=timeout)
            if value is None:
                return _error(404, f"no cached value for {key!r}")
            return JSONResponse({"key": key, "value": orjson.loads(value)})
        if request.method == "DELETE":
            if request.query_params.get("prefix") == "1":
                removed = await ask(target, CacheInvalidatePrefix(key), timeout=timeout)
            else:
                removed = int(bool(await ask(target, CacheDelete(key), timeout=timeout)))
            return JSONResponse({"removed": removed})
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _error(400, "body is not valid JSON")
        ttl = body.get("ttl") if isinstance(body, dict) else None
        if not isinstance(body, dict) or "value" not in body or body["value"] is None:
            return _error(422, 'body must be {"value": <not null>, "ttl": seconds or null}')
        if ttl is not None and (
            isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0
        ):
            return _error(422, "ttl must be a positive number of seconds or null")
        await ask(target, CachePut(key, orjson.dumps(body["value"]).decode(), ttl), timeout=timeout)
        return JSONResponse({"key": key}, status_code=201)
    except ActorError as exc:
        return _error(503, f"cache unavailable: {exc}")


async def admin_socket_token(request: Request) -> Response:
    """``POST /api/admin/socket-token``: a short-lived admin socket token for the dashboard."""
    node: Node = request.app.state.node
    refusal = _unauthorized(request, node.settings.admin_token, "the admin API")
    if refusal is not None:
        return refusal
    token = issue_token(node.settings.secret, "admin:dashboard", ttl=3600, admin=True)
    return JSONResponse({"token": token})


routes = [
    Route("/api/broadcast", broadcast, methods=["POST"]),
    Route("/api/presence/{topic:path}", presence_of_topic),
    Route("/api/admin/socket-token", admin_socket_token, methods=["POST"]),
    Route("/api/cache/{key:path}", cache_entry, methods=["GET", "PUT", "DELETE"]),
]

"""The HTTP API for a backend: broadcast to a topic on the whole cluster, read presence.

Both need ``Authorization: Bearer <SWITCHBOARD_API_KEY>`` and are rate-limited per client
IP (see :mod:`switchboard.server.http_limits`). Errors are JSON ``{"error": ...}`` with a 4xx status
that says what to fix.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from switchboard.actors.bridge import ask
from switchboard.actors.cache import CacheDelete, CacheGet, CacheInvalidatePrefix, CachePut
from switchboard.actors.errors import ActorError
from switchboard.server.auth import issue_token
from switchboard.server.codec import INTERNAL_TOPIC_PREFIXES, broadcast_problems
from switchboard.server.node import Node
from switchboard.server.pubsub import Unavailable
from switchboard.server.security import bearer_matches

#: A cache PUT body is ``{"value": ..., "ttl": ...}``: the value's limit plus this much.
CACHE_ENVELOPE = 1024


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


class BodyUnread(Exception):
    """The body was not read; ``response`` says why."""

    def __init__(self, response: Response) -> None:
        self.response = response


async def read_body(request: Request, limit: int, too_large: str) -> bytes:
    """The request body, read as it arrives and given up on as soon as it passes ``limit``
    bytes: a client announcing or sending more costs us ``limit`` bytes, not what it sent."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyUnread(_error(413, too_large))
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyUnread(_error(413, too_large))
            chunks.append(chunk)
    except ClientDisconnect:  # gone, or closed by the request time limit: nobody to answer
        raise BodyUnread(_error(400, "the client went away before sending the body")) from None
    return b"".join(chunks)


def _encodable(value: Any) -> bool:
    """orjson refuses to encode what nests deeper than 254 levels (it decodes up to 1024)."""
    try:
        orjson.dumps(value)
    except TypeError:
        return False
    return True


def _internal(topic: str) -> bool:
    return topic.startswith(INTERNAL_TOPIC_PREFIXES)


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
    parsed = await read_broadcast(request, node.settings.max_frame_size)
    if isinstance(parsed, Response):
        return parsed
    topic, event, payload = parsed
    try:
        node.pubsub.broadcast(topic, event, payload)
    except Unavailable as exc:  # a history topic that cannot even buffer it: try again later
        return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "1"})
    return JSONResponse({"ok": True, "topic": topic, "event": event}, status_code=202)


async def read_broadcast(
    request: Request, limit: int
) -> tuple[str, str, dict[str, Any]] | Response:
    """``{"topic", "event", "payload"}`` from a request body of at most ``limit`` bytes, or the
    4xx answer saying why not (the console's broadcast shares it)."""
    try:
        body = await read_body(request, limit, f"body over {limit} bytes")
    except BodyUnread as unread:
        return unread.response
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _error(400, "body is not valid JSON")
    if not isinstance(data, dict):
        return _error(422, 'body must be a JSON object {"topic", "event", "payload"}')
    topic, event, payload = data.get("topic"), data.get("event"), data.get("payload", {})
    problems = broadcast_problems(topic, event, payload)
    if isinstance(payload, dict) and not _encodable(payload):
        problems.append("payload nests too deeply to encode (at most 254 levels)")
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
    if _internal(topic):
        return _error(422, f"topic {topic!r} is internal to the nodes")
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
        limit = node.settings.cache_max_value
        try:
            body = orjson.loads(
                await read_body(request, limit + CACHE_ENVELOPE, f"value over {limit} bytes")
            )
        except BodyUnread as unread:
            return unread.response
        except orjson.JSONDecodeError:
            return _error(400, "body is not valid JSON")
        ttl = body.get("ttl") if isinstance(body, dict) else None
        if not isinstance(body, dict) or "value" not in body or body["value"] is None:
            return _error(422, 'body must be {"value": <not null>, "ttl": seconds or null}')
        if ttl is not None and (
            isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0
        ):
            return _error(422, "ttl must be a positive number of seconds or null")
        try:
            value = orjson.dumps(body["value"])
        except TypeError:
            return _error(422, "value nests too deeply to encode (at most 254 levels)")
        if len(value) > limit:
            return _error(413, f"value over {limit} bytes")
        await ask(target, CachePut(key, value.decode(), ttl), timeout=timeout)
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

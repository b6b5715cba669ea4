"""The console's HTTP API: everything the console page shows or does, to script as well.

Every call needs ``Authorization: Bearer <SWITCHBOARD_ADMIN_TOKEN>`` (404 while no admin
token is configured), is rate-limited per client IP like the rest of ``/api/``, and every
action is logged (``"event": "console_action"``) and shown in the console's recent events.
Answers that gather from every node list the nodes that did not answer in time as
``missing``.

=======  ====================================  =============================================
GET      /api/console/cluster                  nodes (live, draining, lost), busiest topics,
                                               alerts, recent events
GET      /api/console/history                  every node's numbers, ``?minutes=60&step=10``
GET      /api/console/connections              ``?q=&offset=0&limit=50``: the cluster's sockets
POST     /api/console/disconnect               ``{"connection": id}`` or ``{"user": id}``
GET      /api/console/topics                   ``?q=&offset=0&limit=50``: every topic
GET      /api/console/topics/{topic}           presences, subscribers per node, recent traffic
POST     /api/console/broadcast                ``{"topic", "event", "payload"}``
POST     /api/console/nodes/{name}/dismiss     forget a lost node
=======  ====================================  =============================================
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from switchboard.actors.errors import ActorError
from switchboard.server.client_ip import client_ip
from switchboard.server.node import Node
from switchboard.server.pubsub import Unavailable
from switchboard.server.routes.api import (
    BodyUnread,
    _error,
    _unauthorized,
    read_body,
    read_broadcast,
)
from switchboard.server.timeline import HOUR, METRICS

logger = logging.getLogger("switchboard.console")

MAX_PAGE = 200


def _node(request: Request) -> tuple[Node, Response | None]:
    node: Node = request.app.state.node
    return node, _unauthorized(request, node.settings.admin_token, "the console API")


def _live_nodes(node: Node) -> list[str]:
    return list(node.stats.nodes) if node.stats is not None else [node.id]


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    value = int(raw)  # ValueError -> 422 by the caller
    if not low <= value <= high:
        raise ValueError(f"{name} must be from {low} to {high}")
    return value


def _client(request: Request, node: Node) -> str:
    return client_ip(request.scope, node.settings.trusted_proxies)


def _action(
    request: Request, node: Node, action: str, message: str, show: bool = True, **fields: Any
) -> None:
    """Log an operator's action and (if ``show``) put it in every node's recent events."""
    who = _client(request, node)
    logger.info(
        "console: %s (from %s)",
        message,
        who,
        extra={"event": "console_action", "action": action, "client": who, **fields},
    )
    if show and node.stats is not None:
        node.stats.record(action, None, f"{message} (from {who})", share=True)


async def cluster(request: Request) -> Response:
    node, refusal = _node(request)
    if refusal is not None:
        return refusal
    assert node.stats is not None
    return JSONResponse(node.stats.view())


async def history(request: Request) -> Response:
    node, refusal = _node(request)
    if refusal is not None:
        return refusal
    try:
        minutes = _int(request, "minutes", 60, 1, HOUR // 60)
        step = _int(request, "step", max(1, minutes * 60 // 360), 1, 600)
    except ValueError as exc:
        return _error(422, str(exc))
    assert node.stats is not None
    since = time.time() - minutes * 60
    return JSONResponse(
        {
            "since": since,
            "step": step,
            "metrics": list(METRICS),
            "nodes": node.stats.timeline.window(since, step),
        }
    )


def _page(request: Request) -> tuple[str, int, int] | Response:
    """``?q=&offset=&limit=`` of a searchable list, or the 422 saying what is wrong."""
    try:
        offset = _int(request, "offset", 0, 0, 100_000)
        limit = _int(request, "limit", 50, 1, MAX_PAGE)
    except ValueError as exc:
        return _error(422, str(exc))
    return request.query_params.get("q", "").strip(), offset, limit


async def _ask_page(request: Request, call: str) -> Response | tuple[Any, Any, str, int, int]:
    """Every live node's answer to ``call`` for the page asked for: the node, the answers,
    the query, offset and limit; or the response refusing the request."""
    node, refusal = _node(request)
    if refusal is not None:
        return refusal
    page = _page(request)
    if isinstance(page, Response):
        return page
    query, offset, limit = page
    answers = await node.calls.ask(call, {"q": query, "limit": offset + limit}, _live_nodes(node))
    return node, answers, query, offset, limit


def _page_response(
    query: str, total: int, offset: int, limit: int, name: str, items: list[Any], missing: Any
) -> JSONResponse:
    return JSONResponse(
        {
            "q": query,
            "total": total,
            "offset": offset,
            "limit": limit,
            name: items[offset : offset + limit],
            "missing": missing,
        }
    )


async def connections(request: Request) -> Response:
    asked = await _ask_page(request, "connections")
    if isinstance(asked, Response):
        return asked
    _, answers, query, offset, limit = asked
    total, found = 0, []
    for answer in answers.by_node.values():
        if isinstance(answer, dict) and "connections" in answer:
            total += answer["total"]
            found.extend(answer["connections"])
    found.sort(key=lambda f: (-f["connected_at"], f["id"]))
    return _page_response(query, total, offset, limit, "connections", found, answers.missing)


async def disconnect(request: Request) -> Response:
    node, refusal = _node(request)
    if refusal is not None:
        return refusal
    limit = node.settings.max_frame_size
    try:
        body = orjson.loads(await read_body(request, limit, f"body over {limit} bytes"))
    except BodyUnread as unread:
        return unread.response
    except orjson.JSONDecodeError:
        return _error(400, "body is not valid JSON")
    if (
        not isinstance(body, dict)
        or len(body) != 1
        or not isinstance(body.get("connection", body.get("user")), str)
    ):
        return _error(422, 'body must be {"connection": "<id>"} or {"user": "<user id>"}')
    answers = await node.calls.ask("disconnect", body, _live_nodes(node))
    closed = [
        facts
        for answer in answers.by_node.values()
        if isinstance(answer, dict)
        for facts in answer.get("closed", ())
    ]
    what = f"connection {body['connection']}" if "connection" in body else f"user {body['user']}"
    _action(
        request,
        node,
        "disconnect",
        f"disconnected {what}: {len(closed)} socket(s) closed",
        target=body,
        closed=len(closed),
    )
    status = 200 if closed or answers.missing else 404
    return JSONResponse({"closed": closed, "missing": answers.missing}, status_code=status)


async def topics(request: Request) -> Response:
    asked = await _ask_page(request, "topics")
    if isinstance(asked, Response):
        return asked
    node, answers, query, offset, limit = asked
    merged = _merge_topics(answers.by_node.values())
    presences = await _presence_counts(node)
    for entry in merged.values():
        entry["presences"] = presences.get(entry["topic"], 0)
    listed = sorted(merged.values(), key=lambda t: (-t["subscribers"], t["topic"]))
    total = max(
        (a.get("total", 0) for a in answers.by_node.values() if isinstance(a, dict)), default=0
    )
    total = max(total, len(listed))
    return _page_response(query, total, offset, limit, "topics", listed, answers.missing)


def _merge_topics(answers: Any) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for answer in answers:
        if not isinstance(answer, dict):
            continue
        for entry in answer.get("topics", ()):
            topic = merged.setdefault(
                entry["topic"], {"topic": entry["topic"], "subscribers": 0, "messages_per_s": 0.0}
            )
            topic["subscribers"] += entry["subscribers"]
            topic["messages_per_s"] = max(topic["messages_per_s"], entry["messages_per_s"])
    return merged


async def _presence_counts(node: Node) -> dict[str, int]:
    if node.presence is None:
        return {}
    try:
        return dict((await node.presence.summary())["topics"])
    except ActorError:
        return {}


async def topic(request: Request) -> Response:
    node, refusal = _node(request)
    if refusal is not None:
        return refusal
    name = request.path_params["topic"]
    answers = await node.calls.ask("topics", {"topic": name}, _live_nodes(node))
    by_node = {}
    for node_id, answer in answers.by_node.items():
        for entry in answer.get("topics", ()) if isinstance(answer, dict) else ():
            by_node[node_id] = entry["subscribers"]
    merged = _merge_topics(answers.by_node.values()).get(name)
    presences: dict[str, Any] = {}
    if node.presence is not None:
        try:
            presences = await node.presence.list(name)
        except ActorError as exc:
            return _error(503, f"presence unavailable: {exc}")
    tap = node.taps.open(name)
    return JSONResponse(
        {
            "topic": name,
            "subscribers": merged["subscribers"] if merged else 0,
            "subscribers_by_node": by_node,
            "messages_per_s": merged["messages_per_s"] if merged else 0.0,
            "presences": presences,
            "watching_since": tap.opened_at if tap else None,
            "seen": tap.seen if tap else 0,
            "recent": tap.messages() if tap else [],
            "missing": answers.missing,
        }
    )


async def broadcast(request: Request) -> Response:
    node, refusal = _node(request)
    if refusal is not None:
        return refusal
    parsed = await read_broadcast(request, node.settings.max_frame_size)
    if isinstance(parsed, Response):
        return parsed
    topic_name, event, payload = parsed
    try:
        node.pubsub.broadcast(topic_name, event, payload)
    except Unavailable as exc:  # a history topic that cannot even buffer it (see api.py)
        return _error(503, str(exc))
    _action(
        request,
        node,
        "broadcast",
        f"broadcast {event!r} to {topic_name}",
        topic=topic_name,
        broadcast_event=event,
    )
    return JSONResponse({"ok": True, "topic": topic_name, "event": event}, status_code=202)


async def dismiss(request: Request) -> Response:
    node, refusal = _node(request)
    if refusal is not None:
        return refusal
    name = request.path_params["name"]
    assert node.stats is not None
    if not node.stats.dismiss(name, by=_client(request, node)):
        return _error(404, f"no lost node named {name!r}")
    # stats.dismiss told every node's events already
    _action(request, node, "dismiss", f"dismissed lost node {name}", show=False, lost_node=name)
    return JSONResponse({"dismissed": name})


routes = [
    Route("/api/console/cluster", cluster),
    Route("/api/console/history", history),
    Route("/api/console/connections", connections),
    Route("/api/console/disconnect", disconnect, methods=["POST"]),
    Route("/api/console/topics", topics),
    Route("/api/console/topics/{topic:path}", topic),
    Route("/api/console/broadcast", broadcast, methods=["POST"]),
    Route("/api/console/nodes/{name}/dismiss", dismiss, methods=["POST"]),
]

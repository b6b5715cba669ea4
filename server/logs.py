"""Structured logs: one JSON object per line, with the node id on every line."""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
import uuid

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Context of the code that logs: set once per socket task / HTTP request / channel message.
socket_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("socket_id", default=None)
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
topic: contextvars.ContextVar[str | None] = contextvars.ContextVar("topic", default=None)
_CONTEXT = (("socket_id", socket_id), ("request_id", request_id), ("topic", topic))

_SECRET_PARAM = re.compile(r"((?:token|secret|api_key|password)=)[^&\s\"']+", re.IGNORECASE)
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def redact(text: str) -> str:
    """Hide secrets that travel in query strings (socket tokens, API keys)."""
    return _SECRET_PARAM.sub(r"\1[REDACTED]", text)


class JsonFormatter(logging.Formatter):
    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "node": self.node,
            "msg": redact(record.getMessage()),
        }
        for key, var in _CONTEXT:
            value = var.get()
            if value is not None:
                entry[key] = value
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class RequestId:
    """ASGI middleware: a request id per request (the client's ``X-Request-Id`` if sane),
    in every log line of that request and in the response header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers", ())).get(b"x-request-id", b"").decode("latin-1")
        sane = 0 < len(given) <= 64 and given.isascii() and given.replace("-", "").isalnum()
        rid = given if sane else uuid.uuid4().hex
        # Not reset afterwards: each request runs in a task of its own, and the server logs
        # a crash after the app has returned, when the id must still be there.
        request_id.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        await self.app(scope, receive, send_with_id)


def configure(level: str, node: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(node))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # Start, stop and drain are always logged: tools (and tests) wait for "listening".
    logging.getLogger("switchboard.lifecycle").setLevel(logging.INFO)
    # uvicorn logs every WebSocket open at info: too much at 10,000 sockets.
    logging.getLogger("uvicorn.error").setLevel(max(root.level, logging.WARNING))
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)

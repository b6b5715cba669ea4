"""Structured logs: one JSON object per line, with the node id on every line."""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
import uuid

import orjson

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
    """HTTP middleware: a request id per request (the client's ``X-Request-Id`` if sane),
    in every log line of that request and in the response header."""

    def __init__(self, app: object) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # type: ignore[operator]
            return
        given = dict(scope.get("headers", ())).get(b"x-request-id", b"").decode("latin-1")
        rid = (
            given if 0 < len(given) <= 64 and given.replace("-", "").isalnum() else uuid.uuid4().hex
        )
        token = request_id.set(rid)

        async def send_with_id(message: dict) -> None:  # type: ignore[type-arg]
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)  # type: ignore[operator]

        try:
            await self.app(scope, receive, send_with_id)  # type: ignore[operator]
        finally:
            request_id.reset(token)


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
    # uvicorn logs every WebSocket open at info: too much at 10,000 sockets.
    logging.getLogger("uvicorn.error").setLevel(max(root.level, logging.WARNING))
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)

"""Baseline: python-socketio's AsyncServer as an ASGI app under uvicorn.

Clients emit ``join`` (with an ack) to enter a room; a ``shout`` is emitted to the
whole room, sender included; ``ping`` acks its payload back. Default settings,
except that uvicorn's listen backlog is raised so thousands of clients can connect.

    python loadtest/servers/socketio_server.py --port 4101
"""

from __future__ import annotations

import argparse
from typing import Any

import socketio
import uvicorn

sio = socketio.AsyncServer(async_mode="asgi")
app = socketio.ASGIApp(sio)


@sio.event
async def join(sid: str, room: str) -> str:
    await sio.enter_room(sid, room)
    return "ok"


@sio.event
async def shout(sid: str, data: dict[str, Any]) -> None:
    await sio.emit("shout", data, room=data.get("room", "bench"))


@sio.event
async def ping(sid: str, data: Any) -> Any:
    return data


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4101)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", backlog=4096)

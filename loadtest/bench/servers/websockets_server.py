"""Baseline: a bare websockets server that rebroadcasts every text message to everyone.

Every connection sits in one set; a received message goes out unchanged with
``websockets.broadcast``. A connection opened on ``/echo`` is not in the set and gets its
own messages back instead (the request/reply and connection scenarios). Compression is off,
as it is for switchboard.

    python loadtest/servers/websockets_server.py --port 4102
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from websockets.asyncio.server import ServerConnection, broadcast, serve

CONNECTIONS: set[ServerConnection] = set()


async def handler(ws: ServerConnection) -> None:
    if ws.request is not None and ws.request.path == "/echo":
        async for message in ws:
            await ws.send(message)
        return
    CONNECTIONS.add(ws)
    try:
        async for message in ws:
            broadcast(CONNECTIONS, message)
    finally:
        CONNECTIONS.discard(ws)


async def main(host: str, port: int) -> None:
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(handler, host, port, compression=None, backlog=4096):
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4102)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port))

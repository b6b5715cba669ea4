"""The Python generator's clients: connect and join many at once, keep them alive."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .flavors import Flavor
from .leanws import WSClient, connect
from .processes import HOST, ServerProcess


async def open_clients(
    sp: ServerProcess,
    flavor: Flavor,
    count: int,
    room: str | Callable[[int], str],
    on_message: Callable[[WSClient, bytes, float], None],
    concurrency: int,
    first_index: int = 0,
) -> list[WSClient]:
    """Connect and join ``count`` clients, ``concurrency`` handshakes at a time."""
    sem = asyncio.Semaphore(concurrency)
    clients: list[WSClient | None] = [None] * count
    joined: list[WSClient] = []
    room_for = room if callable(room) else (lambda _i: room)

    async def one(i: int) -> None:
        async with sem:
            topic = room_for(i)
            cl = await connect(HOST, sp.port, flavor.path(first_index + i), on_message, i, topic)
            clients[i] = cl
            flavor.on_open(cl, topic)
            await asyncio.wait_for(asyncio.shield(cl.joined), 30)
            joined.append(cl)

    # a slow join phase must not let the first sockets hit the server's idle timeout
    hb = asyncio.create_task(heartbeats(flavor, joined))
    try:
        results = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
    finally:
        hb.cancel()
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        for cl in clients:
            if cl is not None:
                cl.close()
        raise RuntimeError(
            f"{len(errors)}/{count} clients failed to connect/join; first: {errors[0]!r}\n"
            f"server log:\n{sp.tail()}"
        )
    return [c for c in clients if c is not None]


async def heartbeats(flavor: Flavor, clients: list[WSClient], every: float = 30.0) -> None:
    while True:
        await asyncio.sleep(every)
        for cl in clients:
            flavor.heartbeat(cl)

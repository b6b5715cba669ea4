"""Test-side helpers around :mod:`switchboard.client`: a client per test on an ExitStack, and
one asyncio scenario run on a fresh loop, bounded as a whole."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from contextlib import ExitStack
from typing import Any, TypeVar

from switchboard.client import Client
from tests.support.processes import ServerProcess

T = TypeVar("T")


def open_client(stack: ExitStack, server: ServerProcess, user: str, **options: Any) -> Client:
    """A :class:`Client` on a socket of ``user`` (closed when ``stack`` closes)."""
    return stack.enter_context(Client.connect(server.socket_url(user), **options))


def run(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    """Run one test scenario on a fresh event loop, bounded as a whole."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis import RedisProcess, running_redis


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisProcess]:
    """A private redis-server for the module (never the machine's own on 6379)."""
    with running_redis() as redis:
        yield redis

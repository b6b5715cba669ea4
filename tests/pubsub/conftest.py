from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from switchboard.server.pubsub import Backend, HistoryLimits, backend_from_url
from switchboard.server.pubsub.redis import RedisBackend
from tests.support.redis import RedisProcess, running_redis

MakeBackend = Callable[[], Backend]
#: Builds backends keeping history within the given limits (default ones if None).
MakeHistoryBackend = Callable[[HistoryLimits | None], Backend]


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisProcess]:
    """A private redis-server for the module (never the machine's own on 6379)."""
    with running_redis() as redis:
        yield redis


@pytest.fixture(params=["memory", "redis"])
def make_history_backend(request: pytest.FixtureRequest) -> MakeHistoryBackend:
    """Builds one backend per node; the nodes of one test can reach each other."""
    run = uuid.uuid4().hex[:8]
    if request.param == "memory":
        return lambda limits=None: backend_from_url(f"memory://contract-{run}", limits)
    redis = request.getfixturevalue("redis_server")
    return lambda limits=None: RedisBackend(redis.url, prefix=f"sb:test:{run}:", history=limits)


@pytest.fixture
def make_backend(make_history_backend: MakeHistoryBackend) -> MakeBackend:
    return lambda: make_history_backend(None)

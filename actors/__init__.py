"""Shared state in pykka actors, OTP-style supervision, and the bridge from asyncio to them."""

from switchboard.actors.bridge import ActorTarget, ask, call, tell
from switchboard.actors.cache import (
    CacheActor,
    CacheDelete,
    CacheGet,
    CacheInvalidatePrefix,
    CachePut,
    CacheStats,
    CacheStatsReply,
)
from switchboard.actors.errors import ActorError, ActorTimeoutError, ActorUnavailableError
from switchboard.actors.faults import InjectedFault, InjectFault
from switchboard.actors.limiter import (
    Acquire,
    Decision,
    LimiterActor,
    LimiterStats,
    LimiterStatsReply,
    LimiterSweep,
    UnknownBucketError,
)
from switchboard.actors.supervisor import ChildSpec, SupervisedActor, Supervisor, SupervisorEvent
from switchboard.actors.token_bucket import TokenBucket

__all__ = [
    "Acquire",
    "ActorError",
    "ActorTarget",
    "ActorTimeoutError",
    "ActorUnavailableError",
    "CacheActor",
    "CacheDelete",
    "CacheGet",
    "CacheInvalidatePrefix",
    "CachePut",
    "CacheStats",
    "CacheStatsReply",
    "ChildSpec",
    "Decision",
    "InjectFault",
    "InjectedFault",
    "LimiterActor",
    "LimiterStats",
    "LimiterStatsReply",
    "LimiterSweep",
    "SupervisedActor",
    "Supervisor",
    "SupervisorEvent",
    "TokenBucket",
    "UnknownBucketError",
    "ask",
    "call",
    "tell",
]

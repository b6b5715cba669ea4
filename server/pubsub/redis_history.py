"""Topic history in Redis: a stream per topic, written and read by two Lua scripts.

Keys (``<prefix>`` is the backend's channel prefix, ``sb:t:`` by default)
    ``<prefix>~log:<topic>``   a stream of the topic's broadcasts: id ``<offset>-0``,
                               fields ``e`` (event) and ``f`` (frame); trimmed to the
                               latest ``size`` (MAXLEN) and expired ``ttl`` seconds after
                               the last broadcast
    ``<prefix>~meta:<topic>``  a hash: ``e`` the epoch, ``o`` the latest offset; it
                               outlives the stream (a day after the last broadcast or
                               read), so a quiet topic keeps its epoch and a client that
                               missed nothing still recovers
    ``<prefix>~node:<node>``   the last sequence number this node wrote (see WRITE)

WRITE appends a broadcast and PUBLISHes it with its position in one atomic step, so the
order of positions is the order in which every subscriber receives them. A topic with no
meta (new, expired, or Redis lost its data) starts a new epoch, named by the caller, and
drops any stream left behind; so does READ, which also answers the latest position of a
topic nothing was published on yet. EMIT is WRITE for an emitter (another process, which
does not know which topics keep history): it writes to the history of topics that have
one, and publishes as is on the others.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from switchboard.server.pubsub.history import (
    Entry,
    HistoryLimits,
    HistoryRead,
    Position,
    complete,
)

META_TTL = 24 * 3600  # seconds a topic's epoch and latest offset outlive its last use


def _meta(new_epoch: str, size: str, ttl: str, meta_ttl: str) -> str:
    """Lua: ``epoch`` of the topic, starting a new history (epoch ``new_epoch``) if none;
    the meta also records the limits, for emitters (which do not know them)."""
    return f"""
local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
  epoch = {new_epoch}
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'e', epoch, 'o', 0, 's', {size}, 't', {ttl}, 'm', {meta_ttl})
end"""


# KEYS: log, meta, node.  ARGV: channel, envelope head, event, frame, seq, size, ttl,
# meta ttl, epoch for a new history.  Returns the offset, or 0 if seq was written before
# (a retry after a lost reply).
WRITE = (
    """
local seen = redis.call('GET', KEYS[3])
if seen and tonumber(seen) >= tonumber(ARGV[5]) then return 0 end
redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[8])"""
    + _meta("ARGV[9]", "ARGV[6]", "ARGV[7]", "ARGV[8]")
    + """
local offset = redis.call('HINCRBY', KEYS[2], 'o', 1)
redis.call('EXPIRE', KEYS[2], ARGV[8])
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[6], offset .. '-0', 'e', ARGV[3], 'f', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[7])
redis.call('PUBLISH', ARGV[1], ARGV[2] .. offset .. ' ' .. epoch .. '\\n' .. ARGV[4])
return offset
"""
)
WRITE_SHA = hashlib.sha1(WRITE.encode()).hexdigest()

# KEYS: log, meta.  ARGV: since epoch ('' for none), since offset, upto offset ('' for the
# latest), meta ttl, epoch for a new history, size, ttl.  Returns {epoch, top} if since is
# not in this epoch or lies ahead, else {epoch, top, entries after since up to upto}.
READ = (
    _meta("ARGV[5]", "ARGV[6]", "ARGV[7]", "ARGV[4]")
    + """
redis.call('HSET', KEYS[2], 's', ARGV[6], 't', ARGV[7], 'm', ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
local top = tonumber(redis.call('HGET', KEYS[2], 'o'))
if ARGV[1] ~= epoch then return {epoch, top} end
local since = tonumber(ARGV[2])
local upto = top
if ARGV[3] ~= '' then upto = math.min(tonumber(ARGV[3]), top) end
if since > upto then return {epoch, top} end
return {epoch, top, redis.call('XRANGE', KEYS[1], (since + 1) .. '-0', upto .. '-0')}
"""
)


# For emitters, which know neither which topics keep history nor the limits. KEYS: log,
# meta.  ARGV: channel, plain envelope, history envelope head, event, frame.  A topic
# whose meta exists keeps history (some node joined or published it lately): the
# broadcast is written and published with its position, as a node's would be; any other
# is published as is.  Returns how many nodes received it.
EMIT = """
local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then return redis.call('PUBLISH', ARGV[1], ARGV[2]) end
local limits = redis.call('HMGET', KEYS[2], 's', 't', 'm')
local offset = redis.call('HINCRBY', KEYS[2], 'o', 1)
redis.call('EXPIRE', KEYS[2], limits[3] or 86400)
redis.call('XADD', KEYS[1], 'MAXLEN', limits[1] or 100, offset .. '-0', 'e', ARGV[4], 'f', ARGV[5])
redis.call('EXPIRE', KEYS[1], limits[2] or 300)
return redis.call('PUBLISH', ARGV[1], ARGV[3] .. offset .. ' ' .. epoch .. '\\n' .. ARGV[5])
"""


class Keys:
    """The names of a topic's keys under one prefix."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def log(self, topic: str) -> str:
        return f"{self.prefix}~log:{topic}"

    def meta(self, topic: str) -> str:
        return f"{self.prefix}~meta:{topic}"

    def node(self, node: bytes) -> bytes:
        return f"{self.prefix}~node:".encode() + node


def ttl(limits: HistoryLimits) -> int:
    return max(1, math.ceil(limits.ttl))


def meta_ttl(limits: HistoryLimits) -> int:
    return max(META_TTL, ttl(limits))


def parse_read(
    reply: list[Any], since: Position | None, upto: int | None, max_bytes: int
) -> HistoryRead:
    """What READ answered, as a :class:`HistoryRead`."""
    top = Position(bytes(reply[0]).decode("ascii"), int(reply[1]))
    if since is None or len(reply) < 3:
        return HistoryRead(top)
    entries: list[Entry] = []
    for entry_id, fields in reply[2]:
        values = dict(zip(fields[::2], fields[1::2], strict=True))
        offset = int(bytes(entry_id).split(b"-", 1)[0])
        entries.append((offset, values[b"e"].decode(), values[b"f"].decode()))
    end = top.offset if upto is None else min(upto, top.offset)
    return HistoryRead(top, complete(since.offset, end, entries, max_bytes))

"""The client's address: the peer, or what a trusted proxy says in ``X-Forwarded-For``.

Security note: ``X-Forwarded-For`` is believed only when the peer is a configured trusted
proxy; otherwise any client could pick the address its rate limits are counted against.
Of the forwarded chain, the rightmost address that is not itself a trusted proxy wins.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=16)
def _networks(trusted: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in trusted)


def _is_trusted(address: str, networks: Iterable[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def is_trusted(address: str, trusted: tuple[str, ...]) -> bool:
    """Whether ``address`` is one of the ``trusted`` proxies (addresses or CIDR networks)."""
    return bool(trusted) and _is_trusted(address, _networks(trusted))


def client_ip(scope: Mapping[str, Any], trusted: tuple[str, ...]) -> str:
    client = scope.get("client")
    peer = client[0] if client else "unknown"
    if not trusted:
        return peer
    networks = _networks(trusted)
    if not _is_trusted(peer, networks):
        return peer
    forwarded = [
        value.decode("latin-1")
        for name, value in scope.get("headers", ())
        if name == b"x-forwarded-for"
    ]
    chain = [hop.strip() for header in forwarded for hop in header.split(",") if hop.strip()]
    for hop in reversed(chain):
        if not _is_trusted(hop, networks):
            return hop
    return chain[0] if chain else peer

"""Settings from the environment (``SWITCHBOARD_*``), with dev/test/prod profiles.

The dev profile works with no set-up: ``serve`` and ``token`` share :data:`DEV_SECRET`.
Outside dev a secret must be given. Command-line flags override the environment.
"""

from __future__ import annotations

import ipaddress
import math
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import urlsplit

from switchboard.server.pubsub.history import HistoryLimits

DEV_SECRET = "switchboard-dev-secret-do-not-use-in-production"
PROFILES = ("dev", "test", "prod")


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which variable and why."""


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected a boolean, got {value!r}")


def _list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


@dataclass(frozen=True)
class Settings:
    """Every knob of a Switchboard node. ``env`` names the variable; ``help`` goes into docs."""

    profile: str = field(
        default="dev", metadata={"env": "SWITCHBOARD_PROFILE", "help": "dev, test or prod"}
    )
    host: str = field(
        default="127.0.0.1", metadata={"env": "SWITCHBOARD_HOST", "help": "address to bind"}
    )
    port: int = field(
        default=4000,
        metadata={"env": "SWITCHBOARD_PORT", "help": "port to bind (0 picks a free one)"},
    )
    secret: str = field(
        default="",
        repr=False,
        metadata={
            "env": "SWITCHBOARD_SECRET",
            "help": "HMAC key for socket tokens (required outside dev)",
        },
    )
    allowed_origins: tuple[str, ...] = field(
        default=(),
        metadata={
            "env": "SWITCHBOARD_ALLOWED_ORIGINS",
            "help": "comma-separated origins allowed to open sockets; empty: any (not in prod)",
        },
    )
    pubsub_url: str = field(
        default="memory://",
        metadata={
            "env": "SWITCHBOARD_PUBSUB_URL",
            "help": "memory:// (one node) or redis://host:port/db",
        },
    )
    node_name: str = field(
        default="", metadata={"env": "SWITCHBOARD_NODE", "help": "node name (default: host:port)"}
    )
    max_frame_size: int = field(
        default=1024 * 1024,
        metadata={"env": "SWITCHBOARD_MAX_FRAME_SIZE", "help": "largest inbound frame, bytes"},
    )
    max_channels: int = field(
        default=100,
        metadata={"env": "SWITCHBOARD_MAX_CHANNELS", "help": "channels one socket may join"},
    )
    outbox_limit: int = field(
        default=1024 * 1024,
        metadata={
            "env": "SWITCHBOARD_OUTBOX_LIMIT",
            "help": "bytes queued for a slow client before it is dropped",
        },
    )
    idle_timeout: float = field(
        default=60.0,
        metadata={
            "env": "SWITCHBOARD_IDLE_TIMEOUT",
            "help": "close a socket silent this long, seconds",
        },
    )
    close_timeout: float = field(
        default=5.0,
        metadata={
            "env": "SWITCHBOARD_CLOSE_TIMEOUT",
            "help": "seconds a closing socket gets to read what is queued and the close frame",
        },
    )
    compression: bool = field(
        default=False,
        metadata={
            "env": "SWITCHBOARD_COMPRESSION",
            "help": "permessage-deflate (costs CPU and memory per socket)",
        },
    )
    direct_io: bool = field(
        default=True,
        metadata={
            "env": "SWITCHBOARD_DIRECT_IO",
            "help": "write frames straight to uvicorn's transport where it allows (off: ASGI)",
        },
    )
    log_level: str = field(
        default="info", metadata={"env": "SWITCHBOARD_LOG_LEVEL", "help": "debug, info, warning"}
    )
    limits: bool = field(
        default=True,
        metadata={
            "env": "SWITCHBOARD_LIMITS",
            "help": "rate limits and per-user socket limit (off for benchmarks)",
        },
    )
    presence: bool = field(
        default=True,
        metadata={
            "env": "SWITCHBOARD_PRESENCE",
            "help": "presence on this node (off: tracking does nothing; for benchmarks)",
        },
    )

    request_timeout: float = field(
        default=10.0,
        metadata={
            "env": "SWITCHBOARD_REQUEST_TIMEOUT",
            "help": "seconds for a request to arrive or a WebSocket handshake to complete "
            "(idle connections too); then 408 and close",
        },
    )
    max_request_head: int = field(
        default=16 * 1024,
        metadata={
            "env": "SWITCHBOARD_MAX_REQUEST_HEAD",
            "help": "largest request line plus headers, bytes (over: 414/431)",
        },
    )
    max_connections: int = field(
        default=0,
        metadata={
            "env": "SWITCHBOARD_MAX_CONNECTIONS",
            "help": "open TCP connections in all (over: 503); 0: the open-file limit less a "
            "reserve of 10% (at least 32)",
        },
    )
    max_connections_per_ip: int = field(
        default=256,
        metadata={
            "env": "SWITCHBOARD_MAX_CONNECTIONS_PER_IP",
            "help": "open connections per client IP (over: 429; off with SWITCHBOARD_LIMITS)",
        },
    )
    http_parser: str = field(
        default="auto",
        metadata={
            "env": "SWITCHBOARD_HTTP_PARSER",
            "help": "auto (httptools if installed, else h11), h11 or httptools",
        },
    )
    user_socket_limit: int = field(
        default=5,
        metadata={"env": "SWITCHBOARD_USER_SOCKET_LIMIT", "help": "concurrent sockets per user"},
    )
    connect_rate: tuple[str, ...] = field(
        default=("20", "2"),
        metadata={
            "env": "SWITCHBOARD_CONNECT_RATE",
            "help": "connects per client IP: burst,per_second",
        },
    )
    join_rate: tuple[str, ...] = field(
        default=("50", "10"),
        metadata={"env": "SWITCHBOARD_JOIN_RATE", "help": "joins per socket: burst,per_second"},
    )
    push_rate: tuple[str, ...] = field(
        default=("200", "50"),
        metadata={
            "env": "SWITCHBOARD_PUSH_RATE",
            "help": "other frames per socket (pushes, heartbeats, pings): burst,per_second",
        },
    )
    http_rate: tuple[str, ...] = field(
        default=("60", "10"),
        metadata={
            "env": "SWITCHBOARD_HTTP_RATE",
            "help": "API calls per client IP: burst,per_second",
        },
    )
    flood_disconnect: int = field(
        default=50,
        metadata={
            "env": "SWITCHBOARD_FLOOD_DISCONNECT",
            "help": "rate-limited frames in a row before a socket is closed",
        },
    )
    trusted_proxies: tuple[str, ...] = field(
        default=(),
        metadata={
            "env": "SWITCHBOARD_TRUSTED_PROXIES",
            "help": "proxy addresses/CIDRs whose X-Forwarded-For is believed",
        },
    )
    presence_window: float = field(
        default=0.05,
        metadata={
            "env": "SWITCHBOARD_PRESENCE_WINDOW",
            "help": "seconds a topic's presence changes gather into one presence_diff "
            "(0: none; under SWITCHBOARD_ACTOR_TIMEOUT)",
        },
    )
    presence_heartbeat: float = field(
        default=1.0,
        metadata={
            "env": "SWITCHBOARD_PRESENCE_HEARTBEAT",
            "help": "seconds between node heartbeats",
        },
    )
    node_timeout: float = field(
        default=4.0,
        metadata={
            "env": "SWITCHBOARD_NODE_TIMEOUT",
            "help": "seconds of silence before a node's presences leave",
        },
    )
    actor_timeout: float = field(
        default=2.0,
        metadata={
            "env": "SWITCHBOARD_ACTOR_TIMEOUT",
            "help": "seconds to wait for an actor's reply",
        },
    )

    history_size: int = field(
        default=100,
        metadata={
            "env": "SWITCHBOARD_HISTORY_SIZE",
            "help": "broadcasts kept per history topic for recovery (0 turns history off)",
        },
    )
    history_ttl: float = field(
        default=300.0,
        metadata={
            "env": "SWITCHBOARD_HISTORY_TTL",
            "help": "seconds a history topic keeps a broadcast",
        },
    )

    drain_period: float = field(
        default=10.0,
        metadata={
            "env": "SWITCHBOARD_DRAIN_PERIOD",
            "help": "seconds over which SIGTERM closes open sockets",
        },
    )
    shutdown_timeout: float = field(
        default=30.0,
        metadata={
            "env": "SWITCHBOARD_SHUTDOWN_TIMEOUT",
            "help": "seconds from SIGTERM to a forced exit",
        },
    )

    gc_threshold: int = field(
        default=20_000,
        metadata={
            "env": "SWITCHBOARD_GC_THRESHOLD",
            "help": "allocations between collections of the garbage collector's youngest "
            "generation under `switchboard serve` (Python's own: 700; 0 leaves the "
            "collector as it is)",
        },
    )
    slow_handle_in_ms: float = field(
        default=100.0,
        metadata={
            "env": "SWITCHBOARD_SLOW_HANDLE_IN_MS",
            "help": "log handle_in calls slower than this (ms)",
        },
    )
    cache_max_value: int = field(
        default=256 * 1024,
        metadata={
            "env": "SWITCHBOARD_CACHE_MAX_VALUE",
            "help": "largest value PUT /api/cache/{key} stores, bytes (over: 413)",
        },
    )
    cache_max_bytes: int = field(
        default=64 * 1024 * 1024,
        metadata={
            "env": "SWITCHBOARD_CACHE_MAX_BYTES",
            "help": "bytes the node's cache holds; least recently used entries go first",
        },
    )
    metrics_token: str = field(
        default="",
        repr=False,
        metadata={
            "env": "SWITCHBOARD_METRICS_TOKEN",
            "help": "bearer token /metrics asks for (empty: none)",
        },
    )
    metrics_address: str = field(
        default="",
        metadata={
            "env": "SWITCHBOARD_METRICS_ADDRESS",
            "help": "host:port of a second listener for /metrics, which the main port then "
            "answers 404 (empty: /metrics on the main port)",
        },
    )
    api_key: str = field(
        default="",
        repr=False,
        metadata={
            "env": "SWITCHBOARD_API_KEY",
            "help": "bearer key for POST /api/broadcast (empty: API off)",
        },
    )
    admin_token: str = field(
        default="",
        repr=False,
        metadata={
            "env": "SWITCHBOARD_ADMIN_TOKEN",
            "help": "bearer token for /dashboard and admin calls (empty: off)",
        },
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``SWITCHBOARD_*`` variables, apply ``overrides`` (None means unset), validate."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is None:
                continue
            try:
                values[f.name] = _convert(f.type, raw)
            except ValueError as exc:
                raise ConfigError(f"{f.metadata['env']}: {exc}") from None
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values).validated()

    def validated(self) -> Settings:
        if self.profile not in PROFILES:
            raise ConfigError(
                f"SWITCHBOARD_PROFILE must be one of {', '.join(PROFILES)}, got {self.profile!r}"
            )
        settings = self
        if settings.secret and not settings.secret.strip():
            raise ConfigError("SWITCHBOARD_SECRET is only whitespace")
        if not settings.secret:
            if settings.profile == "dev":
                settings = replace(settings, secret=DEV_SECRET)
            elif settings.profile == "test":
                settings = replace(settings, secret=secrets.token_urlsafe(32))
            else:
                raise ConfigError("SWITCHBOARD_SECRET must be set in the prod profile")
        for name in ("connect_rate", "join_rate", "push_rate", "http_rate"):
            settings.rate(name)  # raises ConfigError if malformed
        settings._check_values()
        if settings.profile == "prod":
            settings._check_prod()
        if settings.max_frame_size < 1024:
            raise ConfigError("SWITCHBOARD_MAX_FRAME_SIZE must be at least 1024 bytes")
        return settings

    def _check_prod(self) -> None:
        """What would make a public node open to anyone: refused in the prod profile."""
        if self.secret == DEV_SECRET or len(self.secret.strip()) < 32:
            raise ConfigError(
                "SWITCHBOARD_SECRET must be a non-default secret of 32+ characters "
                "(not counting surrounding whitespace) in prod"
            )
        if not self.allowed_origins:
            raise ConfigError("SWITCHBOARD_ALLOWED_ORIGINS must be set in the prod profile")
        if "*" in self.allowed_origins:
            raise ConfigError(
                "SWITCHBOARD_ALLOWED_ORIGINS must list origins in prod; '*' would allow any"
            )
        for proxy in self.trusted_proxies:
            if ipaddress.ip_network(proxy, strict=False).prefixlen == 0:
                raise ConfigError(
                    f"SWITCHBOARD_TRUSTED_PROXIES: {proxy!r} trusts every address in prod, so "
                    "any client could choose the address its limits count against"
                )

    def _check_values(self) -> None:
        """Values that parse but cannot work fail here, naming their variable."""

        def bad(name: str, why: str) -> ConfigError:
            env = next(f.metadata["env"] for f in fields(self) if f.name == name)
            return ConfigError(f"{env}: {why}, got {getattr(self, name)!r}")

        if self.log_level.lower() not in ("debug", "info", "warning", "error", "critical"):
            raise bad("log_level", "must be debug, info, warning, error or critical")
        if not 0 <= self.port <= 65535:
            raise bad("port", "must be a port number from 0 to 65535")
        if urlsplit(self.pubsub_url).scheme not in ("memory", "redis", "rediss", "unix"):
            raise bad("pubsub_url", "must be memory://, redis://host:port/db or rediss://")
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise bad(
                    "trusted_proxies", f"{proxy!r} is not an address or CIDR network"
                ) from None
        for name in (
            "max_channels",
            "outbox_limit",
            "user_socket_limit",
            "flood_disconnect",
            "cache_max_value",
            "max_connections_per_ip",
        ):
            if getattr(self, name) < 1:
                raise bad(name, "must be at least 1")
        if self.gc_threshold < 0:
            raise bad("gc_threshold", "must be 0 (Python's own settings) or more")
        if self.history_size < 0:
            raise bad("history_size", "must be 0 (off) or more")
        if self.max_connections < 0:
            raise bad("max_connections", "must be 0 (from the open-file limit) or more")
        if self.max_request_head < 1024:
            raise bad("max_request_head", "must be at least 1024 bytes")
        if self.metrics_address:
            try:
                self.metrics_listener()
            except ValueError:
                raise bad("metrics_address", "must be host:port, [v6 host]:port") from None
        if self.http_parser not in ("auto", "h11", "httptools"):
            raise bad("http_parser", "must be auto, h11 or httptools")
        if self.cache_max_bytes < self.cache_max_value:
            raise bad("cache_max_bytes", "must be at least SWITCHBOARD_CACHE_MAX_VALUE")
        for name in (
            "request_timeout",
            "idle_timeout",
            "close_timeout",
            "presence_window",
            "presence_heartbeat",
            "node_timeout",
            "actor_timeout",
            "drain_period",
            "shutdown_timeout",
            "history_ttl",
            "slow_handle_in_ms",
        ):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0 or (value == 0 and name not in _MAY_BE_0):
                raise bad(name, "must be a positive number")
        if self.presence_window >= self.actor_timeout:
            # A joiner may wait a window for its presence_state, and gives up after this.
            raise bad("presence_window", "must be less than SWITCHBOARD_ACTOR_TIMEOUT")

    def metrics_listener(self) -> tuple[str, int]:
        """``SWITCHBOARD_METRICS_ADDRESS`` as (host, port)."""
        host, _, port = self.metrics_address.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(self.metrics_address)
        return host, int(port)

    def rate(self, name: str) -> tuple[float, float]:
        """A ``burst,per_second`` setting as numbers."""
        value = getattr(self, name)
        parts = value[0].split(":") if len(value) == 1 else value  # "20,2" or "20:2"
        try:
            burst, per_second = (float(part) for part in parts)
            if (
                not (math.isfinite(burst) and math.isfinite(per_second))
                or burst <= 0
                or per_second <= 0
            ):
                raise ValueError
        except ValueError:
            env = next(f.metadata["env"] for f in fields(self) if f.name == name)
            why = "must be 'burst,per_second' (or burst:per_second) with positive numbers"
            raise ConfigError(f"{env} {why}, got {value!r}") from None
        return burst, per_second

    def history_limits(self) -> HistoryLimits | None:
        """What each history topic keeps, or None when history is off."""
        if self.history_size == 0:
            return None
        # A recovery replays at most this many bytes: half the outbox, so it always fits.
        return HistoryLimits(self.history_size, self.history_ttl, max(1, self.outbox_limit // 2))

    @property
    def dev(self) -> bool:
        return self.profile == "dev"


_MAY_BE_0 = ("drain_period", "presence_window")


def _convert(kind: Any, raw: str) -> Any:
    kind = str(kind)
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    if kind == "bool":
        return _bool(raw)
    if kind.startswith("tuple"):
        return _list(raw)
    return raw

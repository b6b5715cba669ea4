"""The ``switchboard`` command: ``serve`` an app's socket (or the demo), run a local
``cluster``, or print a ``token`` for a user."""

from __future__ import annotations

import argparse
import logging
import socket as pysocket
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from switchboard.server.config import ConfigError, Settings
from switchboard.server.loader import LoadError

if TYPE_CHECKING:
    from switchboard.server.socket import Socket


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="switchboard", description="A Phoenix Channels server in Python."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve", help="run a node (settings also come from SWITCHBOARD_* variables)"
    )
    serve.add_argument(
        "socket",
        nargs="?",
        help="your Socket class as module:Class, imported from the current folder "
        "(default: the demo app)",
    )
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 4000; 0 picks a free port)")
    serve.add_argument("--secret", help="token signing secret (required outside the dev profile)")
    serve.add_argument("--allowed-origins", help="comma-separated origins allowed to open sockets")
    serve.add_argument("--pubsub-url", help="memory:// (default) or redis://host:port/db")
    serve.add_argument("--profile", choices=["dev", "test", "prod"], help="default dev")

    token = commands.add_parser("token", help="print a signed token for a user")
    token.add_argument("--user", required=True, help="user id to put in the token")
    token.add_argument(
        "--ttl", type=int, default=24 * 3600, help="seconds until it expires (default 1 day)"
    )
    token.add_argument("--secret", help="signing secret (default: the profile's)")
    token.add_argument("--profile", choices=["dev", "test", "prod"])

    cluster = commands.add_parser(
        "cluster",
        help="run redis-server, N nodes and nginx on loopback (dev/test); Ctrl-C stops all",
    )
    cluster.add_argument("--nodes", type=int, default=2, help="how many nodes (default 2)")
    cluster.add_argument("--port", type=int, default=8080, help="nginx port (default 8080)")
    cluster.add_argument(
        "--drain-period", type=float, default=5.0, help="node drain period on stop"
    )

    args = parser.parse_args(argv)
    if args.command == "cluster":
        from switchboard.server.devcluster import run

        return run(args.nodes, args.port, args.drain_period)
    try:
        if args.command == "serve":
            origins = None
            if args.allowed_origins is not None:
                origins = tuple(o.strip() for o in args.allowed_origins.split(",") if o.strip())
            settings = Settings.from_env(
                host=args.host,
                port=args.port,
                secret=args.secret,
                allowed_origins=origins,
                pubsub_url=args.pubsub_url,
                profile=args.profile,
            )
            socket_class = None
            if args.socket is not None:
                from switchboard.server.loader import load_socket

                socket_class = load_socket(args.socket)
            return _serve(settings, socket_class)
        settings = Settings.from_env(secret=args.secret, profile=args.profile)
    except (ConfigError, LoadError) as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2
    from switchboard.server.auth import issue_token

    print(issue_token(settings.secret, args.user, ttl=args.ttl))
    return 0


def _serve(settings: Settings, socket_class: type[Socket] | None) -> int:
    import dataclasses

    import uvicorn

    from switchboard.server import guard, logs
    from switchboard.server.demo import DemoSocket
    from switchboard.server.endpoint import Endpoint

    fds = guard.raise_fd_limit()  # before anything opens: listeners, Redis, clients
    sock = _listen(settings.host, settings.port)
    settings = dataclasses.replace(settings, port=sock.getsockname()[1])
    sockets = [sock]
    if settings.metrics_address:
        sockets.append(_listen(*settings.metrics_listener()))

    endpoint = Endpoint(socket_class or DemoSocket, settings=settings)
    app = endpoint.app
    logs.configure(settings.log_level, endpoint.node.id)
    connections = guard.guard_for(settings, fds)
    parser = guard.http_parser(settings)
    http_protocol, ws_protocol = guard.protocols(connections, parser)
    logging.getLogger("switchboard.guard").info(
        "open-file limit %d (was %d, hard limit %d); at most %d connections, %s per client "
        "address; requests must arrive within %.0f s; HTTP parser %s",
        fds.soft,
        fds.was,
        fds.hard,
        connections.max_connections,
        connections.max_per_address or "any number",
        connections.request_timeout,
        parser,
        extra={
            "event": "limits",
            "fd_limit": fds.soft,
            "max_connections": connections.max_connections,
        },
    )
    app.state.metrics.watch(connections)
    if len(sockets) > 1:
        host, port = sockets[1].getsockname()[:2]
        app.state.metrics.listener = (host, port)
        logging.getLogger("switchboard.metrics").info(
            "/metrics on http://%s:%d only",
            host,
            port,
            extra={"event": "metrics_listening", "port": port},
        )
    config = uvicorn.Config(
        app,
        http=http_protocol,
        ws=ws_protocol,
        h11_max_incomplete_event_size=settings.max_request_head,
        backlog=guard.accept_batch(fds),  # per round of accepts; the runner restores the queue
        ws_max_size=settings.max_frame_size,
        # No WebSocket pings from the server: Phoenix clients send heartbeats and the idle
        # sweep closes a socket silent for SWITCHBOARD_IDLE_TIMEOUT, as Phoenix does. uvicorn's
        # pings cost a timer per socket and closed busy clients (1011) whose pongs were late.
        ws_ping_interval=None,
        ws_ping_timeout=None,
        ws_per_message_deflate=settings.compression,
        lifespan="on",
        log_config=None,
        access_log=False,
        # X-Forwarded-For is believed only from SWITCHBOARD_TRUSTED_PROXIES (server.client_ip);
        # uvicorn's own proxy handling would trust any loopback peer before we look.
        proxy_headers=False,
        timeout_graceful_shutdown=5,
    )
    from switchboard.server.runner import DrainingServer

    DrainingServer(config, endpoint.node, connections).run(sockets=sockets)
    return 0


def _listen(host: str, port: int) -> pysocket.socket:
    """A listening socket: connections queue from now on, before uvicorn's first accept."""
    from switchboard.server.guard import LISTEN_BACKLOG

    family = pysocket.AF_INET6 if ":" in host else pysocket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose listener
    # says so, and without it Nagle holds back the second of two small frames by ~40 ms.
    sock = pysocket.socket(family, pysocket.SOCK_STREAM, pysocket.IPPROTO_TCP)
    sock.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(LISTEN_BACKLOG)
    return sock


if __name__ == "__main__":
    sys.exit(main())

"""A WebSocket client on a plain blocking socket, for tests that misbehave on purpose: it
sends whatever frames it is told, in one write if asked, and reads only when told to.

(No frame goes out with the upgrade request: uvicorn drops bytes that follow the request
in the same read.)
"""

from __future__ import annotations

import json
import socket
from typing import Any

from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

WAIT = 5.0


def text_frame(frame: list[Any]) -> bytes:
    """A masked client text frame carrying the Phoenix frame ``frame``."""
    return Frame(Opcode.TEXT, json.dumps(frame).encode()).serialize(mask=True, extensions=[])


def ping_frame(payload: bytes = b"") -> bytes:
    """A masked client ping frame."""
    return Frame(Opcode.PING, payload).serialize(mask=True, extensions=[])


class RawClient:
    def __init__(self, url: str, rcvbuf: int | None = None) -> None:
        self.protocol = ClientProtocol(parse_uri(url))
        uri = self.protocol.uri
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(WAIT)
        self.sock.connect((uri.host, uri.port))
        self.protocol.send_request(self.protocol.connect())
        self.sock.sendall(b"".join(self.protocol.data_to_send()))
        #: Text frames received, decoded; pongs received; the server's close code.
        self.frames: list[Any] = []
        self.pongs = 0
        self.close_code: int | None = None
        self.read_until(0)

    def send(self, *frames: list[Any]) -> None:
        """Send Phoenix frames, all in one write."""
        self.sock.sendall(b"".join(text_frame(frame) for frame in frames))

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_until(self, count: int, timeout: float = WAIT) -> list[Any]:
        """Read until ``count`` text frames came in all (and the handshake is done)."""
        self.sock.settimeout(timeout)
        while len(self.frames) < count or self.protocol.state is State.CONNECTING:
            if not self._read():
                raise ConnectionError(f"closed ({self.close_code}) after {len(self.frames)}")
        return self.frames

    def read_until_pongs(self, count: int, timeout: float = WAIT) -> None:
        """Read until ``count`` pongs came in all."""
        self.sock.settimeout(timeout)
        while self.pongs < count:
            if not self._read():
                raise ConnectionError(f"closed ({self.close_code}) after {self.pongs} pongs")

    def read_to_end(self, timeout: float = WAIT) -> int | None:
        """Read until the server closes; its close code (None: the connection just ended).
        Raises ``ConnectionResetError`` if the server resets it, ``TimeoutError`` if it
        stays open."""
        self.sock.settimeout(timeout)
        while self._read():
            pass
        return self.close_code

    def _read(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                assert event.status_code == 101, event
            elif event.opcode is Opcode.TEXT:
                self.frames.append(json.loads(event.data))
            elif event.opcode is Opcode.PONG:
                self.pongs += 1
            elif event.opcode is Opcode.CLOSE:
                self.close_code = Close.parse(event.data).code if event.data else None
                return False
        return True

    def close(self) -> None:
        self.sock.close()

"""How the load generator speaks to each server, on top of ``leanws``.

A flavor knows the URL, the join handshake, the frames for a broadcast and for a
request/reply "ping", and which prefix every received broadcast starts with.
Message bodies always contain ``"s":"#<8-digit sequence>"`` so the generator can
find the sequence number with one ``find``.
"""

from __future__ import annotations

import urllib.parse

import orjson

from switchboard.client import Session, is_reply

from .leanws import WSClient


class Flavor:
    """How to speak to one kind of server, on top of leanws."""

    name = ""
    shout_prefix = b""  # every broadcast received starts with these bytes

    def path(self, index: int) -> str:
        raise NotImplementedError

    def on_open(self, cl: WSClient, room: str) -> None:
        """Start joining ``room``; resolve ``cl.joined`` when done."""

    def control(self, cl: WSClient, p: bytes, now: float) -> None:
        """Every received text message that is not a broadcast lands here."""

    def shout(self, cl: WSClient, body: str) -> bytes:
        raise NotImplementedError

    def ping(self, cl: WSClient) -> bytes:
        """Return the request frame and set ``cl.pending_tag`` to its reply's prefix."""
        raise NotImplementedError

    def heartbeat(self, cl: WSClient) -> None:
        pass

    def room(self, name: str) -> str:
        """The topic/room a scenario called ``name`` uses on this server."""
        return name

    @staticmethod
    def _reply(cl: WSClient, p: bytes, now: float) -> bool:
        fut = cl.pending
        if fut is not None and not fut.done() and p.startswith(cl.pending_tag):
            fut.set_result(now)
            return True
        return False


class PhoenixFlavor(Flavor):
    """Phoenix V2 through :class:`switchboard.client.Session`: one per connection
    (``cl.session``) keeps its refs and join_ref and builds every frame."""

    name = "phoenix"

    def __init__(self, secret: str | None = None, history: bool = True) -> None:
        from switchboard.server.auth import issue_token  # switchboard's own module, imported late
        from switchboard.server.config import DEV_SECRET

        self._issue = issue_token
        self._secret = secret or DEV_SECRET
        # How a shout's broadcast to room:bench begins (pump.c looks for it). room:* keeps
        # history: each shout's ref is its position, so only `[null,"` is fixed (heartbeat
        # replies match too, and are counted as bad_seq, harmlessly).
        room_shout = Session.encode([None, None, self.room("bench"), "shout"])[:-1] + b","
        self.shout_prefix = b'[null,"' if history else room_shout

    def room(self, name: str) -> str:
        return "room:" + name

    def path(self, index: int) -> str:
        token = self._issue(self._secret, f"bench-{index}")
        return f"/socket/websocket?token={urllib.parse.quote(str(token), safe='')}&vsn=2.0.0"

    def on_open(self, cl: WSClient, room: str) -> None:
        cl.session = Session(history=False)
        _, frame = cl.session.join_frame(room)
        cl.send_text(Session.encode(frame))

    def control(self, cl: WSClient, p: bytes, now: float) -> None:
        if self._reply(cl, p, now):
            return
        if cl.joined.done() or b'"phx_reply"' not in p:
            return
        frame = Session.decode(p, text=True)
        if is_reply(cl.session.join_refs[cl.topic])(frame):
            if frame[4].get("status") == "ok":
                cl.joined.set_result(None)
            else:
                cl.joined.set_exception(RuntimeError(f"join refused: {p[:200]!r}"))

    def shout(self, cl: WSClient, body: str) -> bytes:
        _, frame = cl.session.push_frame(cl.topic, "shout", orjson.Fragment(body))
        return Session.encode(frame)

    def ping(self, cl: WSClient) -> bytes:
        _, frame = cl.session.push_frame(cl.topic, "ping", {"n": 1})
        # the reply echoes join_ref, ref and topic: its first bytes are known in advance
        cl.pending_tag = Session.encode([*frame[:3], "phx_reply"])[:-1]
        return Session.encode(frame)

    def heartbeat(self, cl: WSClient) -> None:
        _, frame = cl.session.heartbeat_frame()
        cl.send_text(Session.encode(frame))


class SocketIOFlavor(Flavor):
    """Engine.IO 4 straight over WebSocket, Socket.IO 5 packets, default namespace."""

    name = "socketio"
    shout_prefix = b'42["shout",'

    def path(self, index: int) -> str:
        return "/socket.io/?EIO=4&transport=websocket"

    def control(self, cl: WSClient, p: bytes, now: float) -> None:
        # the join is driven by the server's packets; it uses ack id 1 (cl.ref starts at 1)
        if p == b"2":  # engine.io ping from the server
            cl.send_text(b"3")
        elif self._reply(cl, p, now):
            pass
        elif p[:1] == b"0":  # engine.io open -> connect to namespace "/"
            cl.send_text(b"40")
        elif p[:2] == b"40":  # namespace connected -> join the room, ack id 1
            cl.send_text(f'421["join","{cl.topic}"]'.encode())
        elif p[:4] == b"431[" and not cl.joined.done():
            cl.joined.set_result(None)
        elif p[:2] == b"44" and not cl.joined.done():
            cl.joined.set_exception(RuntimeError(f"connect refused: {p[:200]!r}"))

    def shout(self, cl: WSClient, body: str) -> bytes:
        return f'42["shout",{body}]'.encode()

    def ping(self, cl: WSClient) -> bytes:
        cl.ref += 1
        cl.pending_tag = f"43{cl.ref}[".encode()
        return f'42{cl.ref}["ping",{{"n":{cl.ref}}}]'.encode()


class WebsocketsFlavor(Flavor):
    """Bare websockets: every text message is rebroadcast as-is to every connection."""

    name = "websockets"
    shout_prefix = b'{"s":"'

    def path(self, index: int) -> str:
        return "/"

    def on_open(self, cl: WSClient, room: str) -> None:
        cl.joined.set_result(None)

    def control(self, cl: WSClient, p: bytes, now: float) -> None:
        self._reply(cl, p, now)

    def shout(self, cl: WSClient, body: str) -> bytes:
        return body.encode()

    def ping(self, cl: WSClient) -> bytes:
        cl.ref += 1
        cl.pending_tag = f'{{"ping":{cl.ref}}}'.encode()
        return cl.pending_tag

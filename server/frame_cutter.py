"""Cutting a client's frames off the TCP stream for the common case, without websockets'
parser.

Nearly every frame a Phoenix client sends is one whole, masked text (or binary) frame.
websockets' generator parser takes a dozen Python calls per frame, and uvicorn then wraps
it in an event dict that our reader unwraps again; here such a frame costs one slice, one
C unmask and one UTF-8 decode. A ping or pong is passed to websockets on its own, which
answers it as before, and cutting goes on after it. Anything else (a close, a fragment,
reserved bits set, no mask, a frame over the size limit, text that is not UTF-8) ends the
cutting for the connection: that frame and everything after it go to websockets, which
handles or refuses them exactly as it would have.

Sans-I/O: :meth:`FrameCutter.feed` takes the bytes of a read and hands over whole frames.
"""

from __future__ import annotations

from collections.abc import Callable

from websockets.frames import apply_mask

from switchboard.server.codec import Frame

TEXT = 0x81  # FIN, no RSV bits, opcode 1
BINARY = 0x82  # FIN, no RSV bits, opcode 2
PING = 0x89
PONG = 0x8A
MASKED = 0x80


class FrameCutter:
    """Cuts whole unfragmented data frames; keeps a partial one for the next read."""

    __slots__ = ("max_size", "_partial", "_needed")

    def __init__(self, max_size: int | None) -> None:
        #: Larger frames go to websockets (which closes with 1009) as soon as the header
        #: says so: nothing of them is buffered here.
        self.max_size = max_size
        #: The start of a frame still arriving, and its whole length once its header is in:
        #: reads are appended until it is complete, never copied read by read.
        self._partial = bytearray()
        self._needed = 0

    def feed(
        self,
        data: bytes,
        deliver: Callable[[Frame], bool],
        control: Callable[[bytes], bool],
    ) -> bytes | None:
        """Hand each whole frame in ``data`` (after what an earlier read left) to ``deliver``
        (its payload) or, a ping or pong, to ``control`` (its bytes), in order, while they
        return True. Returns None while cutting goes on, else the bytes websockets must
        parse from now on: from the first frame this does not cut, or after the one a
        callable stopped at."""
        if self._partial:
            self._partial += data
            if len(self._partial) < self._needed:
                return None
            data = bytes(self._partial)
            self._partial.clear()
        end = len(data)
        at = 0
        self._needed = 0
        while end - at >= 2:
            first = data[at]
            second = data[at + 1]
            size = second & 0x7F
            is_data = first == TEXT or first == BINARY  # else a ping or pong, or not ours
            if not second & MASKED or not (
                is_data or (first == PING or first == PONG) and size < 126
            ):
                return data[at:]
            head = at + 2
            if size == 126:
                if end - head < 2:
                    break
                size = int.from_bytes(data[head : head + 2], "big")
                head += 2
            elif size == 127:
                if end - head < 8:
                    break
                size = int.from_bytes(data[head : head + 8], "big")
                head += 8
            if self.max_size is not None and size > self.max_size:
                return data[at:]
            stop = head + 4 + size
            if stop > end:
                self._needed = stop - at
                break
            if is_data:
                payload: Frame = apply_mask(data[head + 4 : stop], data[head : head + 4])
                if first == TEXT:
                    try:
                        payload = payload.decode()  # type: ignore[union-attr]
                    except UnicodeDecodeError:
                        return data[at:]
                if not deliver(payload):
                    return data[stop:]
            elif not control(data[at:stop]):
                return data[stop:]
            at = stop
        if at < end:
            self._partial += data[at:]
        return None

    def rest(self, data: bytes) -> bytes:
        """What websockets must parse when cutting stops between reads: a partial frame
        kept from the last one, then ``data``."""
        partial = bytes(self._partial) + data
        self._partial.clear()
        return partial

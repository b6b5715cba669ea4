"""The receive side of the fan-out scenario: read every client socket, count broadcasts.

Two interchangeable implementations of one small interface:

``CReceiver``
    ``pump.c``, compiled on first use with the system C compiler and called through
    ctypes. Its cost per read is little more than the ``read`` system call.
``PyReceiver``
    The same loop in Python (``select.epoll`` and ``os.read``), used when there is no
    C compiler or with ``--receiver python``; about 2-3x more CPU per read.

Both share the caller's arrays, indexed by sequence number: ``counts`` (copies
received), ``sent_at`` (publisher send time, ``perf_counter``) and ``rec`` (which
latency histogram the copies of that message go to), plus ``hist``: ``classes``
histograms of ``nbuckets`` buckets of ``bucket_s`` seconds each.

``run(timeout_ms)`` waits once for readable sockets, handles all of them and returns
``(now, done, side)``: the time the wait ended, the sequence numbers that have just
reached every client, and ``(fd, first_header_byte, payload)`` for every frame that
is not a broadcast (``first_header_byte`` 0xFF means the peer closed).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import select
import shutil
import struct
import subprocess
import tempfile
from array import array
from pathlib import Path
from time import perf_counter

HERE = Path(__file__).resolve().parent
EOF_MARK = 0xFF


class Shared:
    """Arrays the publisher writes and the receiver reads (and vice versa)."""

    def __init__(self, seq_cap: int, classes: int, nbuckets: int, bucket_s: float) -> None:
        self.seq_cap = seq_cap
        self.counts = array("i", [0]) * seq_cap
        self.sent_at = array("d", [0.0]) * seq_cap
        self.rec = array("b", [0]) * seq_cap
        self.classes = classes
        self.nbuckets = nbuckets
        self.bucket_s = bucket_s
        self.hist = array("q", [0]) * (classes * nbuckets)

    def percentile_ms(self, cls: int, q: float) -> float:
        """Upper edge of the bucket holding the q-quantile of class ``cls``, in ms."""
        nb = self.nbuckets
        part = self.hist[cls * nb : (cls + 1) * nb]
        total = sum(part)
        if total == 0:
            return float("nan")
        rank = q * total
        seen = 0
        for i, c in enumerate(part):
            if c:
                seen += c
                if seen >= rank:
                    return (i + 1) * self.bucket_s * 1000
        return nb * self.bucket_s * 1000

    def samples(self, cls: int) -> int:
        nb = self.nbuckets
        return sum(self.hist[cls * nb : (cls + 1) * nb])


def _addr(a: array) -> int:  # type: ignore[type-arg]
    return a.buffer_info()[0]


def build_pump() -> Path:
    """Compile pump.c into a cached shared library; raise if that is impossible."""
    src = HERE / "pump.c"
    digest = hashlib.sha1(src.read_bytes()).hexdigest()[:12]
    so = Path(tempfile.gettempdir()) / f"switchboard-bench-pump-{digest}.so"
    if so.exists():
        return so
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise RuntimeError("no C compiler (cc/gcc) on PATH")
    tmp = so.with_name(f"{so.name}.{os.getpid()}.tmp")
    proc = subprocess.run(
        [cc, "-O2", "-shared", "-fPIC", "-o", str(tmp), str(src)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"compiling pump.c failed:\n{proc.stderr}")
    os.replace(tmp, so)
    return so


class CReceiver:
    name = "c"

    def __init__(self, shared: Shared, n_clients: int, prefix: bytes, max_fd: int) -> None:
        lib = ctypes.CDLL(str(build_pump()))
        i64, vp, dbl = ctypes.c_int64, ctypes.c_void_p, ctypes.c_double
        lib.pump_init.argtypes = [
            i64,
            ctypes.c_char_p,
            ctypes.c_int,
            vp,
            vp,
            vp,
            i64,
            vp,
            i64,
            dbl,
            ctypes.c_int,
        ]
        lib.pump_add.argtypes = [ctypes.c_int]
        lib.pump_feed.argtypes = [ctypes.c_int, ctypes.c_char_p, i64]
        lib.pump_run.argtypes = [ctypes.c_int, vp, i64, vp, vp, i64, vp, vp]
        lib.pump_stats.argtypes = [vp]
        self.lib = lib
        self.shared = shared
        rc = lib.pump_init(
            n_clients,
            prefix,
            len(prefix),
            _addr(shared.counts),
            _addr(shared.sent_at),
            _addr(shared.rec),
            shared.seq_cap,
            _addr(shared.hist),
            shared.nbuckets,
            shared.bucket_s,
            max_fd,
        )
        if rc != 0:
            raise RuntimeError("pump_init failed")
        self.done = array("i", [0]) * 65536
        self.side = bytearray(4 << 20)
        self._side_buf = (ctypes.c_char * len(self.side)).from_buffer(self.side)
        self.done_n = ctypes.c_int64()
        self.side_n = ctypes.c_int64()
        self.now = ctypes.c_double()
        self.stats_buf = array("q", [0]) * 8

    def add(self, fd: int, pending: bytes = b"") -> None:
        if self.lib.pump_add(fd) != 0:
            raise RuntimeError(f"pump_add({fd}) failed")
        if pending:
            self.lib.pump_feed(fd, pending, len(pending))

    def run(self, timeout_ms: int) -> tuple[float, list[int], list[tuple[int, int, bytes]]]:
        k = self.lib.pump_run(
            timeout_ms,
            _addr(self.done),
            len(self.done),
            ctypes.addressof(self.done_n),
            ctypes.addressof(self._side_buf),
            len(self.side),
            ctypes.addressof(self.side_n),
            ctypes.addressof(self.now),
        )
        if k < 0:
            raise OSError(ctypes.get_errno(), "epoll_wait failed")
        done = self.done[: self.done_n.value].tolist() if self.done_n.value else []
        side: list[tuple[int, int, bytes]] = []
        n = self.side_n.value
        if n:
            buf = self.side
            i = 0
            while i < n:
                fd, b0, ln = struct.unpack_from("<iBI", buf, i)
                side.append((fd, b0, bytes(buf[i + 9 : i + 9 + ln])))
                i += 9 + ln
        return self.now.value, done, side

    def stats(self) -> dict[str, int]:
        self.lib.pump_stats(_addr(self.stats_buf))
        s = self.stats_buf
        return {
            "delivered": s[0],
            "reads": s[1],
            "polls": s[2],
            "eofs": s[3],
            "side_dropped": s[4],
            "bad_seq": s[5],
        }

    def close(self) -> None:
        self.lib.pump_close()


class PyReceiver:
    name = "python"

    def __init__(self, shared: Shared, n_clients: int, prefix: bytes, max_fd: int) -> None:
        self.shared = shared
        self.n = n_clients
        self.prefix = prefix
        self.ep = select.epoll()
        self.bufs: dict[int, bytes] = {}
        self.delivered = self.reads = self.polls = self.eofs = self.bad_seq = 0

    def add(self, fd: int, pending: bytes = b"") -> None:
        self.ep.register(fd, select.EPOLLIN)
        if pending:
            self.bufs[fd] = pending

    def run(self, timeout_ms: int) -> tuple[float, list[int], list[tuple[int, int, bytes]]]:
        sh = self.shared
        counts, sent_at, rec, hist = sh.counts, sh.sent_at, sh.rec, sh.hist
        nb, bs = sh.nbuckets, sh.bucket_s
        last = nb - 1
        prefix = self.prefix
        plen = len(prefix)
        n_clients = self.n
        bufs = self.bufs
        read = os.read
        done: list[int] = []
        side: list[tuple[int, int, bytes]] = []
        delivered = 0
        events = self.ep.poll(timeout_ms / 1000)
        now = perf_counter()
        self.polls += 1
        for fd, _ in events:
            try:
                data = read(fd, 65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            self.reads += 1
            if not data:
                self.ep.unregister(fd)
                self.eofs += 1
                side.append((fd, EOF_MARK, b""))
                continue
            if fd in bufs:
                data = bufs.pop(fd) + data
            size = len(data)
            i = 0
            while size - i >= 2:
                b0 = data[i]
                b1 = data[i + 1]
                ln = b1 & 0x7F
                if ln < 126:
                    h = i + 2
                elif ln == 126:
                    if size - i < 4:
                        break
                    ln = (data[i + 2] << 8) | data[i + 3]
                    h = i + 4
                else:
                    if size - i < 10:
                        break
                    ln = int.from_bytes(data[i + 2 : i + 10], "big")
                    h = i + 10
                if b1 & 0x80:  # servers must not mask; unmask and take the slow path
                    end = h + 4 + ln
                    if end > size:
                        break
                    key = data[h : h + 4]
                    payload = bytes(b ^ key[k & 3] for k, b in enumerate(data[h + 4 : end]))
                    delivered += self._slow(fd, b0, payload, now, done, side)
                    i = end
                    continue
                end = h + ln
                if end > size:
                    break
                if b0 == 0x81 and data.startswith(prefix, h):
                    j = data.find(b"#", h + plen, end) + 1
                    try:
                        seq = int(data[j : j + 8])
                    except ValueError:
                        self.bad_seq += 1
                        i = end
                        continue
                    c = counts[seq] + 1
                    counts[seq] = c
                    delivered += 1
                    b = int((now - sent_at[seq]) / bs)
                    hist[rec[seq] * nb + (b if b < last else last)] += 1
                    if c == n_clients:
                        done.append(seq)
                else:
                    side.append((fd, b0, data[h:end]))
                i = end
            if i < size:
                bufs[fd] = data[i:]
        self.delivered += delivered
        return now, done, side

    def _slow(
        self,
        fd: int,
        b0: int,
        payload: bytes,
        now: float,
        done: list[int],
        side: list[tuple[int, int, bytes]],
    ) -> int:
        sh = self.shared
        if not (b0 == 0x81 and payload.startswith(self.prefix)):
            side.append((fd, b0, payload))
            return 0
        j = payload.find(b"#", len(self.prefix)) + 1
        try:
            seq = int(payload[j : j + 8])
        except ValueError:
            self.bad_seq += 1
            return 0
        sh.counts[seq] += 1
        b = min(int((now - sh.sent_at[seq]) / sh.bucket_s), sh.nbuckets - 1)
        sh.hist[sh.rec[seq] * sh.nbuckets + b] += 1
        if sh.counts[seq] == self.n:
            done.append(seq)
        return 1

    def stats(self) -> dict[str, int]:
        return {
            "delivered": self.delivered,
            "reads": self.reads,
            "polls": self.polls,
            "eofs": self.eofs,
            "side_dropped": 0,
            "bad_seq": self.bad_seq,
        }

    def close(self) -> None:
        self.ep.close()


def make_receiver(
    kind: str, shared: Shared, n_clients: int, prefix: bytes, max_fd: int
) -> CReceiver | PyReceiver:
    """``kind``: "c", "python" or "auto" (C if it compiles, else Python)."""
    if kind in ("c", "auto"):
        try:
            return CReceiver(shared, n_clients, prefix, max_fd)
        except (OSError, RuntimeError) as exc:
            if kind == "c":
                raise
            print(f"note: C receiver unavailable ({str(exc).splitlines()[0]}); using Python")
    return PyReceiver(shared, n_clients, prefix, max_fd)

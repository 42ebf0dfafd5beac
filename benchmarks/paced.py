"""Paced UDP / TCP sender and a receiver that records every message, for the block-latency
phase of ``benchmarks/live.py`` (run inside the lab's client and server namespaces).

Every message starts with the sender's sequence number and its send time
(``time.monotonic()``, CLOCK_MONOTONIC: one clock for all namespaces of the host). The
sender keeps a message every ``--interval-us`` (sleeping, with a 1 µs timer slack); TCP
messages are fixed-size records on a ``TCP_NODELAY`` connection that the sender opens
again (every 10 ms) after a reset. Both sides stop after ``--seconds`` or on SIGTERM and
write what they sent / received to ``--out`` (``.npz``).

    python -m benchmarks.paced recv --bind IP --port 443 --out recv.npz --seconds 120
    python -m benchmarks.paced send --to IP --port 443 --proto udp --out udp.npz
"""

from __future__ import annotations

import argparse
import ctypes
import selectors
import signal
import socket
import struct
import time
from array import array
from types import FrameType
from typing import Any

import numpy as np

HEADER = struct.Struct("!Qd")  # sequence number, send time (CLOCK_MONOTONIC seconds)
SIZE = 64  # bytes per message (UDP payload / TCP record)
_PR_SET_TIMERSLACK = 29
_stop = False


def _on_term(signum: int, frame: FrameType | None) -> None:
    global _stop
    _stop = True


def _setup(seconds: float) -> float:
    """SIGTERM stops the loop; 1 µs timer slack for the pacing sleeps; the deadline."""
    signal.signal(signal.SIGTERM, _on_term)
    ctypes.CDLL(None).prctl(_PR_SET_TIMERSLACK, 1000, 0, 0, 0)  # in ns
    return time.monotonic() + seconds


class _Log:
    """Sequence numbers and times (send, and receive or event) of one kind of message."""

    def __init__(self) -> None:
        self.seq, self.sent, self.at = array("Q"), array("d"), array("d")

    def add(self, seq: int, sent: float, at: float) -> None:
        self.seq.append(seq)
        self.sent.append(sent)
        self.at.append(at)

    def arrays(self, name: str) -> dict[str, Any]:
        return {
            f"{name}_seq": np.frombuffer(self.seq, dtype=np.uint64),
            f"{name}_sent": np.frombuffer(self.sent, dtype=np.float64),
            f"{name}_at": np.frombuffer(self.at, dtype=np.float64),
        }


def receive(bind: str, port: int, seconds: float, out: str) -> None:
    """Record (seq, send time, arrival) of every UDP datagram and TCP record on ``port``."""
    deadline = _setup(seconds)
    logs = {"udp": _Log(), "tcp": _Log()}
    sel = selectors.DefaultSelector()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 8 << 20)
    udp.bind((bind, port))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((bind, port))
    tcp.listen(64)
    for s in (udp, tcp):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    pending: dict[socket.socket, bytearray] = {}
    print(f"receiving on {bind}:{port}", flush=True)
    while not _stop and time.monotonic() < deadline:
        for key, _ in sel.select(0.2):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            now = time.monotonic()
            if sock is udp:
                while True:
                    try:
                        data = udp.recv(2048)
                    except BlockingIOError:
                        break
                    seq, sent = HEADER.unpack_from(data)
                    logs["udp"].add(seq, sent, now)
            elif sock is tcp:
                conn, _ = tcp.accept()
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ)
                pending[conn] = bytearray()
            else:
                try:
                    data = sock.recv(1 << 16)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(sock)
                    sock.close()
                    del pending[sock]
                    continue
                buf = pending[sock]
                buf += data
                whole = len(buf) - len(buf) % SIZE
                for off in range(0, whole, SIZE):
                    seq, sent = HEADER.unpack_from(buf, off)
                    logs["tcp"].add(seq, sent, now)
                del buf[:whole]
    np.savez(out, **logs["udp"].arrays("udp"), **logs["tcp"].arrays("tcp"))


def send(to: str, port: int, proto: str, interval_us: float, seconds: float, out: str) -> None:
    """Send a message every ``interval_us``; log (seq, send time) of each one written, and
    for TCP the time each reset (or refused reconnect) was seen."""
    deadline = _setup(seconds)
    sent, resets = _Log(), _Log()
    interval = interval_us / 1e6
    msg = bytearray(SIZE)
    sock: socket.socket | None = None
    seq, next_at = 0, time.monotonic()
    print(f"sending {proto} to {to}:{port}", flush=True)
    while not _stop and time.monotonic() < deadline:
        if sock is None:
            kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
            sock = socket.socket(socket.AF_INET, kind)
            sock.settimeout(1.0)
            try:
                if proto == "tcp":
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.connect((to, port))
            except OSError:
                resets.add(seq, time.monotonic(), time.monotonic())
                sock.close()
                sock = None
                time.sleep(0.01)
                continue
            next_at = time.monotonic()
        now = time.monotonic()
        HEADER.pack_into(msg, 0, seq, now)
        try:
            sock.sendall(msg) if proto == "tcp" else sock.send(msg)
        except OSError:
            resets.add(seq, time.monotonic(), time.monotonic())
            if proto == "tcp":
                sock.close()
                sock = None
            continue
        sent.add(seq, now, now)
        seq += 1
        next_at = max(next_at + interval, time.monotonic() - 10 * interval)
        pause = next_at - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    if sock is not None:
        sock.close()
    np.savez(out, **sent.arrays("sent"), **resets.arrays("reset"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("role", choices=("send", "recv"))
    ap.add_argument("--bind", default="0.0.0.0")
    ap.add_argument("--to", default="")
    ap.add_argument("--port", type=int, default=443)
    ap.add_argument("--proto", choices=("udp", "tcp"), default="udp")
    ap.add_argument("--interval-us", type=float, default=100.0)
    ap.add_argument("--seconds", type=float, default=120.0, help="hard time limit")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.role == "recv":
        receive(args.bind, args.port, args.seconds, args.out)
    else:
        send(args.to, args.port, args.proto, args.interval_us, args.seconds, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Live packet sources for a router: AF_PACKET on interfaces, or NFLOG from nftables.

Both hand out batches of decoded :class:`Packet` records and count what they received,
what the kernel dropped before shortflow could read it, and what was not TCP/UDP.

* :class:`AfPacketSource` reads every frame of the given (client-facing) interfaces; it
  changes no firewall state, so it is what dry-run uses.
* :class:`NflogSource` reads an NFLOG group that shortflow's own nftables table feeds
  (:meth:`classifier.enforce.nft.NftTable.add_capture`), where the kernel decides the copy
  length: whole packets for the first packets of a connection and for DNS, headers after.
"""

from __future__ import annotations

import logging
import mmap
import select
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from classifier.capture.decode import LINKTYPE_ETHERNET, LINKTYPE_RAW, decode_frame
from classifier.capture.live_fast import (
    MIN_PACKET_MESSAGE,
    TP3_HEADER,
    BatchArrays,
    BatchSink,
    PacketBuilder,
    release_blocks,
    walk_nflog,
    walk_tpacket,
)
from classifier.capture.nflog import (
    ATTR_PAYLOAD,
    ATTR_SEQ,
    ATTR_TIMESTAMP,
    MSG_PACKET,
    NFNL_SUBSYS_ULOG,
)
from classifier.capture.packet import Packet
from classifier.errors import CaptureError

__all__ = [
    "DECODER_ALIASES",
    "ENGINES",
    "live_engine",
    "LiveSource",
    "LiveStats",
    "AfPacketSource",
    "NflogBatch",
    "NflogParser",
    "NflogSource",
]

log = logging.getLogger(__name__)

_ETH_P_ALL = 0x0003
# ARPHRD device types (linux/if_arp.h) -> what an AF_PACKET SOCK_RAW frame starts with
_ARPHRD_LINKTYPES = {
    1: LINKTYPE_ETHERNET,
    772: LINKTYPE_ETHERNET,  # Ethernet; loopback (zeroed Ethernet)
    65534: LINKTYPE_RAW,
    768: LINKTYPE_RAW,
    769: LINKTYPE_RAW,  # none (WireGuard, tun),
    776: LINKTYPE_RAW,
    519: LINKTYPE_RAW,  # IP-in-IP tunnels, raw IP
}
_SOL_PACKET = 263
_PACKET_STATISTICS = 6
_RCVBUF = 32 << 20
_SO_RCVBUFFORCE = 33  # root may exceed net.core.rmem_max (not in Python's socket module)
#: How a live source decodes: ``fast`` (compiled, many packets per call) or ``reference``
#: (one at a time in Python).
ENGINES = ("fast", "reference")
#: The older names of the engines (``--decoder batch|python``), still accepted.
DECODER_ALIASES = {"batch": "fast", "python": "reference"}


def live_engine(name: str, where: str = "live capture") -> str:
    """``name`` as one of :data:`ENGINES` (an older name from :data:`DECODER_ALIASES`
    translated); raises :class:`CaptureError` naming ``where`` for anything else."""
    engine = DECODER_ALIASES.get(name, name)
    if engine not in ENGINES:
        raise CaptureError(where, f"engine {name!r}: use " + " or ".join(ENGINES))
    return engine


@dataclass(slots=True)
class LiveStats:
    """``received``: frames read; ``packets``: TCP/UDP packets handed out; ``dropped``: lost
    in the kernel before shortflow read them (socket buffer full); ``skipped``: by reason."""

    received: int = 0
    packets: int = 0
    dropped: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def loss_rate(self) -> float:
        total = self.received + self.dropped
        return self.dropped / total if total else 0.0


class LiveSource(Protocol):
    stats: LiveStats
    sink: BatchSink | None

    def read(self, timeout: float) -> list[Packet]:
        """Wait up to ``timeout`` seconds and return the packets that arrived (maybe none)."""
        ...

    def close(self) -> None: ...


def _big_rcvbuf(sock: socket.socket) -> None:
    """A large receive buffer: forced past ``net.core.rmem_max`` when allowed (root)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, _RCVBUF)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)


def _linktype(iface: str, arphrd: int) -> int:
    """The pcap link type of frames read on ``iface`` (device type ``arphrd``)."""
    linktype = _ARPHRD_LINKTYPES.get(arphrd)
    if linktype is None:
        raise OSError(0, f"device type {arphrd} (ARPHRD) is neither Ethernet nor plain IP", iface)
    return linktype


def _add_counts(stats: LiveStats, arrays: BatchArrays, packets: int) -> None:
    messages, skipped = arrays.take_counts()
    stats.received += messages
    stats.packets += packets
    for reason, n in skipped.items():
        stats.skipped[reason] = stats.skipped.get(reason, 0) + n


def _account(stats: LiveStats, decoded: Packet | str, out: list[Packet]) -> None:
    stats.received += 1
    if isinstance(decoded, Packet):
        stats.packets += 1
        out.append(decoded)
    else:
        stats.skipped[decoded] = stats.skipped.get(decoded, 0) + 1


class AfPacketSource:
    """Frames of Ethernet interfaces through AF_PACKET raw sockets (both directions).

    ``engine="fast"`` (the default) maps a TPACKET_V3 ring per interface: the kernel
    fills blocks of frames (handed over when full or after 10 ms) and one compiled call
    decodes the ready blocks; ``"reference"`` reads and decodes one frame per call. Give
    the client-facing interface(s) only: a forwarded packet seen on two interfaces would
    count twice. Raises :class:`CaptureError` when an interface does not
    exist or the process lacks CAP_NET_RAW.
    """

    def __init__(self, ifaces: Sequence[str], max_batch: int = 4096, engine: str = "fast") -> None:
        engine = live_engine(engine, ", ".join(ifaces))
        self.stats = LiveStats()
        self._max_batch = max_batch
        self._socks: list[socket.socket] = []
        self._linktypes: list[int] = []  # per socket
        self._rings: list[_Ring] = []
        for iface in ifaces:
            try:
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
                self._socks.append(s)
                s.bind((iface, 0))
                linktype = _linktype(iface, s.getsockname()[3])
                self._linktypes.append(linktype)
                if engine == "fast":
                    self._rings.append(_Ring(s, linktype))
                else:
                    _big_rcvbuf(s)
                s.setblocking(False)
            except PermissionError as exc:
                self.close()
                raise CaptureError(iface, "capturing needs root or CAP_NET_RAW") from exc
            except OSError as exc:
                self.close()
                raise CaptureError(
                    iface, f"cannot capture on this interface ({exc.strerror})"
                ) from exc
        self._arrays = BatchArrays(_RING_ROWS)
        self._builder = PacketBuilder()
        self.sink: BatchSink | None = None
        """With the fast engine: when set, decoded batches go to it, not into packets."""

    def read(self, timeout: float) -> list[Packet]:
        out: list[Packet] = []
        ready, _, _ = select.select(self._socks, [], [], timeout)
        if self._rings:
            taken = 0
            for ring in self._rings:  # a ring may hold ready blocks select did not report
                taken += ring.read(self._arrays, self.sink or self._builder.sink(out))
            _add_counts(self.stats, self._arrays, taken)
        for s in ready if not self._rings else ():
            linktype = self._linktypes[self._socks.index(s)]
            for _ in range(self._max_batch):
                try:
                    data = s.recv(65535)
                except BlockingIOError:
                    break
                decoded = decode_frame(linktype, data, time.time(), len(data))
                _account(self.stats, decoded, out)
        self._update_drops()
        return out

    def _update_drops(self) -> None:
        size = 12 if self._rings else 8  # tpacket_stats_v3 adds a freeze counter
        for s in self._socks:
            raw = s.getsockopt(_SOL_PACKET, _PACKET_STATISTICS, size)
            # reading resets the kernel counters
            self.stats.dropped += struct.unpack_from("II", raw)[1]

    def close(self) -> None:
        for ring in self._rings:
            ring.close()
        self._rings = []
        for s in self._socks:
            s.close()
        self._socks = []


_PACKET_VERSION, _PACKET_RX_RING, _TPACKET_V3 = 10, 5, 2
# 16 MiB, all of it resident from the start. At a low rate blocks leave part-empty
# (handed over after _RING_RETIRE_MS), so the number of blocks sets how long a stalled
# loop may take: >= 1.28 s; at a high rate the bytes do (~0.3 s of 300 k small packets/s,
# where the loop needs a quarter of a core). A block holds a 64 KiB GRO frame.
_RING_BLOCK = 1 << 17
_RING_BLOCKS = 128
_RING_FRAME = 2048  # TPACKET_V3 packs frames of any size; this only sets tp_frame_nr
_RING_RETIRE_MS = 10  # a block not yet full is handed over after this long
# Packets decoded per read at most (whole blocks: at least one, since a block holds at most
# _RING_BLOCK // TP3_HEADER = 2730 frames). A read's packets stay in memory until they are
# in their flows, so more rows than a block or two only make a late read bigger (65,536
# rows held ~28 MiB more at the peak of the 50,000-flow memory run).
_RING_ROWS = 1 << 13


def _empty_columns() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    a = BatchArrays(_RING_BLOCK // TP3_HEADER)
    return a.ts, a.cols, a.counts, a.notes


class _Ring:
    """A TPACKET_V3 receive ring on an AF_PACKET socket, walked block by block."""

    def __init__(self, sock: socket.socket, linktype: int) -> None:
        self._linktype = linktype
        sock.setsockopt(_SOL_PACKET, _PACKET_VERSION, _TPACKET_V3)
        req = struct.pack(
            "=7I",
            _RING_BLOCK,
            _RING_BLOCKS,
            _RING_FRAME,
            _RING_BLOCK * _RING_BLOCKS // _RING_FRAME,
            _RING_RETIRE_MS,
            0,
            0,
        )
        sock.setsockopt(_SOL_PACKET, _PACKET_RX_RING, req)
        self._map = mmap.mmap(
            sock.fileno(),
            _RING_BLOCK * _RING_BLOCKS,
            mmap.MAP_SHARED,
            mmap.PROT_READ | mmap.PROT_WRITE,
        )
        self._ring = np.frombuffer(self._map, np.uint8)
        self._view = memoryview(self._map)
        self._next = 0  # the block the kernel fills next
        # load (or compile) the walker now, not at the first packet: an empty ring
        walk_tpacket(
            np.zeros(_RING_BLOCK, np.uint8), _RING_BLOCK, 1, 0, False, linktype, *_empty_columns()
        )

    def read(self, arrays: BatchArrays, sink: BatchSink) -> int:
        """Decode the ready blocks, hand the packets to ``sink`` and the blocks back to
        the kernel; return how many packets there were."""
        k, walked = walk_tpacket(
            self._ring,
            _RING_BLOCK,
            _RING_BLOCKS,
            self._next,
            arrays.big,
            self._linktype,
            arrays.ts,
            arrays.cols,
            arrays.counts,
            arrays.notes,
        )
        sink(arrays, k, self._view)  # copies what it keeps out of the blocks
        release_blocks(self._ring, _RING_BLOCK, _RING_BLOCKS, self._next, walked)
        self._next = (self._next + walked) % _RING_BLOCKS
        return k

    def close(self) -> None:
        del self._ring
        self._view.release()
        self._map.close()


# NFLOG over nfnetlink (linux/netfilter/nfnetlink_log.h)
_NETLINK_NETFILTER = 12
_MSG_CONFIG = (NFNL_SUBSYS_ULOG << 8) | 1
_NLM_F_REQUEST, _NLM_F_ACK = 0x1, 0x4
_NLMSG_ERROR = 2
_CFG_CMD, _CFG_MODE, _CFG_NLBUFSIZ, _CFG_TIMEOUT, _CFG_QTHRESH, _CFG_FLAGS = 1, 2, 3, 4, 5, 6
_CFG_F_SEQ = 0x0001  # number the group's messages, so lost ones show as gaps
_CMD_BIND, _CMD_UNBIND = 1, 2
_COPY_PACKET = 2
_ENOBUFS = 105
_NLBUFSIZ = 131072  # the kernel's largest batch of messages in one netlink datagram
_QTHRESH = 1024  # ... or this many messages, whichever comes first
_FLUSH_CENTISECONDS = 1  # ... or after 10 ms
_READ_BUFFER = 4 << 20  # batch decoder: bytes read per wakeup at most
_MAX_DATAGRAM = 2 * _NLBUFSIZ  # room kept free for one more datagram (a 64 KiB GSO packet fits)


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _ip_length(payload: bytes) -> int:
    """The IP packet's length on the wire, from its header (NFLOG may cut the copy)."""
    if len(payload) >= 4 and payload[0] >> 4 == 4:
        return int.from_bytes(payload[2:4], "big") or len(payload)
    if len(payload) >= 6 and payload[0] >> 4 == 6:
        return int.from_bytes(payload[4:6], "big") + 40
    return len(payload)


class NflogParser:
    """The per-message reference decoder of NFLOG netlink datagrams (struct unpacking and
    one :func:`decode_frame` call per message); :func:`walk_nflog` is the compiled batch
    equivalent. Counts into ``stats``; lost messages show as NFULA_SEQ gaps."""

    def __init__(self, stats: LiveStats) -> None:
        self.stats = stats
        self._next_msg: int | None = None  # the NFULA_SEQ expected next

    def parse(self, data: bytes, out: list[Packet]) -> None:
        off = 0
        while off + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, off)
            if length < 16 or off + length > len(data):
                break
            if kind == MSG_PACKET:
                self._packet(data[off + 16 : off + length], out)
            off += (length + 3) & ~3

    def _packet(self, body: bytes, out: list[Packet]) -> None:
        payload = b""
        ts = 0.0
        pos = 4  # after nfgenmsg
        while pos + 4 <= len(body):
            alen, akind = struct.unpack_from("=HH", body, pos)
            if alen < 4:
                break
            value = body[pos + 4 : pos + alen]
            akind &= 0x7FFF
            if akind == ATTR_PAYLOAD:
                payload = value
            elif akind == ATTR_TIMESTAMP and len(value) >= 16:
                sec, usec = struct.unpack(">QQ", value[:16])
                ts = sec + usec / 1e6
            elif akind == ATTR_SEQ and len(value) >= 4:
                (seq,) = struct.unpack(">I", value[:4])
                if self._next_msg is not None and seq != self._next_msg:
                    self.stats.dropped += (seq - self._next_msg) & 0xFFFFFFFF
                self._next_msg = (seq + 1) & 0xFFFFFFFF
            pos += (alen + 3) & ~3
        decoded = decode_frame(LINKTYPE_RAW, payload, ts or time.time(), _ip_length(payload))
        _account(self.stats, decoded, out)


class NflogBatch:
    """The compiled batch decoder of NFLOG datagrams: :meth:`decode` walks every datagram
    read into :attr:`arrays` (``segments`` of them) in one call."""

    def __init__(
        self, stats: LiveStats, buffer_bytes: int = _READ_BUFFER, max_segments: int = 4096
    ) -> None:
        self.stats = stats
        self.buffer = np.zeros(buffer_bytes, np.uint8)
        self.view = memoryview(self.buffer)  # type: ignore[arg-type]
        self.segs = np.zeros((max_segments, 2), np.int64)  # [start, end) of each datagram
        self.arrays = BatchArrays(buffer_bytes // MIN_PACKET_MESSAGE + 1)
        self._seq_state = np.array([-1, 0], np.int64)  # NFULA_SEQ expected next, lost
        self.builder = PacketBuilder()
        self.decode(0, self.builder.sink([]))  # load (or compile) the walker now

    def decode(self, segments: int, sink: BatchSink) -> None:
        """Decode the datagrams in ``buffer`` that ``segs[:segments]`` delimit and hand
        the packets to ``sink``."""
        a = self.arrays
        k = walk_nflog(
            self.buffer,
            self.segs,
            segments,
            a.big,
            time.time(),
            a.ts,
            a.cols,
            a.counts,
            self._seq_state,
            a.notes,
        )
        _add_counts(self.stats, a, k)
        self.stats.dropped = int(self._seq_state[1])
        sink(a, k, self.view)


class NflogSource:
    """Packets that nftables rules send to NFLOG group ``group`` (IPv4 and IPv6).

    The kernel batches up to ``_QTHRESH`` messages (or 128 KiB, or 10 ms) per netlink
    datagram; ``engine="fast"`` (the default) drains up to ``max_batch`` datagrams per
    wakeup into one buffer and decodes them in one compiled call, ``"reference"`` decodes
    each message in Python. Raises :class:`CaptureError` when the group
    cannot be bound (no CAP_NET_ADMIN, or another process owns it).
    """

    def __init__(self, group: int, max_batch: int = 4096, engine: str = "fast") -> None:
        engine = live_engine(engine, f"nflog group {group}")
        self.stats = LiveStats()
        self.group = group
        self._max_batch = max_batch
        self._seq = 0
        self._parser = NflogParser(self.stats)
        self._batch = NflogBatch(self.stats) if engine == "fast" else None
        self.sink: BatchSink | None = None
        """With the fast engine: when set, decoded batches go to it, not into packets."""
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER)
        try:
            _big_rcvbuf(self._sock)
            self._sock.bind((0, 0))
            self._config(_attr(_CFG_CMD, struct.pack("B", _CMD_BIND) + b"\0" * 3))
            self._config(_attr(_CFG_MODE, struct.pack(">IBB", 0xFFFF, _COPY_PACKET, 0)))
            self._config(_attr(_CFG_NLBUFSIZ, struct.pack(">I", _NLBUFSIZ)))
            self._config(_attr(_CFG_QTHRESH, struct.pack(">I", _QTHRESH)))
            self._config(_attr(_CFG_TIMEOUT, struct.pack(">I", _FLUSH_CENTISECONDS)))
            self._config(_attr(_CFG_FLAGS, struct.pack(">H", _CFG_F_SEQ)))
        except OSError as exc:
            self._sock.close()
            raise CaptureError(f"nflog group {group}", f"cannot bind ({exc})") from exc
        self._sock.setblocking(False)

    def _config(self, attrs: bytes) -> None:
        self._seq += 1
        body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(self.group)) + attrs
        msg = (
            struct.pack(
                "=IHHII", 16 + len(body), _MSG_CONFIG, _NLM_F_REQUEST | _NLM_F_ACK, self._seq, 0
            )
            + body
        )
        self._sock.send(msg)
        for _ in range(1000):  # packet messages may arrive before the acknowledgement
            reply = self._sock.recv(1 << 20)
            _length, kind, _flags, seq = struct.unpack_from("=IHHI", reply)
            if kind == _NLMSG_ERROR and seq == self._seq:
                (errno,) = struct.unpack_from("=i", reply, 16)
                if errno:
                    raise OSError(-errno, f"nflog config refused (errno {-errno})")
                return
        raise OSError("no acknowledgement from nfnetlink_log")

    def read(self, timeout: float) -> list[Packet]:
        out: list[Packet] = []
        ready, _, _ = select.select([self._sock], [], [], timeout)
        if not ready:
            return out
        if self._batch is None:
            for _ in range(self._max_batch):  # datagrams; and packets, bounded the same
                data = self._recv() if len(out) < self._max_batch else None
                if data is None:
                    break
                self._parser.parse(data, out)
            return out
        self._batch.decode(self._drain(self._batch), self.sink or self._batch.builder.sink(out))
        return out

    def _recv(self) -> bytes | None:
        """One datagram; None when none is waiting."""
        for _ in range(self._max_batch):
            try:
                return self._sock.recv(1 << 20)
            except BlockingIOError:
                return None
            except OSError as exc:
                if exc.errno != _ENOBUFS:  # buffer overrun: the sequence gap counts the loss
                    raise
        return None

    def _drain(self, a: NflogBatch) -> int:
        """Read waiting datagrams into ``a.buffer`` (each a segment); return how many."""
        used = nseg = 0
        room_needed = len(a.buffer) - _MAX_DATAGRAM
        for _ in range(self._max_batch):
            if used > room_needed or nseg == len(a.segs):
                break
            try:
                # MSG_TRUNC: netlink returns the datagram's full length, so a cut shows
                n = self._sock.recv_into(a.view[used:], 0, socket.MSG_TRUNC)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == _ENOBUFS:  # buffer overrun: the sequence gap counts the loss
                    continue
                raise
            n = min(n, len(a.buffer) - used)  # a cut datagram ends in a bad message
            a.segs[nseg, 0] = used
            a.segs[nseg, 1] = used + n
            nseg += 1
            used += (n + 3) & ~3
        return nseg

    def close(self) -> None:
        self._sock.close()  # closing the socket unbinds the group

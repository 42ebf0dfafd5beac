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
import select
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from classifier.capture.decode import decode_frame
from classifier.capture.packet import Packet
from classifier.errors import CaptureError

__all__ = ["LiveSource", "LiveStats", "AfPacketSource", "NflogSource"]

log = logging.getLogger(__name__)

_ETH_P_ALL = 0x0003
_LINKTYPE_ETHERNET = 1
_LINKTYPE_RAW = 101
_SOL_PACKET = 263
_PACKET_STATISTICS = 6
_RCVBUF = 32 << 20


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

    def read(self, timeout: float) -> list[Packet]:
        """Wait up to ``timeout`` seconds and return the packets that arrived (maybe none)."""
        ...

    def close(self) -> None: ...


def _account(stats: LiveStats, decoded: Packet | str, out: list[Packet]) -> None:
    stats.received += 1
    if isinstance(decoded, Packet):
        stats.packets += 1
        out.append(decoded)
    else:
        stats.skipped[decoded] = stats.skipped.get(decoded, 0) + 1


class AfPacketSource:
    """Frames of Ethernet interfaces through AF_PACKET raw sockets (both directions).

    Give the client-facing interface(s) only: a forwarded packet seen on two interfaces
    would count twice. Raises :class:`CaptureError` when an interface does not exist or
    the process lacks CAP_NET_RAW.
    """

    def __init__(self, ifaces: Sequence[str], max_batch: int = 4096) -> None:
        self.stats = LiveStats()
        self._max_batch = max_batch
        self._socks: list[socket.socket] = []
        for iface in ifaces:
            try:
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
                s.bind((iface, 0))
                s.setblocking(False)
            except PermissionError as exc:
                self.close()
                raise CaptureError(iface, "capturing needs root or CAP_NET_RAW") from exc
            except OSError as exc:
                self.close()
                raise CaptureError(iface, f"cannot capture on this interface ({exc.strerror})"
                                   ) from exc
            self._socks.append(s)

    def read(self, timeout: float) -> list[Packet]:
        out: list[Packet] = []
        ready, _, _ = select.select(self._socks, [], [], timeout)
        for s in ready:
            for _ in range(self._max_batch):
                try:
                    data = s.recv(65535)
                except BlockingIOError:
                    break
                decoded = decode_frame(_LINKTYPE_ETHERNET, data, time.time(), len(data))
                _account(self.stats, decoded, out)
        self._update_drops()
        return out

    def _update_drops(self) -> None:
        for s in self._socks:
            raw = s.getsockopt(_SOL_PACKET, _PACKET_STATISTICS, 8)
            _packets, drops = struct.unpack("II", raw)  # reading resets the kernel counters
            self.stats.dropped += drops

    def close(self) -> None:
        for s in self._socks:
            s.close()
        self._socks = []


# NFLOG over nfnetlink (linux/netfilter/nfnetlink_log.h)
_NETLINK_NETFILTER = 12
_NFNL_SUBSYS_ULOG = 4
_MSG_PACKET = (_NFNL_SUBSYS_ULOG << 8) | 0
_MSG_CONFIG = (_NFNL_SUBSYS_ULOG << 8) | 1
_NLM_F_REQUEST, _NLM_F_ACK = 0x1, 0x4
_NLMSG_ERROR = 2
_CFG_CMD, _CFG_MODE, _CFG_TIMEOUT, _CFG_QTHRESH, _CFG_FLAGS = 1, 2, 4, 5, 6
_CFG_F_SEQ = 0x0001  # number the group's messages, so lost ones show as gaps
_CMD_BIND, _CMD_UNBIND = 1, 2
_COPY_PACKET = 2
_ATTR_TIMESTAMP, _ATTR_PAYLOAD, _ATTR_SEQ = 3, 9, 12
_ENOBUFS = 105


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


class NflogSource:
    """Packets that nftables rules send to NFLOG group ``group`` (IPv4 and IPv6).

    Raises :class:`CaptureError` when the group cannot be bound (no CAP_NET_ADMIN, or another
    process owns it).
    """

    def __init__(self, group: int, max_batch: int = 4096) -> None:
        self.stats = LiveStats()
        self.group = group
        self._max_batch = max_batch
        self._seq = 0
        self._next_msg: int | None = None  # the NFULA_SEQ expected next
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
            self._sock.bind((0, 0))
            self._config(socket.AF_UNSPEC, _attr(_CFG_CMD, struct.pack("B", _CMD_BIND) + b"\0"
                                                 * 3))
            self._config(socket.AF_UNSPEC, _attr(_CFG_MODE, struct.pack(">IBB", 0xFFFF,
                                                                        _COPY_PACKET, 0)))
            self._config(socket.AF_UNSPEC, _attr(_CFG_QTHRESH, struct.pack(">I", 64)))
            self._config(socket.AF_UNSPEC, _attr(_CFG_TIMEOUT, struct.pack(">I", 1)))
            self._config(socket.AF_UNSPEC, _attr(_CFG_FLAGS, struct.pack(">H", _CFG_F_SEQ)))
        except OSError as exc:
            self._sock.close()
            raise CaptureError(f"nflog group {group}", f"cannot bind ({exc})") from exc
        self._sock.setblocking(False)

    def _config(self, family: int, attrs: bytes) -> None:
        self._seq += 1
        body = struct.pack("=BBH", family, 0, socket.htons(self.group)) + attrs
        msg = struct.pack("=IHHII", 16 + len(body), _MSG_CONFIG, _NLM_F_REQUEST | _NLM_F_ACK,
                          self._seq, 0) + body
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
        for _ in range(self._max_batch):
            try:
                data = self._sock.recv(1 << 20)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == _ENOBUFS:  # buffer overrun: the sequence gap counts the loss
                    continue
                raise
            self._parse(data, out)
        return out

    def _parse(self, data: bytes, out: list[Packet]) -> None:
        off = 0
        while off + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, off)
            if length < 16 or off + length > len(data):
                break
            if kind == _MSG_PACKET:
                self._packet(data[off + 16: off + length], out)
            off += (length + 3) & ~3

    def _packet(self, body: bytes, out: list[Packet]) -> None:
        payload = b""
        ts = 0.0
        pos = 4  # after nfgenmsg
        while pos + 4 <= len(body):
            alen, akind = struct.unpack_from("=HH", body, pos)
            if alen < 4:
                break
            value = body[pos + 4: pos + alen]
            akind &= 0x7FFF
            if akind == _ATTR_PAYLOAD:
                payload = value
            elif akind == _ATTR_TIMESTAMP and len(value) >= 16:
                sec, usec = struct.unpack(">QQ", value[:16])
                ts = sec + usec / 1e6
            elif akind == _ATTR_SEQ and len(value) >= 4:
                (seq,) = struct.unpack(">I", value[:4])
                if self._next_msg is not None and seq != self._next_msg:
                    self.stats.dropped += (seq - self._next_msg) & 0xFFFFFFFF
                self._next_msg = (seq + 1) & 0xFFFFFFFF
            pos += (alen + 3) & ~3
        decoded = decode_frame(_LINKTYPE_RAW, payload, ts or time.time(), _ip_length(payload))
        _account(self.stats, decoded, out)

    def close(self) -> None:
        self._sock.close()  # closing the socket unbinds the group

"""Decode one captured frame (link layer, IPv4/IPv6, TCP/UDP) into a :class:`Packet`.

Decoding never trusts a length: every header read is bounds-checked against the bytes that
were captured, and every length field is checked against the lengths around it. A frame
that cannot be decoded is not an error: :func:`decode_frame` returns the reason as a short
string (the key that :class:`~classifier.capture.reader.ReadStats` counts under), and the
caller moves on. Nothing in this module raises for bad input.

Lengths follow :class:`Packet`: ``ip_len`` comes from the IP header (IPv4 total length,
IPv6 payload length + 40), so header-only captures keep their real sizes; when that field is
0 (segmentation offload, jumbograms) it falls back to the wire length minus the link header.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

from classifier.capture.packet import TCP, UDP, Packet

__all__ = [
    "LINKTYPE_NULL",
    "LINKTYPE_ETHERNET",
    "LINKTYPE_RAW",
    "LINKTYPE_RAW_BSD12",
    "LINKTYPE_RAW_BSD14",
    "LINKTYPE_LOOP",
    "LINKTYPE_LINUX_SLL",
    "LINKTYPE_IPV4",
    "LINKTYPE_IPV6",
    "LINKTYPE_LINUX_SLL2",
    "KNOWN_LINKTYPES",
    "is_known_linktype",
    "decode_frame",
]

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW_BSD12 = 12
LINKTYPE_RAW_BSD14 = 14
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

_ETH_IPV4 = 0x0800
_ETH_IPV6 = 0x86DD
_ETH_ARP = 0x0806
_ETH_RARP = 0x8035
_ETH_VLAN_TAGS = frozenset((0x8100, 0x88A8, 0x9100, 0x9200))
_ETH_MPLS = frozenset((0x8847, 0x8848))
_ETH_PPPOE_SESSION = 0x8864
_PPP_IPV4 = 0x0021
_PPP_IPV6 = 0x0057

# Address families found in the 4-byte header of DLT_NULL / DLT_LOOP (BSD, macOS, Linux).
_AF_INET = 2
_AF_INET6 = frozenset((10, 24, 28, 30))

_IPPROTO_ICMP = 1
_IPPROTO_ICMPV6 = 58
# IPv6 extension headers walked to reach the transport header.
_V6_HOPOPTS = 0
_V6_ROUTING = 43
_V6_FRAGMENT = 44
_V6_AH = 51
_V6_DSTOPTS = 60
_V6_EXTENSIONS = frozenset((_V6_HOPOPTS, _V6_ROUTING, _V6_FRAGMENT, _V6_AH, _V6_DSTOPTS))
_V6_MAX_EXTENSIONS = 16

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U32_LE = struct.Struct("<I")
_TCP_HEAD = struct.Struct("!HHIIBB")  # sport, dport, seq, ack, data offset byte, flags byte
_UDP_PORTS = struct.Struct("!HH")

_inet_ntop = socket.inet_ntop
_AF4 = socket.AF_INET
_AF6 = socket.AF_INET6

# A link decoder returns (IP version, offset of the IP header) or a skip reason.
_LinkResult = tuple[int, int] | str
_LinkDecoder = Callable[[bytes], _LinkResult]


def _from_ethertype(data: bytes, etype: int, off: int) -> _LinkResult:
    """Follow VLAN tags, MPLS labels and PPPoE from ``etype`` at ``off`` to the IP header."""
    n = len(data)
    while etype in _ETH_VLAN_TAGS:
        if off + 4 > n:
            return "truncated-header"
        etype = _U16.unpack_from(data, off + 2)[0]
        off += 4
    if etype == _ETH_IPV4:
        return (4, off)
    if etype == _ETH_IPV6:
        return (6, off)
    if etype == _ETH_ARP or etype == _ETH_RARP:
        return "arp"
    if etype in _ETH_MPLS:
        for _ in range(16):
            if off + 4 > n:
                return "truncated-header"
            bottom = data[off + 2] & 0x01
            off += 4
            if bottom:
                break
        else:
            return "bad-packet"
        if off >= n:
            return "truncated-header"
        version = data[off] >> 4
        return (version, off) if version in (4, 6) else "non-ip"
    if etype == _ETH_PPPOE_SESSION:
        if off + 8 > n:
            return "truncated-header"
        ppp = _U16.unpack_from(data, off + 6)[0]
        if ppp == _PPP_IPV4:
            return (4, off + 8)
        if ppp == _PPP_IPV6:
            return (6, off + 8)
        return "non-ip"
    return "non-ip"


def _link_ethernet(data: bytes) -> _LinkResult:
    if len(data) < 14:
        return "truncated-header"
    etype = _U16.unpack_from(data, 12)[0]
    if etype < 0x0600:  # 802.3 length field: LLC/SNAP, never IP in practice here
        return "non-ip"
    return _from_ethertype(data, etype, 14)


def _link_sll(data: bytes) -> _LinkResult:
    if len(data) < 16:
        return "truncated-header"
    return _from_ethertype(data, _U16.unpack_from(data, 14)[0], 16)


def _link_sll2(data: bytes) -> _LinkResult:
    if len(data) < 20:
        return "truncated-header"
    return _from_ethertype(data, _U16.unpack_from(data, 0)[0], 20)


def _link_raw(data: bytes) -> _LinkResult:
    if not data:
        return "truncated-header"
    version = data[0] >> 4
    return (version, 0) if version in (4, 6) else "non-ip"


def _link_ipv4(data: bytes) -> _LinkResult:
    return (4, 0) if data else "truncated-header"


def _link_ipv6(data: bytes) -> _LinkResult:
    return (6, 0) if data else "truncated-header"


def _link_null(data: bytes) -> _LinkResult:
    """DLT_NULL / DLT_LOOP: a 4-byte address family in either byte order."""
    if len(data) < 4:
        return "truncated-header"
    family = _U32_LE.unpack_from(data, 0)[0]
    if family > 0xFFFF:  # written big-endian (DLT_LOOP, or a big-endian host)
        family = _U32.unpack_from(data, 0)[0]
    if family == _AF_INET:
        return (4, 4)
    if family in _AF_INET6:
        return (6, 4)
    return "non-ip"


_LINK_DECODERS: dict[int, _LinkDecoder] = {
    LINKTYPE_NULL: _link_null,
    LINKTYPE_ETHERNET: _link_ethernet,
    LINKTYPE_RAW_BSD12: _link_raw,
    LINKTYPE_RAW_BSD14: _link_raw,
    LINKTYPE_RAW: _link_raw,
    LINKTYPE_LOOP: _link_null,
    LINKTYPE_LINUX_SLL: _link_sll,
    LINKTYPE_IPV4: _link_ipv4,
    LINKTYPE_IPV6: _link_ipv6,
    LINKTYPE_LINUX_SLL2: _link_sll2,
}

KNOWN_LINKTYPES: frozenset[int] = frozenset(_LINK_DECODERS)


def is_known_linktype(linktype: int) -> bool:
    """Return True when :func:`decode_frame` can decode frames of ``linktype``."""
    return linktype in _LINK_DECODERS


def _note(notes: dict[str, int] | None, key: str) -> None:
    if notes is not None:
        notes[key] = notes.get(key, 0) + 1


def _transport(
    data: bytes,
    l4off: int,
    l4len: int,
    proto: int,
    ts: float,
    wire_len: int,
    ip_len: int,
    version: int,
    src: str,
    dst: str,
) -> Packet | str:
    """Decode the TCP or UDP header at ``l4off``; ``l4len`` is its on-wire length."""
    n = len(data)
    if proto == TCP:
        if l4off + 20 > n:
            return "truncated-header"
        sport, dport, seq, _ack, off_byte, flags = _TCP_HEAD.unpack_from(data, l4off)
        hlen = (off_byte >> 4) * 4
        if hlen < 20 or hlen > l4len:
            return "bad-packet"
        start = l4off + hlen
        plen = l4len - hlen
        return Packet(
            ts,
            wire_len,
            ip_len,
            version,
            src,
            dst,
            TCP,
            sport,
            dport,
            ((off_byte & 0x01) << 8) | flags,
            seq,
            plen,
            data[start : start + plen] if start < n else b"",
        )
    # UDP
    if l4off + 8 > n:
        return "truncated-header"
    if l4len < 8:
        return "bad-packet"
    sport, dport = _UDP_PORTS.unpack_from(data, l4off)
    start = l4off + 8
    plen = l4len - 8
    return Packet(
        ts,
        wire_len,
        ip_len,
        version,
        src,
        dst,
        UDP,
        sport,
        dport,
        0,
        0,
        plen,
        data[start : start + plen] if start < n else b"",
    )


def _ipv4(
    data: bytes, off: int, ts: float, wire_len: int, notes: dict[str, int] | None
) -> Packet | str:
    n = len(data)
    if off + 20 > n:
        return "truncated-header"
    vihl = data[off]
    ihl = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or ihl < 20:
        return "bad-packet"
    if off + ihl > n:
        return "truncated-header"
    total = _U16.unpack_from(data, off + 2)[0]
    if total == 0:  # segmentation offload: the length lives in the frame only
        total = wire_len - off
        _note(notes, "ip-len-from-wire")
    if total < ihl:
        return "bad-packet"
    frag = _U16.unpack_from(data, off + 6)[0]
    if frag & 0x1FFF:
        return "ip-fragment"
    proto = data[off + 9]
    if proto != TCP and proto != UDP:
        return "icmp" if proto == _IPPROTO_ICMP else "other-l4"
    if frag & 0x2000:
        _note(notes, "ip-fragment-first")
    return _transport(
        data,
        off + ihl,
        total - ihl,
        proto,
        ts,
        wire_len,
        total,
        4,
        _inet_ntop(_AF4, data[off + 12 : off + 16]),
        _inet_ntop(_AF4, data[off + 16 : off + 20]),
    )


def _ipv6(
    data: bytes, off: int, ts: float, wire_len: int, notes: dict[str, int] | None
) -> Packet | str:
    n = len(data)
    if off + 40 > n:
        return "truncated-header"
    if data[off] >> 4 != 6:
        return "bad-packet"
    plen = _U16.unpack_from(data, off + 4)[0]
    if plen == 0:  # jumbogram or segmentation offload
        ip_len = wire_len - off
        _note(notes, "ip-len-from-wire")
        if ip_len < 40:
            return "bad-packet"
    else:
        ip_len = plen + 40
    nxt = data[off + 6]
    pos = off + 40
    end = off + ip_len
    first_fragment = False
    hops = 0
    while nxt in _V6_EXTENSIONS:
        hops += 1
        if hops > _V6_MAX_EXTENSIONS:
            return "bad-packet"
        if pos + 8 > n:
            return "truncated-header"
        if nxt == _V6_FRAGMENT:
            frag = _U16.unpack_from(data, pos + 2)[0]
            if frag & 0xFFF8:
                return "ip-fragment"
            first_fragment = bool(frag & 0x0001)
            hlen = 8
        elif nxt == _V6_AH:
            hlen = (data[pos + 1] + 2) * 4
        else:
            hlen = (data[pos + 1] + 1) * 8
        nxt = data[pos]
        pos += hlen
        if pos > end:
            return "bad-packet"
    if nxt != TCP and nxt != UDP:
        return "icmp" if nxt == _IPPROTO_ICMPV6 else "other-l4"
    if first_fragment:
        _note(notes, "ip-fragment-first")
    return _transport(
        data,
        pos,
        end - pos,
        nxt,
        ts,
        wire_len,
        ip_len,
        6,
        _inet_ntop(_AF6, data[off + 8 : off + 24]),
        _inet_ntop(_AF6, data[off + 24 : off + 40]),
    )


def decode_frame(
    linktype: int,
    data: bytes,
    ts: float,
    wire_len: int,
    notes: dict[str, int] | None = None,
) -> Packet | str:
    """Decode one captured frame.

    ``data`` holds the captured bytes, ``wire_len`` the frame's length on the wire.
    Returns the :class:`Packet`, or, when the frame is not a decodable TCP/UDP packet,
    a skip reason: ``"unknown-linktype"``, ``"non-ip"``, ``"arp"``, ``"icmp"``,
    ``"other-l4"``, ``"ip-fragment"`` (a non-first fragment), ``"truncated-header"``
    (a header cut by the snap length) or ``"bad-packet"`` (a header that contradicts
    itself). ``notes`` counts facts about yielded packets (``"ip-fragment-first"``,
    ``"ip-len-from-wire"``). Raises nothing.
    """
    link = _LINK_DECODERS.get(linktype)
    if link is None:
        return "unknown-linktype"
    found = link(data)
    if isinstance(found, str):
        return found
    version, off = found
    if version == 4:
        return _ipv4(data, off, ts, wire_len, notes)
    return _ipv6(data, off, ts, wire_len, notes)

# mypy: disable-error-code="return-value,assignment,arg-type"
# (the compiled helpers compute with numpy int64 scalars, which mypy does not equate with int)
"""The compiled frame decoder: one captured frame -> one row of packet columns.

The compiled twin of :func:`classifier.capture.decode.decode_frame`: link layer (the link
types of :mod:`classifier.capture.decode`), IPv4/IPv6 and TCP/UDP with the same rules, the
same skip reasons and the same notes. :func:`decode_frame` writes entry ``k`` of every row
of a column array (:data:`COLUMNS`, indices ``C_*``) or returns a skip-reason code
(:data:`SKIP_REASONS`). The byte readers (:func:`u16`, :func:`u32be` ...) are kernels too,
inlined where they are called.

Both fast capture paths call it from their own compiled walkers: the file reader
(:mod:`classifier.capture.reader_fast`) and the live sources
(:mod:`classifier.capture.live_fast`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from classifier.capture.decode import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    LINKTYPE_RAW_BSD12,
    LINKTYPE_RAW_BSD14,
)
from classifier.compiled import jit

__all__ = [
    "COLUMNS",
    "NOTES",
    "SKIP_REASONS",
    "C_WIRE",
    "C_IPLEN",
    "C_VER",
    "C_SRC_HI",
    "C_SRC_LO",
    "C_DST_HI",
    "C_DST_LO",
    "C_PROTO",
    "C_SPORT",
    "C_DPORT",
    "C_FLAGS",
    "C_SEQ",
    "C_PLEN",
    "C_PAT",
    "C_PCAP",
    "decode_frame",
    "known_linktype",
    "u8",
    "u16",
    "u32",
    "u32be",
    "u32le",
    "u64be",
]

I64 = npt.NDArray[np.int64]

#: Rows of a column array (int64 each, one entry per packet), in order.
COLUMNS: tuple[str, ...] = (
    "wire_len",
    "ip_len",
    "version",
    "src_hi",
    "src_lo",
    "dst_hi",
    "dst_lo",
    "proto",
    "sport",
    "dport",
    "tcp_flags",
    "seq",
    "payload_len",
    "payload_at",
    "payload_cap",
)
(
    C_WIRE,
    C_IPLEN,
    C_VER,
    C_SRC_HI,
    C_SRC_LO,
    C_DST_HI,
    C_DST_LO,
    C_PROTO,
    C_SPORT,
    C_DPORT,
    C_FLAGS,
    C_SEQ,
    C_PLEN,
    C_PAT,
    C_PCAP,
) = range(len(COLUMNS))

#: Skip-reason codes of :func:`decode_frame` (index -> ``ReadStats.skipped`` key); 0 means
#: decoded.
SKIP_REASONS: tuple[str, ...] = (
    "",
    "unknown-linktype",
    "non-ip",
    "arp",
    "icmp",
    "other-l4",
    "ip-fragment",
    "truncated-header",
    "bad-packet",
)
#: Notes counted by :func:`decode_frame` (index -> ``ReadStats.noted`` key).
NOTES: tuple[str, ...] = ("ip-fragment-first", "ip-len-from-wire")


@jit(cache=True, inline="always")
def u8(b: npt.NDArray[np.uint8], p: int) -> int:
    """``b[p]`` as an int64. Offsets here are never negative: indexing with an unsigned
    copy spares numba's negative-index wraparound on every byte read (which also kept LLVM
    from merging neighbouring byte loads into one word load)."""
    return np.int64(b[np.uint64(p)])


@jit(cache=True, inline="always")
def u16(b: npt.NDArray[np.uint8], p: int) -> int:
    return (u8(b, p) << 8) | u8(b, p + 1)


@jit(cache=True, inline="always")
def u32be(b: npt.NDArray[np.uint8], p: int) -> int:
    return (u8(b, p) << 24) | (u8(b, p + 1) << 16) | (u8(b, p + 2) << 8) | u8(b, p + 3)


@jit(cache=True, inline="always")
def u32le(b: npt.NDArray[np.uint8], p: int) -> int:
    return (u8(b, p + 3) << 24) | (u8(b, p + 2) << 16) | (u8(b, p + 1) << 8) | u8(b, p)


@jit(cache=True, inline="always")
def u32(b: npt.NDArray[np.uint8], p: int, big: bool) -> int:
    return u32be(b, p) if big else u32le(b, p)


@jit(cache=True, inline="always")
def u64be(b: npt.NDArray[np.uint8], p: int) -> int:
    x = np.uint64(0)
    for i in range(8):
        x = (x << np.uint64(8)) | np.uint64(u8(b, p + i))
    return np.int64(x)  # the bits, as a signed int


@jit(cache=True, inline="always")
def known_linktype(linktype: int) -> bool:
    """:func:`classifier.capture.decode.is_known_linktype`, compiled: a link type
    :func:`decode_frame` reads."""
    return (
        linktype == LINKTYPE_NULL
        or linktype == LINKTYPE_ETHERNET
        or linktype == LINKTYPE_RAW_BSD12
        or linktype == LINKTYPE_RAW_BSD14
        or linktype == LINKTYPE_RAW
        or linktype == LINKTYPE_LOOP
        or linktype == LINKTYPE_LINUX_SLL
        or linktype == LINKTYPE_IPV4
        or linktype == LINKTYPE_IPV6
        or linktype == LINKTYPE_LINUX_SLL2
    )


@jit(cache=True, inline="always")
def _from_ethertype(
    b: npt.NDArray[np.uint8], s: int, n: int, etype: int, off: int
) -> tuple[int, int]:
    """(version, IP offset) or (-reason, 0); offsets relative to the frame start ``s``."""
    while etype == 0x8100 or etype == 0x88A8 or etype == 0x9100 or etype == 0x9200:
        if off + 4 > n:
            return -7, 0
        etype = u16(b, s + off + 2)
        off += 4
    if etype == 0x0800:
        return 4, off
    if etype == 0x86DD:
        return 6, off
    if etype == 0x0806 or etype == 0x8035:
        return -3, 0
    if etype == 0x8847 or etype == 0x8848:
        found = False
        for _ in range(16):
            if off + 4 > n:
                return -7, 0
            bottom = u8(b, s + off + 2) & 0x01
            off += 4
            if bottom:
                found = True
                break
        if not found:
            return -8, 0
        if off >= n:
            return -7, 0
        version = u8(b, s + off) >> 4
        if version == 4 or version == 6:
            return version, off
        return -2, 0
    if etype == 0x8864:
        if off + 8 > n:
            return -7, 0
        ppp = u16(b, s + off + 6)
        if ppp == 0x0021:
            return 4, off + 8
        if ppp == 0x0057:
            return 6, off + 8
        return -2, 0
    return -2, 0


@jit(cache=True, inline="always")
def _link(b: npt.NDArray[np.uint8], s: int, n: int, linktype: int) -> tuple[int, int]:
    if linktype == LINKTYPE_ETHERNET:
        if n < 14:
            return -7, 0
        etype = u16(b, s + 12)
        if etype < 0x0600:
            return -2, 0
        return _from_ethertype(b, s, n, etype, 14)
    if linktype == LINKTYPE_LINUX_SLL:
        if n < 16:
            return -7, 0
        return _from_ethertype(b, s, n, u16(b, s + 14), 16)
    if linktype == LINKTYPE_LINUX_SLL2:
        if n < 20:
            return -7, 0
        return _from_ethertype(b, s, n, u16(b, s), 20)
    if linktype == LINKTYPE_RAW or linktype == LINKTYPE_RAW_BSD12 or linktype == LINKTYPE_RAW_BSD14:
        if n < 1:
            return -7, 0
        version = u8(b, s) >> 4
        if version == 4 or version == 6:
            return version, 0
        return -2, 0
    if linktype == LINKTYPE_IPV4:
        return (4, 0) if n >= 1 else (-7, 0)
    if linktype == LINKTYPE_IPV6:
        return (6, 0) if n >= 1 else (-7, 0)
    if linktype == LINKTYPE_NULL or linktype == LINKTYPE_LOOP:
        if n < 4:
            return -7, 0
        family = u32le(b, s)
        if family > 0xFFFF:
            family = u32be(b, s)
        if family == 2:
            return 4, 4
        if family == 10 or family == 24 or family == 28 or family == 30:
            return 6, 4
        return -2, 0
    return -1, 0


@jit(cache=True, inline="always")
def _transport(
    b: npt.NDArray[np.uint8], s: int, n: int, l4off: int, l4len: int, proto: int, cols: I64, k: int
) -> int:
    """Fill transport columns of packet ``k``; return 0 or a skip-reason code."""
    if proto == 6:
        if l4off + 20 > n:
            return 7
        p = s + l4off
        hlen = (u8(b, p + 12) >> 4) * 4
        if hlen < 20 or hlen > l4len:
            return 8
        cols[C_SPORT, k] = u16(b, p)
        cols[C_DPORT, k] = u16(b, p + 2)
        cols[C_SEQ, k] = u32be(b, p + 4)
        cols[C_FLAGS, k] = ((u8(b, p + 12) & 0x01) << 8) | u8(b, p + 13)
        start = l4off + hlen
        plen = l4len - hlen
    else:
        if l4off + 8 > n:
            return 7
        if l4len < 8:
            return 8
        p = s + l4off
        cols[C_SPORT, k] = u16(b, p)
        cols[C_DPORT, k] = u16(b, p + 2)
        cols[C_SEQ, k] = 0
        cols[C_FLAGS, k] = 0
        start = l4off + 8
        plen = l4len - 8
    cols[C_PROTO, k] = proto
    cols[C_PLEN, k] = plen
    cols[C_PAT, k] = s + start
    cols[C_PCAP, k] = min(plen, n - start) if start < n else 0
    return 0


@jit(cache=True, _nrt=False)
def decode_frame(
    b: npt.NDArray[np.uint8],
    s: int,
    n: int,
    linktype: int,
    wire_len: int,
    cols: I64,
    k: int,
    notes: I64,
) -> int:
    """Decode the frame ``b[s:s+n]`` into row ``k``; return 0 or a skip-reason code.

    Compiled without numba's reference counting (it allocates nothing): the helpers
    inlined here would otherwise take their array arguments with an atomic incref/decref
    pair each, per packet (then half the cost of the walk). Not inlined into the walkers
    for the same reason: there the counting would come back.
    """
    version, off = _link(b, s, n, linktype)
    if version < 0:
        return -version
    if version == 4:
        if off + 20 > n:
            return 7
        vihl = u8(b, s + off)
        ihl = (vihl & 0x0F) * 4
        if vihl >> 4 != 4 or ihl < 20:
            return 8
        if off + ihl > n:
            return 7
        total = u16(b, s + off + 2)
        if total == 0:
            total = wire_len - off
            notes[1] += 1
        if total < ihl:
            return 8
        frag = u16(b, s + off + 6)
        if frag & 0x1FFF:
            return 6
        proto = u8(b, s + off + 9)
        if proto != 6 and proto != 17:
            return 4 if proto == 1 else 5
        if frag & 0x2000:
            notes[0] += 1
        reason = _transport(b, s, n, off + ihl, total - ihl, proto, cols, k)
        if reason:
            return reason
        cols[C_IPLEN, k] = total
        cols[C_VER, k] = 4
        cols[C_SRC_HI, k] = 0
        cols[C_SRC_LO, k] = u32be(b, s + off + 12)
        cols[C_DST_HI, k] = 0
        cols[C_DST_LO, k] = u32be(b, s + off + 16)
        cols[C_WIRE, k] = wire_len
        return 0
    # IPv6
    if off + 40 > n:
        return 7
    if u8(b, s + off) >> 4 != 6:
        return 8
    plen = u16(b, s + off + 4)
    if plen == 0:
        ip_len = wire_len - off
        notes[1] += 1
        if ip_len < 40:
            return 8
    else:
        ip_len = plen + 40
    nxt = u8(b, s + off + 6)
    pos = off + 40
    end = off + ip_len
    first_fragment = False
    hops = 0
    while nxt == 0 or nxt == 43 or nxt == 44 or nxt == 51 or nxt == 60:
        hops += 1
        if hops > 16:
            return 8
        if pos + 8 > n:
            return 7
        if nxt == 44:
            frag = u16(b, s + pos + 2)
            if frag & 0xFFF8:
                return 6
            first_fragment = (frag & 0x0001) != 0
            hlen = 8
        elif nxt == 51:
            hlen = (u8(b, s + pos + 1) + 2) * 4
        else:
            hlen = (u8(b, s + pos + 1) + 1) * 8
        nxt = u8(b, s + pos)
        pos += hlen
        if pos > end:
            return 8
    if nxt != 6 and nxt != 17:
        return 4 if nxt == 58 else 5
    if first_fragment:
        notes[0] += 1
    reason = _transport(b, s, n, pos, end - pos, nxt, cols, k)
    if reason:
        return reason
    cols[C_IPLEN, k] = ip_len
    cols[C_VER, k] = 6
    cols[C_SRC_HI, k] = u64be(b, s + off + 8)
    cols[C_SRC_LO, k] = u64be(b, s + off + 16)
    cols[C_DST_HI, k] = u64be(b, s + off + 24)
    cols[C_DST_LO, k] = u64be(b, s + off + 32)
    cols[C_WIRE, k] = wire_len
    return 0

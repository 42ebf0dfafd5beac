"""The compiled lookup of live mode's fast lane: which packets of a batch belong to steady
flows, found in one call instead of a Python flow-table step each.

A *steady* flow is one held by the :class:`~classifier.flows.table.FlowTable` whose
plugins need its later packets no more one by one (:meth:`FlowTable.steady`). Its
canonical key goes into an open-addressing hash table (the offline table's:
:func:`~classifier.flows.table_fast.find_slot`); :func:`lane_scan` then walks batch
columns (:data:`~classifier.capture.decode_fast.COLUMNS`) and splits them into runs:
a *fast* run of packets that :meth:`FlowTable.extend` may take, each with its slot and
direction, and the *slow* run after it, which goes through :meth:`FlowTable.add`.

A packet is fast when its flow is steady, it is not a TCP packet with SYN, FIN or RST
(those start, close or end flows), its payload needs no resegmenting, its flow holds
fewer than ``max_packets`` packets, and it comes before the table's next sweep.

The slot matrix ``sl`` (int64, one column per slot) holds the key in rows 0-7, as
:func:`find_slot` reads it (proto, IP version, endpoint a hi/lo/port, endpoint b
hi/lo/port; a is the smaller (hi, lo, port)), then whether the client is a, the
flow's packet count and the key's hash.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from classifier.capture.decode_fast import (
    C_DPORT,
    C_DST_HI,
    C_DST_LO,
    C_FLAGS,
    C_PLEN,
    C_PROTO,
    C_SPORT,
    C_SRC_HI,
    C_SRC_LO,
    C_VER,
)
from classifier.capture.packet import TCP
from classifier.compiled import jit
from classifier.flows.table_fast import canonical, find_slot, hash_delete, hash_insert, key_hash

__all__ = ["SLOT_ROWS", "NPK", "lane_delete", "lane_insert", "lane_rehash", "lane_scan"]

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

_CISA, NPK, _HASH = 8, 9, 10
#: Rows of the slot matrix.
SLOT_ROWS = 11

_CLOSE_OR_OPEN = 0x01 | 0x02 | 0x04  # FIN, SYN, RST


@jit(cache=True, inline="always")
def _packet_key(cols: I64, i: int) -> tuple[int, bool, int, int, int, int, int, int]:
    """(IP version, source is endpoint a, then the canonical key's endpoints) of packet
    ``i``."""
    src_is_a, ahi, alo, aport, bhi, blo, bport = canonical(
        cols[C_SRC_HI, i],
        cols[C_SRC_LO, i],
        cols[C_SPORT, i],
        cols[C_DST_HI, i],
        cols[C_DST_LO, i],
        cols[C_DPORT, i],
    )
    return cols[C_VER, i], src_is_a, ahi, alo, aport, bhi, blo, bport


@jit(cache=True, inline="always")
def _lookup(i: int, cols: I64, sl: I64, table: I64, mss: int, max_packets: int) -> tuple[int, bool]:
    """(slot, direction is up) of packet ``i`` when it may take the fast lane (time
    aside), else (-1, False)."""
    proto = cols[C_PROTO, i]
    if proto == TCP and cols[C_FLAGS, i] & _CLOSE_OR_OPEN:
        return -1, False
    if mss > 0 and cols[C_PLEN, i] > mss:
        return -1, False
    ver, src_is_a, ahi, alo, aport, bhi, blo, bport = _packet_key(cols, i)
    h = key_hash(proto, ver, ahi, alo, aport, bhi, blo, bport)
    s = find_slot(table, sl, sl[_HASH], h, proto, ver, ahi, alo, aport, bhi, blo, bport)
    if s < 0 or (max_packets > 0 and sl[NPK, s] >= max_packets):
        return -1, False
    same = ahi == bhi and alo == blo and aport == bport
    return s, same or (src_is_a == (sl[_CISA, s] == 1))


@jit(
    "UniTuple(int64, 2)(int64, int64, float64[::1], int64[:, ::1], int64[:, ::1], "
    "int64[::1], float64, int64, int64, int64[::1], int8[::1])",
    cache=True,
    nogil=True,
)
def lane_scan(
    i0: int,
    k: int,
    ts: F64,
    cols: I64,
    sl: I64,
    table: I64,
    next_sweep: float,
    mss: int,
    max_packets: int,
    out_slot: I64,
    out_dir: npt.NDArray[np.int8],
) -> tuple[int, int]:
    """Split packets ``i0..k-1`` into a fast run ``[i0, i)`` and the slow run ``[i, j)``
    after it; return (i, j). Fast packets get their slot in ``out_slot`` and +1 (up) or
    -1 in ``out_dir``, and count in their slot's packet count. The slow run ends before
    the next packet that would be fast now (``ts`` aside: it may sweep), or at ``k``.
    ``mss`` 0: no resegmenting; ``max_packets`` 0: no cap."""
    i = i0
    while i < k and ts[i] < next_sweep:
        s, up = _lookup(i, cols, sl, table, mss, max_packets)
        if s < 0:
            break
        sl[NPK, s] += 1
        out_slot[i] = s
        out_dir[i] = 1 if up else -1
        i += 1
    j = min(i + 1, k)
    while j < k and _lookup(j, cols, sl, table, mss, max_packets)[0] < 0:
        j += 1
    return i, j


@jit("none(int64[:, ::1], int64[::1], int64[:, ::1], int64, int64, boolean, int64)", cache=True)
def lane_insert(
    sl: I64, table: I64, cols: I64, i: int, s: int, client_is_src: bool, packets: int
) -> None:
    """Make slot ``s`` the steady flow of packet ``i``'s 5-tuple (its client the sender
    when ``client_is_src``), holding ``packets`` packets."""
    proto = cols[C_PROTO, i]
    ver, src_is_a, ahi, alo, aport, bhi, blo, bport = _packet_key(cols, i)
    sl[0, s], sl[1, s] = proto, ver
    sl[2, s], sl[3, s], sl[4, s] = ahi, alo, aport
    sl[5, s], sl[6, s], sl[7, s] = bhi, blo, bport
    sl[_CISA, s] = 1 if client_is_src == src_is_a else 0
    sl[NPK, s] = packets
    sl[_HASH, s] = key_hash(proto, ver, ahi, alo, aport, bhi, blo, bport)
    hash_insert(table, sl[_HASH], s)


@jit("none(int64[:, ::1], int64[::1], int64)", cache=True)
def lane_delete(sl: I64, table: I64, s: int) -> None:
    """Take slot ``s`` out of the hash table."""
    hash_delete(table, sl[_HASH], s)


@jit("none(int64[:, ::1], int64[::1], int64[::1])", cache=True)
def lane_rehash(sl: I64, table: I64, slots: I64) -> None:
    """Put ``slots`` into the empty ``table`` (after it grew)."""
    for s in slots:
        hash_insert(table, sl[_HASH], s)

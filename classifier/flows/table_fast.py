"""Packets (as columns) -> flow ids, with exactly the semantics of :class:`FlowTable`.

:class:`FlowAssigner` runs the flow table's sequential rules in a numba-compiled loop over
column arrays: bidirectional 5-tuple keys (hash table with linear probing), the client
decided as :func:`classifier.flows.key.orient` does, idle / active timeouts checked by a
sweep every ``sweep_interval`` of capture time, TCP close (RST, or FIN both ways) with the
close linger, a new SYN on a closing flow starting a new flow, eviction of the least
recently active flow at ``max_flows``, the per-flow packet cap ``max_packets`` (the next
packet starts a new flow with the same client and server) and MSS resegmentation counts.
Flow ids are the table's (1, 2, ... in order of flow start); the state carries over from
chunk to chunk, so a capture can be fed in pieces.

The one thing left open is the order in which flows that close at the same sweep are
reported: the reference iterates a Python set there (hash order), this module its own
list. Everything a flow *is* (its packets, times, end reason, the packet at which it
ended) is identical.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from classifier.capture.packet import TCP
from classifier.compiled import jit
from classifier.flows.key import EPHEMERAL_MIN
from classifier.flows.table import FlowConfig, TableStats

__all__ = ["END_REASONS", "Assignment", "EndedFlows", "FlowAssigner"]

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

#: End-reason codes (index) and names, as :attr:`Flow.end_reason` spells them.
END_REASONS: tuple[str, ...] = ("idle", "active", "fin", "rst", "evicted", "end", "packets")
_R_IDLE, _R_ACTIVE, _R_FIN, _R_RST, _R_EVICTED, _R_END, _R_PACKETS = range(7)

# slot fields (rows of the int64 slot matrix)
(
    _PROTO,
    _VER,
    _AHI,
    _ALO,
    _APORT,
    _BHI,
    _BLO,
    _BPORT,
    _CISA,
    _UID,
    _NPK,
    _WIRE,
    _FINUP,
    _FINDN,
    _CREASON,
    _CLPOS,
    _APREV,
    _ANEXT,
    _SPREV,
    _SNEXT,
    _HASH,
) = range(21)
_NSLOT = 21
# globals (int64 vector)
(
    _G_AHEAD,
    _G_ATAIL,
    _G_SHEAD,
    _G_STAIL,
    _G_NACT,
    _G_UID,
    _G_NCLOSE,
    _G_PEAK,
    _G_NFREE,
    _G_PACKETS,
    _G_NEV,
) = range(11)
_G_ENDED = 11
_NG = _G_ENDED + len(END_REASONS)
# event fields
(
    _E_UID,
    _E_REASON,
    _E_AT,
    _E_PROTO,
    _E_VER,
    _E_CHI,
    _E_CLO,
    _E_CPORT,
    _E_SHI,
    _E_SLO,
    _E_SPORT,
    _E_NPK,
    _E_WIRE,
) = range(13)
_NEV = 13

_FIN, _SYN, _RST, _ACK = 0x01, 0x02, 0x04, 0x10

# status of the compiled loop
_DONE, _NEED_SLOTS, _NEED_EVENTS = 0, 1, 2


@dataclass(slots=True)
class EndedFlows:
    """Flows that ended, one entry each, in the order they ended.

    ``at``: index (in the chunk passed to :meth:`FlowAssigner.assign`) of the packet
    during whose processing the flow ended, -1 for :meth:`FlowAssigner.flush`.
    ``reason``: index into :data:`END_REASONS`. Addresses are (hi, lo) 64-bit halves as in
    :mod:`classifier.capture.reader_fast`; ``packets`` counts resegmented entries.
    """

    ints: I64  # (13, n) rows: uid, reason, at, proto, version, client hi/lo/port,
    #            server hi/lo/port, packets, wire_bytes
    times: F64  # (2, n) rows: first_ts, last_ts

    def __len__(self) -> int:
        return int(self.ints.shape[1])

    def slice(self, start: int, stop: int) -> EndedFlows:
        """The flows ``start:stop`` (views of the same arrays)."""
        return EndedFlows(self.ints[:, start:stop], self.times[:, start:stop])

    @property
    def uid(self) -> I64:
        return self.ints[_E_UID]

    @property
    def reason(self) -> I64:
        return self.ints[_E_REASON]

    @property
    def at(self) -> I64:
        return self.ints[_E_AT]

    @property
    def proto(self) -> I64:
        return self.ints[_E_PROTO]

    @property
    def version(self) -> I64:
        return self.ints[_E_VER]

    @property
    def client(self) -> tuple[I64, I64, I64]:
        return self.ints[_E_CHI], self.ints[_E_CLO], self.ints[_E_CPORT]

    @property
    def server(self) -> tuple[I64, I64, I64]:
        return self.ints[_E_SHI], self.ints[_E_SLO], self.ints[_E_SPORT]

    @property
    def packets(self) -> I64:
        return self.ints[_E_NPK]

    @property
    def wire_bytes(self) -> I64:
        return self.ints[_E_WIRE]

    @property
    def first_ts(self) -> F64:
        return self.times[0]

    @property
    def last_ts(self) -> F64:
        return self.times[1]

    @classmethod
    def concat(cls, parts: list[EndedFlows]) -> EndedFlows:
        if not parts:
            return cls(np.empty((_NEV, 0), np.int64), np.empty((2, 0), np.float64))
        if len(parts) == 1:
            return parts[0]
        return cls(
            np.concatenate([p.ints for p in parts], axis=1),
            np.concatenate([p.times for p in parts], axis=1),
        )


@dataclass(slots=True)
class Assignment:
    """Per packet of one chunk: flow id, direction (+1 client->server, -1 back), how many
    entries the packet became (more than 1 when resegmented), the flow's entry count after
    it, and whether it started its flow; plus the flows that ended during the chunk."""

    uid: I64
    direction: npt.NDArray[np.int8]
    entries: I64
    count_after: I64
    started: npt.NDArray[np.bool_]
    ended: EndedFlows


# ---------------------------------------------------------------------------------------
# compiled core


@jit(cache=True, inline="always")
def canonical(
    shi: int, slo: int, sport: int, dhi: int, dlo: int, dport: int
) -> tuple[bool, int, int, int, int, int, int]:
    """(source is endpoint a, a hi, a lo, a port, b hi, b lo, b port): a is the smaller
    (hi, lo, port) of the two endpoints, so both directions give one key."""
    if (shi, slo, sport) <= (dhi, dlo, dport):
        return True, shi, slo, sport, dhi, dlo, dport
    return False, dhi, dlo, dport, shi, slo, sport


@jit(cache=True, inline="always")
def key_hash(
    proto: int, ver: int, ahi: int, alo: int, aport: int, bhi: int, blo: int, bport: int
) -> int:
    """The hash of a canonical key: endpoint a is the smaller (hi, lo, port) of the two."""
    m = np.uint64(0x9E3779B97F4A7C15)
    h = np.uint64(proto * 256 + ver) * m
    h = (h ^ np.uint64(ahi)) * m
    h = (h ^ np.uint64(alo)) * m
    h = (h ^ np.uint64(aport * 65536 + bport)) * m
    h = (h ^ np.uint64(bhi)) * m
    h = (h ^ np.uint64(blo)) * m
    return np.int64(h ^ (h >> np.uint64(29)))  # type: ignore[return-value]


@jit(cache=True, inline="always")
def find_slot(
    table: I64,
    keys: I64,
    hashes: I64,
    h: int,
    proto: int,
    ver: int,
    ahi: int,
    alo: int,
    aport: int,
    bhi: int,
    blo: int,
    bport: int,
) -> int:
    """The slot holding this canonical key (rows ``PROTO``..``BPORT`` of ``keys``, its
    hash in ``hashes``), or -1."""
    mask = table.shape[0] - 1
    p = h & mask
    while table[p] != 0:
        c = table[p] - 1
        if (
            hashes[c] == h
            and keys[_ALO, c] == alo
            and keys[_BLO, c] == blo
            and keys[_APORT, c] == aport
            and keys[_BPORT, c] == bport
            and keys[_AHI, c] == ahi
            and keys[_BHI, c] == bhi
            and keys[_PROTO, c] == proto
            and keys[_VER, c] == ver
        ):
            return c
        p = (p + 1) & mask
    return -1


@jit(cache=True)
def hash_insert(table: I64, hashes: I64, s: int) -> None:
    """Put slot ``s`` (hash ``hashes[s]``) into the open-addressing ``table``."""
    mask = table.shape[0] - 1
    p = hashes[s] & mask
    while table[p] != 0:
        p = (p + 1) & mask
    table[p] = s + 1


@jit(cache=True)
def hash_delete(table: I64, hashes: I64, s: int) -> None:
    """Take slot ``s`` out of ``table``, shifting back the entries that probed past it."""
    mask = table.shape[0] - 1
    p = hashes[s] & mask
    while table[p] != s + 1:
        p = (p + 1) & mask
    table[p] = 0
    q = p
    while True:
        q = (q + 1) & mask
        if table[q] == 0:
            return
        home = hashes[table[q] - 1] & mask
        # keep entry q where it is if its home lies cyclically in (p, q]
        if p <= q:
            stays = p < home <= q
        else:
            stays = home > p or home <= q
        if not stays:
            table[p] = table[q]
            table[q] = 0
            p = q


@jit(cache=True)
def _unlink(sl: I64, g: I64, s: int) -> None:
    prv, nxt = sl[_APREV, s], sl[_ANEXT, s]
    if prv >= 0:
        sl[_ANEXT, prv] = nxt
    else:
        g[_G_AHEAD] = nxt
    if nxt >= 0:
        sl[_APREV, nxt] = prv
    else:
        g[_G_ATAIL] = prv


@jit(cache=True)
def _append_act(sl: I64, g: I64, s: int) -> None:
    tail = g[_G_ATAIL]
    sl[_APREV, s] = tail
    sl[_ANEXT, s] = -1
    if tail >= 0:
        sl[_ANEXT, tail] = s
    else:
        g[_G_AHEAD] = s
    g[_G_ATAIL] = s


@jit(cache=True)
def _end(
    sl: I64,
    sf: F64,
    g: I64,
    table: I64,
    free: I64,
    closing: I64,
    ev: I64,
    evf: F64,
    s: int,
    reason: int,
    at: int,
) -> None:
    hash_delete(table, sl[_HASH], s)
    _unlink(sl, g, s)
    prv, nxt = sl[_SPREV, s], sl[_SNEXT, s]
    if prv >= 0:
        sl[_SNEXT, prv] = nxt
    else:
        g[_G_SHEAD] = nxt
    if nxt >= 0:
        sl[_SPREV, nxt] = prv
    else:
        g[_G_STAIL] = prv
    pos = sl[_CLPOS, s]
    if pos >= 0:
        last = closing[g[_G_NCLOSE] - 1]
        closing[pos] = last
        sl[_CLPOS, last] = pos
        g[_G_NCLOSE] -= 1
        sl[_CLPOS, s] = -1
    e = g[_G_NEV]
    ev[_E_UID, e] = sl[_UID, s]
    ev[_E_REASON, e] = reason
    ev[_E_AT, e] = at
    ev[_E_PROTO, e] = sl[_PROTO, s]
    ev[_E_VER, e] = sl[_VER, s]
    if sl[_CISA, s]:
        ev[_E_CHI, e], ev[_E_CLO, e], ev[_E_CPORT, e] = sl[_AHI, s], sl[_ALO, s], sl[_APORT, s]
        ev[_E_SHI, e], ev[_E_SLO, e], ev[_E_SPORT, e] = sl[_BHI, s], sl[_BLO, s], sl[_BPORT, s]
    else:
        ev[_E_CHI, e], ev[_E_CLO, e], ev[_E_CPORT, e] = sl[_BHI, s], sl[_BLO, s], sl[_BPORT, s]
        ev[_E_SHI, e], ev[_E_SLO, e], ev[_E_SPORT, e] = sl[_AHI, s], sl[_ALO, s], sl[_APORT, s]
    ev[_E_NPK, e] = sl[_NPK, s]
    ev[_E_WIRE, e] = sl[_WIRE, s]
    evf[0, e] = sf[0, s]
    evf[1, e] = sf[1, s]
    g[_G_NEV] = e + 1
    g[_G_ENDED + reason] += 1
    g[_G_NACT] -= 1
    free[g[_G_NFREE]] = s
    g[_G_NFREE] += 1


@jit(cache=True)
def _close_reason(sl: I64, s: int) -> int:
    return _R_RST if sl[_CREASON, s] == _R_RST else _R_FIN


@jit(cache=True)
def _sweep(
    sl: I64,
    sf: F64,
    g: I64,
    gf: F64,
    table: I64,
    free: I64,
    closing: I64,
    ev: I64,
    evf: F64,
    now: float,
    at: int,
    idle: float,
    active: float,
    linger: float,
    interval: float,
) -> None:
    gf[0] = now + interval
    while g[_G_NACT] > 0:
        s = g[_G_AHEAD]
        if now - sf[1, s] <= idle:
            break
        _end(sl, sf, g, table, free, closing, ev, evf, s, _R_IDLE, at)
    while g[_G_NACT] > 0:
        s = g[_G_SHEAD]
        if now - sf[0, s] <= active:
            break
        _end(sl, sf, g, table, free, closing, ev, evf, s, _R_ACTIVE, at)
    i = g[_G_NCLOSE] - 1
    while i >= 0:
        s = closing[i]
        if now - sf[1, s] > linger:
            _end(sl, sf, g, table, free, closing, ev, evf, s, _close_reason(sl, s), at)
        i -= 1


@jit(
    "UniTuple(int64, 2)(int64, float64[::1], int64[:, :], int64[::1], int64[:, ::1], "
    "float64[:, ::1], int64[::1], float64[::1], int64[::1], int64[::1], int64[::1], "
    "int64[:, ::1], float64[:, ::1], int64[::1], int8[::1], int64[::1], int64[::1], "
    "boolean[::1], float64, float64, float64, float64, int64, int64, int64)",
    cache=True,
    nogil=True,
)
def _assign(
    i0: int,
    ts: F64,
    cols: I64,
    rows: I64,
    sl: I64,
    sf: F64,
    g: I64,
    gf: F64,
    table: I64,
    free: I64,
    closing: I64,
    ev: I64,
    evf: F64,
    out_uid: I64,
    out_dir: npt.NDArray[np.int8],
    out_ent: I64,
    out_cnt: I64,
    out_started: npt.NDArray[np.bool_],
    idle: float,
    active: float,
    linger: float,
    interval: float,
    max_flows: int,
    mss: int,
    max_packets: int,
) -> tuple[int, int]:
    """Assign packets ``i0..`` of a chunk; return (next packet index, status). ``rows``:
    row indices in ``cols`` of version, src hi/lo, dst hi/lo, proto, ports, flags, payload
    length, wire length. ``max_packets`` 0: no per-flow packet cap."""
    ver_row, shi_row, slo_row, dhi_row, dlo_row = rows[0], rows[1], rows[2], rows[3], rows[4]
    proto_row, sport_row, dport_row, flags_row = rows[5], rows[6], rows[7], rows[8]
    plen_row, wire_row = rows[9], rows[10]
    n = ts.shape[0]
    evcap = ev.shape[1]
    for i in range(i0, n):
        if g[_G_NFREE] == 0 and g[_G_NACT] < max_flows:
            return i, _NEED_SLOTS
        if g[_G_NEV] + g[_G_NACT] + 2 > evcap:
            return i, _NEED_EVENTS
        now = ts[i]
        g[_G_PACKETS] += 1
        if np.isnan(gf[0]):
            gf[0] = now + interval
        elif now >= gf[0]:
            _sweep(
                sl, sf, g, gf, table, free, closing, ev, evf, now, i, idle, active, linger, interval
            )
        ver = cols[ver_row, i]
        shi, slo, sport = cols[shi_row, i], cols[slo_row, i], cols[sport_row, i]
        dhi, dlo, dport = cols[dhi_row, i], cols[dlo_row, i], cols[dport_row, i]
        proto = cols[proto_row, i]
        flags = cols[flags_row, i]
        src_is_a, ahi, alo, aport, bhi, blo, bport = canonical(shi, slo, sport, dhi, dlo, dport)
        h = key_hash(proto, ver, ahi, alo, aport, bhi, blo, bport)
        s = find_slot(table, sl, sl[_HASH], h, proto, ver, ahi, alo, aport, bhi, blo, bport)
        is_tcp = proto == TCP
        keep_cisa = -1  # a flow cut at the packet cap: its successor keeps the orientation
        if s >= 0 and sl[_CLPOS, s] >= 0 and is_tcp and (flags & (_SYN | _ACK)) == _SYN:
            _end(sl, sf, g, table, free, closing, ev, evf, s, _close_reason(sl, s), i)
            s = -1
        elif s >= 0 and max_packets > 0 and sl[_NPK, s] >= max_packets:
            keep_cisa = sl[_CISA, s]
            _end(sl, sf, g, table, free, closing, ev, evf, s, _R_PACKETS, i)
            s = -1
        if s < 0:
            if g[_G_NACT] >= max_flows:
                _end(sl, sf, g, table, free, closing, ev, evf, g[_G_AHEAD], _R_EVICTED, i)
            g[_G_NFREE] -= 1
            s = free[g[_G_NFREE]]
            g[_G_UID] += 1
            sl[_PROTO, s], sl[_VER, s] = proto, ver
            sl[_AHI, s], sl[_ALO, s], sl[_APORT, s] = ahi, alo, aport
            sl[_BHI, s], sl[_BLO, s], sl[_BPORT, s] = bhi, blo, bport
            sl[_HASH, s] = h
            if is_tcp and flags & _SYN:
                sender_is_client = not flags & _ACK
            elif sport >= 1024 > dport:
                sender_is_client = True
            elif dport >= 1024 > sport:
                sender_is_client = False
            else:
                src_eph = sport >= EPHEMERAL_MIN
                dst_eph = dport >= EPHEMERAL_MIN
                sender_is_client = src_eph if src_eph != dst_eph else True
            sl[_CISA, s] = (
                (1 if sender_is_client == src_is_a else 0) if keep_cisa < 0 else keep_cisa
            )
            sl[_UID, s] = g[_G_UID]
            sl[_NPK, s] = 0
            sl[_WIRE, s] = 0
            sl[_FINUP, s] = 0
            sl[_FINDN, s] = 0
            sl[_CREASON, s] = -1
            sl[_CLPOS, s] = -1
            sf[0, s] = now
            sf[1, s] = now
            _append_act(sl, g, s)
            tail = g[_G_STAIL]
            sl[_SPREV, s] = tail
            sl[_SNEXT, s] = -1
            if tail >= 0:
                sl[_SNEXT, tail] = s
            else:
                g[_G_SHEAD] = s
            g[_G_STAIL] = s
            hash_insert(table, sl[_HASH], s)
            g[_G_NACT] += 1
            if g[_G_NACT] > g[_G_PEAK]:
                g[_G_PEAK] = g[_G_NACT]
            out_started[i] = True
        else:
            out_started[i] = False
            if g[_G_ATAIL] != s:
                _unlink(sl, g, s)
                _append_act(sl, g, s)
        # direction: the sender is the client (both endpoints equal: always up)
        same = ahi == bhi and alo == blo and aport == bport
        up = same or (src_is_a == (sl[_CISA, s] == 1))
        out_dir[i] = 1 if up else -1
        plen = cols[plen_row, i]
        entries = 1
        if mss > 0 and plen > mss:
            entries = (plen + mss - 1) // mss
        sl[_NPK, s] += entries
        sl[_WIRE, s] += cols[wire_row, i]
        sf[1, s] = now
        out_uid[i] = sl[_UID, s]
        out_ent[i] = entries
        out_cnt[i] = sl[_NPK, s]
        if is_tcp:
            closing_now = False
            if flags & _RST:
                sl[_CREASON, s] = _R_RST
                closing_now = True
            elif flags & _FIN:
                if up:
                    sl[_FINUP, s] = 1
                else:
                    sl[_FINDN, s] = 1
                if sl[_FINUP, s] and sl[_FINDN, s]:
                    if sl[_CREASON, s] < 0:
                        sl[_CREASON, s] = _R_FIN
                    closing_now = True
            if closing_now and sl[_CLPOS, s] < 0:
                sl[_CLPOS, s] = g[_G_NCLOSE]
                closing[g[_G_NCLOSE]] = s
                g[_G_NCLOSE] += 1
    return n, _DONE


@jit(
    "none(int64[:, ::1], float64[:, ::1], int64[::1], int64[::1], int64[::1], "
    "int64[::1], int64[:, ::1], float64[:, ::1])",
    cache=True,
)
def _flush(
    sl: I64, sf: F64, g: I64, table: I64, free: I64, closing: I64, ev: I64, evf: F64
) -> None:
    while g[_G_NACT] > 0:
        s = g[_G_AHEAD]
        reason = _close_reason(sl, s) if sl[_CLPOS, s] >= 0 else _R_END
        _end(sl, sf, g, table, free, closing, ev, evf, s, reason, -1)


@jit("none(int64[::1], int64[:, ::1], int64[::1])", cache=True)
def _rehash(table: I64, sl: I64, g: I64) -> None:
    s = g[_G_AHEAD]
    while s >= 0:
        hash_insert(table, sl[_HASH], s)
        s = sl[_ANEXT, s]


# ---------------------------------------------------------------------------------------
# Python surface


class FlowAssigner:
    """The flow table's rules over column chunks (see the module docstring).

    Feed chunks in capture order with :meth:`assign`, then call :meth:`flush` once.
    ``stats`` holds the same counters as :attr:`FlowTable.stats`.
    """

    def __init__(self, config: FlowConfig | None = None, capacity: int = 1024) -> None:
        self.config = config or FlowConfig()
        self.stats = TableStats()
        cap = max(16, capacity)
        self._sl = np.zeros((_NSLOT, cap), np.int64)
        self._sf = np.zeros((2, cap), np.float64)
        self._g = np.zeros(_NG, np.int64)
        self._g[[_G_AHEAD, _G_ATAIL, _G_SHEAD, _G_STAIL]] = -1
        self._gf = np.array([np.nan], np.float64)
        self._table = np.zeros(_table_size(cap), np.int64)
        self._free = np.arange(cap - 1, -1, -1, dtype=np.int64)
        self._g[_G_NFREE] = cap
        self._closing = np.zeros(cap, np.int64)

    def assign(self, ts: F64, cols: I64, rows: tuple[int, ...]) -> Assignment:
        """Assign one chunk. ``cols`` holds int64 rows; ``rows`` names the row indices of
        (version, src hi, src lo, dst hi, dst lo, proto, sport, dport, tcp flags,
        payload length, wire length) in it."""
        n = len(ts)
        out_uid = np.empty(n, np.int64)
        out_dir = np.empty(n, np.int8)
        out_ent = np.empty(n, np.int64)
        out_cnt = np.empty(n, np.int64)
        out_started = np.empty(n, np.bool_)
        cfg = self.config
        mss = cfg.resegment_mss or 0
        parts: list[EndedFlows] = []
        ev, evf = self._new_events(n)
        i = 0
        row_index = np.asarray(rows, np.int64)
        while True:
            i, status = _assign(
                i,
                ts,
                cols,
                row_index,
                self._sl,
                self._sf,
                self._g,
                self._gf,
                self._table,
                self._free,
                self._closing,
                ev,
                evf,
                out_uid,
                out_dir,
                out_ent,
                out_cnt,
                out_started,
                cfg.idle_timeout,
                cfg.active_timeout,
                cfg.close_linger,
                cfg.sweep_interval,
                cfg.max_flows,
                mss,
                cfg.max_packets or 0,
            )
            if status == _DONE:
                break
            if status == _NEED_SLOTS:
                self._grow()
            else:
                parts.append(self._take_events(ev, evf))
                ev, evf = self._new_events(n)
        parts.append(self._take_events(ev, evf))
        self._sync_stats()
        return Assignment(out_uid, out_dir, out_ent, out_cnt, out_started, EndedFlows.concat(parts))

    def flush(self) -> EndedFlows:
        """End every flow still held (end of capture); ``at`` is -1 for all of them."""
        ev, evf = self._new_events(0)
        _flush(self._sl, self._sf, self._g, self._table, self._free, self._closing, ev, evf)
        self._sync_stats()
        return self._take_events(ev, evf)

    def __len__(self) -> int:
        return int(self._g[_G_NACT])

    def _new_events(self, n: int) -> tuple[I64, F64]:
        size = int(self._g[_G_NACT]) + min(n, 1 << 16) + 64
        self._g[_G_NEV] = 0
        return np.empty((_NEV, size), np.int64), np.empty((2, size), np.float64)

    def _take_events(self, ev: I64, evf: F64) -> EndedFlows:
        k = int(self._g[_G_NEV])
        self._g[_G_NEV] = 0
        return EndedFlows(ev[:, :k].copy(), evf[:, :k].copy())

    def _grow(self) -> None:
        old = self._sl.shape[1]
        cap = min(old * 2, max(self.config.max_flows, 16))
        if cap <= old:
            cap = old + 16
        sl = np.zeros((_NSLOT, cap), np.int64)
        sl[:, :old] = self._sl
        sf = np.zeros((2, cap), np.float64)
        sf[:, :old] = self._sf
        free = np.empty(cap, np.int64)
        nfree = int(self._g[_G_NFREE])
        free[:nfree] = self._free[:nfree]
        added = np.arange(cap - 1, old - 1, -1, dtype=np.int64)
        free[nfree : nfree + len(added)] = added
        self._g[_G_NFREE] = nfree + len(added)
        closing = np.zeros(cap, np.int64)
        closing[:old] = self._closing
        self._sl, self._sf, self._free, self._closing = sl, sf, free, closing
        self._table = np.zeros(_table_size(cap), np.int64)
        _rehash(self._table, self._sl, self._g)

    def _sync_stats(self) -> None:
        g = self._g
        st = self.stats
        st.packets = int(g[_G_PACKETS])
        st.flows = int(g[_G_UID])
        st.peak_flows = int(g[_G_PEAK])
        st.ended = {
            name: int(g[_G_ENDED + i]) for i, name in enumerate(END_REASONS) if g[_G_ENDED + i]
        }


def _table_size(cap: int) -> int:
    size = 64
    while size < 2 * cap:
        size *= 2
    return size

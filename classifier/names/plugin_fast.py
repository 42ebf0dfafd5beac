"""The names stage of the fast path: the twin of :mod:`classifier.names.plugin` over
packet columns.

The fast engine (:mod:`classifier.features.featurize_fast`) hands :class:`NameStage` each
chunk of decoded packets (:class:`~classifier.capture.ColumnChunk`) with the
flow ids :class:`~classifier.flows.table_fast.FlowAssigner` gave them. Only the packets
that may carry names are looked at: a flow's first :data:`~classifier.names.plugin.
MAX_NAME_PACKETS` entries with payload (TLS ClientHello / QUIC Initial) and DNS answers
(port 53). The compiled scanner (:mod:`classifier.names.extract_fast`) settles the common
case, a flow whose first fed payload holds a whole ClientHello (or a Google QUIC CHLO in
clear with its SNI); every other packet goes to the reference's own
:class:`~classifier.names.extract.NameExtractor`, and DNS answers and the name cache
lookups at flow start and end are replayed in capture order. The name columns come out
equal to the reference's.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from classifier.capture.decode_fast import (
    C_DPORT,
    C_DST_HI,
    C_DST_LO,
    C_PAT,
    C_PCAP,
    C_PROTO,
    C_SEQ,
    C_SPORT,
    C_SRC_HI,
    C_SRC_LO,
    C_VER,
)
from classifier.capture.packet import UDP
from classifier.capture.reader_fast import ColumnChunk
from classifier.flows.table_fast import EndedFlows
from classifier.names.cache import NameCache
from classifier.names.dns import split_tcp_dns
from classifier.names.extract import NameExtractor
from classifier.names.extract_fast import DONE, PYTHON, UNSEEN, scan_first_payloads
from classifier.names.plugin import DNS_PORT, MAX_NAME_PACKETS
from classifier.names.services import category_for, service_for

__all__ = ["Addresses", "NameStage"]

I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]

_ADDR_NAMES_HELD = 1 << 16  # address strings kept for reuse
#: Settle whole ClientHellos in compiled code (off: every name packet goes to Python;
#: benchmarks turn it off to time the Python-only path in the same run).
_SCAN_HELLOS = True

_AF = {4: socket.AF_INET, 6: socket.AF_INET6}


def _dns_addresses(msg: bytes, out: set[bytes]) -> bool:
    """Add to ``out`` every raw address (4 or 16 bytes) the answer section of one DNS
    message could give the name cache: A/AAAA rdata, and for SVCB/HTTPS every 4- and
    16-byte window of the rdata (their address hints). Returns False when the message
    cannot be walked (the caller must then assume any address may be cached)."""
    n = len(msg)
    if n < 12 or not msg[2] & 0x80:
        return True  # the cache ignores it too (too short, or a query)
    qd = int.from_bytes(msg[4:6], "big")
    an = int.from_bytes(msg[6:8], "big")
    pos = 12
    for i in range(qd + an):
        while True:  # skip a name (labels, maybe ending in a compression pointer)
            if pos >= n:
                return False
            size = msg[pos]
            if size == 0:
                pos += 1
                break
            if size & 0xC0 == 0xC0:
                pos += 2
                break
            if size & 0xC0:
                return False
            pos += 1 + size
        if i < qd:
            pos += 4
            continue
        if pos + 10 > n:
            return False
        rtype = int.from_bytes(msg[pos : pos + 2], "big")
        size = int.from_bytes(msg[pos + 8 : pos + 10], "big")
        pos += 10
        if pos + size > n:
            return False
        rdata = msg[pos : pos + size]
        if rtype in (1, 28):
            if size != (4 if rtype == 1 else 16):
                return False  # a parser might read an address out of it anyway
            out.add(rdata)
        elif rtype in (64, 65):
            for width in (4, 16):
                for k in range(0, size - width + 1):
                    out.add(rdata[k : k + width])
        pos += size
    return True


def _low_half(raw: bytes) -> int:
    """The ``*_lo`` column value of a raw IPv4 (4 bytes) or IPv6 (16 bytes) address."""
    value = int.from_bytes(raw[-8:], "big")
    return value - (1 << 64) if value >= 1 << 63 else value


def _raw(version: int, hi: int, lo: int) -> bytes:
    if version == 4:
        return (lo & 0xFFFFFFFF).to_bytes(4, "big")
    return (hi & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big") + (lo & 0xFFFFFFFFFFFFFFFF).to_bytes(
        8, "big"
    )


class Addresses:
    """Address strings by (version, hi, lo), made once and reused (bounded)."""

    __slots__ = ("_names",)

    def __init__(self) -> None:
        self._names: dict[tuple[int, int, int], str] = {}

    def text(self, version: int, hi: int, lo: int) -> str:
        key = (version, hi, lo)
        name = self._names.get(key)
        if name is None:
            if len(self._names) >= _ADDR_NAMES_HELD:  # floods of distinct addresses
                self._names.clear()
            name = self._names[key] = socket.inet_ntop(_AF[version], _raw(version, hi, lo))
        return name


@dataclass(slots=True)
class NameStage:
    """The names stage of the fast path: each flow's SNI, ALPN and DNS name, and its
    service, as the reference's :class:`~classifier.names.plugin.NamesPlugin` (with
    :func:`~classifier.names.plugin.flow_names` and the service rules) gives them.

    :meth:`add` takes each chunk with the flow ids the assigner gave its packets,
    :meth:`end_name` the flows that end at the end of input, :meth:`text` the name columns
    of ended flows (and forgets them)."""

    addresses: Addresses
    cache: NameCache = field(default_factory=NameCache)
    extractors: dict[int, NameExtractor] = field(default_factory=dict)
    # sni, alpn, name source
    hellos: dict[int, tuple[str | None, str | None, str]] = field(default_factory=dict)
    max_uid: int = 0  # highest flow id seen so far
    dns_at_start: dict[int, str] = field(default_factory=dict)
    dns_final: dict[int, str] = field(default_factory=dict)
    dns_raw: set[bytes] = field(default_factory=set)  # raw addresses DNS answers carried
    dns_lo: I64 = field(default_factory=lambda: np.empty(0, np.int64))  # their low halves
    dns_any: bool = False  # an answer could not be walked: every address may be cached
    services: dict[str | None, tuple[str, str]] = field(default_factory=dict)

    def add(
        self,
        chunk: ColumnChunk,
        uid: I64,
        dirn: I8,
        count_after: I64,
        started: npt.NDArray[np.bool_],
        ended: EndedFlows,
    ) -> None:
        """Feed the name-carrying packets of one chunk: hellos (compiled scan, then the
        reference extractors), DNS answers and the name lookups at flow start and end,
        replayed in capture order."""
        cols = chunk.cols
        proto = cols[C_PROTO]
        has_payload = cols[C_PCAP] > 0
        is_dns = (cols[C_SPORT] == DNS_PORT) | (cols[C_DPORT] == DNS_PORT)
        feed = np.flatnonzero(has_payload & ~is_dns & (count_after <= MAX_NAME_PACKETS))
        prev_max = self.max_uid
        if len(uid):
            self.max_uid = max(prev_max, int(uid.max()))
        if _SCAN_HELLOS and len(feed):
            feed = self._scan_hellos(chunk, feed, uid[feed], prev_max)
        extractors = self.extractors
        raw = memoryview(chunk.buffer)  # type: ignore[arg-type]
        for u, d, p, sq, at, size in zip(
            uid[feed].tolist(),
            dirn[feed].tolist(),
            proto[feed].tolist(),
            cols[C_SEQ, feed].tolist(),
            cols[C_PAT, feed].tolist(),
            cols[C_PCAP, feed].tolist(),
            strict=True,
        ):
            ext = extractors.get(u)
            if ext is None:
                ext = extractors[u] = NameExtractor()
            elif ext.done:
                continue
            ext.feed(d, p, bytes(raw[at : at + size]), sq)
        dns = np.flatnonzero(has_payload & is_dns).tolist()
        payloads = [chunk.payload(i) for i in dns]
        carried: set[bytes] = set()
        for i, p in zip(dns, payloads, strict=True):
            # the messages NameCache.feed_dns reads: length-prefixed ones over TCP
            for m in split_tcp_dns(p) if int(proto[i]) != UDP else (p,):
                if not _dns_addresses(m, carried):
                    self.dns_any = True
        self._carried(carried)
        if not self.dns_raw and not self.dns_any:
            return  # no answer can have given an address: every lookup gives nothing
        # Replay in capture order: lookups at flow start (before the packet's own DNS
        # feed), DNS answers, lookups at flow end (after the packet that ended the flow).
        # Only flows whose server address some answer carried can get a name.
        events: list[tuple[int, int, int]] = []
        first = np.flatnonzero(started)
        server_lo = np.where(dirn[first] == 1, cols[C_DST_LO, first], cols[C_SRC_LO, first])
        for i in first[self._lo_carried(server_lo)].tolist():
            if self._may_be_cached(int(cols[C_VER, i]), *self._server_of(cols, i, int(dirn[i]))):
                events.append((i, 0, i))
        events += [(i, 1, k) for k, i in enumerate(dns)]
        shi, slo, _ = ended.server
        at = ended.at
        for j in np.flatnonzero(self._lo_carried(slo)).tolist():
            if self._may_be_cached(int(ended.version[j]), int(shi[j]), int(slo[j])):
                events.append((int(at[j]), 2, j))
        events.sort()
        ts = chunk.ts
        cache = self.cache
        for _at, kind, ref in events:
            if kind == 0:
                if len(cache):
                    v = int(cols[C_VER, ref])
                    found = cache.lookup(
                        self.addresses.text(v, *self._server_of(cols, ref, int(dirn[ref]))),
                        float(ts[ref]),
                    )
                    if found:
                        self.dns_at_start[int(uid[ref])] = found
            elif kind == 1:
                cache.feed_dns(payloads[ref], float(ts[dns[ref]]), tcp=int(proto[dns[ref]]) != UDP)
            else:
                self.end_name(ended, ref)

    def _scan_hellos(self, chunk: ColumnChunk, feed: I64, fed_uid: I64, prev_max: int) -> I64:
        """Let the compiled scanner settle the flows whose first fed payload is a whole
        ClientHello or a gQUIC CHLO; return the packets of ``feed`` that still go to Python."""
        cols = chunk.cols
        old_uid = np.unique(fed_uid[fed_uid <= prev_max])
        old_state = np.array([self._name_state(u) for u in old_uid.tolist()], np.int8)
        scan = scan_first_payloads(
            chunk.buffer,
            fed_uid,
            cols[C_PROTO, feed],
            cols[C_PAT, feed],
            cols[C_PCAP, feed],
            prev_max,
            self.max_uid,
            old_uid,
            old_state,
        )
        self.hellos.update(
            zip(
                scan.uids,
                ((s, a, src) for (s, a), src in zip(scan.names, scan.sources, strict=True)),
                strict=True,
            )
        )
        return feed[scan.python]

    def _name_state(self, u: int) -> int:
        """Where flow ``u`` (started in an earlier chunk) stands with its names."""
        if u in self.hellos:
            return DONE
        ext = self.extractors.get(u)
        if ext is None:
            return UNSEEN
        return DONE if ext.done else PYTHON

    @staticmethod
    def _server_of(cols: I64, i: int, direction: int) -> tuple[int, int]:
        """(hi, lo) of the server of the flow that packet ``i`` starts."""
        if direction == 1:
            return int(cols[C_DST_HI, i]), int(cols[C_DST_LO, i])
        return int(cols[C_SRC_HI, i]), int(cols[C_SRC_LO, i])

    def _carried(self, carried: set[bytes]) -> None:
        """Remember addresses DNS answers carried (raw bytes, and their low halves)."""
        fresh = carried - self.dns_raw
        if fresh:
            self.dns_raw |= fresh
            self.dns_lo = np.union1d(self.dns_lo, np.array([_low_half(r) for r in fresh], np.int64))

    def _lo_carried(self, lo: I64) -> npt.NDArray[np.bool_]:
        """Which addresses (by low half) some DNS answer may have carried: a superset of
        those :meth:`_may_be_cached` accepts, computed for many at once."""
        if self.dns_any:
            return np.ones(len(lo), np.bool_)
        return np.isin(lo, self.dns_lo)

    def _may_be_cached(self, version: int, hi: int, lo: int) -> bool:
        return self.dns_any or _raw(version, hi, lo) in self.dns_raw

    def end_name(self, ended: EndedFlows, j: int) -> None:
        """The reference's end-of-flow DNS lookup, for a flow without a name at start."""
        u = int(ended.uid[j])
        if not len(self.cache) or u in self.dns_at_start:
            return
        shi, slo, _ = ended.server
        v, hi, lo = int(ended.version[j]), int(shi[j]), int(slo[j])
        if not self._may_be_cached(v, hi, lo):
            return
        found = self.cache.lookup(self.addresses.text(v, hi, lo), float(ended.first_ts[j]))
        if found:
            self.dns_final[u] = found

    def _service(self, name: str | None) -> tuple[str, str]:
        found = self.services.get(name)
        if found is None:
            service = service_for(name)
            found = self.services[name] = (service, category_for(service))
        return found

    def text(self, ended: EndedFlows) -> dict[str, list[Any]]:
        """The name columns of ``ended`` (as the reference's ``flow_names`` and service rules
        give them); forgets those flows."""
        sni: list[Any] = []
        alpn: list[Any] = []
        dns_name: list[Any] = []
        name: list[Any] = []
        source: list[Any] = []
        service: list[Any] = []
        category: list[Any] = []
        for u in ended.uid.tolist():
            ext = self.extractors.pop(u, None)
            hello = self.hellos.pop(u, None)
            d = self.dns_at_start.pop(u, None) or self.dns_final.pop(u, None)
            found: str | None
            if hello is not None:
                s, a, found = hello
            else:
                s, a, found = (ext.sni, ext.alpn, ext.source) if ext else (None, None, None)
            if s:
                nm, src = s, found or "tls"
            elif d:
                nm, src = d, "dns"
            else:
                nm, src = None, None
            sni.append(s)
            alpn.append(a)
            dns_name.append(d)
            name.append(nm)
            source.append(src)
            sv, cat = self._service(nm)
            service.append(sv)
            category.append(cat)
        return {
            "sni": sni,
            "alpn": alpn,
            "dns_name": dns_name,
            "name": name,
            "name_source": source,
            "service": service,
            "category": category,
        }

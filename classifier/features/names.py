"""Names in clear for a flow (SNI, ALPN, QUIC version) and the DNS name cache.

:class:`NameExtractor` is fed the first packets of one flow and reads the server name from
the TLS ClientHello (TCP, reassembled by sequence number), from the decrypted QUIC client
Initials (UDP) or from a Google QUIC CHLO (UDP, :mod:`classifier.features.gquic`).
:class:`NameCache` remembers, from DNS answers seen on the wire, which name
a client asked for to reach an address, so flows without an SNI can still be named.

Neither class raises on odd payloads: unreadable bytes are ignored.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import OrderedDict

from classifier.features.dns import parse_dns_response, split_tcp_dns
from classifier.features.gquic import parse_gquic_packet
from classifier.features.quic import QuicInitialParser, is_long_header
from classifier.features.tls import ClientHelloInfo, HelloReassembler

__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "MAX_TTL",
    "MIN_TTL",
    "NameCache",
    "NameExtractor",
]

_log = logging.getLogger(__name__)

_TCP = 6
_UDP = 17
#: After this many UDP datagrams without a QUIC long header, the flow is not QUIC.
_UDP_GIVE_UP = 4

#: A DNS answer keeps its address -> name mapping at least this long (seconds), even with
#: TTL 0: clients connect right after the answer, and many CDNs answer with TTL 0-30 s.
MIN_TTL = 60.0
#: TTLs above this (seconds) are cut to it: the cache must not hold stale names for days.
MAX_TTL = 86400.0
#: Default bound on the number of addresses (and of query names) the cache keeps.
DEFAULT_MAX_ENTRIES = 100_000


class NameExtractor:
    """Per-flow reader of the names a flow's first packets carry in clear.

    Attributes (read after any :meth:`feed`):

    * ``sni``: server name from the ClientHello, or ``None``;
    * ``alpn``: offered ALPN protocols as a comma list (``"h2,http/1.1"``), or ``None``;
    * ``source``: ``"tls"`` or ``"quic"`` once a ClientHello was parsed, ``"gquic"`` once a
      Google QUIC CHLO gave the name (Q024-Q047 in clear, Q050 decrypted), else ``None``;
    * ``quic_version``: version of the first decrypted client Initial or of the gQUIC
      packet that gave the name, else ``None``;
    * ``hello``: the full :class:`~classifier.features.tls.ClientHelloInfo` (``None`` for
      gQUIC: a CHLO is not a TLS hello);
    * ``done``: True when feeding more packets cannot change the result.
    """

    def __init__(self) -> None:
        self.sni: str | None = None
        self.alpn: str | None = None
        self.source: str | None = None
        self.quic_version: int | None = None
        self.hello: ClientHelloInfo | None = None
        self.done = False
        self._tcp: dict[int, HelloReassembler] = {}
        self._quic: QuicInitialParser | None = None
        self._udp_seen = 0

    def feed(self, direction: int, proto: int, payload: bytes, seq: int = 0) -> None:
        """Feed one packet: ``direction`` +1 client->server / -1 server->client, ``proto``
        6 (TCP) or 17 (UDP), the transport payload as captured (may be truncated or empty)
        and the TCP sequence number (ignored for UDP). Never raises on odd input."""
        if self.done or not payload:
            return
        if proto == _TCP:
            self._feed_tcp(direction, payload, seq)
        elif proto == _UDP:
            self._feed_udp(payload)
        else:
            self.done = True

    def _feed_tcp(self, direction: int, payload: bytes, seq: int) -> None:
        # Both directions are read: a capture that starts mid-handshake can give the flow
        # the wrong orientation, and only a ClientHello (type 1) is ever accepted.
        side = self._tcp.get(direction)
        if side is None:
            side = self._tcp[direction] = HelloReassembler()
        hello = side.feed(payload, seq)
        if hello is not None:
            self._found(hello, "tls")
        elif len(self._tcp) == 2 and all(r.done for r in self._tcp.values()):
            self.done = True

    def _feed_udp(self, payload: bytes) -> None:
        self._udp_seen += 1
        if self._quic is None:
            chlo = parse_gquic_packet(payload)
            if chlo is not None and chlo.sni is not None:
                self.quic_version = chlo.version
                self._found_name(chlo.sni, "gquic")
                return
            if chlo is not None or not is_long_header(payload):
                if self._udp_seen >= _UDP_GIVE_UP:
                    self.done = True
                return
            self._quic = QuicInitialParser()
        hello = self._quic.feed(payload)
        if self._quic.version is not None:
            self.quic_version = self._quic.version
        if hello is not None:
            self._found(hello, "quic")
        elif self._quic.chlo_sni is not None:  # Q050
            self._found_name(self._quic.chlo_sni, "gquic")
        elif self._quic.failed:
            self.done = True

    def _found(self, hello: ClientHelloInfo, source: str) -> None:
        self.hello = hello
        self.sni = hello.sni
        self.alpn = ",".join(hello.alpn) if hello.alpn else None
        self.source = source
        self.done = True

    def _found_name(self, sni: str, source: str) -> None:
        self.sni = sni
        self.source = source
        self.done = True


def _canonical_ip(ip: str) -> str | None:
    try:
        return ipaddress.ip_address(ip.strip()).compressed
    except ValueError:
        return None


class NameCache:
    """Address -> query name map learned from DNS answers, with TTLs and a size bound.

    An address maps to the name the client *asked for* (CNAME chains are followed to the
    addresses, but the question name is kept). A later answer for the same address replaces
    the earlier one. Entries live ``max(MIN_TTL, min(ttl, MAX_TTL))`` seconds from the
    answer's timestamp; when more than ``max_entries`` addresses are held, the oldest
    inserted are dropped first.
    """

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES, min_ttl: float = MIN_TTL) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self.min_ttl = min_ttl
        self._by_ip: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._names: OrderedDict[str, None] = OrderedDict()
        self.responses = 0

    def __len__(self) -> int:
        return len(self._by_ip)

    @property
    def names_seen(self) -> list[str]:
        """Query names of the responses seen, in first-seen order (bounded like the cache)."""
        return list(self._names)

    def feed_dns(self, payload: bytes, ts: float, tcp: bool | None = None) -> None:
        """Learn from one DNS payload seen at ``ts`` (seconds).

        ``tcp``: True for a DNS-over-TCP payload (2-byte length prefix per message), False
        for UDP, ``None`` to guess (TCP when length-prefixed messages fill the payload
        exactly and the first of them parses).
        Queries, errors and garbage are ignored; never raises.
        """
        data = bytes(payload)
        framed = split_tcp_dns(data)
        if tcp is None:
            # TCP when the length-prefixed messages tile the payload exactly; a UDP message
            # can look like that by chance, so the raw form wins if only it parses.
            tcp = (
                bool(framed)
                and sum(2 + len(m) for m in framed) == len(data)
                and not (
                    parse_dns_response(framed[0]) is None and parse_dns_response(data) is not None
                )
            )
        messages = framed if tcp else [data]
        for msg in messages:
            answer = parse_dns_response(msg)
            if answer is None:
                continue
            self.responses += 1
            self._remember_name(answer.qname)
            for ip, ttl in answer.addresses:
                self._put(ip, answer.qname, ts + max(self.min_ttl, min(float(ttl), MAX_TTL)))

    def lookup(self, ip: str, ts: float) -> str | None:
        """Name of ``ip`` if a DNS answer gave it and it has not expired at ``ts``."""
        entry = self._by_ip.get(ip)  # decoded addresses are canonical already: no parse
        if entry is None and (":" in ip or ip != ip.strip()):
            # IPv6 text has many spellings; a valid IPv4 text has only the canonical one.
            key = _canonical_ip(ip)
            entry = None if key is None else self._by_ip.get(key)
        if entry is None or ts > entry[1]:
            return None
        return entry[0]

    def _remember_name(self, name: str) -> None:
        if name in self._names:
            return
        self._names[name] = None
        if len(self._names) > self.max_entries:
            self._names.popitem(last=False)

    def _put(self, ip: str, name: str, expires: float) -> None:
        key = _canonical_ip(ip)
        if key is None:
            return
        if key in self._by_ip:
            del self._by_ip[key]
        self._by_ip[key] = (name, expires)
        while len(self._by_ip) > self.max_entries:
            self._by_ip.popitem(last=False)

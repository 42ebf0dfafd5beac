"""The DNS name cache: which name a client asked for to reach an address.

:class:`NameCache` remembers, from DNS answers seen on the wire, which name a client asked
for to reach an address, so flows without an SNI can still be named. It never raises on
odd payloads: unreadable bytes are ignored.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import OrderedDict

from classifier.names.dns import parse_dns_response, split_tcp_dns

__all__ = ["DEFAULT_MAX_ENTRIES", "MAX_TTL", "MIN_TTL", "NameCache"]

_log = logging.getLogger(__name__)

#: A DNS answer keeps its address -> name mapping at least this long (seconds), even with
#: TTL 0: clients connect right after the answer, and many CDNs answer with TTL 0-30 s.
MIN_TTL = 60.0
#: TTLs above this (seconds) are cut to it: the cache must not hold stale names for days.
MAX_TTL = 86400.0
#: Default bound on the number of addresses (and of query names) the cache keeps.
DEFAULT_MAX_ENTRIES = 100_000


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

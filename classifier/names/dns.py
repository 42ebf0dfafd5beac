"""DNS response parsing: which addresses a query name resolved to, and for how long.

Built on ``dnslib`` (already a runtime dependency): it decodes compressed names with a
pointer-loop guard and understands HTTPS (type 65) records, whose ``ipv4hint`` /
``ipv6hint`` parameters carry addresses too; ``dpkt.dns`` leaves HTTPS/SVCB rdata raw.
SVCB (type 64) rdata, which dnslib keeps raw, is decoded here with the same hint rules.

Only the answer section counts, and only records on the chain that starts at the question
name (question -> CNAME -> CNAME ... -> A/AAAA/HTTPS): glue and unrelated records are
ignored. Garbage, truncated messages, queries and error responses give ``None``; nothing
here raises.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import NamedTuple

import dnslib

__all__ = ["DnsAnswer", "parse_dns_response", "split_tcp_dns"]

_log = logging.getLogger(__name__)

_T_A = 1
_T_CNAME = 5
_T_AAAA = 28
_T_SVCB = 64
_T_HTTPS = 65
_KEY_IPV4HINT = 4
_KEY_IPV6HINT = 6
_MAX_CHAIN = 16


class DnsAnswer(NamedTuple):
    """One DNS response: the question name, the addresses it resolved to with their TTLs
    (seconds, as sent), and the CNAME chain followed from the question name (in order).
    Names are lower-case without the trailing dot; addresses are in canonical text form."""

    qname: str
    addresses: list[tuple[str, int]]
    cname_chain: list[str]


def _name(label: object) -> str:
    """dnslib label -> lower-case name without the trailing dot."""
    text = str(label).rstrip(".").lower()
    return text


def _svcb_params_from_raw(raw: bytes) -> list[tuple[int, bytes]]:
    """Parse SVCB rdata (priority, uncompressed target name, key/value params)."""
    pos = 2
    n = len(raw)
    while pos < n:  # target name labels
        size = raw[pos]
        pos += 1
        if size == 0:
            break
        if size > 63:
            return []
        pos += size
    out: list[tuple[int, bytes]] = []
    while pos + 4 <= n:
        key = int.from_bytes(raw[pos : pos + 2], "big")
        size = int.from_bytes(raw[pos + 2 : pos + 4], "big")
        pos += 4
        if pos + size > n:
            break
        out.append((key, raw[pos : pos + size]))
        pos += size
    return out


def _hint_addresses(params: list[tuple[int, bytes]]) -> list[str]:
    out: list[str] = []
    for key, value in params:
        value = bytes(value)
        if key == _KEY_IPV4HINT:
            out += [
                str(ipaddress.IPv4Address(value[i : i + 4])) for i in range(0, len(value) - 3, 4)
            ]
        elif key == _KEY_IPV6HINT:
            out += [
                str(ipaddress.IPv6Address(value[i : i + 16])) for i in range(0, len(value) - 15, 16)
            ]
    return out


def _record_addresses(rr: dnslib.RR) -> list[str]:
    rtype = rr.rtype
    rdata = rr.rdata
    if rtype == _T_A:
        return [str(ipaddress.IPv4Address(str(rdata)))]
    if rtype == _T_AAAA:
        return [str(ipaddress.IPv6Address(str(rdata)))]
    if rtype == _T_HTTPS and isinstance(rdata, dnslib.HTTPS):
        return _hint_addresses([(int(k), bytes(v)) for k, v in rdata.params])
    if rtype in (_T_SVCB, _T_HTTPS):
        raw = getattr(rdata, "data", b"")
        if isinstance(raw, bytes | bytearray):
            return _hint_addresses(_svcb_params_from_raw(bytes(raw)))
    return []


def _answer(record: dnslib.DNSRecord) -> DnsAnswer | None:
    header = record.header
    if not header.qr or header.rcode != 0 or not record.questions:
        return None
    qname = _name(record.questions[0].qname)
    if not qname:
        return None
    cnames: dict[str, str] = {}
    for rr in record.rr:
        if rr.rtype == _T_CNAME:
            cnames.setdefault(_name(rr.rname), _name(rr.rdata))
    chain: list[str] = []
    owners = {qname}
    current = qname
    while current in cnames and len(chain) < _MAX_CHAIN:
        current = cnames[current]
        if current in owners:
            break  # CNAME loop
        chain.append(current)
        owners.add(current)
    addresses: list[tuple[str, int]] = []
    for rr in record.rr:
        if _name(rr.rname) in owners:
            ttl = max(0, int(rr.ttl))
            addresses += [(ip, ttl) for ip in _record_addresses(rr)]
    return DnsAnswer(qname=qname, addresses=addresses, cname_chain=chain)


def parse_dns_response(data: bytes) -> DnsAnswer | None:
    """Parse one DNS message (no TCP length prefix) if it is a successful response.

    Returns ``None`` for queries, error responses, truncated or malformed messages; never
    raises.
    """
    if len(data) < 12 or not data[2] & 0x80:
        return None
    try:
        record = dnslib.DNSRecord.parse(bytes(data))
        return _answer(record)
    except Exception:  # dnslib raises many types (DNSError, struct.error, ...) on garbage
        _log.debug("undecodable DNS message of %d bytes", len(data), exc_info=True)
        return None


def split_tcp_dns(data: bytes) -> list[bytes]:
    """Split a DNS-over-TCP payload (2-byte length prefix per message) into messages.

    Incomplete trailing messages are dropped. Never raises.
    """
    out: list[bytes] = []
    pos = 0
    while pos + 2 <= len(data):
        size = int.from_bytes(data[pos : pos + 2], "big")
        if size < 12 or pos + 2 + size > len(data):
            break
        out.append(bytes(data[pos + 2 : pos + 2 + size]))
        pos += 2 + size
    return out

"""DNS response parsing: chains, address types, HTTPS/SVCB hints, garbage."""

from __future__ import annotations

import dnslib
from hypothesis import given, settings
from hypothesis import strategies as st

from classifier.names.dns import DnsAnswer, parse_dns_response, split_tcp_dns


def _response(
    qname: str, records: list[str], qtype: str = "A", extra: tuple[str, ...] = ()
) -> bytes:
    """A response built from zone-file lines (answers, then additional records)."""
    rec = dnslib.DNSRecord(
        dnslib.DNSHeader(id=7, qr=1, aa=0, ra=1),
        q=dnslib.DNSQuestion(qname, getattr(dnslib.QTYPE, qtype)),
    )
    for line in records:
        for rr in dnslib.RR.fromZone(line):
            rec.add_answer(rr)
    for line in extra:
        for rr in dnslib.RR.fromZone(line):
            rec.add_ar(rr)
    return bytes(rec.pack())


def test_cname_chain_to_addresses() -> None:
    msg = _response(
        "www.youtube.com",
        [
            "www.youtube.com. 300 IN CNAME youtube-ui.l.google.com.",
            "youtube-ui.l.google.com. 60 IN CNAME alt.l.google.com.",
            "alt.l.google.com. 30 IN A 142.250.1.1",
            "alt.l.google.com. 30 IN A 142.250.1.2",
        ],
    )
    ans = parse_dns_response(msg)
    assert ans == DnsAnswer(
        "www.youtube.com",
        [("142.250.1.1", 30), ("142.250.1.2", 30)],
        ["youtube-ui.l.google.com", "alt.l.google.com"],
    )


def test_aaaa_canonical_and_case_folded() -> None:
    msg = _response("WWW.Example.COM", ["WWW.Example.COM. 0 IN AAAA 2001:DB8:0:0::1"], "AAAA")
    ans = parse_dns_response(msg)
    assert ans is not None
    assert ans.qname == "www.example.com"
    assert ans.addresses == [("2001:db8::1", 0)]


def test_https_record_hints() -> None:
    msg = _response(
        "discord.com",
        [
            "discord.com. 300 IN HTTPS 1 . alpn=h3,h2 ipv4hint=162.159.128.233,162.159.135.232 "
            "ipv6hint=2606:4700::6810:84e5",
        ],
        "HTTPS",
    )
    ans = parse_dns_response(msg)
    assert ans is not None
    assert sorted(ans.addresses) == [
        ("162.159.128.233", 300),
        ("162.159.135.232", 300),
        ("2606:4700::6810:84e5", 300),
    ]


def test_svcb_raw_rdata_hints() -> None:
    # SVCB (type 64): priority 1, target ".", ipv4hint 10.0.0.1 -- dnslib keeps this raw.
    rdata = bytes.fromhex("000100000400040a000001")
    rec = dnslib.DNSRecord(dnslib.DNSHeader(id=1, qr=1), q=dnslib.DNSQuestion("_dns.r.example", 64))
    rec.add_answer(dnslib.RR("_dns.r.example", 64, ttl=99, rdata=dnslib.RD(rdata)))
    ans = parse_dns_response(bytes(rec.pack()))
    assert ans is not None and ans.addresses == [("10.0.0.1", 99)]


def test_glue_and_unrelated_records_ignored() -> None:
    msg = _response(
        "a.example",
        ["a.example. 60 IN A 192.0.2.1", "other.example. 60 IN A 192.0.2.99"],
        extra=("ns1.example. 3600 IN A 192.0.2.53",),
    )
    ans = parse_dns_response(msg)
    assert ans is not None and ans.addresses == [("192.0.2.1", 60)]


def test_cname_loop_terminates() -> None:
    msg = _response(
        "x.example",
        [
            "x.example. 60 IN CNAME y.example.",
            "y.example. 60 IN CNAME x.example.",
        ],
    )
    ans = parse_dns_response(msg)
    assert ans is not None and ans.addresses == [] and ans.cname_chain == ["y.example"]


def test_queries_and_errors_are_not_answers() -> None:
    query = bytes(dnslib.DNSRecord.question("a.example").pack())
    assert parse_dns_response(query) is None
    nx = dnslib.DNSRecord(dnslib.DNSHeader(id=2, qr=1, rcode=3), q=dnslib.DNSQuestion("a.example"))
    assert parse_dns_response(bytes(nx.pack())) is None


def test_truncated_and_pointer_loop_give_none() -> None:
    msg = _response("a.example", ["a.example. 60 IN A 192.0.2.1"])
    for cut in range(len(msg) - 1):
        got = parse_dns_response(msg[:cut])
        assert got is None or got.addresses == []
    # Question name is a compression pointer to itself.
    looped = bytes.fromhex("0007818000010000000000000c00010001")[:12] + b"\xc0\x0c\x00\x01\x00\x01"
    assert parse_dns_response(looped) is None


def test_split_tcp_dns() -> None:
    a = _response("a.example", ["a.example. 60 IN A 192.0.2.1"])
    b = _response("b.example", ["b.example. 60 IN A 192.0.2.2"])
    framed = len(a).to_bytes(2, "big") + a + len(b).to_bytes(2, "big") + b
    assert split_tcp_dns(framed) == [a, b]
    assert split_tcp_dns(framed[:-1]) == [a]
    assert split_tcp_dns(b"\x00") == []


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_never_raises(data: bytes) -> None:
    parse_dns_response(data)
    parse_dns_response(b"\x00\x01\x81\x80" + data)
    split_tcp_dns(data)

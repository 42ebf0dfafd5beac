"""NameExtractor and NameCache: unit tests, and agreement with tshark on the shared captures.

The capture tests drive the extractor the way the flow table does (first packets of each
bidirectional flow, the first packet's sender taken as client) with a small local dpkt
decoder, and compare the (flow, SNI, ALPN) set (TLS and QUIC ClientHellos, Google QUIC
CHLOs) and the DNS answers with what tshark 4.x reports for the same file.
"""

from __future__ import annotations

import functools
import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dnslib
import dpkt
import pytest

from classifier.names.cache import MIN_TTL, NameCache
from classifier.names.dns import parse_dns_response, split_tcp_dns
from classifier.names.extract import NameExtractor
from classifier.names.quic import QUIC_V1, encrypt_initial
from classifier.names.tls import build_client_hello
from tests.shared_data import SHARED, missing_reason

PCAPS = SHARED
CAPTURES = sorted([*PCAPS.glob("ndpi/*.pcap*"), *PCAPS.glob("nfstream/*.pcap*")])
FLOW_PACKETS = 20  # the flow table stops feeding an extractor after ~20 packets

# tshark decodes TLS by port: these files carry TLS on ports it does not try by default.
TSHARK_EXTRA_ARGS: dict[str, list[str]] = {
    # Ookla speed test: TLS to a test server on TCP/8080, which tshark takes for HTTP.
    "ookla.pcap": ["-d", "tcp.port==8080,tls"],
}


# --- unit tests --------------------------------------------------------------------------------


def _dns(qname: str, lines: list[str], txid: int = 9) -> bytes:
    rec = dnslib.DNSRecord(dnslib.DNSHeader(id=txid, qr=1, ra=1), q=dnslib.DNSQuestion(qname))
    for line in lines:
        for rr in dnslib.RR.fromZone(line):
            rec.add_answer(rr)
    return bytes(rec.pack())


def test_cache_follows_cname_and_keeps_query_name() -> None:
    cache = NameCache()
    cache.feed_dns(
        _dns(
            "www.youtube.com",
            [
                "www.youtube.com. 300 IN CNAME youtube-ui.l.google.com.",
                "youtube-ui.l.google.com. 300 IN A 1.2.3.4",
            ],
        ),
        ts=100.0,
    )
    assert cache.lookup("1.2.3.4", 150.0) == "www.youtube.com"
    assert cache.lookup("1.2.3.5", 150.0) is None
    assert cache.names_seen == ["www.youtube.com"]


def test_cache_ttl_and_minimum() -> None:
    cache = NameCache()
    cache.feed_dns(_dns("long.example", ["long.example. 600 IN A 10.0.0.1"]), ts=0.0)
    cache.feed_dns(_dns("zero.example", ["zero.example. 0 IN A 10.0.0.2"]), ts=0.0)
    assert cache.lookup("10.0.0.1", 599.0) == "long.example"
    assert cache.lookup("10.0.0.1", 601.0) is None
    assert cache.lookup("10.0.0.2", MIN_TTL - 1) == "zero.example"  # TTL 0 kept MIN_TTL s
    assert cache.lookup("10.0.0.2", MIN_TTL + 1) is None


def test_cache_latest_answer_wins_and_ipv6_canonical() -> None:
    cache = NameCache()
    cache.feed_dns(_dns("a.example", ["a.example. 300 IN AAAA 2001:db8::1"]), ts=0.0)
    cache.feed_dns(_dns("b.example", ["b.example. 300 IN AAAA 2001:0db8:0:0:0:0:0:1"]), ts=1.0)
    assert cache.lookup("2001:DB8:0::1", 2.0) == "b.example"
    assert cache.names_seen == ["a.example", "b.example"]
    assert cache.lookup("not an ip", 2.0) is None


def test_cache_bound_evicts_oldest() -> None:
    cache = NameCache(max_entries=3)
    for i in range(5):
        cache.feed_dns(_dns(f"h{i}.example", [f"h{i}.example. 300 IN A 10.1.0.{i}"]), ts=float(i))
    assert len(cache) == 3
    assert cache.lookup("10.1.0.0", 5.0) is None and cache.lookup("10.1.0.1", 5.0) is None
    assert cache.lookup("10.1.0.4", 5.0) == "h4.example"
    assert len(cache.names_seen) == 3
    with pytest.raises(ValueError):
        NameCache(max_entries=0)


def test_cache_tcp_framing_and_garbage() -> None:
    a = _dns("t1.example", ["t1.example. 60 IN A 10.2.0.1"])
    b = _dns("t2.example", ["t2.example. 60 IN A 10.2.0.2"])
    cache = NameCache()
    cache.feed_dns(len(a).to_bytes(2, "big") + a + len(b).to_bytes(2, "big") + b, ts=0.0)
    assert cache.lookup("10.2.0.1", 1.0) == "t1.example"
    assert cache.lookup("10.2.0.2", 1.0) == "t2.example"
    # A UDP message whose ID happens to equal its length - 2 is still read as UDP.
    c = _dns("t3.example", ["t3.example. 60 IN A 10.2.0.3"])
    c = _dns("t3.example", ["t3.example. 60 IN A 10.2.0.3"], txid=len(c) - 2)
    cache.feed_dns(c, ts=0.0)
    assert cache.lookup("10.2.0.3", 1.0) == "t3.example"
    for junk in (b"", b"\x00", b"\xff" * 40, bytes(range(256))):
        cache.feed_dns(junk, ts=0.0)
    query = bytes(dnslib.DNSRecord.question("q.example").pack())
    cache.feed_dns(query, ts=0.0)
    assert "q.example" not in cache.names_seen
    assert cache.responses == 3


def test_extractor_tcp_split_hello() -> None:
    hello = build_client_hello("scontent.cdninstagram.com", ("h2", "http/1.1"), key_share_len=1216)
    ex = NameExtractor()
    ex.feed(+1, 6, b"", 999)  # SYN/ACK-only packets carry nothing
    ex.feed(+1, 6, hello[700:], 1000 + 700)
    assert ex.sni is None and not ex.done
    ex.feed(-1, 6, b"\x16\x03\x03\x00\x10\x02" + b"\x00" * 15, 5000)  # server data: ignored
    ex.feed(+1, 6, hello[:700], 1000)
    assert ex.done and ex.source == "tls"
    assert ex.sni == "scontent.cdninstagram.com" and ex.alpn == "h2,http/1.1"
    assert ex.quic_version is None


def test_extractor_reads_hello_of_misoriented_flow() -> None:
    hello = build_client_hello("late.example", ())
    ex = NameExtractor()
    ex.feed(+1, 6, b"\x17\x03\x03\x00\x05hello", 1)  # capture began mid-connection
    ex.feed(-1, 6, hello, 77)
    assert ex.sni == "late.example"


def test_extractor_quic() -> None:
    hello = build_client_hello("rr5---sn-a.googlevideo.com", ("h3",), record=False)
    frame = b"\x06\x00" + (len(hello) | 0x4000).to_bytes(2, "big") + hello
    pkt = encrypt_initial(QUIC_V1, b"\x01" * 8, b"", 0, frame, pad_to=1200)
    ex = NameExtractor()
    ex.feed(+1, 17, pkt, 0)
    assert ex.done and ex.source == "quic" and ex.quic_version == QUIC_V1
    assert ex.sni == "rr5---sn-a.googlevideo.com" and ex.alpn == "h3"


def test_extractor_gives_up_on_other_traffic() -> None:
    udp = NameExtractor()
    for _ in range(4):
        udp.feed(+1, 17, b"\x80\x60" + b"\x00" * 40, 0)  # RTP
    assert udp.done and udp.sni is None
    other = NameExtractor()
    other.feed(+1, 1, b"\x08\x00", 0)
    assert other.done
    tcp = NameExtractor()
    for i in range(8):
        tcp.feed(+1, 6, b"GET / HTTP/1.1\r\n\r\n", 100 + 18 * i)
        tcp.feed(-1, 6, b"HTTP/1.1 200 OK\r\n\r\n", 900 + 19 * i)
    assert tcp.done and tcp.sni is None


# --- agreement with tshark on the shared captures ---------------------------------------------

Flow = tuple[int, frozenset[tuple[str, int]]]


def _ip_of(frame: object) -> dpkt.Packet | None:
    """Unwrap link layers (Ethernet, VLAN, QinQ, PPPoE/PPP, SLL) down to IPv4/IPv6."""
    obj = frame
    for _ in range(6):
        if isinstance(obj, dpkt.ip.IP | dpkt.ip6.IP6):
            return obj
        obj = getattr(obj, "data", None)
        if not isinstance(obj, dpkt.Packet):
            return None
    return None


def _packets(path: Path) -> Iterator[tuple[float, str, str, int, int, int, int, bytes]]:
    """(ts, src, dst, proto, sport, dport, seq, payload) of every TCP/UDP packet."""
    with path.open("rb") as fh:
        magic = fh.read(4)
        fh.seek(0)
        reader = dpkt.pcapng.Reader(fh) if magic == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(fh)
        link = reader.datalink()
        for ts, buf in reader:
            try:
                if link == dpkt.pcap.DLT_EN10MB:
                    ip = _ip_of(dpkt.ethernet.Ethernet(buf))
                elif link == dpkt.pcap.DLT_LINUX_SLL:
                    ip = _ip_of(dpkt.sll.SLL(buf))
                elif link in (dpkt.pcap.DLT_RAW, 12, 14):
                    ip = dpkt.ip.IP(buf) if buf[:1] and buf[0] >> 4 == 4 else dpkt.ip6.IP6(buf)
                else:
                    continue
            except (dpkt.UnpackError, IndexError, ValueError):
                continue
            if ip is None:
                continue
            family = socket.AF_INET if isinstance(ip, dpkt.ip.IP) else socket.AF_INET6
            l4 = ip.data
            if isinstance(l4, dpkt.tcp.TCP):
                proto, seq = 6, l4.seq
            elif isinstance(l4, dpkt.udp.UDP):
                proto, seq = 17, 0
            else:
                continue
            yield (
                float(ts),
                socket.inet_ntop(family, ip.src),
                socket.inet_ntop(family, ip.dst),
                proto,
                l4.sport,
                l4.dport,
                seq,
                bytes(l4.data),
            )


Answer = tuple[float, str, frozenset[str]]


@functools.cache
def _our_names(path: Path) -> tuple[set[tuple[Flow, str, str]], list[Answer], NameCache]:
    """Our (flow, SNI, ALPN) set, DNS answers (ts, qname, addresses) and the filled cache."""
    flows: dict[tuple[int, str, int, str, int], list[object]] = {}
    dns: list[Answer] = []
    cache = NameCache()
    for ts, src, dst, proto, sport, dport, seq, payload in _packets(path):
        if 53 in (sport, dport) and payload:
            cache.feed_dns(payload, ts, tcp=proto == 6)
            for msg in split_tcp_dns(payload) if proto == 6 else [payload]:
                ans = parse_dns_response(msg)
                if ans is not None:
                    dns.append((ts, ans.qname, frozenset(ip for ip, _ in ans.addresses)))
        key = (proto, src, sport, dst, dport)
        rkey = (proto, dst, dport, src, sport)
        if key in flows:
            state, direction = flows[key], 1
        elif rkey in flows:
            state, direction = flows[rkey], -1
        else:
            state, direction = flows.setdefault(key, [NameExtractor(), 0]), 1
        ex = state[0]
        assert isinstance(ex, NameExtractor)
        count = state[1]
        assert isinstance(count, int)
        if ex.done or count >= FLOW_PACKETS:
            continue
        state[1] = count + 1
        ex.feed(direction, proto, payload, seq)
    out: set[tuple[Flow, str, str]] = set()
    for (proto, src, sport, dst, dport), state in flows.items():
        ex = state[0]
        assert isinstance(ex, NameExtractor)
        if ex.sni:
            out.add(((proto, frozenset({(src, sport), (dst, dport)})), ex.sni, ex.alpn or ""))
    return out, dns, cache


def _tshark(path: Path, *args: str) -> str:
    extra = TSHARK_EXTRA_ARGS.get(path.name, [])
    run = subprocess.run(
        ["tshark", "-n", "-r", str(path), *extra, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def _tshark_names(path: Path) -> set[tuple[Flow, str, str]]:
    fields = [
        "ip.src",
        "ipv6.src",
        "ip.dst",
        "ipv6.dst",
        "tcp.srcport",
        "tcp.dstport",
        "udp.srcport",
        "udp.dstport",
        "tls.handshake.extensions_server_name",
        "tls.handshake.extensions_alpn_str",
    ]
    out = _tshark(
        path,
        "-Y",
        "tls.handshake.type==1",
        "-T",
        "fields",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=,",
        *[a for f in fields for a in ("-e", f)],
    )
    got: set[tuple[Flow, str, str]] = set()
    for line in out.splitlines():
        # Address and port fields can repeat (ICMP quoting a packet): the first is the frame's.
        first = [v.split(",")[0] for v in line.split("\t")]
        src4, src6, dst4, dst6, tsp, tdp, usp, udp_, sni, _ = first
        alpn = line.split("\t")[-1]
        if not sni:
            continue
        proto = 6 if tsp else 17
        ends = frozenset({(src4 or src6, int(tsp or usp)), (dst4 or dst6, int(tdp or udp_))})
        got.add(((proto, ends), sni, alpn))
    # Google QUIC: the SNI tag of the CHLO (no ALPN)
    gquic = [
        "ip.src",
        "ipv6.src",
        "ip.dst",
        "ipv6.dst",
        "udp.srcport",
        "udp.dstport",
        "gquic.tag.sni",
    ]
    out = _tshark(
        path,
        "-Y",
        "gquic.tag.sni",
        "-T",
        "fields",
        "-E",
        "occurrence=f",
        *[a for f in gquic for a in ("-e", f)],
    )
    for line in out.splitlines():
        src4, src6, dst4, dst6, usp, udp_, sni = line.split("\t")
        ends = frozenset({(src4 or src6, int(usp)), (dst4 or dst6, int(udp_))})
        got.add(((17, ends), sni, ""))
    return got


def _tshark_dns(path: Path) -> list[tuple[str, frozenset[str]]]:
    out = _tshark(
        path,
        "-Y",
        "dns.flags.response==1 && dns.flags.rcode==0 && (udp.port==53 || tcp.port==53)",
        "-T",
        "json",
        "-J",
        "dns",
    )
    answers: list[tuple[str, frozenset[str]]] = []
    for pkt in json.loads(out or "[]"):
        layer = pkt["_source"]["layers"]["dns"]
        layers = layer if isinstance(layer, list) else [layer]
        for dns in layers:
            queries = dns.get("Queries") or {}
            if not queries:
                continue
            qname = next(iter(queries.values()))["dns.qry.name"].lower()
            ips = set()
            for rec in (dns.get("Answers") or {}).values():
                for key in ("dns.a", "dns.aaaa"):
                    if key in rec:
                        ips.add(rec[key])
            answers.append((qname, frozenset(ips)))
    return answers


needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
needs_pcaps = pytest.mark.skipif(
    not CAPTURES, reason=missing_reason("ndpi") or "no capture in the shared folder"
)


@needs_tshark
@needs_pcaps
@pytest.mark.parametrize("path", CAPTURES, ids=[f"{p.parent.name}/{p.name}" for p in CAPTURES])
def test_sni_and_alpn_match_tshark(path: Path) -> None:
    ours, _, _ = _our_names(path)
    theirs = _tshark_names(path)
    assert ours == theirs, (
        f"only ours: {sorted(ours - theirs, key=str)[:5]}; "
        f"only tshark: {sorted(theirs - ours, key=str)[:5]}"
    )


@needs_tshark
@needs_pcaps
@pytest.mark.parametrize("path", CAPTURES, ids=[f"{p.parent.name}/{p.name}" for p in CAPTURES])
def test_dns_answers_match_tshark(path: Path) -> None:
    _, dns, cache = _our_names(path)
    theirs = _tshark_dns(path)
    assert sorted(((q, ips) for _, q, ips in dns), key=str) == sorted(theirs, key=str)
    assert set(cache.names_seen) == {q for q, _ in theirs}
    # Right after each answer, its addresses look up to a name that some answer gave them
    # (a later answer for the same address may replace the name).
    names_of: dict[str, set[str]] = {}
    for _, qname, ips in dns:
        for ip in ips:
            names_of.setdefault(ip, set()).add(qname)
    for ts, _, ips in dns:
        for ip in ips:
            assert cache.lookup(ip, ts) in names_of[ip], (ip, ts)
    assert len(cache) == len(names_of)


def test_capture_set_covers_quic_versions() -> None:
    """The capture comparison above is only meaningful if the QUIC files are there."""
    if not CAPTURES:
        pytest.skip(missing_reason("ndpi") or "no capture in the shared folder")
    names = {p.name for p in CAPTURES}
    assert {
        "quic-28.pcap",
        "quic-mvfst-22.pcap",
        "quic_interop_V.pcapng",
        "quic_t51.pcap",
        "sites.pcapng",
    } <= names

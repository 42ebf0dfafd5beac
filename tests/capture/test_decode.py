"""Frame decoding: link types, IPv4/IPv6 (fragments, extension headers), TCP/UDP, bad headers."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from classifier.capture import KNOWN_LINKTYPES, TCP, UDP, Packet, decode_frame

from .make_captures import ACK, PSH, SYN, ether, ipv4, ipv6, null, sll, sll2, tcp, udp, v6_ext

TS = 1700000000.25


def _ok(linktype: int, frame: bytes, wire: int | None = None) -> Packet:
    notes: dict[str, int] = {}
    got = decode_frame(linktype, frame, TS, len(frame) if wire is None else wire, notes)
    assert isinstance(got, Packet), got
    return got


TCP4 = ipv4(tcp(40000, 443, b"hello", seq=77, flags=PSH | ACK))
UDP6 = ipv6(udp(5353, 443, b"quic!"), nxt=17)


@pytest.mark.parametrize(
    ("linktype", "frame"),
    [
        (1, ether(TCP4)),
        (1, ether(TCP4, vlans=[(0x8100, 10)])),
        (1, ether(TCP4, vlans=[(0x88A8, 100), (0x8100, 10)])),
        (1, ether(TCP4, vlans=[(0x9100, 5), (0x8100, 6)])),
        (113, sll(TCP4)),
        (276, sll2(TCP4)),
        (101, TCP4),
        (12, TCP4),
        (14, TCP4),
        (228, TCP4),
        (0, null(TCP4, 2, "<")),
        (0, null(TCP4, 2, ">")),
        (108, null(TCP4, 2, ">")),
        (108, null(TCP4, 2, "<")),
    ],
    ids=[
        "eth",
        "dot1q",
        "qinq-88a8",
        "qinq-9100",
        "sll",
        "sll2",
        "raw101",
        "raw12",
        "raw14",
        "ipv4-228",
        "null-le",
        "null-be",
        "loop-be",
        "loop-le",
    ],
)
def test_link_types_ipv4_tcp(linktype: int, frame: bytes) -> None:
    p = _ok(linktype, frame)
    assert (p.src, p.dst, p.proto, p.sport, p.dport) == ("10.77.0.1", "10.77.0.2", TCP, 40000, 443)
    assert (p.ip_len, p.payload_len, p.payload, p.seq) == (45, 5, b"hello", 77)
    assert p.tcp_flags == PSH | ACK and p.version == 4 and p.ts == TS
    assert p.wire_len == len(frame)


@pytest.mark.parametrize(
    ("linktype", "frame"),
    [
        (1, ether(UDP6, 0x86DD)),
        (1, ether(UDP6, 0x86DD, vlans=[(0x8100, 3)])),
        (113, sll(UDP6, 0x86DD)),
        (276, sll2(UDP6, 0x86DD)),
        (101, UDP6),
        (229, UDP6),
        (0, null(UDP6, 24, "<")),
        (0, null(UDP6, 28, ">")),
        (0, null(UDP6, 30, "<")),
        (0, null(UDP6, 10, "<")),
        (108, null(UDP6, 30, ">")),
    ],
    ids=[
        "eth",
        "dot1q",
        "sll",
        "sll2",
        "raw101",
        "ipv6-229",
        "null-24",
        "null-28-be",
        "null-30",
        "null-10",
        "loop-30",
    ],
)
def test_link_types_ipv6_udp(linktype: int, frame: bytes) -> None:
    p = _ok(linktype, frame)
    assert (p.src, p.dst, p.proto, p.sport, p.dport) == ("fd77::1", "fd77::2", UDP, 5353, 443)
    assert (p.ip_len, p.payload_len, p.payload, p.version) == (53, 5, b"quic!", 6)
    assert p.tcp_flags == 0 and p.seq == 0


def test_known_linktypes() -> None:
    assert {0, 1, 12, 14, 101, 108, 113, 228, 229, 276} == set(KNOWN_LINKTYPES)
    assert decode_frame(147, TCP4, TS, len(TCP4)) == "unknown-linktype"


def test_mpls_and_pppoe() -> None:
    mpls = struct.pack("!I", (16 << 12) | 0x100 | 64)  # label 16, bottom of stack
    assert _ok(1, ether(mpls + TCP4, 0x8847)).sport == 40000
    pppoe = struct.pack("!BBHHH", 0x11, 0, 1, len(TCP4) + 2, 0x0021)
    assert _ok(1, ether(pppoe + TCP4, 0x8864)).dport == 443


@pytest.mark.parametrize(
    ("linktype", "frame", "reason"),
    [
        (1, ether(b"\x00" * 28, 0x0806), "arp"),
        (1, ether(b"\x00" * 28, 0x88CC), "non-ip"),
        (1, ether(b"\x00" * 28, 0x0026), "non-ip"),  # 802.3 length field
        (1, ether(ipv4(b"\x08\x00" + b"\x00" * 6, proto=1)), "icmp"),
        (1, ether(ipv4(b"\x00" * 8, proto=47)), "other-l4"),
        (1, ether(ipv6(b"\x80\x00" + b"\x00" * 6, nxt=58), 0x86DD), "icmp"),
        (1, ether(ipv6(b"", nxt=59), 0x86DD), "other-l4"),
        (0, null(TCP4, 7), "non-ip"),
        (101, b"\x50" + TCP4[1:], "non-ip"),
        (229, TCP4, "bad-packet"),  # IPv6 link type carrying IPv4
        (1, b"\x00" * 10, "truncated-header"),
        (1, ether(TCP4)[:30], "truncated-header"),
        (1, ether(ipv6(udp(1, 2), nxt=17), 0x86DD)[:40], "truncated-header"),
        (276, b"\x08\x00" * 4, "truncated-header"),
        (1, ether(TCP4, vlans=[(0x8100, 1)])[:15], "truncated-header"),
    ],
    ids=[
        "arp",
        "lldp",
        "802.3",
        "icmp",
        "gre",
        "icmpv6",
        "v6-no-next",
        "null-af7",
        "raw-v5",
        "v4-in-229",
        "short-eth",
        "short-ip",
        "short-ipv6",
        "short-sll2",
        "short-vlan",
    ],
)
def test_skip_reasons(linktype: int, frame: bytes, reason: str) -> None:
    assert decode_frame(linktype, frame, TS, len(frame)) == reason


def test_ipv4_fragments() -> None:
    notes: dict[str, int] = {}
    first = ether(ipv4(udp(53, 5353, b"x" * 40, length=3000), proto=17, more_fragments=True))
    got = decode_frame(1, first, TS, len(first), notes)
    assert isinstance(got, Packet)
    assert (got.sport, got.dport, got.payload_len) == (53, 5353, 40)
    assert notes == {"ip-fragment-first": 1}
    later = ether(ipv4(b"y" * 48, proto=17, frag_offset=6, more_fragments=True))
    last = ether(ipv4(b"y" * 48, proto=17, frag_offset=12))
    assert decode_frame(1, later, TS, len(later), notes) == "ip-fragment"
    assert decode_frame(1, last, TS, len(last), notes) == "ip-fragment"


def test_ipv6_extension_chain() -> None:
    seg = tcp(1234, 80, b"abc", flags=SYN)
    ext = (
        v6_ext(0, 43)  # hop-by-hop -> routing
        + v6_ext(43, 60, body_len=14)  # routing -> dest options
        + v6_ext(60, 51)  # dest options -> AH
        + v6_ext(51, 44, body_len=14)  # AH (16 bytes) -> fragment
        + v6_ext(44, 6, frag_word=0x0001)  # first fragment -> TCP
    )
    notes: dict[str, int] = {}
    frame = ipv6(seg, nxt=0, ext=ext)
    got = decode_frame(229, frame, TS, len(frame), notes)
    assert isinstance(got, Packet)
    assert (got.sport, got.dport, got.tcp_flags, got.payload) == (1234, 80, SYN, b"abc")
    assert got.ip_len == 40 + len(ext) + len(seg) and got.payload_len == 3
    assert notes == {"ip-fragment-first": 1}
    later = ipv6(b"z" * 16, nxt=44, ext=v6_ext(44, 6, frag_word=(2 << 3)))
    assert decode_frame(229, later, TS, len(later)) == "ip-fragment"


def test_ipv6_extension_lengths_are_checked() -> None:
    # A hop-by-hop header that claims 2 KiB inside a 60-byte packet.
    bad = ipv6(udp(1, 2), nxt=0, ext=struct.pack("!BB", 17, 255) + b"\x00" * 6)
    assert decode_frame(229, bad, TS, len(bad)) == "bad-packet"
    cut = ipv6(udp(1, 2), nxt=0, ext=v6_ext(0, 17))[:44]
    assert decode_frame(229, cut, TS, 64) == "truncated-header"
    loop = ipv6(b"", nxt=60, ext=v6_ext(60, 60) * 20, plen=8 * 20)
    assert decode_frame(229, loop, TS, len(loop)) == "bad-packet"


@pytest.mark.parametrize(
    "frame",
    [
        ipv4(tcp(1, 2), ihl=4),  # IHL below 5
        ipv4(tcp(1, 2), total_len=12),  # total length below IHL
        ipv4(tcp(1, 2, doff=4)),  # TCP data offset below 5
        ipv4(tcp(1, 2, doff=15)),  # TCP header longer than the IP payload
        ipv4(udp(1, 2), proto=17, total_len=24),  # UDP header longer than the IP payload
    ],
    ids=["ihl4", "total<ihl", "doff4", "doff>len", "udp>len"],
)
def test_bad_headers(frame: bytes) -> None:
    assert decode_frame(228, frame, TS, len(frame)) == "bad-packet"


def test_header_only_capture_uses_ip_lengths() -> None:
    """Like the Requet captures: 54 of 1514 bytes kept; lengths come from the IP header."""
    full = ether(ipv4(tcp(443, 50000, b"v" * 1460, options=b"")))
    p = _ok(1, full[:54], wire=len(full))
    assert (p.wire_len, p.ip_len, p.payload_len, p.payload) == (1514, 1500, 1460, b"")
    cut_options = ether(ipv4(tcp(443, 5, b"v" * 100, doff=8, options=b"\x01" * 12)))
    p = _ok(1, cut_options[:60], wire=len(cut_options))
    assert (p.sport, p.payload_len, p.payload) == (443, 100, b"")
    partial = ether(ipv4(udp(443, 5, b"q" * 1200), proto=17))
    p = _ok(1, partial[:72], wire=len(partial))
    assert (p.ip_len, p.payload_len, p.payload) == (1228, 1200, b"q" * 30)


def test_offload_zero_length_falls_back_to_wire() -> None:
    notes: dict[str, int] = {}
    big = ether(ipv4(tcp(1, 2, b"s" * 30000), total_len=0))
    got = decode_frame(1, big, TS, len(big), notes)
    assert isinstance(got, Packet)
    assert (got.ip_len, got.payload_len) == (30040, 30000)
    six = sll(ipv6(tcp(1, 2, b"s" * 9000), plen=0), 0x86DD)
    got = decode_frame(113, six, TS, len(six), notes)
    assert isinstance(got, Packet) and (got.ip_len, got.payload_len) == (9060, 9000)
    assert notes == {"ip-len-from-wire": 2}


def test_ethernet_padding_is_not_payload() -> None:
    frame = ether(ipv4(tcp(1, 2, b"")) + b"\x00" * 6)  # 60-byte minimum frame
    p = _ok(1, frame)
    assert (p.ip_len, p.payload_len, p.payload) == (40, 0, b"")


def test_tcp_ns_flag_kept() -> None:
    seg = bytearray(tcp(1, 2, flags=ACK))
    seg[12] |= 0x01
    assert _ok(101, ipv4(bytes(seg))).tcp_flags == 0x100 | ACK


@settings(max_examples=300, deadline=None)
@given(
    linktype=st.sampled_from(sorted(KNOWN_LINKTYPES)),
    prefix=st.sampled_from([b"", ether(TCP4)[:14], null(b"", 2), sll(b"")]),
    body=st.binary(max_size=120),
    wire=st.integers(min_value=0, max_value=70000),
)
def test_decode_never_raises(linktype: int, prefix: bytes, body: bytes, wire: int) -> None:
    got = decode_frame(linktype, prefix + body, TS, wire, {})
    if isinstance(got, Packet):
        assert got.ip_len >= 20 and got.payload_len >= 0
        assert len(got.payload) <= got.payload_len
    else:
        assert got in {
            "non-ip",
            "arp",
            "icmp",
            "other-l4",
            "ip-fragment",
            "truncated-header",
            "bad-packet",
        }


@settings(max_examples=200, deadline=None)
@given(
    v4=st.booleans(),
    header=st.binary(min_size=60, max_size=60),
    cut=st.integers(min_value=0, max_value=80),
)
def test_decode_random_ip_headers(v4: bool, header: bytes, cut: int) -> None:
    """Random bytes behind a valid version nibble: never an exception, lengths consistent."""
    frame = bytes([0x45 if v4 else 0x60]) + header
    got = decode_frame(101, frame[:cut], TS, 1500)
    if isinstance(got, Packet):
        assert got.payload_len >= 0 and got.ip_len >= (20 if v4 else 40)

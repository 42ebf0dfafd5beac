"""TLS ClientHello parser and TCP reassembler: hand-built hellos, splits, damage."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from classifier.names.tls import (
    ClientHelloInfo,
    HelloReassembler,
    build_client_hello,
    parse_client_hello,
    parse_handshake_client_hello,
)

# A post-quantum sized hello: hybrid key share + padding extension -> ~1.8 KB.
_PAD = ((21, b"\x00" * 400),)
BIG = build_client_hello(
    "rr3---sn-4g5e6nzz.googlevideo.com",
    ("h2", "http/1.1"),
    key_share_len=1216,
    extra_extensions=_PAD,
)


def _segments(data: bytes, cuts: list[int]) -> list[tuple[int, bytes]]:
    """(offset, bytes) pieces of ``data`` cut at the given offsets."""
    bounds = [0, *cuts, len(data)]
    return [(a, data[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]


def test_big_hello_is_post_quantum_sized() -> None:
    assert 1700 < len(BIG) < 2000


def test_parse_roundtrip_fields() -> None:
    info = parse_client_hello(BIG)
    assert isinstance(info, ClientHelloInfo)
    assert info.sni == "rr3---sn-4g5e6nzz.googlevideo.com"
    assert info.alpn == ("h2", "http/1.1")
    assert info.extensions == (0, 16, 43, 51, 21)
    assert info.supported_versions == (0x0304, 0x0303)
    assert info.cipher_suites[:3] == (0x1301, 0x1302, 0x1303)


def test_shuffled_extension_order_still_found() -> None:
    # Browsers shuffle extensions: put SNI and ALPN last, after unknown/GREASE ones.
    grease = ((0x0A0A, b""), (0x4A4A, b"\x00"), (0, b""))
    hello = build_client_hello(None, (), extra_extensions=grease)
    sni_ext = b"\x00\x0e\x00\x00\x0bexample.org"
    alpn_ext = b"\x00\x03\x02h3"
    shuffled = build_client_hello(
        None, (), extra_extensions=((0x0A0A, b""), (16, alpn_ext), (0, sni_ext))
    )
    assert parse_client_hello(hello) is not None
    info = parse_client_hello(shuffled)
    assert info is not None and info.sni == "example.org" and info.alpn == ("h3",)
    assert info.extensions == (43, 51, 0x0A0A, 16, 0)


def test_hello_without_sni() -> None:
    info = parse_client_hello(build_client_hello(None, ("h2",)))
    assert info is not None and info.sni is None and info.alpn == ("h2",)


def test_hello_split_over_two_records() -> None:
    msg = build_client_hello("split.example", ("h2",), record=False)
    half = len(msg) // 2
    recs = b"".join(
        bytes([22, 3, 3]) + len(part).to_bytes(2, "big") + part for part in (msg[:half], msg[half:])
    )
    info = parse_client_hello(recs)
    assert info is not None and info.sni == "split.example"


def test_every_truncation_gives_none() -> None:
    for cut in range(0, len(BIG) - 1, 7):
        assert parse_client_hello(BIG[:cut]) is None
    assert parse_client_hello(BIG[:-1]) is None


def test_lying_lengths_give_none() -> None:
    # SNI host length says 200 but the extension has 11 bytes.
    bad_sni = b"\x00\x0e\x00\x00\xc8example.org"
    info = parse_client_hello(build_client_hello(None, (), extra_extensions=((0, bad_sni),)))
    assert info is not None and info.sni is None  # extension unreadable, hello still fine
    # Extensions block longer than the message: the whole hello is malformed.
    msg = bytearray(build_client_hello("x.example", ()))
    ext_len_at = 5 + 4 + 2 + 32 + 1 + 32 + 2 + 10 + 2
    msg[ext_len_at : ext_len_at + 2] = (0xFFFF).to_bytes(2, "big")
    assert parse_client_hello(bytes(msg)) is None
    # Handshake length larger than the record data.
    msg = bytearray(build_client_hello("x.example", ()))
    msg[6:9] = (0xFFFFFF).to_bytes(3, "big")
    assert parse_client_hello(bytes(msg)) is None


def test_other_handshake_and_content_types_rejected() -> None:
    server_hello = bytearray(BIG)
    server_hello[5] = 2
    assert parse_client_hello(bytes(server_hello)) is None
    app_data = bytearray(BIG)
    app_data[0] = 23
    assert parse_client_hello(bytes(app_data)) is None
    assert parse_client_hello(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") is None
    assert parse_handshake_client_hello(b"\x01\x00") is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_garbage_never_raises(data: bytes) -> None:
    parse_client_hello(data)
    parse_handshake_client_hello(data)
    r = HelloReassembler()
    r.feed(data, 1000)
    r.feed(data[::-1], 1000 + len(data))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(BIG) - 1), st.integers(0, 255))
def test_single_byte_damage_never_raises(pos: int, value: int) -> None:
    damaged = bytearray(BIG)
    damaged[pos] = value
    info = parse_client_hello(bytes(damaged))
    assert info is None or isinstance(info, ClientHelloInfo)


def test_reassembly_three_segments_out_of_order_with_retransmission() -> None:
    isn = 0xFFFFF000  # sequence numbers wrap past 2**32 inside the hello
    pieces = _segments(BIG, [600, 1200])
    r = HelloReassembler()
    order = [pieces[2], pieces[0], pieces[0], pieces[2]]  # third first, retransmissions
    for off, data in order:
        assert r.feed(data, (isn + off) % 2**32) is None
    assert not r.done
    info = r.feed(pieces[1][1], (isn + pieces[1][0]) % 2**32)
    assert info is not None and info.sni == "rr3---sn-4g5e6nzz.googlevideo.com"
    assert r.done and r.result == info


def test_reassembly_overlapping_resegmented_retransmission() -> None:
    r = HelloReassembler()
    base = 12345
    assert r.feed(BIG[:500], base) is None
    assert r.feed(BIG[300:900], base + 300) is None  # overlap, different boundaries
    assert r.feed(BIG[1500:], base + 1500) is None  # gap at 900..1500
    info = r.feed(BIG[800:1600], base + 800)
    assert info is not None and info.alpn == ("h2", "http/1.1")


def test_reassembly_random_orders() -> None:
    rng = random.Random(7)
    for _ in range(30):
        cuts = sorted(rng.sample(range(1, len(BIG)), 4))
        pieces = _segments(BIG, cuts)
        pieces += rng.sample(pieces, 2)  # duplicates
        rng.shuffle(pieces)
        r = HelloReassembler()
        got = [r.feed(d, 5000 + o) for o, d in pieces]
        assert got[-1] is not None or any(g is not None for g in got)
        assert r.result is not None and r.result.sni == "rr3---sn-4g5e6nzz.googlevideo.com"


def test_reassembler_gives_up_on_other_protocols() -> None:
    r = HelloReassembler()
    for i in range(8):
        assert not r.done
        r.feed(b"GET /%d HTTP/1.1\r\n\r\n" % i, 100 + 40 * i)
    assert r.failed and r.done and r.result is None
    server = HelloReassembler()
    server_hello = bytes([22, 3, 3, 0, 6, 2, 0, 0, 2, 3, 3])
    server.feed(server_hello, 1)
    assert server.failed


def test_reassembler_cap() -> None:
    r = HelloReassembler(max_bytes=1000)
    r.feed(BIG[:800], 1)
    r.feed(BIG[800:1600], 801)
    assert r.failed and r.result is None


def test_reassembler_ignores_empty_payloads() -> None:
    r = HelloReassembler()
    assert r.feed(b"", 5) is None
    info = r.feed(BIG, 6)
    assert info is not None

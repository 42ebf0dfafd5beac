"""Fuzz the capture readers and the frame decoder from real capture heads (bounded run).

benchmarks/fuzz.py runs the same harnesses far longer.
"""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from classifier.capture import KNOWN_LINKTYPES
from tests.capture.make_captures import (
    ether,
    ipv4,
    ipv6,
    null,
    pcapng_epb,
    pcapng_idb,
    pcapng_shb,
    sll,
    sll2,
    tcp,
    udp,
    v6_ext,
)
from tests.fuzz.harness import OPS, check_capture, check_decode, fuzz_settings, mutate, seeds

_CAPTURES = seeds("capture")
_PAYLOADS = seeds("tls")[:6] + seeds("dns")[:6] + seeds("quic")[:4]


def _frames() -> list[tuple[int, bytes]]:
    """(link type, frame) seeds: every supported link layer around real payloads."""
    out: list[tuple[int, bytes]] = []
    for i, payload in enumerate(_PAYLOADS):
        l4 = tcp(50000 + i, 443, payload) if i % 2 == 0 else udp(53, 40000 + i, payload)
        proto = 6 if i % 2 == 0 else 17
        v4 = ipv4(l4, proto=proto)
        v6 = ipv6(l4, nxt=proto) if i % 3 else ipv6(v6_ext(0, proto) + l4, nxt=0)
        out += [
            (1, ether(v4)),
            (1, ether(v6, 0x86DD)),
            (1, ether(v4, vlans=[(0x8100, 7)])),
            (113, sll(v4)),
            (276, sll2(v6, 0x86DD)),
            (0, null(v4, 2)),
            (101, v4),
            (229, v6),
            (108, null(v6, 30, ">")),
        ]
    return out


_FRAME_SEEDS = _frames()
_PCAPNG = (
    pcapng_shb()
    + pcapng_idb(1)
    + b"".join(pcapng_epb(0, i, f) for i, (lt, f) in enumerate(_FRAME_SEEDS[:20]) if lt == 1)
)


@fuzz_settings(1500)
@given(seed=st.integers(0, len(_CAPTURES)), ops=OPS, skip_bad=st.booleans())
def test_capture_readers(seed: int, ops: list[tuple[int, int, int]], skip_bad: bool) -> None:
    base = _PCAPNG if seed == len(_CAPTURES) else _CAPTURES[seed]
    check_capture(mutate(base, ops), skip_bad=skip_bad)


@fuzz_settings(600)
@given(
    st.binary(max_size=300),
    st.sampled_from([b"\xd4\xc3\xb2\xa1", b"\x0a\x0d\x0d\x0a", b"\xa1\xb2\x3c\x4d", b"\x1f\x8b"]),
)
def test_capture_readers_random_after_magic(tail: bytes, magic: bytes) -> None:
    check_capture(magic + tail, skip_bad=True, featurize=False)


@fuzz_settings(4000)
@given(
    seed=st.integers(0, len(_FRAME_SEEDS) - 1),
    ops=OPS,
    linktype=st.one_of(st.none(), st.sampled_from(sorted(KNOWN_LINKTYPES)), st.integers(0, 300)),
    wire_delta=st.integers(-100, 100_000),
)
def test_decode_frame(
    seed: int, ops: list[tuple[int, int, int]], linktype: int | None, wire_delta: int
) -> None:
    lt, frame = _FRAME_SEEDS[seed]
    data = mutate(frame, ops)
    check_decode(lt if linktype is None else linktype, data, max(0, len(data) + wire_delta))


@fuzz_settings(2000)
@given(st.sampled_from(sorted(KNOWN_LINKTYPES)), st.binary(max_size=120))
def test_decode_frame_random_bytes(linktype: int, data: bytes) -> None:
    check_decode(linktype, data)


def test_decode_frame_deep_ipv6_extension_chain() -> None:
    # 40 hop-by-hop headers: the walker must stop at its bound, not recurse or loop.
    ext = b"".join(v6_ext(0, 0) for _ in range(40))
    assert check_decode(229, ipv6(ext + tcp(1, 2), nxt=0)) == "bad-packet"


def test_decode_frame_lying_lengths() -> None:
    v4 = bytearray(ipv4(tcp(1000, 443, b"x" * 40)))
    struct.pack_into("!H", v4, 2, 0xFFFF)  # total length far past the captured bytes
    assert not isinstance(check_decode(101, bytes(v4)), str) or True
    v4[0] = 0x4F  # IHL 15 words = 60 bytes of header, no options present
    assert isinstance(check_decode(101, bytes(v4[:30])), str)

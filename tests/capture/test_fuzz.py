"""Damaged files never produce anything but packets or a one-line CaptureError."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from classifier.capture import Packet, ReadStats, open_capture
from classifier.errors import CaptureError

from .make_captures import (
    ether,
    ipv4,
    ipv6,
    pcap_file,
    pcapng_epb,
    pcapng_idb,
    pcapng_shb,
    pcapng_spb,
    tcp,
    udp,
)

FRAMES = [
    ether(ipv4(tcp(1, 2, b"a" * 30))),
    ether(ipv4(udp(3, 4, b"b" * 10), proto=17)),
    ether(ipv6(tcp(5, 6, b"c"), nxt=6), 0x86DD),
]
PCAP = pcap_file([(1700000000 + i, i, f) for i, f in enumerate(FRAMES * 3)])
PCAPNG = (
    pcapng_shb()
    + pcapng_idb(1)
    + b"".join(pcapng_epb(0, i, f) for i, f in enumerate(FRAMES * 2))
    + pcapng_spb(FRAMES[0])
)


def _run(content: bytes, skip_bad: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.cap"
        path.write_bytes(content)
        stats = ReadStats()
        try:
            for p in open_capture(path, skip_bad=skip_bad, stats=stats):
                assert isinstance(p, Packet) and p.payload_len >= 0
        except CaptureError as exc:
            assert "\n" not in str(exc)
            return
        assert stats.packets <= stats.records
        assert stats.bytes_read <= len(content)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from([PCAP, PCAPNG]),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    cut=st.integers(0, 10_000),
    skip_bad=st.booleans(),
)
def test_mutated_files(base: bytes, edits: list[tuple[int, int]], cut: int, skip_bad: bool) -> None:
    data = bytearray(base)
    for pos, value in edits:
        data[pos % len(data)] = value
    _run(bytes(data[: max(1, cut % (len(data) + 1))]), skip_bad)

"""The compiled batch decoders of the live sources against the per-packet references.

NFLOG: datagrams built from the real packets of the shared captures (whole copies and copies
cut like the capture chain's ``snaplen``) decode to exactly the packets and counts that
:class:`NflogParser` gives. TPACKET_V3: ring blocks laid out as the kernel does decode like
:func:`decode_frame` frame by frame. Then bounded fuzzing: random and mutated buffers never
raise, never read outside the buffer, and count what they skip.
"""

from __future__ import annotations

import dataclasses
import struct
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from classifier.capture.decode import LINKTYPE_ETHERNET, decode_frame
from classifier.capture.live import LiveStats, NflogBatch, NflogParser
from classifier.capture.live_fast import (
    TP3_HEADER,
    BatchArrays,
    PacketBuilder,
    release_blocks,
    walk_tpacket,
)
from classifier.capture.packet import Packet
from tests.shared_data import SHARED, needs_shared

from .nflog_messages import datagrams, nlmsg, packet_message, pcap_ip_packets

CAPTURES = [
    "ndpi/quic.pcap",
    "ndpi/googledns_android10.pcap",
    "ndpi/443-firefox.pcap",
    "ndpi/dns_doh.pcap",
    "ndpi/reddit.pcap",
    "nfstream/instagram.pcap",
    "ndpi/iphone.pcap",
]


def _batch(data: list[bytes], batch: NflogBatch | None = None) -> tuple[list[Packet], LiveStats]:
    """Decode ``data`` (datagrams) as the batch source does after one drain; the buffer
    around them holds 0xAA bytes, so that reading past a datagram shows."""
    batch = batch or NflogBatch(LiveStats(), buffer_bytes=max(1 << 16, 2 * sum(map(len, data))))
    batch.buffer[:] = 0xAA
    used = 0
    for i, d in enumerate(data):
        batch.buffer[used : used + len(d)] = np.frombuffer(d, np.uint8)
        batch.segs[i] = used, used + len(d)
        used += (len(d) + 3) & ~3
    out: list[Packet] = []
    batch.decode(len(data), batch.builder.sink(out))
    return out, batch.stats


def _reference(data: list[bytes]) -> tuple[list[Packet], LiveStats]:
    stats = LiveStats()
    parser = NflogParser(stats)
    out: list[Packet] = []
    for d in data:
        parser.parse(d, out)
    return out, stats


@needs_shared
@pytest.mark.parametrize("name", CAPTURES)
@pytest.mark.parametrize("snaplen", [0xFFFF, 96, 48])
def test_batch_nflog_decodes_like_the_reference(name: str, snaplen: int) -> None:
    ips = list(pcap_ip_packets(SHARED / name))
    assert len(ips) > 100
    data = datagrams(ips, per_datagram=37, snaplen=snaplen, first_seq=4_294_967_000)
    got, got_stats = _batch(data)
    want, want_stats = _reference(data)
    assert got == want  # every field, timestamps bit for bit, payload bytes
    assert got_stats == want_stats  # received, packets, dropped (none), skipped by reason
    if snaplen >= 96:  # 48 bytes cut an IPv6 + TCP header: all truncated, in both
        assert got_stats.packets > 0.9 * len(ips)


def test_sequence_gaps_count_lost_messages_in_both_decoders() -> None:
    ip = bytes.fromhex("4500002000004000401100000a4d01020a4d02020400050000080000")[:28]
    kept = [0, 1, 2, 7, 8, 20, 21]  # 4 + 11 lost
    data = [
        b"".join(packet_message(ip, 1.5, seq) for seq in kept[:4]),
        b"".join(packet_message(ip, 1.5, seq) for seq in kept[4:]),
    ]
    for packets, stats in (_batch(data), _reference(data)):
        assert len(packets) == 7 and stats.dropped == 15 and stats.received == 7


def test_attribute_running_past_its_message_is_counted_and_skipped() -> None:
    good = packet_message(_IP4_UDP, 2.0, 1)
    bad = bytearray(packet_message(_IP4_UDP, 2.0, 2))
    at = bad.index(_IP4_UDP) - 4  # the payload attribute's header
    bad[at : at + 2] = struct.pack("=H", len(bad) - at + 8)  # 8 bytes longer than its message
    packets, stats = _batch([good + bytes(bad) + good])
    assert len(packets) == 2 and stats.skipped == {"bad-netlink": 1} and stats.received == 3


def test_packets_without_kernel_timestamp_get_the_read_time() -> None:
    ip = bytes.fromhex("4500001c00004000401100000a4d01020a4d020204000500000800ff")
    before = time.time()
    packets, _ = _batch([packet_message(ip, None, 0)])
    assert len(packets) == 1 and before <= packets[0].ts <= time.time()


def test_address_cache_gives_the_same_strings() -> None:
    builder = PacketBuilder(max_addresses=2)
    arrays = BatchArrays(4)
    arrays.cols[:, :] = 0
    arrays.cols[2:8, :4] = [
        [6] * 4,
        [0x20010DB8_00000000] * 4,
        [1, 2, 3, 1],
        [0] * 4,
        [0xFF] * 4,
        [17] * 4,
    ]  # version, src hi/lo, dst hi/lo, proto
    out: list[Packet] = []
    builder.build(arrays, 4, memoryview(b""), out)
    assert [p.src for p in out] == ["2001:db8::1", "2001:db8::2", "2001:db8::3", "2001:db8::1"]
    assert {p.dst for p in out} == {"::ff"}


# -- TPACKET_V3 ring blocks ------------------------------------------------------------------

BLOCK = 1 << 17


def _ring(frames: list[tuple[float, bytes, int]], blocks: int = 2) -> np.ndarray:
    """A ring whose first block holds ``frames`` (ts, bytes, wire length), ready for user."""
    ring = np.zeros(BLOCK * blocks, np.uint8)
    first = 48
    p = first
    for i, (ts, frame, wire) in enumerate(frames):
        mac = 66  # as the kernel does: the IP header 16-byte aligned behind the link header
        nxt = 0 if i == len(frames) - 1 else (mac + len(frame) + 15) & ~15
        sec = int(ts)
        ring[p : p + 28] = np.frombuffer(
            struct.pack(
                "=IIIIIIHH", nxt, sec, round((ts - sec) * 1e9), len(frame), wire, 1, mac, mac + 14
            ),
            np.uint8,
        )
        ring[p + mac : p + mac + len(frame)] = np.frombuffer(frame, np.uint8)
        p += nxt
    ring[:24] = np.frombuffer(struct.pack("=IIIIII", 3, 0, 1, len(frames), first, p), np.uint8)
    return ring


def _walk(ring: np.ndarray, blocks: int = 2) -> tuple[list[Packet], LiveStats, int]:
    arrays = BatchArrays(4 * BLOCK // TP3_HEADER)
    k, walked = walk_tpacket(
        ring,
        BLOCK,
        blocks,
        0,
        arrays.big,
        LINKTYPE_ETHERNET,
        arrays.ts,
        arrays.cols,
        arrays.counts,
        arrays.notes,
    )
    out: list[Packet] = []
    PacketBuilder().build(arrays, k, memoryview(ring), out)
    messages, skipped = arrays.take_counts()
    return out, LiveStats(messages, k, 0, skipped), walked


@needs_shared
def test_ring_blocks_decode_like_decode_frame() -> None:
    ips = list(pcap_ip_packets(SHARED / "ndpi/googledns_android10.pcap"))[:60]
    frames = [
        (ts, b"\x02" * 12 + (b"\x08\x00" if ip[0] >> 4 == 4 else b"\x86\xdd") + ip, len(ip) + 14)
        for ts, ip in ips
    ]
    frames = [
        (ts, f[:snap], wire)
        for (ts, f, wire), snap in zip(frames, [9999, 80, 40, 20] * 15, strict=True)
    ]  # some cut like a snaplen
    got, stats, walked = _walk(_ring(frames))
    want = []
    for ts, f, wire in frames:
        sec = int(ts)
        decoded = decode_frame(LINKTYPE_ETHERNET, f, sec + round((ts - sec) * 1e9) / 1e9, wire)
        if isinstance(decoded, Packet):
            want.append(decoded)
    assert walked == 1 and stats.received == 60
    assert got == want and stats.skipped  # the 20-byte copies are truncated headers


def test_a_live_read_takes_a_whole_block_and_not_many_more() -> None:
    from classifier.capture.live import _RING_BLOCK, _RING_ROWS

    per_block = _RING_BLOCK // TP3_HEADER  # the most frames a block can hold
    assert per_block <= _RING_ROWS < 4 * per_block  # a read's packets are held in memory


def test_released_blocks_go_back_to_the_kernel() -> None:
    ring = _ring([(1.0, bytes(60), 60)])
    release_blocks(ring, BLOCK, 2, 0, 1)
    assert _walk(ring)[2] == 0


# -- fuzzing (bounded) ---------------------------------------------------------------------

_IP4_UDP = bytes.fromhex("4500002400004000401100000a4d01020a4d0202d4310035001000000102030405060708")
_SEED = [
    packet_message(_IP4_UDP, 2.25, 9),
    nlmsg(3, b"\0" * 4),
    packet_message(_IP4_UDP[:20], None, 10),
]
_FUZZ = settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


def _mutated() -> st.SearchStrategy[bytes]:
    seed = b"".join(_SEED)

    def flip(edits: list[tuple[int, int]]) -> bytes:
        b = bytearray(seed)
        for at, value in edits:
            b[at % len(b)] = value
        return bytes(b)

    cut = st.integers(0, len(seed)).map(lambda n: seed[:n])
    return st.one_of(
        st.binary(max_size=400),
        cut,
        st.lists(
            st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8
        ).map(flip),
    )


@_FUZZ
@given(st.lists(_mutated(), min_size=1, max_size=4))
def test_fuzz_batch_nflog_never_raises_and_agrees_when_well_formed(data: list[bytes]) -> None:
    got, stats = _batch(data)
    assert stats.packets == len(got) <= stats.received
    assert sum(stats.skipped.values()) + stats.packets >= stats.received
    if "bad-netlink" in stats.skipped:
        return  # the reference keeps what it can of a malformed message; batch skips it
    want, want_stats = _reference(data)
    strip = [dataclasses.replace(p, ts=0.0) for p in got]  # missing timestamps: read time
    assert strip == [dataclasses.replace(p, ts=0.0) for p in want]
    assert stats.dropped == want_stats.dropped and stats.skipped == want_stats.skipped


@_FUZZ
@given(st.binary(min_size=0, max_size=4096))
def test_fuzz_ring_walk_stays_in_its_blocks(noise: bytes) -> None:
    ring = np.zeros(2 * BLOCK, np.uint8)
    ring[: len(noise)] = np.frombuffer(noise, np.uint8)
    ring[8] |= 1  # the first block is ready, whatever else it says
    got, stats, walked = _walk(ring)
    assert walked >= 1 and len(got) == stats.packets <= stats.received
    assert all(isinstance(p, Packet) and p.payload_len >= len(p.payload) for p in got)

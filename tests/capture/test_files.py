"""pcap / pcapng file walking: every format variant, and every kind of bad input."""

from __future__ import annotations

import gzip
import logging
import struct
from pathlib import Path

import pytest

from classifier.capture import Packet, ReadStats, open_capture
from classifier.errors import CaptureError

from .make_captures import (
    ether,
    ipv4,
    ipv6,
    null,
    pcap_file,
    pcapng_block,
    pcapng_epb,
    pcapng_idb,
    pcapng_opb,
    pcapng_shb,
    pcapng_spb,
    sll2,
    tcp,
    udp,
    write,
)

F1 = ether(ipv4(tcp(40000, 443, b"one")))
F2 = ether(ipv4(udp(5353, 443, b"two!"), proto=17, src="10.77.0.2", dst="10.77.0.1"))
F3 = ether(ipv4(tcp(40000, 443, b"three", seq=2000)))
ARP = ether(b"\x00" * 28, 0x0806)


def _read(path: Path, **kw: object) -> tuple[list[Packet], ReadStats]:
    stats = ReadStats()
    packets = list(open_capture(path, stats=stats, **kw))  # type: ignore[arg-type]
    return packets, stats


# ---------------------------------------------------------------- pcap variants


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_magics(tmp_path: Path, order: str, nano: bool) -> None:
    frac = 123456789 if nano else 123456
    content = pcap_file(
        [(1700000000, frac, F1), (1700000001, 0, ARP), (1700000002, 5, F2)], nano=nano, order=order
    )
    packets, stats = _read(write(tmp_path, "a.pcap", content))
    assert [p.payload for p in packets] == [b"one", b"two!"]
    want = 1700000000 + (0.123456789 if nano else 0.123456)
    assert packets[0].ts == pytest.approx(want, abs=1e-9)
    assert packets[1].ts == pytest.approx(1700000002 + 5 * (1e-9 if nano else 1e-6), abs=1e-9)
    assert (stats.records, stats.packets, stats.skipped) == (3, 2, {"arp": 1})
    assert stats.linktypes == {1} and stats.bytes_read == len(content)
    assert stats.format == "pcap" and stats.truncated_at is None


def test_pcap_wire_length_from_record(tmp_path: Path) -> None:
    full = ether(ipv4(tcp(443, 5, b"v" * 1460)))
    content = pcap_file([(1, 0, full[:54], len(full))], snaplen=54)
    (p,), _ = _read(write(tmp_path, "cut.pcap", content))
    assert (p.wire_len, p.ip_len, p.payload_len, p.payload) == (1514, 1500, 1460, b"")


def test_gzip_pcap(tmp_path: Path) -> None:
    raw = pcap_file([(1, 0, F1), (2, 0, F3)])
    path = write(tmp_path, "a.pcap.gz", gzip.compress(raw))
    packets, stats = _read(path)
    assert [p.seq for p in packets] == [1000, 2000] and stats.format == "pcap+gzip"


@pytest.mark.parametrize(
    ("linktype", "frame"),
    [
        (0, null(ipv4(tcp(1, 2)), 2)),
        (108, null(ipv4(tcp(1, 2)), 2, ">")),
        (276, sll2(ipv4(tcp(1, 2)))),
        (229, ipv6(tcp(1, 2))),
    ],
)
def test_pcap_other_link_types(tmp_path: Path, linktype: int, frame: bytes) -> None:
    (p,), stats = _read(write(tmp_path, "l.pcap", pcap_file([(1, 0, frame)], linktype)))
    assert (p.sport, p.dport) == (1, 2) and stats.linktypes == {linktype}


# ---------------------------------------------------------------- pcapng variants


def test_pcapng_interfaces_resolutions_and_blocks(tmp_path: Path) -> None:
    raw4 = ipv4(tcp(1, 2, b"raw"))
    content = b"".join(
        [
            pcapng_shb(),
            pcapng_idb(1),  # iface 0: Ethernet, default microseconds
            pcapng_block(0x0BAD, b"custom block, skipped"),
            pcapng_idb(228, tsresol=9),  # iface 1: raw IPv4, nanoseconds
            pcapng_idb(1, tsresol=0x80 | 10, tsoffset=100),  # iface 2: 2^-10 s, +100 s
            pcapng_epb(0, 1700000000_500000, F1),
            pcapng_block(5, b"\x00" * 12),  # interface statistics block, skipped
            pcapng_epb(1, 1700000001_250000000, raw4),
            pcapng_spb(F2),  # interface 0, no timestamp: previous packet's
            pcapng_epb(2, 1024 * 7 + 512, F3),
            pcapng_opb(0, 42_000001, F1),
            pcapng_epb(0, 3, ARP),
        ]
    )
    packets, stats = _read(write(tmp_path, "m.pcapng", content))
    assert [p.payload for p in packets] == [b"one", b"raw", b"two!", b"three", b"one"]
    ts = [p.ts for p in packets]
    assert ts[0] == pytest.approx(1700000000.5, abs=1e-9)
    assert ts[1] == pytest.approx(1700000001.25, abs=1e-9)
    assert ts[2] == ts[1]
    assert ts[3] == pytest.approx(107.5, abs=1e-9)
    assert ts[4] == pytest.approx(42.000001, abs=1e-9)
    assert stats.linktypes == {1, 228} and stats.records == 6
    assert stats.skipped == {"arp": 1} and stats.format == "pcapng"
    assert stats.bytes_read == len(content)


def test_pcapng_sections_and_byte_orders(tmp_path: Path) -> None:
    content = b"".join(
        [
            pcapng_shb("<"),
            pcapng_idb(1),
            pcapng_epb(0, 1_000000, F1),
            pcapng_shb(">"),  # new section: interfaces reset, big-endian now
            pcapng_idb(276, order=">"),
            pcapng_epb(0, 2_000000, sll2(ipv4(tcp(7, 8, b"be"))), order=">"),
        ]
    )
    packets, stats = _read(write(tmp_path, "s.pcapng", content))
    assert [(p.sport, p.payload, p.ts) for p in packets] == [(40000, b"one", 1.0), (7, b"be", 2.0)]
    assert stats.linktypes == {1, 276}


def test_pcapng_interface_from_old_section_is_gone(tmp_path: Path) -> None:
    content = pcapng_shb() + pcapng_idb(1) + pcapng_shb() + pcapng_epb(0, 1, F1)
    path = write(tmp_path, "g.pcapng", content)
    with pytest.raises(CaptureError, match="undeclared interface 0"):
        _read(path)


def test_pcapng_unknown_linktype_skipped_when_others_known(tmp_path: Path) -> None:
    content = b"".join(
        [
            pcapng_shb(),
            pcapng_idb(1),
            pcapng_idb(147),
            pcapng_epb(1, 1, b"whatever"),
            pcapng_epb(0, 2, F1),
        ]
    )
    packets, stats = _read(write(tmp_path, "u.pcapng", content))
    assert len(packets) == 1 and stats.skipped == {"unknown-linktype": 1}
    assert stats.linktypes == {1, 147}


def test_pcapng_snaplen_caps_simple_packet(tmp_path: Path) -> None:
    full = ether(ipv4(tcp(1, 2, b"x" * 100)))
    content = pcapng_shb() + pcapng_idb(1, snaplen=60) + pcapng_spb(full)
    (p,), _ = _read(write(tmp_path, "sp.pcapng", content))
    assert p.payload == b"x" * 6 and p.payload_len == 100 and p.ts == 0.0


# ---------------------------------------------------------------- bad input


def _error(path: Path, **kw: object) -> CaptureError:
    with pytest.raises(CaptureError) as info:
        _read(path, **kw)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return info.value


def test_missing_file(tmp_path: Path) -> None:
    assert "no such file" in str(_error(tmp_path / "nope.pcap"))


def test_missing_file_raises_at_open(tmp_path: Path) -> None:
    with pytest.raises(CaptureError):
        open_capture(tmp_path / "nope.pcap")  # no iteration needed


def test_directory(tmp_path: Path) -> None:
    assert "directory" in str(_error(tmp_path))


def test_empty_file(tmp_path: Path) -> None:
    assert "empty" in str(_error(write(tmp_path, "e.pcap", b"")))


@pytest.mark.parametrize("content", [b"hello world, this is not a capture", b"\x00\x01"])
def test_not_a_capture(tmp_path: Path, content: bytes) -> None:
    err = _error(write(tmp_path, "g.pcap", content))
    assert "not a pcap or pcapng" in str(err) and err.offset == 0


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("t.txt", b"  192.168.0.100 187.86.248.44 52 443 -1 -1 -1 1725540000.1 1 64 DF\n"),
        ("t.json", b'[\n  {"timestamp": 1.0, "size": 60}\n]\n'),
    ],
)
def test_a_packet_trace_is_pointed_at_its_importer(
    tmp_path: Path, name: str, content: bytes
) -> None:
    """A packet trace given where a capture is expected: the error names the command
    that reads it, plain or gzipped."""
    for path in (
        write(tmp_path, name, content),
        write(tmp_path, name + ".gz", gzip.compress(content)),
    ):
        err = _error(path)
        assert "shortflow dataset import-trace" in str(err) and err.offset == 0


def test_unknown_backend(tmp_path: Path) -> None:
    path = write(tmp_path, "a.pcap", pcap_file([(1, 0, F1)]))
    assert "unknown capture backend" in str(_error(path, backend="scapy"))


def test_pcap_header_cut_short(tmp_path: Path) -> None:
    assert "header cut short" in str(_error(write(tmp_path, "h.pcap", pcap_file([])[:10])))


def test_pcap_unknown_linktype(tmp_path: Path) -> None:
    err = _error(write(tmp_path, "l.pcap", pcap_file([(1, 0, F1)], linktype=147)))
    assert "link type 147" in str(err)


def test_pcapng_only_unknown_linktype(tmp_path: Path) -> None:
    content = pcapng_shb() + pcapng_idb(147) + pcapng_epb(0, 1, F1)
    assert "link type 147" in str(_error(write(tmp_path, "l.pcapng", content)))


def _with_bad_length(length: int) -> tuple[bytes, int]:
    """Three records; the middle one's captured length is replaced by ``length``."""
    content = bytearray(pcap_file([(1, 0, F1), (2, 0, F2), (3, 0, F3)]))
    at = 24 + 16 + len(F1)
    struct.pack_into("<I", content, at + 8, length)
    return bytes(content), at


@pytest.mark.parametrize("length", [10_000_000, 4000])
def test_absurd_record_length(tmp_path: Path, length: int) -> None:
    content, at = _with_bad_length(length)
    err = _error(write(tmp_path, "b.pcap", content))
    assert err.offset == at and f"at byte {at}" in str(err) and "skip_bad" in str(err)


@pytest.mark.parametrize("length", [10_000_000, 4000, 20])
def test_skip_bad_resyncs_pcap(tmp_path: Path, length: int) -> None:
    content, _ = _with_bad_length(length)
    packets, stats = _read(write(tmp_path, "b.pcap", content), skip_bad=True)
    if length == 20:  # a plausible-but-wrong length is not detectable: F2 is mis-read
        assert packets[0].payload == b"one"
        return
    assert [p.payload for p in packets] == [b"one", b"three"]
    assert stats.skipped == {"bad-record": 1} and stats.resync_failed_at is None


def test_skip_bad_gives_up_without_plausible_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    content = pcap_file([(1, 0, F1)]) + struct.pack("<IIII", 1, 0, 10_000_000, 5) + b"\xff" * 300
    with caplog.at_level(logging.WARNING):
        packets, stats = _read(write(tmp_path, "b.pcap", content), skip_bad=True)
    assert len(packets) == 1 and stats.resync_failed_at == 24 + 16 + len(F1)
    assert "no plausible record" in caplog.text


@pytest.mark.parametrize("cut", [5, 16 + 10])
def test_cut_short_last_record(tmp_path: Path, cut: int, caplog: pytest.LogCaptureFixture) -> None:
    whole = pcap_file([(1, 0, F1), (2, 0, F2), (3, 0, F3)])
    last = len(whole) - 16 - len(F3)
    with caplog.at_level(logging.WARNING):
        packets, stats = _read(write(tmp_path, "t.pcap", whole[: last + cut]))
    assert [p.payload for p in packets] == [b"one", b"two!"]
    assert stats.truncated_at == last and f"byte {last}" in caplog.text
    assert stats.records == 2 and stats.bytes_read == last


def _ng(*blocks: bytes) -> bytes:
    return pcapng_shb() + pcapng_idb(1) + b"".join(blocks)


def test_pcapng_cut_short(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    whole = _ng(pcapng_epb(0, 1, F1), pcapng_epb(0, 2, F2))
    last = len(whole) - len(pcapng_epb(0, 2, F2))
    with caplog.at_level(logging.WARNING):
        packets, stats = _read(write(tmp_path, "t.pcapng", whole[:-9]))
    assert len(packets) == 1 and stats.truncated_at == last and str(last) in caplog.text


def test_pcapng_bad_trailer(tmp_path: Path) -> None:
    bad = bytearray(pcapng_epb(0, 2, F2))
    struct.pack_into("<I", bad, len(bad) - 4, 12345)
    content = _ng(pcapng_epb(0, 1, F1), bytes(bad), pcapng_epb(0, 3, F3))
    at = len(_ng(pcapng_epb(0, 1, F1)))
    err = _error(write(tmp_path, "b.pcapng", content))
    assert err.offset == at and "trailer" in str(err)
    packets, stats = _read(write(tmp_path, "b.pcapng", content), skip_bad=True)
    assert [p.payload for p in packets] == [b"one", b"three"]
    assert stats.skipped == {"bad-record": 1}


def test_pcapng_caplen_past_block_skipped_by_length(tmp_path: Path) -> None:
    bad = bytearray(pcapng_epb(0, 2, F2))
    struct.pack_into("<I", bad, 20, 5000)  # captured length field of the EPB
    content = _ng(pcapng_epb(0, 1, F1), bytes(bad), pcapng_epb(0, 3, F3))
    assert "runs past its block" in str(_error(write(tmp_path, "c.pcapng", content)))
    packets, stats = _read(write(tmp_path, "c.pcapng", content), skip_bad=True)
    assert [p.payload for p in packets] == [b"one", b"three"]
    assert stats.skipped == {"bad-record": 1}


def test_pcapng_absurd_block_length(tmp_path: Path) -> None:
    bad = bytearray(pcapng_epb(0, 2, F2))
    struct.pack_into("<I", bad, 4, 0x7FFFFFF0)
    content = _ng(pcapng_epb(0, 1, F1), bytes(bad), pcapng_epb(0, 3, F3))
    assert "absurd" in str(_error(write(tmp_path, "a.pcapng", content)))
    packets, stats = _read(write(tmp_path, "a.pcapng", content), skip_bad=True)
    assert [p.payload for p in packets] == [b"one", b"three"]


def test_pcapng_bad_section_header(tmp_path: Path) -> None:
    bad = bytearray(_ng(pcapng_epb(0, 1, F1)))
    bad[8:12] = b"\x00\x00\x00\x00"  # byte-order magic
    assert "section header" in str(_error(write(tmp_path, "s.pcapng", bytes(bad))))


def test_modified_pcap_format_is_refused(tmp_path: Path) -> None:
    content = struct.pack("<IHHiIII", 0xA1B2CD34, 2, 4, 0, 0, 65535, 1)
    assert "editcap" in str(_error(write(tmp_path, "k.pcap", content)))

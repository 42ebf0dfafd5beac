"""The pcap writer: what it writes reads back the same through the native reader (and
tshark when installed), in either byte order the reader accepts, and a file cut inside its
last record is found and repaired to its whole records."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from classifier.capture import open_capture
from classifier.capture.pcap import MAGIC_US, MAX_CAPLEN, iter_pcap
from classifier.capture.pcap_writer import (
    DEFAULT_SNAPLEN,
    GLOBAL_HEADER,
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW,
    RECORD_HEADER,
    PcapWriter,
    global_header,
    record,
    record_headers,
    split_us,
    whole_records,
)
from classifier.capture.stats import ReadStats
from tests.capture import make_captures as mk

T0 = 1_700_000_000
V4_UDP = mk.ipv4(mk.udp(5000, 443, b"hello"), 17, "10.0.0.1", "10.0.0.2")
V4_TCP = mk.ipv4(mk.tcp(443, 5000, b"x" * 300), 6, "10.0.0.2", "10.0.0.1")
FRAMES = [mk.ether(V4_UDP), mk.ether(V4_TCP), mk.ether(V4_UDP)]
# (ts, captured bytes, wire length or None)
RECORDS: list[tuple[float, bytes, int | None]] = [
    (T0 + 0.25, FRAMES[0], None),
    (T0 + 1.000001, FRAMES[1][:60], len(FRAMES[1])),  # cut to 60 bytes, wire length kept
    (T0 + 2.9999996, FRAMES[2], None),  # rounds up to the next second
]


def _write(path: Path, linktype: int = LINKTYPE_ETHERNET) -> None:
    with PcapWriter(path, linktype) as w:
        for ts, data, wire in RECORDS:
            w.write(ts, data, wire)


def _read_raw(path: Path) -> tuple[list[tuple[int, float, int, bytes]], ReadStats]:
    stats = ReadStats()
    with open(path, "rb") as f:
        return list(iter_pcap(f, str(path), stats)), stats


def test_global_header_fields() -> None:
    head = global_header(LINKTYPE_RAW, 1234)
    assert len(head) == GLOBAL_HEADER.size == 24
    assert struct.unpack("<IHHiIII", head) == (MAGIC_US, 2, 4, 0, 0, 1234, LINKTYPE_RAW)
    assert global_header(LINKTYPE_ETHERNET)[16:20] == struct.pack("<I", DEFAULT_SNAPLEN)
    assert DEFAULT_SNAPLEN == MAX_CAPLEN


def test_split_us_rounds_and_carries() -> None:
    assert split_us(T0 + 0.25) == (T0, 250_000)
    assert split_us(T0 + 0.9999996) == (T0 + 1, 0)
    assert split_us(float(T0)) == (T0, 0)


def test_record_bytes() -> None:
    data = b"\x45" + bytes(27)
    assert record(T0 + 0.5, data) == struct.pack("<IIII", T0, 500_000, 28, 28) + data
    assert record(T0, data, 1500)[12:16] == struct.pack("<I", 1500)


def test_round_trip_through_the_reader(tmp_path: Path) -> None:
    path = tmp_path / "w.pcap"
    _write(path)
    frames, stats = _read_raw(path)
    assert stats.truncated_at is None and stats.records == len(RECORDS)
    assert [f[0] for f in frames] == [LINKTYPE_ETHERNET] * 3
    assert [f[3] for f in frames] == [data for _ts, data, _wire in RECORDS]
    assert [f[2] for f in frames] == [len(FRAMES[0]), len(FRAMES[1]), len(FRAMES[2])]
    assert [round(f[1], 6) for f in frames] == [T0 + 0.25, T0 + 1.000001, T0 + 3.0]
    pkts = list(open_capture(path))
    assert [(p.src, p.dst, p.proto) for p in pkts] == [
        ("10.0.0.1", "10.0.0.2", 17),
        ("10.0.0.2", "10.0.0.1", 6),
        ("10.0.0.1", "10.0.0.2", 17),
    ]


def test_raw_ip_link_type_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "raw.pcap"
    with PcapWriter(path, LINKTYPE_RAW) as w:
        w.write_us(T0, 7, V4_TCP)
    assert [(p.ts, p.proto, p.sport) for p in open_capture(path)] == [(T0 + 7e-6, 6, 443)]


def test_same_bytes_as_the_hand_packed_files_in_either_byte_order(tmp_path: Path) -> None:
    """The reader's tests pack files by hand (any byte order); little-endian microseconds
    must be the writer's bytes, and the big-endian twin must read back the same."""
    path = tmp_path / "w.pcap"
    _write(path)
    hand = [
        (*split_us(ts), data, len(data) if wire is None else wire) for ts, data, wire in RECORDS
    ]
    little = mk.pcap_file(hand, snaplen=DEFAULT_SNAPLEN)
    assert path.read_bytes() == little
    big = mk.write(tmp_path, "big.pcap", mk.pcap_file(hand, snaplen=DEFAULT_SNAPLEN, order=">"))
    assert _read_raw(big)[0] == _read_raw(path)[0]


def test_writer_over_a_file_object_leaves_it_open() -> None:
    buf = io.BytesIO()
    with PcapWriter(buf, LINKTYPE_ETHERNET, snaplen=65535) as w:
        w.write(T0, FRAMES[0])
        w.flush()
    assert not buf.closed
    assert buf.getvalue() == global_header(LINKTYPE_ETHERNET, 65535) + record(T0, FRAMES[0])
    assert (w.records, w.bytes_written) == (1, len(buf.getvalue()))


def test_writer_over_a_path_closes_it(tmp_path: Path) -> None:
    w = PcapWriter(tmp_path / "c.pcap", LINKTYPE_ETHERNET)
    w.write(T0, FRAMES[0])
    w.close()
    w.close()  # twice is fine
    assert (tmp_path / "c.pcap").stat().st_size == w.bytes_written == 24 + 16 + len(FRAMES[0])


def test_numpy_record_headers_and_write_raw(tmp_path: Path) -> None:
    sec = np.array([T0, T0 + 1], np.int64)
    usec = np.array([5, 999_999], np.int64)
    heads = record_headers(sec, usec, 54, np.array([60, 1514], np.int64))
    assert heads.shape == (2, 16)
    assert heads.tobytes() == RECORD_HEADER.pack(T0, 5, 54, 60) + RECORD_HEADER.pack(
        T0 + 1, 999_999, 54, 1514
    )
    path = tmp_path / "n.pcap"
    frame = FRAMES[1][:54]
    with PcapWriter(path, LINKTYPE_ETHERNET) as w:
        w.write_raw(heads[0].tobytes() + frame + heads[1].tobytes() + frame, 2)
    frames, _stats = _read_raw(path)
    assert [(f[2], f[3]) for f in frames] == [(60, frame), (1514, frame)]
    assert w.records == 2


@pytest.mark.parametrize("cut", [1, 10, 16, 17, 30])
def test_whole_records_of_a_file_cut_in_its_last_record(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "cut.pcap"
    _write(path)
    full = path.read_bytes()
    last = len(full) - 16 - len(RECORDS[2][1])
    path.write_bytes(full[: last + cut])  # killed while writing the last record
    assert whole_records(path) == (last, 2)
    frames, stats = _read_raw(path)
    assert len(frames) == 2 and stats.truncated_at == last
    with open(path, "r+b") as f:
        f.truncate(last)
    frames, stats = _read_raw(path)
    assert len(frames) == 2 and stats.truncated_at is None


def test_whole_records_edges(tmp_path: Path) -> None:
    path = tmp_path / "e.pcap"
    path.write_bytes(global_header(LINKTYPE_RAW)[:10])
    assert whole_records(path) == (0, 0)
    path.write_bytes(global_header(LINKTYPE_RAW))
    assert whole_records(path) == (24, 0)
    path.write_bytes(global_header(LINKTYPE_RAW) + record(T0, V4_UDP) + record(T0, b"\x45" * 8))
    assert whole_records(path) == (24 + 16 + len(V4_UDP) + 16 + 8, 2)
    # a record below the smallest plausible length ends the count (the recorder: 20 bytes)
    assert whole_records(path, min_caplen=20) == (24 + 16 + len(V4_UDP), 1)


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_reads_what_the_writer_wrote(tmp_path: Path) -> None:
    path = tmp_path / "w.pcap"
    _write(path)
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(path),
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
            "-e",
            "frame.len",
            "-e",
            "frame.cap_len",
            "-e",
            "ip.src",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    assert [(round(float(r[0]), 6), int(r[1]), int(r[2]), r[3]) for r in rows] == [
        (T0 + 0.25, len(FRAMES[0]), len(FRAMES[0]), "10.0.0.1"),
        (T0 + 1.000001, len(FRAMES[1]), 60, "10.0.0.2"),
        (T0 + 3.0, len(FRAMES[2]), len(FRAMES[2]), "10.0.0.1"),
    ]

"""The netpkt text trace importer: real addresses, wire lengths and flags survive."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pytest

from classifier.errors import DatasetError
from classifier.features.featurize_fast import featurize_fast
from tests.shared_data import SHARED, needs_files
from training.netpkt import read_netpkt, write_netpkt_pcap
from training.traces import import_traces

REPO = Path(__file__).resolve().parents[2]
SHARED_NETPKT = SHARED / "traces" / "netpkt"

# a TCP connection with timestamps (bare ACK = 52), then a QUIC flow; one line out of order
LINES = """\
192.168.0.100 10.77.5.9 60 40000 443 -1 -1 1725499100.000000 1 64 DF 1000 0 S
10.77.5.9 192.168.0.100 60 443 40000 -1 -1 1725499100.010000 2 60 DF 5000 1001 SA
192.168.0.100 10.77.5.9 52 40000 443 -1 -1 1725499100.020000 3 64 DF 1001 5001 A
10.77.5.9 192.168.0.100 1452 443 40000 -1 -1 1725499100.040000 4 60 DF 5001 1001 PA
10.77.5.9 192.168.0.100 1452 443 40000 -1 -1 1725499100.030000 5 60 DF 6401 1001 A
192.168.0.100 10.77.6.1 1278 -1 -1 50000 443 1725499101.000000 6 64 DF -1 -1 NONE
10.77.6.1 192.168.0.100 1200 -1 -1 443 50000 1725499101.050000 7 58 DF -1 -1 NONE
"""


def _write(tmp_path: Path, text: str, name: str = "netpkt_test_packets_01.txt.gz") -> Path:
    path = tmp_path / name
    with gzip.open(path, "wt") as fh:
        fh.write(text)
    return path


def test_import_keeps_addresses_lengths_flags_and_sorts(tmp_path: Path) -> None:
    src = _write(tmp_path, LINES)
    packets, reordered = read_netpkt(src)
    assert reordered == 1
    assert [p.ts_us for p in packets] == sorted(p.ts_us for p in packets)
    out = tmp_path / "t.pcap"
    write_netpkt_pcap(packets, out)
    flows = featurize_fast(out).sort_values("proto")
    assert list(flows["proto"]) == [6, 17]
    tcp, udp = flows.iloc[0], flows.iloc[1]
    assert (tcp["client"], tcp["server"], tcp["server_port"]) == ("192.168.0.100", "10.77.5.9", 443)
    assert tcp["wire_bytes"] == 14 * 5 + 60 + 60 + 52 + 1452 + 1452
    assert tcp["bytes_down"] == 60 + 1452 * 2  # IP lengths
    assert (tcp["flag_syn"], tcp["flag_psh"]) == (2, 1)
    assert udp["wire_bytes"] == 1278 + 1200 + 28
    assert udp["client_port"] == 50000


def test_tcp_header_length_follows_the_smallest_packet(tmp_path: Path) -> None:
    packets, _ = read_netpkt(_write(tmp_path, LINES))
    out = tmp_path / "t.pcap"
    write_netpkt_pcap(packets, out)
    data = out.read_bytes()
    # first record: 24-byte file header, 16-byte record header, then 14 + 20 + TCP header
    caplen = int.from_bytes(data[24 + 8 : 24 + 12], "little")
    wire = int.from_bytes(data[24 + 12 : 24 + 16], "little")
    assert (caplen, wire) == (14 + 20 + 32, 14 + 60)
    assert data[24 + 16 + 14 + 20 + 12] >> 4 == 8  # data offset: 8 words


@pytest.mark.parametrize(
    "line, what",
    [
        ("192.168.0.100 10.0.0.1 52 1 2\n", "expected 14 columns"),
        ("192.168.0.100 10.0.0.1 x 1 2 -1 -1 1.0 1 64 DF 1 1 A\n", "not a netpkt record"),
        ("192.168.0.100 10.0.0.1 52 -1 -1 -1 -1 1.0 1 64 DF 1 1 A\n", "neither TCP nor UDP"),
        ("192.168.0.100 10.0.0.1 52 1 2 -1 -1 1.0 1 64 DF 1 1 Z\n", "unknown TCP flag"),
        ("192.168.0.100 10.0.0.1 10 1 2 -1 -1 1.0 1 64 DF 1 1 A\n", "impossible IP length"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, line: str, what: str) -> None:
    src = _write(tmp_path, LINES.splitlines(keepends=True)[0] + line)
    with pytest.raises(DatasetError, match=rf"{src.name}:2: .*{what}"):
        read_netpkt(src)


def test_import_trace_writes_pcap_and_manifest_row(tmp_path: Path) -> None:
    src = _write(tmp_path, LINES, "home_session.txt.gz")
    rows = import_traces(src, tmp_path / "out", label="short-form", app="youtube")
    assert len(rows) == 1 and rows[0].label == "short-form" and rows[0].app == "youtube"
    assert rows[0].path.name == "home_session.pcap" and rows[0].path.is_file()
    with pytest.raises(DatasetError, match="unknown trace source"):
        import_traces(src, tmp_path / "out2")


@needs_files("traces/netpkt/netpkt_working_packets_03.txt.gz")
def test_shared_idle_trace_imports_with_its_known_label(tmp_path: Path) -> None:
    rows = import_traces(SHARED_NETPKT / "netpkt_working_packets_03.txt.gz", tmp_path)
    assert rows[0].label == "other" and rows[0].app == "idle"
    flows = featurize_fast(rows[0].path)
    assert (flows["client"] == "192.168.0.100").mean() > 0.9
    assert flows["packets"].sum() == 4573


BAD = "192.168.0.100 10.0.0.1 52 1 2\n"


def test_skip_bad_leaves_out_malformed_lines_and_keeps_the_rest(tmp_path: Path) -> None:
    lines = LINES.splitlines(keepends=True)
    src = _write(tmp_path, "".join([*lines[:3], BAD, *lines[3:], BAD]))
    with pytest.raises(DatasetError, match=rf"{src.name}:4: expected 14 columns"):
        import_traces(src, tmp_path / "strict", label="other", app="x")
    assert not (tmp_path / "strict").exists()  # nothing half-written
    skipped: list[str] = []
    packets, _ = read_netpkt(src, skipped)
    assert len(packets) == len(lines)
    assert [m.split(": ")[0] for m in skipped] == [f"{src}:4", f"{src}:9"]
    (row,) = import_traces(src, tmp_path / "out", label="other", app="x", skip_bad=True)
    assert "2 problems on import" in row.notes
    flows = featurize_fast(row.path)
    assert int(flows["pkts_up"].sum() + flows["pkts_down"].sum()) == len(lines)


def test_a_compressed_trace_that_breaks_off_keeps_what_came_before(tmp_path: Path) -> None:
    line = "192.168.0.100 10.77.6.1 1278 -1 -1 50000 443 {:.6f} 6 64 DF -1 -1 NONE\n"
    text = "".join(line.format(1725499101 + i / 100) for i in range(20_000))
    src = tmp_path / "cut.txt.gz"
    whole = gzip.compress(text.encode())
    src.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(
        DatasetError, match=r"cut.txt.gz: cannot read trace after line .*--skip-bad"
    ):
        read_netpkt(src)
    skipped: list[str] = []
    packets, _ = read_netpkt(src, skipped)
    assert 0 < len(packets) < 20_000 and len(skipped) == 1 and "breaks off" in skipped[0]
    broken = bytearray(whole)
    broken[20:28] = b"\xff" * 8  # the first deflate block's code lengths: a zlib error
    src.write_bytes(bytes(broken))
    for kept in (None, []):
        with pytest.raises(DatasetError, match=r"cannot read trace after line 0 \(Error -3"):
            read_netpkt(src, kept)
    assert [p.ts_us for p in packets] == [
        round((1725499101 + i / 100) * 1e6) for i in range(len(packets))
    ]


def test_cli_import_trace_skip_bad(tmp_path: Path) -> None:
    """``shortflow dataset import-trace --skip-bad``, as a user runs it: a warning line
    names the file and the first problem, and the pcap is written."""
    src = _write(tmp_path, LINES + BAD, "home.txt.gz")
    cmd = [sys.executable, "-m", "classifier.cli", "dataset", "import-trace", str(src)]
    cmd += ["--out", str(tmp_path / "o"), "--label", "other", "--app", "x", "-q"]
    strict = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert strict.returncode == 2 and "--skip-bad" not in strict.stderr
    assert strict.stderr.count("\n") == 1 and "home.txt.gz:8: expected 14 columns" in strict.stderr
    done = subprocess.run(
        [*cmd, "--skip-bad"], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert "home.txt.gz: 1 problem(s), their records left out; first:" in done.stderr
    assert (tmp_path / "o" / "home.pcap").is_file()

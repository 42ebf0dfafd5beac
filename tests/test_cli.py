"""`shortflow featurize` and `shortflow flows` as a user runs them (a real subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from classifier.features.schema import FEATURE_COLUMNS, snapshot_columns
from tests.shared_data import SHARED, needs_files

REQUET = SHARED / "requet" / "A_baseline_Mar19_exp_243.pcap"
SMALL = SHARED / "ndpi" / "youtube_quic.pcap"

SAMPLE = Path(__file__).resolve().parents[1] / "datasets" / "samples" / "sample.pcap"

needs_shared = needs_files("requet/A_baseline_Mar19_exp_243.pcap", "ndpi/youtube_quic.pcap")


def shortflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "classifier.cli", *args], capture_output=True, text=True, timeout=300
    )


@needs_shared
def test_featurize_writes_one_row_per_flow_with_snapshots(tmp_path: Path) -> None:
    out = tmp_path / "flows.parquet"
    res = shortflow("featurize", str(REQUET), "-o", str(out), "-q")
    assert res.returncode == 0, res.stderr
    table = pd.read_parquet(out)
    assert set(FEATURE_COLUMNS) <= set(table.columns)
    assert set(snapshot_columns(3.0)) <= set(table.columns)
    assert table["flow_id"].is_unique and len(table) > 10
    # the summary line reports packets, flows and what was skipped and why
    assert "packets" in res.stderr and "flows" in res.stderr and "arp" in res.stderr
    media = table.sort_values("bytes_down").iloc[-1]
    assert media["name"].endswith(".googlevideo.com") and media["service"] == "youtube"


@needs_shared
def test_featurize_windows_gives_rows_per_flow_and_window(tmp_path: Path) -> None:
    out = tmp_path / "w.csv"
    res = shortflow("featurize", str(REQUET), "-o", str(out), "--windows", "10", "-q")
    assert res.returncode == 0, res.stderr
    table = pd.read_csv(out)
    per_flow = table.groupby("flow_id").size()
    assert per_flow.max() > 10  # the media flows live for minutes
    longest = table[table["flow_id"] == per_flow.idxmax()]
    assert (longest["window_end"] - longest["window_start"] == 10).all()
    assert longest["window_start"].is_monotonic_increasing


@needs_shared
def test_flows_prints_a_readable_table() -> None:
    res = shortflow("flows", str(REQUET), "--limit", "5")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split()[:4] == ["proto", "client", "server", "service"]
    assert "googlevideo.com" in res.stdout and "more flows" in lines[-1]


@pytest.mark.parametrize(
    "content,expect",
    [
        (None, "no such file"),
        (b"", "empty"),
        (b"this is not a capture at all, just text\n" * 10, "not a"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, content: bytes | None, expect: str
) -> None:
    path = tmp_path / "input.pcap"
    if content is not None:
        path.write_bytes(content)
    res = shortflow("featurize", str(path), "-o", str(tmp_path / "o.csv"))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and expect in lines[0].lower()


def test_a_directory_is_refused(tmp_path: Path) -> None:
    res = shortflow("flows", str(tmp_path))
    assert res.returncode == 2 and "directory" in res.stderr and "Traceback" not in res.stderr


@needs_shared
def test_bad_output_suffix_is_refused(tmp_path: Path) -> None:
    res = shortflow("featurize", str(SMALL), "-o", str(tmp_path / "o.xlsx"))
    assert res.returncode == 2 and ".parquet or .csv" in res.stderr


@needs_shared
def test_truncated_capture_is_read_up_to_the_cut(tmp_path: Path) -> None:
    data = SMALL.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) - 100])
    res = shortflow("featurize", str(cut), "-o", str(tmp_path / "o.csv"), "-q")
    assert res.returncode == 0, res.stderr
    assert "cut short" in res.stderr


@needs_shared
def test_fast_engine_gives_the_reference_table(tmp_path: Path) -> None:
    fast, ref = tmp_path / "fast.parquet", tmp_path / "ref.parquet"
    for engine, out in (("fast", fast), ("reference", ref)):
        res = shortflow("featurize", str(REQUET), "-o", str(out), "-q", "--engine", engine)
        assert res.returncode == 0, res.stderr
    # both write flows in the order they end; flows ending at the same sweep may differ
    expected = pd.read_parquet(ref).sort_values("flow_id", ignore_index=True)
    got = pd.read_parquet(fast).sort_values("flow_id", ignore_index=True)
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-9)


@needs_shared
def test_flows_uses_the_compiled_engine_unless_told_or_reading_through_tshark() -> None:
    """The default engine is the compiled one (same table); ``--engine reference`` and
    ``--backend tshark`` (which only the reference reads through) give the same text."""
    default = shortflow("-v", "flows", str(SMALL))
    reference = shortflow("flows", str(SMALL), "--engine", "reference")
    assert default.returncode == reference.returncode == 0, default.stderr + reference.stderr
    assert default.stdout == reference.stdout and "udp" in default.stdout
    assert "ahead-of-time" not in default.stderr  # the built kernels were used
    code = (
        "import sys\nfrom classifier.cli.app import build_parser\n"
        "from classifier.cli.options import engine\n"
        "p = build_parser()\n"
        "for argv, want in (([], 'fast'), (['--engine', 'reference'], 'reference'),"
        " (['--backend', 'tshark'], 'reference')):\n"
        "    assert engine(p.parse_args(['flows', 'x', *argv])) == want, argv\n"
        "print('ok')\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert res.stdout.strip() == "ok", res.stderr


def test_backend_builtin_and_its_older_names(tmp_path: Path) -> None:
    """The built-in reader is ``--backend builtin`` (the default); ``dpkt`` and ``native``
    still work and give the same table; help names only the new name."""
    default = shortflow("flows", str(SAMPLE))
    assert default.returncode == 0 and "udp" in default.stdout, default.stderr
    for name in ("builtin", "dpkt", "native"):
        res = shortflow("flows", str(SAMPLE), "--backend", name)
        assert res.returncode == 0 and res.stdout == default.stdout, (name, res.stderr)
    tables = []
    for name in ("builtin", "dpkt"):
        out = tmp_path / f"{name}.csv"
        res = shortflow("featurize", "-q", str(SAMPLE), "-o", str(out), "--backend", name)
        assert res.returncode == 0, res.stderr
        tables.append(pd.read_csv(out))
    pd.testing.assert_frame_equal(tables[0], tables[1])
    usage = shortflow("featurize", "--help").stdout
    assert "{builtin,pyshark,tshark}" in usage and "dpkt" not in usage
    bad = shortflow("flows", str(SAMPLE), "--backend", "scapy")
    assert bad.returncode == 2 and "invalid choice: 'scapy'" in bad.stderr


def test_live_engine_and_its_older_name_decoder() -> None:
    """``shortflow live --engine fast|reference``; ``--decoder batch|python`` is still
    read (batch is fast, python is reference) but no longer shown."""
    from classifier.cli.app import build_parser
    from classifier.errors import ShortflowError
    from classifier.live.router import LiveConfig

    parser = build_parser()
    for argv, want in (
        ([], "fast"),
        (["--engine", "reference"], "reference"),
        (["--decoder", "python"], "reference"),
        (["--decoder", "batch"], "fast"),
    ):
        args = parser.parse_args(["live", "--iface", "lo", *argv])
        assert args.engine == want, argv
        assert getattr(args, "decoder_alias", False) == bool(argv and argv[0] == "--decoder")
    with pytest.raises(SystemExit):
        parser.parse_args(["live", "--iface", "lo", "--decoder", "fast"])
    usage = shortflow("live", "--help").stdout
    assert "--engine {fast,reference}" in usage and "--decoder" not in usage
    assert LiveConfig(ifaces=("lo",), engine="python").engine == "reference"
    assert LiveConfig(ifaces=("lo",), engine="batch").engine == "fast"
    with pytest.raises(ShortflowError, match="use fast or reference"):
        LiveConfig(ifaces=("lo",), engine="numba")


@needs_shared
def test_featurize_fast_to_parquet_does_not_import_pandas(tmp_path: Path) -> None:
    """Importing pandas is a noticeable share of a short run: the fast engine writes
    Parquet without it (and registering the other commands must not import it)."""
    out = tmp_path / "o.parquet"
    argv = ["featurize", "-q", "--engine", "fast", str(SMALL), "-o", str(out)]
    code = (
        "import sys\nfrom classifier.cli import main\n"
        f"assert main({argv!r}) == 0\n"
        "assert 'pandas' not in sys.modules, 'featurize --engine fast imported pandas'\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert len(pd.read_parquet(out)) > 0


def test_verbose_shows_shortflow_debug_but_not_numba_debug(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """-v sets shortflow's messages to DEBUG; numba's compiler debug output stays off."""
    import logging

    from classifier.cli import main

    root = logging.getLogger()
    saved = (root.level, list(root.handlers), logging.getLogger("numba").level)
    try:
        for h in list(root.handlers):
            root.removeHandler(h)
        sample = Path(__file__).resolve().parents[1] / "datasets" / "samples" / "sample.pcap"
        assert main(["-v", "flows", str(sample), "--limit", "1"]) == 0
        assert logging.getLogger("shortflow").isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("numba.core.ssa").isEnabledFor(logging.DEBUG)
    finally:
        root.setLevel(saved[0])
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[1]:
            root.addHandler(h)
        logging.getLogger("numba").setLevel(saved[2])
    capsys.readouterr()

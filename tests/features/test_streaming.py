"""Featurize output streams: frames add up to the whole table, whatever the frame size,
also when the compiled reader hands over to the reference in the middle of a file; the
table sink writes a fixed schema; `shortflow featurize DIR --jobs N` (processes, a Dask
cluster made for the run, and a running Dask cluster given by address) writes the same
rows as one worker."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from dask.distributed import LocalCluster

from classifier.errors import ShortflowError
from classifier.features import featurize_fast as fast
from classifier.features.column_batch import ColumnBatch
from classifier.features.featurize import (
    FeaturizeConfig,
    FeaturizeStats,
    concat_frames,
    featurize,
    iter_featurize,
    row_columns,
)
from classifier.features.featurize_fast import (
    featurize_fast,
    iter_columns_fast,
    iter_featurize_fast,
)
from classifier.features.table_sink import TableSink
from tests.shared_data import SHARED, needs_files
from tests.synthetic_captures import write_many_flows

NDPI = SHARED / "ndpi"
needs_shared = needs_files("ndpi")


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stream") / "many.pcap"
    write_many_flows(path, flows=400, spacing=0.02)
    return path


def _by_flow(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("flow_id", kind="stable").reset_index(drop=True)


def test_reference_frames_add_up_to_the_table(many: Path) -> None:
    stats = FeaturizeStats()
    frames = list(iter_featurize(many, rows_per_frame=100, stats=stats))
    assert len(frames) >= 3  # 400+ flows in frames of >= 100 rows
    whole = featurize(many)
    pd.testing.assert_frame_equal(
        _by_flow(concat_frames(frames, FeaturizeConfig())), _by_flow(whole)
    )
    assert stats.rows == len(whole) and stats.read.packets > 0


def test_fast_frames_add_up_to_the_table(many: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fast, "_CHUNK_PACKETS", 300)
    stats = FeaturizeStats()
    frames = list(iter_featurize_fast(many, rows_per_frame=1, stats=stats))
    assert len(frames) > 5
    streamed = concat_frames(frames, FeaturizeConfig())
    assert streamed["flow_id"].is_unique
    pd.testing.assert_frame_equal(_by_flow(streamed), _by_flow(featurize(many)))
    assert stats.rows == len(streamed)
    # featurize_fast puts the frames back in flow_id order
    pd.testing.assert_frame_equal(featurize_fast(many), _by_flow(streamed))


def _damage_last_record(capture: Path, out: Path) -> Path:
    """``capture`` (pcap) with an absurd captured length in its last record, at ``out``."""
    data = bytearray(capture.read_bytes())
    offset, last = 24, 24
    while offset < len(data):  # find the last record
        last = offset
        offset += 16 + struct.unpack_from("<I", data, offset + 8)[0]
    struct.pack_into("<I", data, last + 8, 0x7FFFFFF0)  # absurd captured length
    out.write_bytes(bytes(data))
    return out


def test_handover_to_reference_mid_file_neither_loses_nor_repeats_rows(
    many: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A damaged record near the end: the compiled reader has already handed out the
    flows that ended before it; the reference re-reads the file with skip_bad and only
    the rows not yet handed out are added."""
    bad = _damage_last_record(many, tmp_path / "bad.pcap")
    monkeypatch.setattr(fast, "_CHUNK_PACKETS", 300)
    stats = FeaturizeStats()
    frames = list(iter_featurize_fast(bad, skip_bad=True, rows_per_frame=1, stats=stats))
    early = [f for f in frames[:-1] if len(f)]
    assert early, "the compiled reader should have handed out rows before the damage"
    streamed = concat_frames(frames, FeaturizeConfig())
    assert streamed["flow_id"].is_unique
    ref_stats = FeaturizeStats()
    ref = featurize(bad, skip_bad=True, stats=ref_stats)
    pd.testing.assert_frame_equal(_by_flow(streamed), _by_flow(ref))
    assert stats.rows == len(ref) and stats.read.truncated_at == ref_stats.read.truncated_at


def test_handover_writes_batches_then_frames_into_one_table(
    many: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast engine's column batches until the damaged record, the reference's frames
    after it: one Parquet table with the reference's rows."""
    bad = _damage_last_record(many, tmp_path / "bad.pcap")
    monkeypatch.setattr(fast, "_CHUNK_PACKETS", 300)
    tables = list(iter_columns_fast(bad, skip_bad=True, rows_per_frame=50))
    assert {type(t) for t in tables} == {ColumnBatch, pd.DataFrame}
    out = tmp_path / "bad.parquet"
    with TableSink(out, row_columns(FeaturizeConfig())) as sink:
        for table in tables:
            sink.write(table)
    ref = featurize(bad, skip_bad=True)
    assert sink.rows == len(ref) and pq.ParquetFile(out).num_row_groups == len(tables)
    pd.testing.assert_frame_equal(_by_flow(pd.read_parquet(out)), _by_flow(ref))


def test_sink_keeps_text_columns_text_when_a_frame_has_no_names(tmp_path: Path) -> None:
    columns = row_columns(FeaturizeConfig())
    frame = pd.DataFrame([[0.0] * len(columns)], columns=columns)
    for c in (
        "capture",
        "client",
        "server",
        "end_reason",
        "sni",
        "alpn",
        "dns_name",
        "name",
        "name_source",
        "service",
        "category",
    ):
        frame[c] = None
    for c in ("flow_id", "proto", "client_port", "server_port", "packets", "wire_bytes"):
        frame[c] = 1
    named = frame.copy()
    named["sni"] = "example.org"
    out = tmp_path / "t.parquet"
    with TableSink(out, columns) as sink:
        sink.write(frame)
        sink.write(named)
        assert not out.exists()  # appears only when complete
    back = pd.read_parquet(out)
    assert back["sni"].isna().tolist() == [True, False]
    assert back["sni"].iloc[1] == "example.org"
    assert back["flow_id"].dtype == "int64" and back["at3s__duration"].dtype == "float64"


def test_sink_failure_leaves_the_old_output(tmp_path: Path) -> None:
    out = tmp_path / "t.csv"
    out.write_text("old\n")
    columns = row_columns(FeaturizeConfig())
    with pytest.raises(RuntimeError), TableSink(out, columns) as sink:
        sink.write(pd.DataFrame([[1.0] * len(columns)], columns=columns))
        raise RuntimeError("the run failed")
    assert out.read_text() == "old\n"
    assert not list(tmp_path.glob(".t.csv.*"))  # the partial file is gone
    with pytest.raises(ShortflowError, match="must end in"):
        TableSink(tmp_path / "t.json", columns)


def _featurize(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "classifier.cli", "featurize", *args, "-q"],
        capture_output=True,
        text=True,
        timeout=600,
    )


@needs_shared
def test_directory_jobs_and_dask_write_the_same_rows(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    picked = sorted(NDPI.glob("*.pcap"))[:6]
    for i, p in enumerate(picked):
        shutil.copy(p, (corpus / "sub" if i % 2 else corpus) / p.name)
    (corpus / "README.txt").write_text("not a capture")
    outs = {}
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )
    runs = (
        ("one", []),
        ("jobs", ["--jobs", "2"]),
        ("dask", ["--jobs", "2", "--scheduler", "dask"]),
        ("cluster", ["--scheduler", cluster.scheduler_address, "--engine", "fast"]),
    )
    with cluster:
        for name, extra in runs:
            outs[name] = tmp_path / f"{name}.parquet"
            res = _featurize(str(corpus), "-o", str(outs[name]), *extra)
            assert res.returncode == 0, res.stderr
            assert res.stderr.count(".pcap: ") == len(picked)  # one summary line per file
    one = pd.read_parquet(outs["one"])
    assert set(one["capture"]) == {p.name for p in picked}
    for name in ("jobs", "dask"):
        pd.testing.assert_frame_equal(pd.read_parquet(outs[name]), one)
    # CSV: the workers' parts are appended as text, one header
    for name, extra in (("one", []), ("jobs", ["--jobs", "2"])):
        res = _featurize(str(corpus), "-o", str(tmp_path / f"{name}.csv"), *extra)
        assert res.returncode == 0, res.stderr
    assert (tmp_path / "jobs.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
    assert not list(tmp_path.glob(".*.parts"))  # the workers' part folders are gone
    # the fast engine on a running cluster: the same rows (it orders each file by flow_id)
    by_flow = ["capture", "flow_id"]
    pd.testing.assert_frame_equal(
        pd.read_parquet(outs["cluster"]).sort_values(by_flow, ignore_index=True),
        one.sort_values(by_flow, ignore_index=True),
    )


def test_featurize_errors_are_one_line_and_leave_no_output(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "o.parquet"
    res = _featurize(str(empty), "-o", str(out))
    assert res.returncode == 2 and "no capture files" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    garbage = tmp_path / "g.pcap"
    garbage.write_bytes(b"not a capture at all" * 10)
    res = _featurize(str(garbage), "-o", str(out), "--jobs", "2")
    assert res.returncode == 2 and "g.pcap" in res.stderr
    assert not out.exists() and not list(tmp_path.glob(".o.parquet.*"))

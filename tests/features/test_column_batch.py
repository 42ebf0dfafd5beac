"""The fast engine's column batches: the Parquet file a :class:`TableSink` writes from them
is the file it writes from the same rows as DataFrames (fields, values, row groups), and
their DataFrames are the engine's frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from classifier.features import featurize_fast as fast
from classifier.features.column_batch import ColumnBatch
from classifier.features.featurize import FeaturizeConfig, row_columns
from classifier.features.featurize_fast import iter_columns_fast, iter_featurize_fast
from classifier.features.schema import FLOW_COLUMNS, NAME_COLUMNS
from classifier.features.table_sink import TableSink, arrow_schema
from tests.shared_data import SHARED, needs_files

NDPI = SHARED / "ndpi"
CAPTURES = ("android.pcap", "iphone.pcap", "quic.pcap", "reddit.pcap", "waze.pcap", "wechat.pcap")
needs_shared = needs_files("ndpi")


def _write(
    out: Path, columns: list[str], tables: list[ColumnBatch] | list[pd.DataFrame]
) -> pq.ParquetFile:
    with TableSink(out, columns) as sink:
        for table in tables:
            sink.write(table)
    return pq.ParquetFile(out)


def _assert_same_file(got: pq.ParquetFile, expected: pq.ParquetFile) -> None:
    assert got.schema_arrow.equals(expected.schema_arrow)  # fields (not pandas metadata)
    groups = [expected.metadata.row_group(i).num_rows for i in range(expected.num_row_groups)]
    assert [got.metadata.row_group(i).num_rows for i in range(got.num_row_groups)] == groups
    assert got.read().equals(expected.read())


@needs_shared
@pytest.mark.parametrize("window", [None, 10.0])
def test_batches_write_the_file_frames_write(
    tmp_path: Path, window: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fast, "_CHUNK_PACKETS", 500)  # several batches, so row groups
    config = FeaturizeConfig(window=window)
    columns = row_columns(config)
    several_groups = 0
    for name in CAPTURES:
        batches = list(iter_columns_fast(NDPI / name, config, rows_per_frame=8))
        assert all(isinstance(b, ColumnBatch) for b in batches)
        frames = list(iter_featurize_fast(NDPI / name, config, rows_per_frame=8))
        for batch, frame in zip(batches, frames, strict=True):
            pd.testing.assert_frame_equal(batch.frame(), frame)
        got = _write(tmp_path / f"b-{name}.parquet", columns, batches)
        expected = _write(tmp_path / f"f-{name}.parquet", columns, frames)
        _assert_same_file(got, expected)
        several_groups += got.num_row_groups > 1
    assert several_groups >= 3


def test_batch_nulls_nans_and_text_write_as_from_pandas(tmp_path: Path) -> None:
    """What the captures may not have: NaN features (nulls, as from_pandas makes them),
    an all-null text column, non-ASCII text, columns in another order."""
    columns = row_columns(FeaturizeConfig())
    schema = arrow_schema(columns)
    head_names = [*FLOW_COLUMNS, *NAME_COLUMNS]
    examples = {
        pa.string(): ["é.example", None],
        pa.int64(): np.array([1, -2]),
        pa.float64(): np.array([0.5, np.nan]),
    }
    head = {c: examples[schema.field(c).type] for c in head_names}
    head["alpn"] = [None, None]
    head["capture"] = ["a.pcap", ""]
    feature_names = columns[len(head_names) :]
    features = np.arange(2.0 * len(feature_names)).reshape(2, -1)
    features[0, 3], features[1, 5], features[1, 6] = np.nan, np.inf, -0.0
    batch = ColumnBatch(head, feature_names, features)
    got = _write(tmp_path / "b.parquet", list(reversed(columns)), [batch])
    expected = _write(tmp_path / "f.parquet", list(reversed(columns)), [batch.frame()])
    _assert_same_file(got, expected)
    assert got.read().column(columns[len(head_names) + 3]).null_count == 1


def test_empty_batch_writes_an_empty_table(tmp_path: Path) -> None:
    columns = row_columns(FeaturizeConfig())
    feature_names = columns[len(FLOW_COLUMNS) + len(NAME_COLUMNS) :]
    empty = ColumnBatch.empty(columns, feature_names)
    assert len(empty) == 0 and empty.columns == columns
    pd.testing.assert_frame_equal(empty.frame(), pd.DataFrame([], columns=columns))
    got = _write(tmp_path / "b.parquet", columns, [empty])
    expected = _write(tmp_path / "f.parquet", columns, [pd.DataFrame([], columns=columns)])
    _assert_same_file(got, expected)

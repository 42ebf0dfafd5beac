"""docs/features.md is generated from the schema, and Parquet files carry its version."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from classifier.features.describe import describe, features_markdown
from classifier.features.schema import (
    FEATURE_COLUMNS,
    FLOW_COLUMNS,
    NAME_COLUMNS,
    SCHEMA_VERSION,
    WINDOW_COLUMNS,
    snapshot_columns,
)

REPO = Path(__file__).resolve().parents[2]


def test_docs_features_md_is_the_generated_page() -> None:
    assert (REPO / "docs" / "features.md").read_text() == features_markdown(), (
        "docs/features.md is stale: python -m classifier.features.describe > docs/features.md"
    )


def test_every_column_has_exactly_one_rule() -> None:
    for column in (
        *FLOW_COLUMNS,
        *NAME_COLUMNS,
        *WINDOW_COLUMNS,
        *FEATURE_COLUMNS,
        *snapshot_columns(3.0),
    ):
        meaning, unit = describe(column)
        assert meaning and unit, column
    assert describe("size_down_p90")[0] == "90th percentile of the IP packet sizes server -> client"
    assert describe("at10s__bytes_up")[0].endswith("over the flow's first 10 s only")
    with pytest.raises(KeyError):
        describe("a_column_nobody_documented")


def test_parquet_output_carries_the_schema_version(tmp_path: Path) -> None:
    out = tmp_path / "f.parquet"
    sample = REPO / "datasets" / "samples" / "sample.pcap"
    run = subprocess.run(
        [sys.executable, "-m", "classifier.cli", "featurize", str(sample), "-o", str(out)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    metadata = pq.read_schema(out).metadata
    assert metadata[b"shortflow_schema_version"] == SCHEMA_VERSION.encode()
    assert pq.read_table(out).num_rows > 0

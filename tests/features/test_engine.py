"""One entry point and one decision: ``classifier.featurize`` / ``iter_featurize`` pick the
fast or the reference engine in :func:`classifier.features.engine.choose_engine`, and the
CLI, the API, the session timeline and training go through it (real calls, seen in the
decision's log line), with the same tables as before."""

from __future__ import annotations

import ast
import hashlib
import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest

import classifier
from classifier.errors import ShortflowError
from classifier.features import engine as engine_mod
from classifier.features.engine import ENGINES, choose_engine
from classifier.features.featurize import FeaturizeConfig, FeaturizeStats
from classifier.features.featurize import featurize as reference_featurize

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "datasets" / "samples" / "sample.pcap"
DECISION_LOGGER = "classifier.features.engine"


def _by_flow(df: pd.DataFrame) -> pd.DataFrame:
    keys = [k for k in ("flow_id", "window_start") if k in df.columns]
    return df.sort_values(keys, kind="stable").reset_index(drop=True)


def _decisions(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == DECISION_LOGGER]


@pytest.mark.parametrize(
    ("asked", "backend", "want"),
    [
        ("fast", "builtin", "fast"),
        ("fast", "dpkt", "fast"),  # older names of the built-in reader
        ("fast", "native", "fast"),
        ("reference", "builtin", "reference"),
        ("fast", "tshark", "reference"),  # only the reference reads through tshark
        ("fast", "pyshark", "reference"),
        ("reference", "tshark", "reference"),
    ],
)
def test_choose_engine(asked: str, backend: str, want: str) -> None:
    assert choose_engine(asked, backend) == want


def test_choose_engine_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ShortflowError, match="drop --backend tshark"):
        choose_engine("fast", "tshark", strict=True)
    with pytest.raises(ShortflowError, match="use fast or reference"):
        choose_engine("batch")
    assert choose_engine() == "fast" and ENGINES == ("fast", "reference")


def test_cli_engine_choices_are_the_engines() -> None:
    from classifier.cli.options import ENGINE_CHOICES

    assert ENGINE_CHOICES == ENGINES


@pytest.mark.parametrize("config", [FeaturizeConfig(), FeaturizeConfig(window=10.0)])
def test_classifier_featurize_gives_the_table_it_gave_before(config: FeaturizeConfig) -> None:
    """``classifier.featurize`` was the reference function; it now runs the fast engine by
    default: the same table (rows in ``flow_id`` order), the same stats; asked for the
    reference engine it is the old function's table as it was, row order included."""
    before_stats, fast_stats = FeaturizeStats(), FeaturizeStats()
    before = reference_featurize(SAMPLE, config, stats=before_stats)
    assert len(before) >= 5
    fast = classifier.featurize(SAMPLE, config, stats=fast_stats)
    pd.testing.assert_frame_equal(fast, _by_flow(before), check_exact=False, rtol=1e-9, atol=0.0)
    assert fast["flow_id"].is_monotonic_increasing
    assert (fast_stats.rows, fast_stats.read.packets, fast_stats.table.flows) == (
        before_stats.rows,
        before_stats.read.packets,
        before_stats.table.flows,
    )
    pd.testing.assert_frame_equal(classifier.featurize(SAMPLE, config, engine="reference"), before)
    # the older name of the built-in reader gives the same
    pd.testing.assert_frame_equal(classifier.featurize(SAMPLE, config, backend="dpkt"), fast)


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_iter_featurize_streams_the_same_rows(engine: str) -> None:
    frames = list(classifier.iter_featurize(SAMPLE, engine=engine, rows_per_frame=7))
    assert len(frames) > 1 and all(isinstance(f, pd.DataFrame) for f in frames)
    streamed = pd.concat(frames, ignore_index=True)
    pd.testing.assert_frame_equal(
        _by_flow(streamed),
        _by_flow(reference_featurize(SAMPLE)),
        check_exact=False,
        rtol=1e-9,
        atol=0.0,
        check_dtype=False,  # an all-empty text column in one frame is object
    )


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")
def test_tshark_backend_falls_back_to_the_reference(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=DECISION_LOGGER)
    table = classifier.featurize(SAMPLE, backend="tshark")
    assert _decisions(caplog) == ["featurize engine: reference (asked for fast, backend tshark)"]
    assert len(table) == len(reference_featurize(SAMPLE))


# -- every caller goes through choose_engine ---------------------------------------------


def test_cli_featurize_flows_and_classify_decide_in_choose_engine(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    from classifier.cli import main

    caplog.set_level(logging.DEBUG, logger=DECISION_LOGGER)
    out = tmp_path / "f.csv"
    assert main(["featurize", "-q", str(SAMPLE), "-o", str(out)]) == 0
    # the options are checked (cli.options.engine), then the file read: both ask it
    assert set(_decisions(caplog)) == {"featurize engine: fast (asked for fast, backend builtin)"}
    caplog.clear()
    assert main(["flows", str(SAMPLE), "--engine", "reference", "--backend", "dpkt"]) == 0
    assert set(_decisions(caplog)) == {
        "featurize engine: reference (asked for reference, backend builtin)"
    }
    caplog.clear()
    from tests.api.conftest import train_small_model

    model = train_small_model(tmp_path / "model")
    argv = ["classify", str(SAMPLE), "--model", str(model), "--backend", "native"]
    assert main(argv) == 0
    assert set(_decisions(caplog)) == {"featurize engine: fast (asked for fast, backend builtin)"}
    caplog.clear()
    assert main(["flows", str(SAMPLE), "--engine", "fast", "--backend", "tshark"]) == 2
    assert _decisions(caplog) == []  # refused in choose_engine, before any decision


def test_api_captures_router_decides_in_choose_engine(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from classifier.api import Settings, create_app
    from tests.api.conftest import train_small_model

    model = train_small_model(tmp_path / "model")
    caplog.set_level(logging.DEBUG, logger=DECISION_LOGGER)
    for backend, want in (("builtin", "fast"), ("dpkt", "fast")):
        caplog.clear()
        with TestClient(create_app(Settings(model_dir=model, backend=backend))) as client:
            with SAMPLE.open("rb") as fh:
                r = client.post(
                    "/v1/captures:classify",
                    files={"file": ("sample.pcap", fh, "application/octet-stream")},
                )
        assert r.status_code == 200, r.text
        assert r.json()["stats"]["rows"] == len(reference_featurize(SAMPLE, FeaturizeConfig()))
        assert _decisions(caplog) == [
            f"featurize engine: {want} (asked for fast, backend {backend})"
        ]


def test_training_and_timeline_decide_in_choose_engine(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from classifier.model.timeline import ACTIVITY_CONFIG
    from training.dataset import featurize_cached

    caplog.set_level(logging.DEBUG, logger=DECISION_LOGGER)
    sha = hashlib.sha256(SAMPLE.read_bytes()).hexdigest()
    whole = featurize_cached(SAMPLE, sha, FeaturizeConfig(), None)
    # whole tables: the reference engine, rows as training has always had them
    pd.testing.assert_frame_equal(whole, reference_featurize(SAMPLE))
    columns = ["flow_id", "duration", "service"]
    some = featurize_cached(SAMPLE, sha, ACTIVITY_CONFIG, None, columns=columns)
    assert list(some.columns) == columns and some["flow_id"].is_monotonic_increasing
    assert _decisions(caplog) == [
        "featurize engine: reference (asked for reference, backend builtin)",
        "featurize engine: fast (asked for fast, backend builtin)",
    ]


_FAST_ENTRY_POINTS = {"featurize_fast", "iter_featurize_fast", "iter_columns_fast"}
_REFERENCE_ENTRY_POINTS = {"featurize", "iter_featurize"}


def test_no_other_module_picks_an_engine() -> None:
    """Outside ``classifier/features/engine.py`` (and the fast engine itself, which hands
    files its compiled reader cannot read to the reference), no module of ``classifier/``
    or ``training/`` imports an engine's entry point: they call the engine module."""
    allowed = {
        ROOT / "classifier/features/engine.py",
        ROOT / "classifier/features/featurize_fast.py",
    }
    offenders: list[str] = []
    for path in sorted([*(ROOT / "classifier").rglob("*.py"), *(ROOT / "training").rglob("*.py")]):
        if path in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom):
                continue
            names = {a.name for a in node.names}
            if node.module == "classifier.features.featurize_fast" and names & _FAST_ENTRY_POINTS:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {sorted(names)}")
            if node.module == "classifier.features.featurize" and names & _REFERENCE_ENTRY_POINTS:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {sorted(names)}")
    assert offenders == []
    assert classifier.featurize is engine_mod.featurize
    assert classifier.iter_featurize is engine_mod.iter_featurize

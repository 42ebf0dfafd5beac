"""The lean exports (classifier.model.lean) give the joblib models' probabilities, are
refused when stale, keep scikit-learn & co out of the process, and the shipped ones are
current."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from classifier.errors import ModelError
from classifier.features.featurize import FeaturizeConfig
from classifier.features.featurize_fast import featurize_fast
from classifier.features.schema import FEATURE_COLUMNS
from classifier.features.session import SESSION_FEATURES, SessionConfig, session_table
from classifier.model.artifact import DEFAULT_MODEL_DIR, file_sha256, load_model, save_model
from classifier.model.lean import (
    FLOW_FILE,
    SESSION_FILE,
    LeanForest,
    LeanSession,
    flow_arrays,
    read_flow_export,
    read_session_export,
    session_arrays,
)
from classifier.model.loading import (
    load_flow_model,
    load_lean_model,
    load_lean_session_model,
    load_session,
)
from classifier.model.predict import model_inputs, verdict_arrays
from classifier.model.session_model import (
    load_session_model,
    save_session_model,
    window_probabilities,
)
from tests.shared_data import SHARED, needs_files
from training.simulate import simulate

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "datasets" / "samples" / "sample.pcap"
CAPTURES = (
    "requet/A_baseline_Mar19_exp_243.pcap",
    "ndpi/youtube_quic.pcap",
    "ndpi/facebook.pcap",
    "ndpi/reddit.pcap",
    "ndpi/pinterest.pcap",
)
needs_captures = needs_files(*CAPTURES)
#: the lean probabilities are LightGBM's / scikit-learn's to this relative tolerance (on
#: this machine they are bit-identical)
RTOL = 1e-12


def _flow_rows() -> tuple[np.ndarray, list[str]]:
    """Real flows of the shared captures (whole flows and their 3 s snapshots), then the
    same rows with NaNs, exact and near zeros, infinities, inputs exactly at the trees'
    thresholds and services the encoder never saw."""
    tables = [featurize_fast(SAMPLE, FeaturizeConfig())]
    tables += [featurize_fast(SHARED / c, FeaturizeConfig()) for c in CAPTURES]
    table = pd.concat(tables, ignore_index=True)
    whole = model_inputs(table)
    early = model_inputs(table, 3.0)
    x = np.vstack([whole[list(FEATURE_COLUMNS)].to_numpy(np.float64), early[list(FEATURE_COLUMNS)]])
    services = whole["service"].tolist() + early["service"].tolist()
    rng = np.random.default_rng(7)
    odd = x.copy()
    odd[rng.random(odd.shape) < 0.15] = np.nan
    odd[rng.random(odd.shape) < 0.05] = 0.0
    odd[rng.random(odd.shape) < 0.02] = 1e-40
    odd[rng.random(odd.shape) < 0.02] = -1e-40
    odd[rng.random(odd.shape) < 0.01] = np.inf
    odd[rng.random(odd.shape) < 0.01] = -np.inf
    forest = read_flow_export(DEFAULT_MODEL_DIR)
    assert forest is not None
    edge = x[rng.integers(0, len(x), 400)].copy()
    numeric = forest.feature < len(FEATURE_COLUMNS)
    picks = rng.choice(np.flatnonzero(numeric), len(edge))
    for row, node in zip(edge, picks, strict=True):
        row[forest.feature[node]] = forest.threshold[node]  # exactly at a split
    odd_services = [s if rng.random() > 0.25 else "no-such-service" for s in services]
    edge_services = [services[i] for i in rng.integers(0, len(services), len(edge))]
    return np.vstack([x, odd, edge]), services + odd_services + edge_services


@needs_captures
def test_lean_flow_model_equals_the_pipeline_on_real_flows() -> None:
    model = load_model(None)
    lean = load_lean_model(None)
    assert lean is not None and lean.pipeline is None
    assert isinstance(lean.predictor, LeanForest)
    x, services = _flow_rows()
    assert len(x) > 1000 and np.isnan(x).any() and "no-such-service" in services
    assert len(set(services)) > 5
    frame = pd.DataFrame(x, columns=list(FEATURE_COLUMNS)).assign(service=services)
    want = model.pipeline.predict_proba(frame)
    got = lean.predictor.predict_proba(x, services)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=0)
    assert lean.predictor.classes == tuple(str(c) for c in model.pipeline.classes_)
    # one row at a time (the API's way) gives the same
    for i in range(0, len(x), 97):
        np.testing.assert_array_equal(
            lean.predictor.predict_proba(x[i : i + 1], services[i : i + 1]), got[i : i + 1]
        )
    # verdicts through the lean model are the joblib model's (their reasons print
    # counts: rows of finite inputs)
    keep = np.flatnonzero(np.isfinite(x).all(axis=1))
    assert len(keep) > 500
    finite, kept = x[keep], [services[i] for i in keep]
    categories = ["video"] * len(keep)
    names = [None] * len(keep)
    a = verdict_arrays(model, finite, kept, categories, names)
    b = verdict_arrays(lean, finite, kept, categories, names)
    assert a.label.tolist() == b.label.tolist()
    np.testing.assert_allclose(b.probability, a.probability, rtol=RTOL, atol=0)
    assert lean.predictor.predict_proba(x[:0], []).shape == (0, 3)


def _session_rows() -> pd.DataFrame:
    """Session windows of simulated players (the model's training view) and of the real
    requet capture, plus the same windows with zeros."""
    config = SessionConfig()
    tables = [session_table(simulate(k, s)[1], config) for k in ("shorts", "long") for s in (0, 1)]
    per_second = featurize_fast(SHARED / CAPTURES[0], FeaturizeConfig(window=1.0))
    tables.append(session_table(per_second, config))
    rows = pd.concat(tables, ignore_index=True)
    zeroed = rows.copy()
    zeroed.loc[zeroed.index % 3 == 0, list(SESSION_FEATURES[:6])] = 0.0
    return pd.concat([rows, zeroed], ignore_index=True)


@needs_captures
def test_lean_session_model_equals_the_pipeline() -> None:
    model = load_session_model(DEFAULT_MODEL_DIR)
    lean = load_lean_session_model(DEFAULT_MODEL_DIR)
    assert lean is not None and isinstance(lean.estimator, LeanSession)
    assert lean.info == model.info and lean.config == model.config
    rows = _session_rows()
    assert len(rows) > 50
    want = model.estimator.predict_proba(rows[list(SESSION_FEATURES)])
    got = lean.estimator.predict_proba(rows[list(SESSION_FEATURES)])
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-300)
    as_array = lean.estimator.predict_proba(rows[list(SESSION_FEATURES)].to_numpy(np.float64))
    np.testing.assert_array_equal(as_array, got)
    assert list(lean.estimator.classes_) == list(model.estimator.classes_)
    for a, b in zip(
        window_probabilities(model.estimator, rows),
        window_probabilities(lean.estimator, rows),
        strict=True,
    ):
        np.testing.assert_allclose(b, a, rtol=RTOL, atol=1e-300)
    # rows as dicts (live mode's session windows): the same probabilities, either model;
    # a service that carries no short-form video still has short-form ruled out
    records = rows.to_dict("records")
    records[0] = {**records[0], "group": "spotify"}
    table = rows.assign(group=[r["group"] for r in records])
    for estimator in (model.estimator, lean.estimator):
        for a, b in zip(
            window_probabilities(estimator, table),
            window_probabilities(estimator, records),
            strict=True,
        ):
            np.testing.assert_array_equal(b, a)
    assert window_probabilities(lean.estimator, records)[0][0] == 0.0
    empty = window_probabilities(lean.estimator, [])
    assert [len(p) for p in empty] == [0, 0]


def _copy_default(tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, target)
    return target


def _resave(directory: Path, joblib_name: str, sidecar: str) -> None:
    """Rewrite a joblib file (same model, other bytes) and its sidecar's sha256, as a
    retrain that did not re-export would leave them."""
    path = directory / joblib_name
    joblib.dump(joblib.load(path), path, compress=0)
    info = json.loads((directory / sidecar).read_text())
    assert info["sha256"] != file_sha256(path)
    info["sha256"] = file_sha256(path)
    (directory / sidecar).write_text(json.dumps(info))


def test_a_stale_export_is_not_used(tmp_path: Path) -> None:
    directory = _copy_default(tmp_path)
    assert load_lean_model(directory) is not None
    assert load_lean_session_model(directory) is not None
    _resave(directory, "model.joblib", "model.json")
    _resave(directory, "session.joblib", "session.json")
    assert (directory / FLOW_FILE).is_file() and (directory / SESSION_FILE).is_file()
    assert load_lean_model(directory) is None
    assert load_lean_session_model(directory) is None
    load_model(directory)  # the joblib models themselves still load
    load_session_model(directory)
    # a damaged export is no export either
    other = _copy_default(tmp_path / "damaged")
    (other / FLOW_FILE).write_bytes(b"PK\x03\x04 not a zip")
    (other / SESSION_FILE).write_bytes(b"")
    assert load_lean_model(other) is None and load_lean_session_model(other) is None


def test_a_damaged_joblib_file_is_reported_even_with_a_current_export(tmp_path: Path) -> None:
    """The export is current, but the joblib file is no longer the one the sidecar vouches
    for: the export is not used, and the joblib loader's sha256 error is what the
    inference loaders raise (as the CLI, the API and live mode say it)."""
    directory = _copy_default(tmp_path)
    assert isinstance(load_flow_model(directory).predictor, LeanForest)
    session = load_session(directory)
    assert session is not None and isinstance(session.estimator, LeanSession)
    for name in ("model.joblib", "session.joblib"):
        blob = directory / name
        blob.write_bytes(blob.read_bytes()[:-1] + b"x")
    assert load_lean_model(directory) is None and load_lean_session_model(directory) is None
    with pytest.raises(ModelError, match="sha256"):
        load_flow_model(directory)
    with pytest.raises(ModelError, match="sha256"):
        load_session(directory)


def test_saving_writes_a_fresh_export_and_removes_a_stale_one(tmp_path: Path) -> None:
    model = load_model(None)
    session = load_session_model(DEFAULT_MODEL_DIR)
    directory = tmp_path / "model"
    save_model(model.pipeline, directory, name="copy", labels=["a"], decision_windows=[None])
    save_session_model(session.estimator, directory, name="copy", config=session.config)
    lean, lean_session = load_lean_model(directory), load_lean_session_model(directory)
    assert lean is not None and lean_session is not None
    x = np.random.default_rng(1).gamma(1.0, 1e4, (5, len(FEATURE_COLUMNS)))
    services = ["youtube", "tiktok", "unknown", "nope", "instagram"]
    frame = pd.DataFrame(x, columns=list(FEATURE_COLUMNS)).assign(service=services)
    assert lean.predictor is not None
    np.testing.assert_allclose(
        lean.predictor.predict_proba(x, services),
        model.pipeline.predict_proba(frame),
        rtol=RTOL,
        atol=0,
    )
    # a model of another shape: no export, and the old one goes
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.array(["short-form", "long-form", "other", "other", "long-form"])
    other = make_pipeline(StandardScaler(), LogisticRegression()).fit(x[:, :8], y)
    assert flow_arrays(other) is None and session_arrays(other) is None
    save_session_model(other, directory, name="other", config=session.config)
    assert not (directory / SESSION_FILE).exists()
    assert load_lean_session_model(directory) is None


def test_lean_models_load_and_predict_without_sklearn_scipy_lightgbm_joblib() -> None:
    code = """
import sys
import numpy as np
from classifier.model.loading import load_lean_model, load_lean_session_model
flow = load_lean_model(None)
session = load_lean_session_model(None)
assert flow is not None and session is not None
p = flow.predictor.predict_proba(np.ones((3, len(flow.predictor.numeric))), ["youtube"] * 3)
assert p.shape == (3, 3)
q = session.estimator.predict_proba(np.ones((2, len(session.estimator.inputs))))
assert q.shape == (2, 3)
from classifier.compiled import aot_status
# with the kernels built ahead of time (`make kernels`) the forest kernel runs without
# numba; just in time (not built, or stale) numba is imported, and it imports scipy
built = aot_status() == "aot"
heavy = ("sklearn", "lightgbm", "joblib") + (("scipy", "numba") if built else ())
print(sorted(m for m in sys.modules if m.split(".")[0] in heavy))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_the_shipped_exports_are_current() -> None:
    """A retrain of classifier/model/default must re-export (``save_model`` does; else
    ``python -c 'from classifier.model.loading import export_lean; export_lean(...)'``)."""
    forest = read_flow_export(DEFAULT_MODEL_DIR)
    session = read_session_export(DEFAULT_MODEL_DIR)
    assert forest is not None, f"{FLOW_FILE} is missing or older than model.joblib"
    assert session is not None, f"{SESSION_FILE} is missing or older than session.joblib"
    fresh = flow_arrays(load_model(None).pipeline)
    fresh_session = session_arrays(load_session_model(DEFAULT_MODEL_DIR).estimator)
    assert fresh is not None and fresh_session is not None
    with np.load(DEFAULT_MODEL_DIR / FLOW_FILE, allow_pickle=False) as npz:
        for name, value in fresh.items():
            np.testing.assert_array_equal(npz[name], value, err_msg=name)
    with np.load(DEFAULT_MODEL_DIR / SESSION_FILE, allow_pickle=False) as npz:
        for name, value in fresh_session.items():
            np.testing.assert_array_equal(npz[name], value, err_msg=name)


@pytest.mark.parametrize("rows", [1, 5])
def test_lean_forest_checks_its_inputs(rows: int) -> None:
    lean = load_lean_model(None)
    assert lean is not None and lean.predictor is not None
    with pytest.raises(ValueError):
        lean.predictor.predict_proba(np.ones((rows, 3)), ["youtube"] * rows)
    with pytest.raises(ValueError):
        lean.predictor.predict_proba(np.ones((rows, len(FEATURE_COLUMNS))), [])

"""Training on a small generated dataset: table, grouped splits, determinism, artifacts, CLI.

The captures are written here with dpkt: one UDP/443 flow each (nameless, so a capture's
single flow takes its session label), shaped like a swipe session (short-form), a buffered
long video (long-form) or a call (other). Half are marked as lab captures, half as real.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
from pathlib import Path

import dpkt
import numpy as np
import pandas as pd
import pytest

from classifier.errors import DatasetError, ModelError, ShortflowError
from classifier.features.featurize import featurize
from classifier.features.schema import FEATURE_COLUMNS
from classifier.model.artifact import load_model
from classifier.model.predict import MODEL_INPUT_COLUMNS, classify_table

CLIENT_NET = "10.77.200."
SERVER = "10.77.201.1"
KINDS = {"short": "short-form", "long": "long-form", "call": "call"}


def _frame(src: str, dst: str, sport: int, dport: int, payload_len: int) -> bytes:
    udp = dpkt.udp.UDP(sport=sport, dport=dport, data=b"\x00" * payload_len)
    udp.ulen = len(udp)
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=17, ttl=64, data=udp)
    ip.len = len(ip)
    eth = dpkt.ethernet.Ethernet(
        src=b"\x02\x00\x00\x00\x00\x01",
        dst=b"\x02\x00\x00\x00\x00\x02",
        type=dpkt.ethernet.ETH_TYPE_IP,
        data=ip,
    )
    return bytes(eth)


def _schedule(kind: str, rng: random.Random) -> list[tuple[float, bool, int]]:
    """(time, upstream?, payload bytes) of one session of ``kind``."""
    pkts: list[tuple[float, bool, int]] = []

    def burst(t0: float, nbytes: int, rate: float = 2e6) -> None:
        pkts.append((t0, True, rng.randint(300, 600)))  # the request
        n = max(1, nbytes // 1200)
        for i in range(n):
            t = t0 + 0.02 + i * 1200 / rate
            pkts.append((t, False, 1200))
            if i % 8 == 7:
                pkts.append((t + 0.001, True, 40))

    if kind == "short":
        t = 0.0
        while t < 20.0:
            burst(t, rng.randint(150_000, 400_000))
            burst(t + rng.uniform(0.4, 0.9), rng.randint(60_000, 150_000))  # prefetch
            t += rng.uniform(1.5, 4.0)  # swipe
    elif kind == "long":
        burst(0.0, rng.randint(1_200_000, 1_800_000), rate=4e6)  # buffer fill
        t = rng.uniform(4.0, 6.0)
        while t < 24.0:
            burst(t, rng.randint(250_000, 350_000))
            t += rng.uniform(4.5, 5.5)
    else:
        t = 0.0
        while t < 15.0:
            pkts.append((t, True, rng.randint(150, 900)))
            pkts.append((t + rng.uniform(0.002, 0.02), False, rng.randint(150, 900)))
            t += rng.uniform(0.02, 0.03)
    return sorted(pkts)


def write_capture(path: Path, kind: str, seed: int) -> Path:
    """A one-flow pcap of ``kind`` ("short", "long", "call")."""
    rng = random.Random(f"{kind}-{seed}")
    client = f"{CLIENT_NET}{10 + seed % 200}"
    cport = 40000 + seed
    with path.open("wb") as fh:
        writer = dpkt.pcap.Writer(fh)
        for t, up, size in _schedule(kind, rng):
            src, dst, sp, dp = (client, SERVER, cport, 443) if up else (SERVER, client, 443, cport)
            writer.writepkt(_frame(src, dst, sp, dp, size), ts=1_700_000_000.0 + t)
    return path


def make_dataset(folder: Path, per_kind: int = 4, seed0: int = 0) -> Path:
    """Captures + manifest.csv in ``folder``; even seeds are "lab", odd seeds "public"."""
    from training.manifest import add_row

    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "manifest.csv"
    for kind, label in KINDS.items():
        for i in range(per_kind):
            seed = seed0 + i + 10 * list(KINDS).index(kind)
            pcap = write_capture(folder / f"{kind}_{seed}.pcap", kind, seed)
            add_row(
                manifest,
                pcap,
                label,
                app="youtube" if kind != "call" else "call",
                recorded="lab" if seed % 2 == 0 else "public",
                device="test",
                date="2025-01-01",
                license="generated",
                notes=f"test {kind}",
            )
    return manifest


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("train-data"))


@pytest.fixture(scope="module")
def table(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    from training.dataset import build_table

    return build_table([dataset], cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def trained(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.train import train

    out = tmp_path_factory.mktemp("models") / "m1"
    train(
        [dataset],
        out,
        candidates=["names", "rf", "lgbm"],
        n_splits=3,
        seed=7,
        cache_dir=tmp_path_factory.mktemp("cache1"),
    )
    return out


def test_build_table_views_labels_sources(table: pd.DataFrame) -> None:
    from training.dataset import META_COLUMNS

    assert list(table.columns) == [*MODEL_INPUT_COLUMNS, *META_COLUMNS]
    assert sorted(table["horizon"].unique()) == ["10", "3", "flow"]
    per_view = table.groupby("horizon").size()
    assert per_view.nunique() == 1 and per_view.iloc[0] == 12  # 12 one-flow captures
    flows = table[table["horizon"] == "flow"]
    assert flows["label"].value_counts().to_dict() == {"short-form": 4, "long-form": 4, "other": 4}
    assert set(flows["source"]) == {"lab", "real"}
    assert flows.loc[flows["session_label"] == "call", "label"].eq("other").all()
    # the 3 s view sees at most 3 s; the whole flow sees more
    early = table[table["horizon"] == "3"]["duration"].to_numpy()
    whole = flows["duration"].to_numpy()
    assert early.max() <= 3.0 + 1e-6 and whole.max() > 10.0


def test_build_table_matches_production_inputs(dataset: Path, table: pd.DataFrame) -> None:
    """A training row is exactly what model_inputs gives for the same capture."""
    from classifier.model.predict import model_inputs
    from training.manifest import load_manifest

    row = load_manifest(dataset)[0]
    prod = model_inputs(featurize(row.path), 3.0)
    mine = table[(table["capture_id"] == row.capture_id) & (table["horizon"] == "3")]
    pd.testing.assert_frame_equal(
        mine[list(MODEL_INPUT_COLUMNS)].reset_index(drop=True),
        prod.reset_index(drop=True),
        check_dtype=False,
    )


def test_cache_is_used_and_parallel_equals_serial(dataset: Path, tmp_path: Path) -> None:
    from training.dataset import build_table

    cache = tmp_path / "cache"
    serial = build_table([dataset], cache_dir=cache)
    files = sorted(cache.glob("*.parquet"))
    assert len(files) == 12
    stamps = [f.stat().st_mtime_ns for f in files]
    parallel = build_table([dataset], jobs=2, cache_dir=cache)
    assert [f.stat().st_mtime_ns for f in files] == stamps  # read, not rewritten
    pd.testing.assert_frame_equal(serial, parallel)


def test_cache_key_follows_the_service_rules(tmp_path: Path) -> None:
    # a cached table holds each flow's service and category: new name rules need new tables
    from classifier.features.featurize import FeaturizeConfig
    from classifier.names.services import DEFAULT_RULES_PATH
    from training.dataset import cache_key

    config = FeaturizeConfig()
    edited = tmp_path / "services.toml"
    edited.write_text(DEFAULT_RULES_PATH.read_text().replace('"db.tt"', '"db.tt", "x.example"'))
    assert cache_key(config, edited) != cache_key(config)
    assert cache_key(config, DEFAULT_RULES_PATH) == cache_key(config)
    assert cache_key(FeaturizeConfig(window=1.0)) != cache_key(config)


def test_dask_scheduler(dataset: Path, tmp_path: Path) -> None:
    pytest.importorskip("dask.distributed")
    from training.dataset import build_table

    local = build_table([dataset])
    via_dask = build_table([dataset], jobs=1, scheduler="dask", cache_dir=tmp_path)
    pd.testing.assert_frame_equal(local, via_dask)


def test_bad_manifest_and_scheduler(
    tmp_path: Path, dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import classifier.parallel
    from training.dataset import build_table

    monkeypatch.setattr(classifier.parallel, "_CONNECT_TIMEOUT_S", 1.0)
    bad = tmp_path / "bad.csv"
    bad.write_text("path,sha256\nx.pcap,abc\n")
    with pytest.raises(DatasetError):
        build_table([bad])
    with pytest.raises(DatasetError):
        build_table([])
    with pytest.raises(DatasetError, match="dask scheduler"):
        build_table([dataset], scheduler="tcp://127.0.0.1:9", cache_dir=None)


def test_grouped_splits_never_share_a_capture(table: pd.DataFrame) -> None:
    from training.evaluate import check_grouped, grouped_splits

    splits = grouped_splits(table, n_splits=3, seed=1)
    assert len(splits) == 3
    groups = table["capture_id"].to_numpy()
    tested: list[str] = []
    for train, test in splits:
        assert not set(groups[train]) & set(groups[test])
        assert len(train) + len(test) == len(table)
        tested += sorted(set(groups[test]))
    assert sorted(tested) == sorted(set(groups))  # every capture tested exactly once
    with pytest.raises(AssertionError, match="leaks"):
        check_grouped(groups, np.arange(0, 20), np.arange(10, 30))
    with pytest.raises(DatasetError):
        grouped_splits(table[table["capture_id"] == groups[0]])
    # more folds than captures -> leave-one-capture-out
    assert len(grouped_splits(table, n_splits=50)) == len(set(groups))


def test_name_rules_baseline() -> None:
    from training.models import NameRules

    X = pd.DataFrame({"service": ["youtube", "youtube", "youtube", "tiktok", "web"]})
    y = ["long-form", "long-form", "short-form", "short-form", "other"]
    model = NameRules().fit(X, y)
    pred = model.predict(pd.DataFrame({"service": ["youtube", "tiktok", "never-seen"]}))
    assert list(pred) == ["long-form", "short-form", "long-form"]  # unseen -> prior majority
    proba = model.predict_proba(pd.DataFrame({"service": ["youtube"]}))
    assert proba.shape == (1, 3) and abs(proba.sum() - 1) < 1e-9
    assert list(model.classes_) == ["long-form", "other", "short-form"]
    with pytest.raises(ModelError):
        model.predict(pd.DataFrame({"x": [1]}))


def test_candidates_are_single_pipelines(table: pd.DataFrame) -> None:
    from sklearn.pipeline import Pipeline

    from training.models import CANDIDATES, make_candidate, parse_candidates

    rows = table[table["horizon"] == "flow"]
    for name in CANDIDATES:
        pipe = make_candidate(name, seed=0)
        assert isinstance(pipe, Pipeline)
        pipe.fit(rows[list(MODEL_INPUT_COLUMNS)], rows["label"])
        assert set(pipe.predict(rows[list(MODEL_INPUT_COLUMNS)])) <= {
            "short-form",
            "long-form",
            "other",
        }
    assert parse_candidates("rf, lgbm,rf") == ["rf", "lgbm"]
    with pytest.raises(ModelError):
        parse_candidates("rf,svm")


def test_training_is_deterministic(
    trained: Path, dataset: Path, table: pd.DataFrame, tmp_path: Path
) -> None:
    from training.train import train

    other = tmp_path / "m2"
    train([dataset], other, candidates=["names", "rf", "lgbm"], n_splits=3, seed=7)
    a, b = load_model(trained), load_model(other)
    X = table[list(MODEL_INPUT_COLUMNS)]
    np.testing.assert_array_equal(a.pipeline.predict_proba(X), b.pipeline.predict_proba(X))
    assert a.info.metrics["comparison"] == b.info.metrics["comparison"]
    assert a.info.training_manifest_sha256 == b.info.training_manifest_sha256


def test_model_json_records_comparison_and_data(trained: Path, table: pd.DataFrame) -> None:
    info = load_model(trained).info
    metrics = info.metrics
    assert metrics["chosen"] in ("names", "rf", "lgbm")
    cands = {r["candidate"] for r in metrics["comparison"]}
    assert cands == {"names", "rf", "lgbm"}
    evals = {(r["evaluation"], r["source"]) for r in metrics["comparison"]}
    assert ("grouped CV", "lab") in evals and ("train lab -> test real", "real") in evals
    assert sorted(metrics["training_captures"]) == sorted(table["capture_id"].unique())
    assert info.decision_windows == [None, 3.0, 10.0]
    assert len(info.training_manifest_sha256) == 64
    # the synthetic shapes are easy: the chosen model must beat the name baseline by far
    best = {
        r["candidate"]: r["macro_f1"]
        for r in metrics["comparison"]
        if r["evaluation"] == "grouped CV" and r["source"] == "all"
    }
    assert best[metrics["chosen"]] >= 0.8 > best["names"]
    json.dumps(metrics, allow_nan=False)  # strict JSON (no NaN)


def test_artifact_round_trip_classifies(trained: Path, dataset: Path) -> None:
    from training.manifest import load_manifest

    model = load_model(trained)
    rows = load_manifest(dataset)
    long_row = next(r for r in rows if r.label == "long-form")
    verdicts = classify_table(model, featurize(long_row.path))
    assert list(verdicts["label"]) == ["long-form"]
    early = classify_table(model, featurize(long_row.path), horizon=3.0)
    assert early["decision_window"].iloc[0] == "first 3 s"


def test_tampered_model_refused(trained: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "tampered"
    shutil.copytree(trained, copy)
    data = bytearray((copy / "model.joblib").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.joblib").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        load_model(copy)


def test_schema_mismatch_refused(trained: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "old-schema"
    shutil.copytree(trained, copy)
    doc = json.loads((copy / "model.json").read_text())
    doc["schema_version"] = "0"
    (copy / "model.json").write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="schema"):
        load_model(copy)
    doc["schema_version"] = load_model(trained).info.schema_version
    doc["feature_columns"] = list(FEATURE_COLUMNS)[:-1]
    (copy / "model.json").write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="schema"):
        load_model(copy)


def _parser() -> argparse.ArgumentParser:
    from training.train_cli import register

    parser = argparse.ArgumentParser(prog="shortflow")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_train_cli(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli-model"
    args = _parser().parse_args(
        [
            "train",
            str(dataset),
            "-o",
            str(out),
            "--candidates",
            "names,lgbm",
            "--folds",
            "3",
            "--no-cache",
            "-q",
        ]
    )
    assert args.handler(args) == 0
    assert (out / "model.joblib").is_file() and (out / "model.json").is_file()
    printed = capsys.readouterr().out
    assert "| lgbm | grouped CV | all |" in printed
    assert load_model(out).info.name == "cli-model"
    bad = _parser().parse_args(["train", str(dataset), "-o", str(out), "--candidates", "svm"])
    with pytest.raises(ShortflowError, match="unknown model candidate"):
        bad.handler(bad)
    with pytest.raises(SystemExit):
        _parser().parse_args(["train", str(dataset), "-o", str(out), "--jobs", "0"])


def test_train_refuses_single_label(tmp_path: Path) -> None:
    from training.manifest import add_row
    from training.train import train

    manifest = tmp_path / "one.csv"
    for seed in (1, 2):
        add_row(manifest, write_capture(tmp_path / f"c{seed}.pcap", "call", seed), "call", "call")
    with pytest.raises(DatasetError, match="two labels"):
        train([manifest], tmp_path / "m", candidates=["names"])


def test_shipped_default_model_loads_and_classifies(tmp_path: Path) -> None:
    """The model in classifier/model/default matches this feature schema (retrain it with
    the commands in docs/model.md when this fails after a schema change)."""
    model = load_model()
    assert model.info.name == "default"
    assert (model.path / "model.joblib").stat().st_size < 5_000_000
    assert model.info.metrics["chosen"] in ("names", "rf", "hgb", "lgbm")
    verdicts = classify_table(model, featurize(write_capture(tmp_path / "c.pcap", "call", 3)))
    assert len(verdicts) == 1 and verdicts["label"].iloc[0] in ("short-form", "long-form", "other")
    assert 0.0 <= verdicts["probability"].iloc[0] <= 1.0

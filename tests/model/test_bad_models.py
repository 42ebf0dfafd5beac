"""Bad model directories are refused with one clear line, and a foreign pickle never runs.

A small real scikit-learn pipeline is saved with :func:`save_model` into a scratch folder,
then damaged in every way a download, a disk or a stranger can damage it.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from classifier.errors import ModelError
from classifier.features.schema import FEATURE_COLUMNS
from classifier.model.artifact import file_sha256, load_model, save_model

ROOT = Path(__file__).resolve().parents[2]


class _TouchOnLoad:
    """Unpickling this calls ``os.open(path, O_CREAT)``: the marker file proves code ran
    (``os.system`` would run just as well; creating a file is enough and harmless)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str, int]]:
        return (os.open, (self.path, os.O_CREAT | os.O_WRONLY))


def _trap_pickle(marker: Path) -> bytes:
    return pickle.dumps(_TouchOnLoad(str(marker)))


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(60, len(FEATURE_COLUMNS)))
    y = np.array(["short-form", "long-form", "other"] * 20)
    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=200))])
    pipe.fit(x, y)
    directory = tmp_path_factory.mktemp("model") / "good"
    save_model(
        pipe,
        directory,
        name="fuzz-test",
        labels=["short-form", "long-form", "other"],
        decision_windows=[3.0],
    )
    return directory


@pytest.fixture
def copy(good: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(good, target)
    return target


def _refused(directory: Path, *words: str) -> str:
    with pytest.raises(ModelError) as info:
        load_model(directory)
    text = str(info.value)
    assert text and "\n" not in text, text
    for w in words:
        assert w in text, text
    return text


def _sidecar(directory: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((directory / "model.json").read_text())
    return doc


def _write_sidecar(directory: Path, doc: object) -> None:
    (directory / "model.json").write_text(json.dumps(doc))


def test_good_model_loads(good: Path) -> None:
    model = load_model(good)
    proba = model.pipeline.predict_proba(np.zeros((2, len(FEATURE_COLUMNS))))
    assert proba.shape == (2, 3)


def test_truncated_model_file(copy: Path) -> None:
    blob = copy / "model.joblib"
    blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 2])
    _refused(copy, "sha256", "does not match")


def test_one_flipped_byte(copy: Path) -> None:
    blob = copy / "model.joblib"
    data = bytearray(blob.read_bytes())
    data[len(data) // 3] ^= 0x01
    blob.write_bytes(bytes(data))
    _refused(copy, "sha256")


def test_empty_model_file(copy: Path) -> None:
    (copy / "model.joblib").write_bytes(b"")
    _refused(copy, "sha256")


def test_foreign_pickle_is_refused_before_unpickling(copy: Path, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    payload = _trap_pickle(marker)
    # the trap works: unpickling it really creates the marker ...
    probe = tmp_path / "probe"
    fd = pickle.loads(_trap_pickle(probe))
    os.close(fd)
    assert probe.exists()
    # ... but as a model file it is refused by the sha256 check, never unpickled
    (copy / "model.joblib").write_bytes(payload)
    _refused(copy, "sha256", "refusing to unpickle")
    assert not marker.exists()


def test_foreign_pickle_through_the_cli_never_runs(copy: Path, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED-cli"
    (copy / "model.joblib").write_bytes(_trap_pickle(marker))
    capture = ROOT / "tests" / "fuzz" / "corpus" / "capture"
    head = sorted(capture.glob("ndpi_443-safari-*.bin"))[0]
    pcap = tmp_path / "in.pcap"
    pcap.write_bytes(head.read_bytes())
    proc = subprocess.run(
        [sys.executable, "-m", "classifier.cli", "classify", str(pcap), "--model", str(copy)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "sha256" in lines[0] and "Traceback" not in proc.stderr
    assert not marker.exists()


def test_verified_file_that_is_not_a_pipeline(copy: Path) -> None:
    # hash matches (someone re-signed it), but the content is a plain dict
    blob = copy / "model.joblib"
    blob.write_bytes(pickle.dumps({"not": "a model"}))
    doc = _sidecar(copy)
    doc["sha256"] = file_sha256(blob)
    _write_sidecar(copy, doc)
    _refused(copy, "not a classifier pipeline")


def test_verified_file_that_is_garbage(copy: Path) -> None:
    blob = copy / "model.joblib"
    blob.write_bytes(b"\x80\x05garbage" * 10)
    doc = _sidecar(copy)
    doc["sha256"] = file_sha256(blob)
    _write_sidecar(copy, doc)
    _refused(copy, "cannot load")


@pytest.mark.parametrize(
    "change",
    [
        {"schema_version": "0"},
        {"schema_version": "999"},
        {"feature_columns": list(reversed(FEATURE_COLUMNS))},
        {"feature_columns": list(FEATURE_COLUMNS)[:-1]},
    ],
)
def test_wrong_schema(copy: Path, change: dict[str, Any]) -> None:
    doc = _sidecar(copy)
    doc.update(change)
    _write_sidecar(copy, doc)
    _refused(copy, "schema")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{",
        b"not json",
        b"[]",
        b"null",
        b"42",
        b'"text"',
        b"\xff\xfe\x00garbage",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"name": "x"}',
        b'{"unknown_field": 1}',
    ],
    ids=[
        "empty",
        "cut",
        "text",
        "list",
        "null",
        "number",
        "string",
        "binary",
        "deep",
        "missing-fields",
        "unknown-field",
    ],
)
def test_sidecar_not_a_model_json(copy: Path, content: bytes) -> None:
    (copy / "model.json").write_bytes(content)
    _refused(copy, "model.json")


@pytest.mark.parametrize(
    "field,value",
    [
        ("sha256", None),
        ("sha256", 12345),
        ("sha256", ["a"]),
        ("schema_version", None),
        ("schema_version", 1),
        ("feature_columns", None),
        ("feature_columns", "abc"),
        ("feature_columns", 7),
        ("labels", None),
        ("name", {"a": 1}),
        ("decision_windows", "3"),
    ],
)
def test_sidecar_fields_of_the_wrong_type(copy: Path, field: str, value: object) -> None:
    doc = _sidecar(copy)
    doc[field] = value
    _write_sidecar(copy, doc)
    _refused(copy, "model.json")


def test_missing_files_and_odd_paths(copy: Path, tmp_path: Path) -> None:
    _refused(tmp_path / "nowhere", "no such model directory")
    (copy / "model.json").unlink()
    _refused(copy, "missing")
    other = tmp_path / "only-json"
    other.mkdir()
    shutil.copy(copy / "model.joblib", other)
    _refused(other, "missing")


def test_sidecar_or_model_that_is_a_directory(copy: Path, good: Path, tmp_path: Path) -> None:
    (copy / "model.json").unlink()
    (copy / "model.json").mkdir()
    _refused(copy, "model.json")
    second = tmp_path / "second"
    shutil.copytree(good, second)
    (second / "model.joblib").unlink()
    (second / "model.joblib").mkdir()
    _refused(second, "model.joblib")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads unreadable files")
def test_unreadable_sidecar(copy: Path) -> None:
    (copy / "model.json").chmod(0)
    _refused(copy, "model.json")

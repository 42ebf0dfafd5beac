"""Model artifacts: ``model.joblib`` plus a ``model.json`` sidecar that vouches for it.

A joblib file is a pickle, and loading a pickle runs code. :func:`load_model` therefore
checks, before unpickling, that the file's sha256 matches the sidecar and that the sidecar's
feature schema version is the one this shortflow computes. Load only models you trust: the
hash check catches damage and accidental swaps, not an attacker who rewrites both files.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from classifier import __version__
from classifier.errors import ModelError
from classifier.features.schema import FEATURE_COLUMNS, SCHEMA_VERSION
from classifier.model.array_predict import ArrayPredictor, FlowPredictor
from classifier.model.digest import file_sha256

__all__ = [
    "ModelInfo",
    "LoadedModel",
    "save_model",
    "load_model",
    "file_sha256",
    "DEFAULT_MODEL_DIR",
    "LABELS",
]

DEFAULT_MODEL_DIR = Path(__file__).parent / "default"
LABELS = ("short-form", "long-form", "other")
_JOBLIB = "model.joblib"
_JSON = "model.json"


@dataclass(frozen=True)
class ModelInfo:
    """What ``model.json`` says about a model."""

    name: str
    sha256: str
    schema_version: str
    feature_columns: list[str]
    labels: list[str]
    decision_windows: list[float | None]
    shortflow_version: str = __version__
    sklearn_version: str = ""
    python_version: str = field(default_factory=platform.python_version)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    estimator: str = ""
    training_manifest_sha256: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LoadedModel:
    """A verified model: the scikit-learn pipeline and its sidecar; ``predictor``, the
    pipeline's array twin (:mod:`classifier.model.array_predict`), when it has the shape
    shortflow trains. A model loaded from its lean export
    (:func:`classifier.model.loading.load_lean_model`) has no pipeline (None) and the lean
    twin as ``predictor``."""

    pipeline: Any
    info: ModelInfo
    path: Path
    predictor: FlowPredictor | None = None


def save_model(
    pipeline: Any,
    directory: Path,
    *,
    name: str,
    labels: list[str],
    decision_windows: list[float | None],
    estimator: str = "",
    training_manifest_sha256: str = "",
    metrics: dict[str, Any] | None = None,
) -> ModelInfo:
    """Write ``model.joblib`` and ``model.json`` into ``directory`` and return the sidecar,
    plus the lean export ``lean.npz`` (:mod:`classifier.model.lean`) when the pipeline has
    the supported shape (a stale one is removed otherwise)."""
    import joblib
    import sklearn

    from classifier.model.lean import write_flow_export

    directory.mkdir(parents=True, exist_ok=True)
    joblib_path = directory / _JOBLIB
    joblib.dump(pipeline, joblib_path, compress=3)
    info = ModelInfo(
        name=name,
        sha256=file_sha256(joblib_path),
        schema_version=SCHEMA_VERSION,
        feature_columns=list(FEATURE_COLUMNS),
        labels=list(labels),
        decision_windows=list(decision_windows),
        sklearn_version=sklearn.__version__,
        estimator=estimator,
        training_manifest_sha256=training_manifest_sha256,
        metrics=metrics or {},
    )
    (directory / _JSON).write_text(json.dumps(info.to_json(), indent=2, sort_keys=True) + "\n")
    write_flow_export(pipeline, directory, info.sha256)
    return info


def _is_str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_window_list(value: object) -> bool:
    return isinstance(value, list) and all(
        v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in value
    )


#: model.json field -> (check, what it must be); fields with defaults may be absent.
_FIELD_CHECKS: dict[str, tuple[Any, str]] = {
    "name": (lambda v: isinstance(v, str), "a string"),
    "sha256": (lambda v: isinstance(v, str), "a string"),
    "schema_version": (lambda v: isinstance(v, str), "a string"),
    "feature_columns": (_is_str_list, "a list of strings"),
    "labels": (_is_str_list, "a list of strings"),
    "decision_windows": (_is_window_list, "a list of numbers or nulls"),
    "shortflow_version": (lambda v: isinstance(v, str), "a string"),
    "sklearn_version": (lambda v: isinstance(v, str), "a string"),
    "python_version": (lambda v: isinstance(v, str), "a string"),
    "created": (lambda v: isinstance(v, str), "a string"),
    "estimator": (lambda v: isinstance(v, str), "a string"),
    "training_manifest_sha256": (lambda v: isinstance(v, str), "a string"),
    "metrics": (lambda v: isinstance(v, dict), "an object"),
}


def read_info(directory: Path) -> ModelInfo:
    """Parse and check ``model.json``. Raises :class:`ModelError` when it is missing, not
    JSON, not an object, lacks a field, has an unknown field or a field of the wrong type."""
    sidecar = directory / _JSON
    try:
        raw = json.loads(sidecar.read_text())
    except FileNotFoundError as exc:
        raise ModelError(
            f"{sidecar}: missing; a model directory holds model.joblib and model.json"
        ) from exc
    except OSError as exc:
        raise ModelError(f"{sidecar}: cannot read ({exc.strerror or exc})") from exc
    except (ValueError, RecursionError) as exc:  # JSON and UTF-8 errors are ValueErrors
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ModelError(f"{sidecar}: not a shortflow model.json ({reason})") from exc
    if not isinstance(raw, dict):
        raise ModelError(
            f"{sidecar}: not a shortflow model.json (expected an object, got {type(raw).__name__})"
        )
    for key, value in raw.items():
        check = _FIELD_CHECKS.get(key)
        if check is not None and not check[0](value):
            raise ModelError(
                f"{sidecar}: field {key!r} must be {check[1]}, got {type(value).__name__}"
            )
    try:
        return ModelInfo(**raw)
    except TypeError as exc:  # missing or unknown fields
        raise ModelError(f"{sidecar}: not a shortflow model.json ({exc})") from exc


def load_model(directory: Path | str | None = None) -> LoadedModel:
    """Load a model directory (default: the model shipped with shortflow).

    Raises :class:`ModelError` when a file is missing, the sha256 does not match (tampered
    or damaged), the schema version or feature list differs from this shortflow's, or the
    pickle cannot be loaded.
    """
    directory = Path(directory) if directory is not None else DEFAULT_MODEL_DIR
    if directory.is_file() and directory.name in (_JOBLIB, _JSON):
        directory = directory.parent
    if not directory.is_dir():
        raise ModelError(f"{directory}: no such model directory")
    info = read_info(directory)
    joblib_path = directory / _JOBLIB
    if not joblib_path.is_file():
        raise ModelError(f"{joblib_path}: missing")
    actual = file_sha256(joblib_path)
    if actual != info.sha256:
        raise ModelError(
            f"{joblib_path}: sha256 {actual[:12]}... does not match model.json "
            f"({info.sha256[:12]}...); refusing to unpickle a changed model file"
        )
    if info.schema_version != SCHEMA_VERSION or list(info.feature_columns) != list(FEATURE_COLUMNS):
        raise ModelError(
            f"{directory}: model built for feature schema {info.schema_version}, "
            f"this shortflow computes schema {SCHEMA_VERSION}; retrain the model"
        )
    import joblib

    try:
        pipeline = joblib.load(joblib_path)
    except Exception as exc:  # a verified file that still fails to unpickle
        raise ModelError(f"{joblib_path}: cannot load ({type(exc).__name__}: {exc})") from exc
    if not hasattr(pipeline, "predict_proba"):
        raise ModelError(f"{joblib_path}: not a classifier pipeline")
    predictor = ArrayPredictor.from_pipeline(pipeline)
    if predictor is not None and predictor.numeric != tuple(FEATURE_COLUMNS):
        predictor = None  # inputs in another order: the pipeline selects them itself
    return LoadedModel(pipeline=pipeline, info=info, path=directory, predictor=predictor)

"""Which model a process predicts with: the lean exports (:mod:`classifier.model.lean`)
when they are current, else the joblib models.

:func:`load_flow_model` and :func:`load_session` are what ``shortflow classify``, the API,
the Model page and live mode call: with the shipped model they import none of
scikit-learn, scipy, lightgbm or joblib, and live mode and the API no pandas either.
:func:`export_lean` (re)writes a directory's exports from its joblib models.
"""

from __future__ import annotations

import json
from pathlib import Path

from classifier.errors import ModelError
from classifier.features.schema import FEATURE_COLUMNS, SCHEMA_VERSION
from classifier.features.session import SESSION_FEATURES, SessionConfig
from classifier.model.artifact import DEFAULT_MODEL_DIR, LoadedModel, load_model, read_info
from classifier.model.lean import (
    SESSION_FILE,
    read_flow_export,
    read_session_export,
    write_flow_export,
    write_session_export,
)
from classifier.model.session_model import (
    SessionModel,
    SessionModelInfo,
    has_session_model,
    load_session_model,
)

__all__ = [
    "load_flow_model",
    "load_session",
    "load_lean_model",
    "load_lean_session_model",
    "export_lean",
]


def _directory(directory: Path | str | None) -> Path:
    """The model directory meant: the shipped one for None, a file's folder for a file."""
    path = Path(directory) if directory is not None else DEFAULT_MODEL_DIR
    return path.parent if path.is_file() else path


def export_lean(directory: Path | str) -> tuple[bool, bool]:
    """Load the joblib models of ``directory`` (verified as usual) and write their lean
    exports; returns (flow written, session written). A directory without a session model
    gets no session export (and loses a stale one)."""
    directory = Path(directory)
    model = load_model(directory)
    flow = write_flow_export(model.pipeline, directory, model.info.sha256)
    if not has_session_model(directory):
        (directory / SESSION_FILE).unlink(missing_ok=True)
        return flow, False
    session = load_session_model(directory)
    return flow, write_session_export(session.estimator, directory, session.info.sha256)


def load_lean_model(directory: Path | str | None = None) -> LoadedModel | None:
    """The flow model of ``directory`` (default: the shipped one) from its lean export:
    a :class:`LoadedModel <classifier.model.artifact.LoadedModel>` with ``pipeline=None``
    and the :class:`LeanForest` as ``predictor``. None when there is no current export
    or the sidecar is unusable or built for another feature schema: load the joblib model
    then (:func:`load_model <classifier.model.artifact.load_model>`, which reports why)."""
    directory = _directory(directory)
    try:
        info = read_info(directory)
    except ModelError:
        return None
    if info.schema_version != SCHEMA_VERSION or list(info.feature_columns) != list(FEATURE_COLUMNS):
        return None
    forest = read_flow_export(directory)
    if forest is None or forest.numeric != tuple(FEATURE_COLUMNS):
        return None
    return LoadedModel(pipeline=None, info=info, path=directory, predictor=forest)


def load_lean_session_model(directory: Path | str | None = None) -> SessionModel | None:
    """The session model of ``directory`` (default: the shipped one) from its lean
    export: a :class:`SessionModel <classifier.model.session_model.SessionModel>` whose
    ``estimator`` is the :class:`LeanSession`. None when there is no current export or
    ``session.json`` is unusable or names other session features: load the joblib model
    then (:func:`load_session_model
    <classifier.model.session_model.load_session_model>`, which reports why)."""
    directory = _directory(directory)
    try:
        info = SessionModelInfo(**json.loads((directory / "session.json").read_text()))
        SessionConfig(**info.config)
    except (OSError, ValueError, TypeError):
        return None
    if list(info.feature_columns) != list(SESSION_FEATURES):
        return None
    lean = read_session_export(directory)
    if lean is None or lean.inputs != tuple(SESSION_FEATURES):
        return None
    return SessionModel(lean, info, directory)


def load_flow_model(directory: Path | str | None = None) -> LoadedModel:
    """The flow model to predict with: the lean export when it is current, else the
    joblib model (:func:`load_model <classifier.model.artifact.load_model>`, which raises
    :class:`ModelError` saying what is wrong)."""
    return load_lean_model(directory) or load_model(directory)


def load_session(directory: Path | str | None = None) -> SessionModel | None:
    """The session model to predict with, or None when ``directory`` (default: the
    shipped one) has none: the lean export when it is current, else the joblib model
    (:func:`load_session_model <classifier.model.session_model.load_session_model>`,
    which raises :class:`ModelError` saying what is wrong)."""
    directory = _directory(directory)
    if not has_session_model(directory):
        return None
    return load_lean_session_model(directory) or load_session_model(directory)

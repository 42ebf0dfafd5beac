"""Lean exports of the shipped models: plain numpy arrays, predicted with numpy alone.

Loading ``model.joblib`` / ``session.joblib`` imports scikit-learn, scipy, lightgbm and
joblib (~85 MiB of a live process) and unpickles, which runs code. A lean export holds
what prediction needs as arrays in an ``.npz`` file that :func:`numpy.load` reads with
``allow_pickle=False`` (no code runs at load):

- ``lean.npz``, the flow model (a ``ColumnTransformer`` of numeric passthrough + service
  one-hot, then a multiclass ``LGBMClassifier``): the numeric column names, the service
  categories, the classes and the trees as node arrays (split feature, threshold, missing
  rule, children; a leaf is ``~leaf``), evaluated by one compiled kernel
  (:func:`_forest_proba`, built ahead of time with the other kernels) exactly as LightGBM
  does: a NaN goes to the default side on a ``NaN`` missing rule and counts as 0 otherwise,
  a value within ``1e-35`` of 0 is 0, the raw scores of the interleaved per-class trees are
  summed in tree order and turned into probabilities by LightGBM's softmax.
- ``session-lean.npz``, the session model (passthrough of named columns, ``log1p``,
  ``StandardScaler``, multinomial ``LogisticRegression``): the column names, the scaler's
  mean and scale, the coefficients, intercepts and classes; predicted with the operations
  scikit-learn uses, in its order.

Each file records the sha256 of the joblib file it was exported from. The readers
(:func:`read_flow_export`, :func:`read_session_export`) check it against the sidecar
(``model.json`` / ``session.json``, which vouches for the joblib file) and against the
joblib file itself (hashed, never unpickled), and return None when the export is missing,
stale (the model was retrained and not re-exported), unreadable or of another shape, or
the joblib file is not the one the sidecar vouches for: the caller then loads the joblib
model (:mod:`classifier.model.loading`), whose loader says what is wrong. The export is
written by :func:`~classifier.model.artifact.save_model` and
:func:`~classifier.model.session_model.save_session_model`. Nothing vouches for the
``.npz`` bytes themselves; loading them runs no code, so a damaged file can at worst give
wrong probabilities, as a damaged sidecar could.

Importing this module imports numpy and shortflow's own light modules only: no
scikit-learn, scipy, lightgbm, joblib or pandas.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from classifier.compiled import jit
from classifier.model.digest import file_sha256

__all__ = [
    "FLOW_FILE",
    "SESSION_FILE",
    "LeanForest",
    "LeanSession",
    "flow_arrays",
    "session_arrays",
    "write_flow_export",
    "write_session_export",
    "read_flow_export",
    "read_session_export",
]

FLOW_FILE = "lean.npz"
SESSION_FILE = "session-lean.npz"
_FORMAT = 1
_FLOW_KIND = "lightgbm-multiclass"
_SESSION_KIND = "log1p-scaler-logistic"

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: LightGBM's kZeroThreshold (a float literal, 1e-35f, widened to double)
_ZERO = float(np.float32(1e-35))
# missing rules, as LightGBM numbers them (decision_type bits 2-3)
_MISSING = {"None": 0, "Zero": 1, "NaN": 2}


# ---------------------------------------------------------------------------------------
# flow model: the forest


@jit(
    "none(float64[:, ::1], int64[::1], int64[::1], float64[::1], int8[::1], int64[::1], "
    "int64[::1], int64[::1], float64[::1], float64[:, ::1])",
    cache=True,
    nogil=True,
)
def _forest_proba(
    x: F64,
    service: I64,
    feature: I64,
    threshold: F64,
    rule: npt.NDArray[np.int8],
    left: I64,
    right: I64,
    roots: I64,
    leaf_value: F64,
    out: F64,
) -> None:
    """``out`` (rows x classes): LightGBM's multiclass probabilities of each row.

    ``x``: numeric inputs (rows x n); ``service``: each row's one-hot position (-1: none),
    so input column ``n + j`` is 1.0 where ``service == j`` and 0.0 elsewhere. Nodes:
    ``feature``, ``threshold``, ``rule`` (bit 0 default-left, bits 1-2 the missing rule)
    and ``left`` / ``right`` (a node index, or ``~leaf``); ``roots``: each tree's root
    (``~leaf`` for a one-leaf tree); tree ``t`` scores class ``t % classes``."""
    rows, n = x.shape
    classes = out.shape[1]
    out[:, :] = 0.0
    # tree by tree (its nodes stay in cache), each row's class score summed in tree order
    for t in range(roots.shape[0]):
        k = t % classes
        for r in range(rows):
            node = roots[t]
            while node >= 0:
                f = feature[node]
                if f < n:
                    v = x[r, f]
                    if -_ZERO <= v <= _ZERO:  # a dense row drops these: read back as 0
                        v = 0.0
                else:
                    v = 1.0 if service[r] == f - n else 0.0
                missing = (rule[node] >> 1) & 3
                if np.isnan(v) and missing != 2:
                    v = 0.0
                if (missing == 1 and -_ZERO <= v <= _ZERO) or (missing == 2 and np.isnan(v)):
                    go_left = (rule[node] & 1) == 1
                else:
                    go_left = v <= threshold[node]
                node = left[node] if go_left else right[node]
            out[r, k] += leaf_value[~node]
    for r in range(rows):
        top = out[r, 0]
        for k in range(1, classes):
            top = max(out[r, k], top)
        total = 0.0
        for k in range(classes):
            out[r, k] = np.exp(out[r, k] - top)
            total += out[r, k]
        for k in range(classes):
            out[r, k] /= total


@dataclass(frozen=True)
class LeanForest:
    """The flow model's lean twin, with the interface :func:`verdict_arrays
    <classifier.model.predict.verdict_arrays>` uses (as :class:`ArrayPredictor
    <classifier.model.array_predict.ArrayPredictor>`): ``classes`` and
    :meth:`predict_proba`."""

    numeric: tuple[str, ...]
    categories: tuple[str, ...]
    classes: tuple[str, ...]
    feature: I64
    threshold: F64
    rule: npt.NDArray[np.int8]
    left: I64
    right: I64
    roots: I64
    leaf_value: F64

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {c: i for i, c in enumerate(self.categories)})

    def predict_proba(self, numeric: F64, service: Sequence[str]) -> F64:
        """Probabilities per class (``self.classes`` order) of each row: ``numeric``
        (rows x ``self.numeric``) and each row's service (unknown ones: no one-hot)."""
        x = np.ascontiguousarray(numeric, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.numeric) or len(service) != len(x):
            raise ValueError(
                f"expected rows x {len(self.numeric)} numeric inputs and a service per row, "
                f"got {x.shape} and {len(service)} services"
            )
        index: dict[str, int] = self._index  # type: ignore[attr-defined]
        services = np.array([index.get(s, -1) for s in service], dtype=np.int64)
        out = np.empty((len(x), len(self.classes)), dtype=np.float64)
        _forest_proba(
            x,
            services,
            self.feature,
            self.threshold,
            self.rule,
            self.left,
            self.right,
            self.roots,
            self.leaf_value,
            out,
        )
        return out


def _flatten_trees(dump: dict[str, Any], width: int) -> dict[str, npt.NDArray[Any]]:
    """Node arrays of every tree of ``booster.dump_model()``; raises ValueError for what
    the kernel does not evaluate (categorical splits, linear trees, other inputs)."""
    feature: list[int] = []
    threshold: list[float] = []
    rule: list[int] = []
    left: list[int] = []
    right: list[int] = []
    leaves: list[float] = []
    roots: list[int] = []

    def walk(node: dict[str, Any]) -> int:
        if "leaf_value" in node:
            if "leaf_coeff" in node:
                raise ValueError("linear trees")
            leaves.append(float(node["leaf_value"]))
            return ~(len(leaves) - 1)
        if node["decision_type"] != "<=":
            raise ValueError(f"split {node['decision_type']!r}")
        if not 0 <= int(node["split_feature"]) < width:
            raise ValueError(f"split on input {node['split_feature']}")
        at = len(feature)
        feature.append(int(node["split_feature"]))
        threshold.append(float(node["threshold"]))
        rule.append(int(bool(node["default_left"])) | (_MISSING[node["missing_type"]] << 1))
        left.append(0)
        right.append(0)
        left[at] = walk(node["left_child"])
        right[at] = walk(node["right_child"])
        return at

    for tree in dump["tree_info"]:
        roots.append(walk(tree["tree_structure"]))
    return {
        "feature": np.array(feature, dtype=np.int64),
        "threshold": np.array(threshold, dtype=np.float64),
        "rule": np.array(rule, dtype=np.int8),
        "left": np.array(left, dtype=np.int64),
        "right": np.array(right, dtype=np.int64),
        "roots": np.array(roots, dtype=np.int64),
        "leaf_value": np.array(leaves, dtype=np.float64),
    }


def flow_arrays(pipeline: Any) -> dict[str, npt.NDArray[Any]] | None:
    """The arrays of a fitted flow pipeline's lean export, or None when it is not the
    supported shape (:class:`ArrayPredictor
    <classifier.model.array_predict.ArrayPredictor>`'s, with a multiclass
    ``LGBMClassifier`` of numerical splits). Imports scikit-learn and lightgbm."""
    from classifier.model.array_predict import ArrayPredictor

    twin = ArrayPredictor.from_pipeline(pipeline)
    if twin is None:
        return None
    try:
        import lightgbm
    except ImportError:
        return None
    estimator = twin.estimator
    if not isinstance(estimator, lightgbm.LGBMClassifier):
        return None
    dump = estimator.booster_.dump_model()
    classes = len(twin.classes)
    if (
        classes < 3
        or dump.get("num_class") != classes
        or dump.get("num_tree_per_iteration") != classes
        or dump.get("average_output")
        or not str(dump.get("objective", "")).startswith("multiclass ")
        or len(dump["tree_info"]) % classes
    ):
        return None
    try:
        trees = _flatten_trees(dump, len(twin.numeric) + len(twin.categories))
    except (ValueError, KeyError):
        return None
    return {
        "kind": np.array(_FLOW_KIND),
        "numeric": np.array(twin.numeric, dtype=str),
        "categories": np.array(twin.categories, dtype=str),
        "classes": np.array(twin.classes, dtype=str),
        **trees,
    }


def _forest(arrays: dict[str, npt.NDArray[Any]]) -> LeanForest:
    return LeanForest(
        numeric=tuple(str(c) for c in arrays["numeric"]),
        categories=tuple(str(c) for c in arrays["categories"]),
        classes=tuple(str(c) for c in arrays["classes"]),
        feature=np.ascontiguousarray(arrays["feature"], dtype=np.int64),
        threshold=np.ascontiguousarray(arrays["threshold"], dtype=np.float64),
        rule=np.ascontiguousarray(arrays["rule"], dtype=np.int8),
        left=np.ascontiguousarray(arrays["left"], dtype=np.int64),
        right=np.ascontiguousarray(arrays["right"], dtype=np.int64),
        roots=np.ascontiguousarray(arrays["roots"], dtype=np.int64),
        leaf_value=np.ascontiguousarray(arrays["leaf_value"], dtype=np.float64),
    )


# ---------------------------------------------------------------------------------------
# session model


@dataclass(frozen=True)
class LeanSession:
    """The session model's lean twin: ``classes_`` and :meth:`predict_proba`, as the
    scikit-learn pipeline has (so :func:`window_probabilities
    <classifier.model.session_model.window_probabilities>` takes either)."""

    inputs: tuple[str, ...]
    columns: tuple[str, ...]
    classes_: npt.NDArray[np.str_]
    mean: F64
    scale: F64
    coef: F64
    intercept: F64

    def predict_proba(self, rows: Any) -> F64:
        """Probabilities per class of ``rows``: a DataFrame with (at least) the model's
        columns, or a 2-D array of either ``self.inputs`` (the session features in order)
        or exactly ``self.columns``."""
        if hasattr(rows, "columns"):  # a DataFrame: column by column (cheaper than rows[...])
            x = np.empty((len(rows), len(self.columns)), dtype=np.float64)
            for j, name in enumerate(self.columns):
                x[:, j] = np.asarray(rows[name], dtype=np.float64)
        else:
            x = np.array(rows, dtype=np.float64)
            if x.ndim != 2:
                raise ValueError(f"expected a 2-D array, got {x.ndim} dimensions")
            if x.shape[1] == len(self.inputs) and x.shape[1] != len(self.columns):
                x = x[:, [self.inputs.index(c) for c in self.columns]]
            elif x.shape[1] != len(self.columns):
                raise ValueError(
                    f"expected {len(self.inputs)} or {len(self.columns)} columns, got {x.shape[1]}"
                )
        # the pipeline's steps, as scikit-learn computes them
        x = np.log1p(x)
        x -= self.mean
        x /= self.scale
        scores = x @ self.coef.T + self.intercept
        scores -= scores.max(axis=1).reshape((-1, 1))
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=1).reshape((-1, 1))
        return scores


def _passthrough(step: Any) -> bool:
    """Whether a fitted column transformer's step passes its columns through (fitted,
    ``"passthrough"`` becomes an identity ``FunctionTransformer``)."""
    return step == "passthrough" or (
        getattr(step, "func", 0) is None
        and getattr(step, "inverse_func", 0) is None
        and not getattr(step, "validate", True)
    )


def session_arrays(estimator: Any) -> dict[str, npt.NDArray[Any]] | None:
    """The arrays of a fitted session pipeline's lean export, or None when it is not
    (columns passthrough, ``np.log1p``, ``StandardScaler``, multiclass
    ``LogisticRegression`` with softmax probabilities). Imports scikit-learn."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    from classifier.features.session import SESSION_FEATURES

    if not isinstance(estimator, Pipeline) or len(estimator.steps) != 4:
        return None
    columns, log, scaler, logistic = (step for _, step in estimator.steps)
    if not (
        isinstance(columns, ColumnTransformer)
        and isinstance(log, FunctionTransformer)
        and isinstance(scaler, StandardScaler)
        and type(logistic) is LogisticRegression
    ):
        return None
    fitted = [t for t in columns.transformers_ if t[0] != "remainder"]
    remainder = [t for t in columns.transformers_ if t[0] == "remainder"]
    if (
        len(fitted) != 1
        or not _passthrough(fitted[0][1])
        or any(t[1] != "drop" for t in remainder)
        or not all(isinstance(c, str) and c in SESSION_FEATURES for c in fitted[0][2])
    ):
        return None
    if log.func is not np.log1p or log.kw_args:
        return None
    classes = np.asarray(logistic.classes_)
    multinomial = getattr(logistic, "multi_class", "deprecated") in ("deprecated", "auto")
    if len(classes) < 3 or not multinomial or logistic.solver == "liblinear":
        return None
    width = len(fitted[0][2])
    mean = scaler.mean_ if scaler.with_mean else np.zeros(width)
    scale = scaler.scale_ if scaler.with_std and scaler.scale_ is not None else np.ones(width)
    return {
        "kind": np.array(_SESSION_KIND),
        "inputs": np.array(SESSION_FEATURES, dtype=str),
        "columns": np.array(list(fitted[0][2]), dtype=str),
        "classes": np.array([str(c) for c in classes], dtype=str),
        "mean": np.asarray(mean, dtype=np.float64),
        "scale": np.asarray(scale, dtype=np.float64),
        "coef": np.asarray(logistic.coef_, dtype=np.float64),
        "intercept": np.asarray(logistic.intercept_, dtype=np.float64),
    }


def _session(arrays: dict[str, npt.NDArray[Any]]) -> LeanSession:
    return LeanSession(
        inputs=tuple(str(c) for c in arrays["inputs"]),
        columns=tuple(str(c) for c in arrays["columns"]),
        classes_=np.array([str(c) for c in arrays["classes"]], dtype=str),
        mean=np.asarray(arrays["mean"], dtype=np.float64),
        scale=np.asarray(arrays["scale"], dtype=np.float64),
        coef=np.ascontiguousarray(arrays["coef"], dtype=np.float64),
        intercept=np.asarray(arrays["intercept"], dtype=np.float64),
    )


# ---------------------------------------------------------------------------------------
# files


def _write(path: Path, arrays: dict[str, npt.NDArray[Any]] | None, source_sha256: str) -> bool:
    """Write ``arrays`` (plus format and source sha) to ``path`` atomically, or remove a
    stale ``path`` when ``arrays`` is None. Returns whether a file was written."""
    if arrays is None:
        path.unlink(missing_ok=True)
        return False
    tmp = path.with_name(path.name + ".tmp")
    stored: dict[str, Any] = {
        "format": np.array(_FORMAT),
        "source_sha256": np.array(source_sha256),
        **arrays,
    }
    with tmp.open("wb") as fh:
        np.savez_compressed(fh, **stored)
    os.replace(tmp, path)
    return True


def write_flow_export(pipeline: Any, directory: Path, source_sha256: str) -> bool:
    """Write ``directory/lean.npz`` from a fitted flow pipeline whose joblib file has
    ``source_sha256``; remove it when the pipeline has no lean form. Returns whether it
    was written."""
    return _write(Path(directory) / FLOW_FILE, flow_arrays(pipeline), source_sha256)


def write_session_export(estimator: Any, directory: Path, source_sha256: str) -> bool:
    """Write ``directory/session-lean.npz`` from a fitted session pipeline whose joblib
    file has ``source_sha256``; remove it when it has no lean form. Returns whether it was
    written."""
    return _write(Path(directory) / SESSION_FILE, session_arrays(estimator), source_sha256)


def _read(path: Path, kind: str, sidecar: Path, source: Path) -> dict[str, npt.NDArray[Any]] | None:
    """The arrays of ``path`` when it is a current export of ``kind``: its source sha256
    equals the ``sha256`` of ``sidecar``, and so does the joblib file ``source`` (a
    damaged or swapped joblib file is then reported by its own loader, as without an
    export)."""
    try:
        want = json.loads(sidecar.read_text()).get("sha256")
        if file_sha256(source) != want:
            return None
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, AttributeError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    try:
        if (
            int(arrays["format"]) != _FORMAT
            or str(arrays["kind"]) != kind
            or str(arrays["source_sha256"]) != want
        ):
            return None
    except (KeyError, TypeError, ValueError):
        return None
    return arrays


def read_flow_export(directory: Path | str) -> LeanForest | None:
    """The flow model's lean twin from ``directory/lean.npz``, or None when it is
    missing, unreadable or stale (exported from another ``model.joblib`` than the one
    ``model.json`` vouches for, or ``model.joblib`` no longer the one it vouches for)."""
    directory = Path(directory)
    arrays = _read(
        directory / FLOW_FILE, _FLOW_KIND, directory / "model.json", directory / "model.joblib"
    )
    if arrays is None:
        return None
    try:
        return _forest(arrays)
    except (KeyError, TypeError, ValueError):
        return None


def read_session_export(directory: Path | str) -> LeanSession | None:
    """The session model's lean twin from ``directory/session-lean.npz``, or None when
    it is missing, unreadable or stale (see :func:`read_flow_export`)."""
    directory = Path(directory)
    arrays = _read(
        directory / SESSION_FILE,
        _SESSION_KIND,
        directory / "session.json",
        directory / "session.joblib",
    )
    if arrays is None:
        return None
    try:
        return _session(arrays)
    except (KeyError, TypeError, ValueError):
        return None

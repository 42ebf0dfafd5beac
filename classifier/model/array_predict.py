"""Class probabilities straight from feature arrays, without pandas or scikit-learn's
column machinery on the way.

A flow model is a scikit-learn ``Pipeline``: a ``ColumnTransformer`` that passes the
numeric feature columns through and one-hot encodes ``service``, then an estimator. Going
through the pipeline costs ~15 ms for one row (column selection on a DataFrame, a joblib
call per transformer), far more than the trees themselves. :class:`ArrayPredictor` reads
the fitted transformer once (which columns, which service categories) and then builds the
estimator's input matrix with numpy. It is the pipeline's twin: the same probabilities
(tested), and :meth:`ArrayPredictor.from_pipeline` returns None for any pipeline of another
shape, whose callers then use the pipeline itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["ArrayPredictor", "FlowPredictor"]


class FlowPredictor(Protocol):
    """What :func:`classifier.model.predict.verdict_arrays` needs of a flow model's twin:
    :class:`ArrayPredictor` or the lean export's
    :class:`~classifier.model.lean.LeanForest`."""

    @property
    def classes(self) -> tuple[str, ...]: ...

    def predict_proba(
        self, numeric: npt.NDArray[np.float64], service: Sequence[str]
    ) -> npt.NDArray[np.float64]: ...


@dataclass(frozen=True)
class ArrayPredictor:
    """``numeric``: the pipeline's numeric input columns in order; ``categories``: the
    service one-hot's categories (an unknown service is all zeros, as the encoder's
    ``handle_unknown='ignore'``); ``estimator``: the fitted final step."""

    numeric: tuple[str, ...]
    categories: tuple[str, ...]
    estimator: Any
    classes: tuple[str, ...]

    @classmethod
    def from_pipeline(cls, pipeline: Any) -> ArrayPredictor | None:
        """The twin of ``pipeline``, or None when it is not a (numeric passthrough,
        service one-hot) column transformer followed by one estimator."""
        from sklearn.compose import ColumnTransformer
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import OneHotEncoder

        if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
            return None
        columns, estimator = pipeline.steps[0][1], pipeline.steps[1][1]
        if not isinstance(columns, ColumnTransformer) or not hasattr(estimator, "predict_proba"):
            return None
        fitted = [t for t in columns.transformers_ if t[0] != "remainder"]
        remainder = [t for t in columns.transformers_ if t[0] == "remainder"]
        if len(fitted) != 2 or any(t[1] != "drop" for t in remainder):
            return None
        (_, num, num_cols), (_, onehot, cat_cols) = fitted
        passthrough = num == "passthrough" or (
            getattr(num, "func", 0) is None
            and getattr(num, "inverse_func", 0) is None
            and not getattr(num, "validate", True)
        )
        if (
            not passthrough
            or not isinstance(onehot, OneHotEncoder)
            or list(cat_cols) != ["service"]
            or onehot.handle_unknown != "ignore"
            or onehot.drop is not None
            or len(onehot.categories_) != 1
            or getattr(onehot, "min_frequency", None) is not None
            or getattr(onehot, "max_categories", None) is not None
        ):
            return None
        return cls(
            tuple(num_cols),
            tuple(str(c) for c in onehot.categories_[0]),
            estimator,
            tuple(str(c) for c in estimator.classes_),
        )

    def matrix(
        self, numeric: npt.NDArray[np.float64], service: Sequence[str]
    ) -> npt.NDArray[np.float64]:
        """The estimator's input: ``numeric`` (rows x ``self.numeric``) beside the
        service one-hot."""
        n = len(numeric)
        out = np.zeros((n, len(self.numeric) + len(self.categories)), dtype=np.float64)
        out[:, : len(self.numeric)] = numeric
        index = {c: i for i, c in enumerate(self.categories)}
        for row, s in enumerate(service):
            hit = index.get(s)
            if hit is not None:
                out[row, len(self.numeric) + hit] = 1.0
        return out

    def predict_proba(
        self, numeric: npt.NDArray[np.float64], service: Sequence[str]
    ) -> npt.NDArray[np.float64]:
        """Probabilities per class (``self.classes`` order) for each row."""
        matrix = self.matrix(numeric, service)
        return np.asarray(self.estimator.predict_proba(matrix), dtype=np.float64)

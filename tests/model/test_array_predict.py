"""The flow pipeline's array twin gives the pipeline's probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from classifier.features.featurize import FeaturizeConfig
from classifier.features.featurize_fast import featurize_fast
from classifier.features.schema import FEATURE_COLUMNS
from classifier.model.array_predict import ArrayPredictor
from classifier.model.artifact import load_model
from classifier.model.predict import model_inputs

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "datasets" / "samples" / "sample.pcap"


def test_shipped_model_twin_equals_the_pipeline() -> None:
    model = load_model(None)
    assert model.predictor is not None
    inputs = model_inputs(featurize_fast(SAMPLE, FeaturizeConfig()))
    # every service the sample has, plus ones the encoder never saw
    services = inputs["service"].tolist()
    services[:2] = ["no-such-service", "tiktok"]
    inputs["service"] = services
    want = model.pipeline.predict_proba(inputs)
    got = model.predictor.predict_proba(
        inputs[list(FEATURE_COLUMNS)].to_numpy(np.float64), services
    )
    assert len(inputs) >= 5
    np.testing.assert_array_equal(got, want)
    assert list(model.predictor.classes) == [str(c) for c in model.pipeline.classes_]


def _fit(pre: ColumnTransformer) -> Pipeline:
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.gamma(2.0, 1.0, (60, len(FEATURE_COLUMNS))), columns=list(FEATURE_COLUMNS))
    x["service"] = rng.choice(["youtube", "unknown"], 60)
    y = rng.choice(["short-form", "long-form", "other"], 60)
    return Pipeline([("columns", pre), ("model", LogisticRegression(max_iter=200))]).fit(x, y)


def test_other_pipeline_shapes_have_no_twin() -> None:
    onehot = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    same = _fit(
        ColumnTransformer(
            [("num", "passthrough", list(FEATURE_COLUMNS)), ("service", onehot, ["service"])]
        )
    )
    assert ArrayPredictor.from_pipeline(same) is not None
    scaled = _fit(
        ColumnTransformer(
            [("num", StandardScaler(), list(FEATURE_COLUMNS)), ("service", onehot, ["service"])]
        )
    )
    assert ArrayPredictor.from_pipeline(scaled) is None
    strict = _fit(
        ColumnTransformer(
            [
                ("num", "passthrough", list(FEATURE_COLUMNS)),
                ("service", OneHotEncoder(sparse_output=False), ["service"]),
            ]
        )
    )
    assert ArrayPredictor.from_pipeline(strict) is None  # unknown services would raise
    assert ArrayPredictor.from_pipeline(LogisticRegression()) is None


@pytest.mark.parametrize("rows", [1, 7])
def test_twin_of_a_fitted_pipeline(rows: int) -> None:
    onehot = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    pipe = _fit(
        ColumnTransformer(
            [("num", "passthrough", list(FEATURE_COLUMNS)), ("service", onehot, ["service"])]
        )
    )
    twin = ArrayPredictor.from_pipeline(pipe)
    assert twin is not None
    x = np.random.default_rng(rows).gamma(2.0, 1.0, (rows, len(FEATURE_COLUMNS)))
    services = ["youtube", "instagram", "unknown"] * rows
    frame = pd.DataFrame(x, columns=list(FEATURE_COLUMNS)).assign(service=services[:rows])
    np.testing.assert_allclose(
        twin.predict_proba(x, services[:rows]), pipe.predict_proba(frame), rtol=0, atol=1e-12
    )

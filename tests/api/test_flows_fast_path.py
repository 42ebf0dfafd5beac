"""``POST /v1/flows:classify`` reads a plainly well-formed body without the pydantic model
and writes its answer without the response models: both shortcuts must give what the
models give (the same body, the same errors, the same bytes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from classifier.api.problems import ApiProblem
from classifier.api.routers import flows
from classifier.api.schemas import RowVerdict, RowVerdicts
from classifier.features.schema import FEATURE_COLUMNS
from classifier.model.artifact import load_model
from classifier.model.predict import decision_window, verdict_arrays
from classifier.names.services import category_for


def _rows(n: int, seed: int = 3) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    services = ["youtube", "instagram", "unknown", "tiktok", 'odd "name" é']
    rows: list[dict[str, object]] = []
    for i in range(n):
        values = rng.gamma(2.0, 3.0, len(FEATURE_COLUMNS)).tolist()
        row: dict[str, object] = dict(zip(FEATURE_COLUMNS, values, strict=True))
        row["burst_count"] = int(i % 7)  # an int among the floats
        row["service"] = services[i % len(services)]
        rows.append(row)
    return rows


ROWS = _rows(12)


@pytest.mark.parametrize(
    "body",
    [
        {"rows": ROWS},
        {"rows": ROWS, "horizon": 3},
        {"rows": ROWS, "horizon": 2.5},
        {"rows": ROWS, "horizon": None},
        {"rows": ROWS, "other": [1, 2]},
        {"rows": []},
    ],
)
def test_a_well_formed_body_reads_as_the_model_reads_it(body: dict[str, object]) -> None:
    raw = json.dumps(body).encode()
    fast = flows._well_formed(raw)
    assert fast is not None
    slow = flows._Body.model_validate_json(raw)
    assert fast.rows == slow.rows
    assert fast.horizon == slow.horizon and type(fast.horizon) is type(slow.horizon)


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"",
        b"[]",
        b'{"nothing": []}',
        b'{"rows": {"a": 1}}',
        b'{"rows": [{"a": 1}, 2]}',
        b'{"rows": [], "horizon": "3"}',
        b'{"rows": [], "horizon": true}',
        b'{"rows": [], "horizon": 0}',
        b'{"rows": [], "horizon": -1.5}',
        b'{"rows": [], "horizon": Infinity}',
        b'{"rows": [], "horizon": NaN}',
        b'{"rows": [], "horizon": [3]}',
    ],
)
def test_anything_else_goes_through_the_model(raw: bytes) -> None:
    """The shortcut declines; :func:`flows._parse` then answers as the model does."""
    assert flows._well_formed(raw) is None
    try:
        expected = flows._Body.model_validate_json(raw)
    except ValidationError:
        with pytest.raises(RequestValidationError):
            flows._parse(raw, 1000)
    else:
        body = flows._parse(raw, 1000)
        assert (body.rows, body.horizon) == (expected.rows, expected.horizon)


@pytest.mark.parametrize("horizon", [3, "3"])  # the shortcut, then the model
def test_too_many_rows_either_way(horizon: object) -> None:
    with pytest.raises(ApiProblem) as err:
        flows._parse(json.dumps({"rows": ROWS, "horizon": horizon}).encode(), 5)
    assert err.value.status == 413


@pytest.mark.parametrize("horizon", [None, 3.0])
@pytest.mark.parametrize("extra", [False, True])
def test_the_answer_is_what_the_response_models_give(
    model_dir: Path, horizon: float | None, extra: bool
) -> None:
    model = load_model(model_dir)
    rows = [dict(r, bogus=1) if extra and i == 4 else r for i, r in enumerate(ROWS)]
    answer, labels = flows._classify_rows(
        model, json.dumps({"rows": rows, "horizon": horizon}).encode(), 1000
    )
    # the answer as the endpoint built it before: RowVerdict models in a RowVerdicts
    values, services, ignored = flows.rows_arrays(rows)
    v = verdict_arrays(
        model, values, services, [category_for(s) for s in services], [None] * len(services)
    )
    expected = RowVerdicts(
        model=model.info.name,
        horizon=horizon,
        verdicts=[
            RowVerdict(
                index=i,
                service=services[i],
                label=str(v.label[i]),
                probability=round(float(v.probability[i]), 4),
                p_short_form=round(float(v.p_short[i]), 4),
                decision_window=decision_window(horizon),
                reason=v.reason[i],
            )
            for i in range(len(services))
        ],
        warnings=["ignored 1 column(s) the model does not read: bogus"] if extra else [],
    )
    assert answer == expected.model_dump_json().encode()
    assert list(labels) == [str(label) for label in v.label]
    empty, none = flows._classify_rows(model, b'{"rows": []}', 1000)
    assert (
        empty
        == RowVerdicts(model=model.info.name, horizon=None, verdicts=[]).model_dump_json().encode()
    )
    assert list(none) == []

"""``POST /v1/flows:classify``: feature rows as JSON -> one verdict per row."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt
import pydantic_core
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError

from classifier.api.problems import ApiProblem, problem_responses
from classifier.api.routers import MetricsDep, ModelDep, SettingsDep, run_cpu
from classifier.api.schemas import FlowRows, RowVerdicts
from classifier.features.schema import FEATURE_COLUMNS
from classifier.model.artifact import LoadedModel
from classifier.model.predict import MODEL_INPUT_COLUMNS, decision_window, verdict_arrays

__all__ = ["router", "rows_arrays"]

router = APIRouter(tags=["flows"])

_EXPECTED = frozenset(MODEL_INPUT_COLUMNS)
_FEATURES = list(FEATURE_COLUMNS)
_PICK = itemgetter(*_FEATURES)


class _Body(BaseModel):
    """What the endpoint parses: :class:`FlowRows` (the documented body) with the row
    values left to :func:`rows_arrays`, which checks them in bulk (pydantic's per-value
    union check costs more than the model)."""

    rows: list[dict[str, Any]]
    horizon: float | None = Field(None, gt=0)


def _well_formed(raw: bytes) -> _Body | None:
    """``raw`` as :class:`_Body` without a pydantic pass, when it plainly is one (an object
    whose ``rows`` is a list of objects, ``horizon`` absent, null or a positive finite
    number); None for anything else, which :func:`_parse` then gives to pydantic for the
    same answer or the same validation errors as ever. Through the pydantic model, 1,000
    rows of 141 values cost ~1.2x the bare JSON parse."""
    try:
        data = pydantic_core.from_json(raw)
    except ValueError:
        return None
    if type(data) is not dict:
        return None
    rows = data.get("rows")
    if type(rows) is not list or not all(type(row) is dict for row in rows):
        return None
    horizon = data.get("horizon")
    if horizon is not None:
        if type(horizon) is int and 0 < horizon < 2**53:
            horizon = float(horizon)
        elif type(horizon) is not float or not 0 < horizon < math.inf:
            return None
    return _Body.model_construct(rows=rows, horizon=horizon)


def _parse(raw: bytes, max_rows: int) -> _Body:
    body = _well_formed(raw)
    if body is None:
        try:
            body = _Body.model_validate_json(raw)
        except ValidationError as exc:
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
            ) from None
    if len(body.rows) > max_rows:
        raise ApiProblem(
            413, f"{len(body.rows)} rows; at most {max_rows} per request (SHORTFLOW_MAX_ROWS)"
        )
    return body


def _names(cols: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(sorted(cols)[:limit])
    return shown + (f" and {len(cols) - limit} more" if len(cols) > limit else "")


def _check_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The columns of ``rows`` the model does not read (ignored, sorted). Raises a 422
    naming the first row that lacks one the model needs."""
    if rows:
        # the usual request: every row has the first row's columns in the same order,
        # so the first row's check holds for all
        first = list(rows[0])
        if all(list(row) == first for row in rows):
            rows = rows[:1]
    extra: set[str] = set()
    for i, row in enumerate(rows):
        if row.keys() == _EXPECTED:
            continue
        missing = sorted(_EXPECTED - row.keys())
        if missing:
            raise ApiProblem(
                422,
                f"row {i}: missing columns {_names(missing)} (the model "
                "takes the feature_columns of GET /v1/model plus 'service')",
                title="wrong columns",
                kind="wrong-columns",
            )
        extra.update(row.keys() - _EXPECTED)
    return sorted(extra)


def _finite_number(v: Any) -> bool:
    """Whether ``v`` is an int or float that a float64 holds as a finite number."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an int beyond float range
        return False


def _bad_value(rows: Sequence[dict[str, Any]], column: str) -> ApiProblem:
    for i, row in enumerate(rows):
        v = row[column]
        if not _finite_number(v):
            return ApiProblem(
                422,
                f"row {i}: column '{column}' must be a finite number, got {v!r}"[:300],
                title="wrong value",
                kind="wrong-value",
            )
    return ApiProblem(422, f"column '{column}' must hold finite numbers")


def rows_arrays(
    rows: Sequence[dict[str, Any]],
) -> tuple[npt.NDArray[np.float64], list[str], list[str]]:
    """The request rows as the model's arrays: ``FEATURE_COLUMNS`` values (numbers
    checked), the services, and the request's columns the model does not read (ignored).
    Raises ApiProblem 422 naming the first bad row and column."""
    ignored = _check_columns(rows)
    table = [_PICK(row) for row in rows]
    if not set(map(type, chain.from_iterable(table))) <= {float, int}:
        bad = next(
            i
            for i, v in enumerate(chain.from_iterable(table))
            if type(v) is not float and type(v) is not int
        )
        raise _bad_value(rows, _FEATURES[bad % len(_FEATURES)])
    try:
        values = np.fromiter(
            chain.from_iterable(table), dtype=np.float64, count=len(rows) * len(_FEATURES)
        ).reshape(len(rows), len(_FEATURES))
    except OverflowError:  # an int beyond float range
        bad = next(i for i, v in enumerate(chain.from_iterable(table)) if not _finite_number(v))
        raise _bad_value(rows, _FEATURES[bad % len(_FEATURES)]) from None
    if not np.isfinite(values).all():
        bad_col = _FEATURES[int(np.argwhere(~np.isfinite(values))[0][1])]
        raise _bad_value(rows, bad_col)
    services = [row["service"] for row in rows]
    for i, s in enumerate(services):
        if not isinstance(s, str) or not s.strip():
            raise ApiProblem(
                422,
                f"row {i}: column 'service' must be a non-empty string, got {s!r}"[:300],
                title="wrong value",
                kind="wrong-value",
            )
    return values, services, ignored


def _classify_rows(model: LoadedModel, raw: bytes, max_rows: int) -> tuple[bytes, Sequence[str]]:
    """The answer to ``raw``: the :class:`RowVerdicts` JSON and the labels (for the
    metrics). The JSON is written here, in the worker thread, from plain lists by
    pydantic's serializer: the same bytes as a :class:`RowVerdicts` of 1,000
    :class:`RowVerdict` models, without building and checking them."""
    from classifier.names.services import category_for

    body = _parse(raw, max_rows)
    if not body.rows:
        return _answer(model, body.horizon, [], []), []
    values, services, ignored = rows_arrays(body.rows)
    v = verdict_arrays(
        model, values, services, [category_for(s) for s in services], [None] * len(services)
    )
    window = decision_window(body.horizon)
    labels = [str(label) for label in v.label.tolist()]
    verdicts = [
        {
            "index": i,
            "service": service,
            "label": label,
            "probability": probability,
            "p_short_form": p_short,
            "decision_window": window,
            "reason": reason,
        }
        for i, (service, label, probability, p_short, reason) in enumerate(
            zip(
                services,
                labels,
                [round(p, 4) for p in v.probability.tolist()],
                [round(p, 4) for p in v.p_short.tolist()],
                v.reason,
                strict=True,
            )
        )
    ]
    warnings = (
        [f"ignored {len(ignored)} column(s) the model does not read: {_names(ignored)}"]
        if ignored
        else []
    )
    return _answer(model, body.horizon, verdicts, warnings), labels


def _answer(
    model: LoadedModel,
    horizon: float | None,
    verdicts: list[dict[str, Any]],
    warnings: list[str],
) -> bytes:
    """:class:`RowVerdicts` as JSON, fields in its order (``verdicts`` holds
    :class:`RowVerdict`'s fields in theirs)."""
    return pydantic_core.to_json(
        {"model": model.info.name, "horizon": horizon, "verdicts": verdicts, "warnings": warnings},
        inf_nan_mode="null",  # as pydantic's models (a horizon of 1e999 is infinite)
    )


@router.post(
    "/v1/flows:classify",
    response_model=RowVerdicts,
    summary="Classify feature rows",
    responses=problem_responses(413, 422, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": FlowRows.model_json_schema()}},
        }
    },
)
async def classify_flows(
    request: Request, settings: SettingsDep, model: ModelDep, metrics: MetricsDep
) -> Response:
    """One verdict per row. Each row must have the model's input columns: the
    ``feature_columns`` of ``GET /v1/model`` (numbers) plus ``service`` (text); a missing
    one answers 422 naming it. Other columns (a whole `shortflow featurize` row) are
    ignored and listed in ``warnings``. ``horizon`` says the rows describe the first
    HORIZON seconds of each flow."""
    raw = await request.body()
    answer, labels = await run_cpu(request, _classify_rows, model, raw, settings.max_rows)
    metrics.count_labels(labels, source="rows")
    return Response(answer, media_type="application/json")

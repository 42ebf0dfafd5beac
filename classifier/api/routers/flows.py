"""``POST /v1/flows:classify``: feature rows as JSON -> one verdict per row."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from fastapi import APIRouter, Request

from classifier.api.problems import ApiProblem, problem_responses
from classifier.api.routers import MetricsDep, ModelDep, SettingsDep, run_cpu
from classifier.api.schemas import FlowRows, RowVerdict, RowVerdicts
from classifier.features.schema import FEATURE_COLUMNS, snapshot_prefix
from classifier.model.artifact import LoadedModel
from classifier.model.predict import MODEL_INPUT_COLUMNS, classify_table

__all__ = ["router", "rows_table"]

router = APIRouter(tags=["flows"])

_EXPECTED = frozenset(MODEL_INPUT_COLUMNS)
_FEATURES = list(FEATURE_COLUMNS)


def _names(cols: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(sorted(cols)[:limit])
    return shown + (f" and {len(cols) - limit} more" if len(cols) > limit else "")


def _check_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The columns of ``rows`` the model does not read (ignored, sorted). Raises a 422
    naming the first row that lacks one the model needs."""
    extra: set[str] = set()
    for i, row in enumerate(rows):
        if row.keys() == _EXPECTED:
            continue
        missing = sorted(_EXPECTED - row.keys())
        if missing:
            raise ApiProblem(422, f"row {i}: missing columns {_names(missing)} (the model "
                             "takes the feature_columns of GET /v1/model plus 'service')",
                             title="wrong columns", kind="wrong-columns")
        extra.update(row.keys() - _EXPECTED)
    return sorted(extra)


def _bad_value(rows: Sequence[dict[str, Any]], column: str) -> ApiProblem:
    for i, row in enumerate(rows):
        v = row[column]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return ApiProblem(422, f"row {i}: column '{column}' must be a finite number, "
                              f"got {v!r}"[:300], title="wrong value", kind="wrong-value")
    return ApiProblem(422, f"column '{column}' must hold finite numbers")


def rows_table(rows: Sequence[dict[str, Any]], horizon: float | None
               ) -> tuple[pd.DataFrame, list[str]]:
    """A featurize-shaped table from request rows (numbers checked, ``category`` added),
    and the request's columns the model does not read (ignored).

    With ``horizon``, the feature columns get the snapshot prefix so that
    ``classify_table(..., horizon)`` reads them. Raises ApiProblem 422 naming the first
    bad row and column.
    """
    from classifier.model.services import category_for

    ignored = _check_columns(rows)
    flat = [row[c] for row in rows for c in _FEATURES]
    if not all(type(v) is float or type(v) is int for v in flat):
        bad = next(i for i, v in enumerate(flat) if type(v) is not float and type(v) is not int)
        raise _bad_value(rows, _FEATURES[bad % len(_FEATURES)])
    values = np.asarray(flat, dtype=np.float64).reshape(len(rows), len(_FEATURES))
    if not np.isfinite(values).all():
        bad_col = _FEATURES[int(np.argwhere(~np.isfinite(values))[0][1])]
        raise _bad_value(rows, bad_col)
    services = [row["service"] for row in rows]
    for i, s in enumerate(services):
        if not isinstance(s, str) or not s.strip():
            raise ApiProblem(422, f"row {i}: column 'service' must be a non-empty string, "
                             f"got {s!r}"[:300], title="wrong value", kind="wrong-value")
    names = [snapshot_prefix(horizon) + c for c in _FEATURES] if horizon else _FEATURES
    table = pd.DataFrame(values, columns=names)
    table["service"] = services
    table["category"] = [category_for(s) for s in services]
    table["name"] = None
    return table, ignored


def _classify_rows(model: LoadedModel, rows: list[dict[str, Any]],
                   horizon: float | None) -> tuple[list[RowVerdict], list[str]]:
    table, ignored = rows_table(rows, horizon)
    verdicts = classify_table(model, table, horizon=horizon)
    out = verdicts[["service", "label", "probability", "p_short_form", "decision_window",
                    "reason"]].to_dict(orient="records")
    warnings = [f"ignored {len(ignored)} column(s) the model does not read: "
                f"{_names(ignored)}"] if ignored else []
    return [RowVerdict(index=i, **r) for i, r in enumerate(out)], warnings


@router.post(
    "/v1/flows:classify",
    response_model=RowVerdicts,
    summary="Classify feature rows",
    responses=problem_responses(413, 422, 503),
)
async def classify_flows(body: FlowRows, request: Request, settings: SettingsDep,
                         model: ModelDep, metrics: MetricsDep) -> RowVerdicts:
    """One verdict per row. Each row must have the model's input columns: the
    ``feature_columns`` of ``GET /v1/model`` (numbers) plus ``service`` (text); a missing
    one answers 422 naming it. Other columns (a whole `shortflow featurize` row) are
    ignored and listed in ``warnings``. ``horizon`` says the rows describe the first
    HORIZON seconds of each flow."""
    if len(body.rows) > settings.max_rows:
        raise ApiProblem(413, f"{len(body.rows)} rows; at most {settings.max_rows} per "
                         "request (SHORTFLOW_MAX_ROWS)")
    verdicts: list[RowVerdict] = []
    warnings: list[str] = []
    if body.rows:
        verdicts, warnings = await run_cpu(request, _classify_rows, model, body.rows,
                                           body.horizon)
    metrics.count_labels((v.label for v in verdicts), source="rows")
    return RowVerdicts(model=model.info.name, horizon=body.horizon, verdicts=verdicts,
                       warnings=warnings)

"""Dataset manifests -> one labeled feature table, in the shape the model sees in production.

:func:`flow_table` featurizes every capture of the manifests (in parallel, cached per
capture sha256 and featurize configuration) and labels each flow from its manifest row
(``training.labels.flow_labels``); flows without a label are dropped.
:func:`expand_views` turns each labeled flow into one training row per decision view: the
whole flow (``horizon == "flow"``) and each early snapshot (``"3"``, ``"10"``, ...), always
through :func:`classifier.model.predict.model_inputs`, the function production uses.
:func:`build_table` does both.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from classifier.errors import CaptureError, DatasetError
from classifier.features.engine import featurize
from classifier.features.featurize import FeaturizeConfig, FeaturizeStats
from classifier.features.schema import SCHEMA_VERSION
from classifier.model.predict import MODEL_INPUT_COLUMNS, model_inputs
from classifier.names.services import DEFAULT_RULES_PATH
from classifier.parallel import ordered_map

__all__ = [
    "META_COLUMNS",
    "FLOW_HORIZON",
    "build_table",
    "flow_table",
    "expand_views",
    "load_rows",
    "horizon_name",
    "source_of",
    "default_cache_dir",
    "featurize_cached",
    "cache_key",
]

log = logging.getLogger(__name__)

FLOW_HORIZON = "flow"
META_COLUMNS = (
    "capture_id",
    "capture",
    "source",
    "app",
    "session_label",
    "label",
    "horizon",
    "flow_id",
    "proto",
    "client",
    "server",
    "server_port",
    "name",
    "category",
)
"""Columns of a training row besides ``MODEL_INPUT_COLUMNS`` (never model inputs)."""

_LAB = "lab"
_REAL = "real"
_HOUSEHOLD = "household"


def default_cache_dir() -> Path:
    """``$SHORTFLOW_CACHE/features`` or ``~/.cache/shortflow/features``."""
    base = os.environ.get("SHORTFLOW_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "shortflow"
    return root / "features"


def source_of(recorded: str) -> str:
    """``"lab"`` for captures the traffic lab generated, ``"household"`` for a household's
    own recordings (``shortflow recordings``: recorded ``household``), ``"real"`` for
    everything else (public captures, real devices, imported traces)."""
    how = recorded.strip().lower()
    if how in (_LAB, _HOUSEHOLD):
        return how
    return _REAL


def horizon_name(horizon: float | None) -> str:
    """``None`` -> ``"flow"``, ``3.0`` -> ``"3"``."""
    return FLOW_HORIZON if horizon is None else f"{horizon:g}"


def load_rows(manifests: Sequence[Path | str]) -> list[Any]:
    """All manifest rows, in order. Read each capture from ``row.local_path`` (the listed
    file, else its copy fetched by ``shortflow dataset fetch``). Raises
    :class:`DatasetError` for a bad manifest or a capture listed twice."""
    from training.manifest import load_manifest

    if not manifests:
        raise DatasetError("no dataset manifest given")
    rows: list[Any] = []
    seen: dict[str, Path] = {}
    for manifest in manifests:
        for row in load_manifest(Path(manifest)):
            if row.capture_id in seen:
                log.warning(
                    "%s: capture %s already listed in %s; using it once",
                    manifest,
                    row.path.name,
                    seen[row.capture_id],
                )
                continue
            seen[row.capture_id] = Path(manifest)
            rows.append(row)
    if not rows:
        raise DatasetError(f"no captures in {', '.join(str(m) for m in manifests)}")
    return rows


def cache_key(config: FeaturizeConfig, rules: Path = DEFAULT_RULES_PATH) -> str:
    """The cache key of a featurize configuration: the table's schema, the configuration
    and the service name rules (a table's ``service`` and ``category`` come from them)."""
    digest = hashlib.sha256(rules.read_bytes()).hexdigest()[:12]
    text = f"schema={SCHEMA_VERSION};rules={digest};{config!r}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def featurize_cached(
    path: Path,
    sha256: str,
    config: FeaturizeConfig,
    cache_dir: Path | None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Featurize one capture, reading/writing the parquet cache; with ``columns``, only
    those are kept (and cached under their own key), and the fast engine is used (same
    rows). Whole tables keep the reference engine: its rows come in the order flows end,
    which the cached tables and the models fitted on them were built with. Raises
    :class:`DatasetError` when the capture cannot be read."""
    key = cache_key(config) + (f"-{len(columns)}cols" if columns else "")
    cached = cache_dir / f"{sha256}-{key}.parquet" if cache_dir else None
    if cached is not None and cached.is_file():
        try:
            return pd.read_parquet(cached)
        except Exception as exc:  # a damaged cache entry: recompute it
            log.warning("%s: unreadable cache entry (%s); featurizing again", cached, exc)
    stats = FeaturizeStats()
    try:
        engine = "fast" if columns else "reference"
        table = featurize(path, config, engine=engine, skip_bad=True, stats=stats)
        if columns:
            table = table.loc[:, list(columns)]
    except CaptureError as exc:
        raise DatasetError(f"{path}: cannot featurize ({exc.reason})") from exc
    skipped = sum(stats.read.skipped.values())
    if skipped:
        log.info("%s: skipped %d unreadable records", path, skipped)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".tmp{os.getpid()}")
        table.to_parquet(tmp, index=False)
        tmp.replace(cached)
    return table


def _label_flows(flows: pd.DataFrame, row: Any) -> pd.DataFrame:
    from training.labels import flow_labels

    labels = flow_labels(flows, row) if len(flows) else pd.Series([], dtype=object)
    out = flows.copy()
    out["label"] = pd.Series(labels, index=flows.index, dtype=object)
    out = out[out["label"].notna()].copy()
    out["capture_id"] = row.capture_id
    out["capture"] = row.path.name
    out["source"] = source_of(row.recorded)
    out["app"] = row.app
    out["session_label"] = row.label
    return out.reset_index(drop=True)


def _run_parallel(
    args: list[tuple[Any, ...]], jobs: int, scheduler: str, progress: bool
) -> list[pd.DataFrame]:
    """``featurize_cached(*a)`` for every ``a`` in ``args``, results in order."""
    return list(
        ordered_map(
            featurize_cached,
            args,
            jobs=jobs,
            scheduler=scheduler,
            progress=progress,
            error=DatasetError,
        )
    )


def flow_table(
    manifests: Sequence[Path | str],
    config: FeaturizeConfig | None = None,
    *,
    jobs: int = 1,
    scheduler: str = "local",
    cache_dir: Path | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """One labeled row per flow of every capture in ``manifests`` (featurize columns plus
    ``label``, ``capture_id``, ``capture``, ``source``, ``app``, ``session_label``).

    ``scheduler``: ``"local"`` (joblib processes), ``"dask"`` (a local dask cluster of
    ``jobs`` workers) or a dask scheduler address (``tcp://host:8786``). ``cache_dir``:
    featurized captures are kept there as parquet, keyed by sha256 and configuration.

    Raises :class:`DatasetError` for bad manifests, unreadable captures or an unreachable
    scheduler.
    """
    config = config or FeaturizeConfig()
    if config.window is not None:
        raise DatasetError("training uses per-flow rows with snapshots; do not set window")
    rows = load_rows(manifests)
    args = [(row.local_path, row.sha256, config, cache_dir) for row in rows]
    tables = _run_parallel(args, jobs, scheduler, progress)
    labeled = [_label_flows(t, row) for t, row in zip(tables, rows, strict=True)]
    labeled = [t for t in labeled if len(t)]
    if not labeled:
        raise DatasetError("no labeled flows in the given manifests")
    table = pd.concat(labeled, ignore_index=True)
    log.info("%d labeled flows from %d captures", len(table), len(rows))
    return table


def expand_views(flows: pd.DataFrame, horizons: Iterable[float | None]) -> pd.DataFrame:
    """One training row per (flow, decision view): ``MODEL_INPUT_COLUMNS`` built by
    :func:`model_inputs` plus ``META_COLUMNS``. ``horizons``: ``None`` for the whole flow,
    seconds for an early snapshot (must be among the featurize snapshots).

    Raises :class:`classifier.errors.ModelError` when a snapshot's columns are missing.
    """
    parts: list[pd.DataFrame] = []
    meta = [c for c in META_COLUMNS if c not in ("horizon",)]
    for horizon in horizons:
        inputs = model_inputs(flows, horizon)
        for col in meta:
            inputs[col] = flows[col].to_numpy() if col in flows.columns else None
        inputs["horizon"] = horizon_name(horizon)
        parts.append(inputs)
    out = pd.concat(parts, ignore_index=True)
    return out[[*MODEL_INPUT_COLUMNS, *META_COLUMNS]]


def build_table(
    manifests: Sequence[Path | str],
    config: FeaturizeConfig | None = None,
    *,
    jobs: int = 1,
    scheduler: str = "local",
    cache_dir: Path | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Training rows of every capture in ``manifests``: :func:`flow_table` then
    :func:`expand_views` for the whole flow and each snapshot of ``config``.

    Raises :class:`DatasetError` (see :func:`flow_table`).
    """
    config = config or FeaturizeConfig()
    flows = flow_table(
        manifests, config, jobs=jobs, scheduler=scheduler, cache_dir=cache_dir, progress=progress
    )
    return expand_views(flows, [None, *config.snapshots])

"""Packets -> flows -> feature rows: the reference engine (plain Python), whose
:class:`Featurizer` live mode uses too. :mod:`classifier.features.engine` decides whether a
capture file goes through it or through the fast twin (:mod:`classifier.features.featurize_fast`);
``classifier.featurize`` is that module's :func:`~classifier.features.engine.featurize`."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from classifier.capture import BUILTIN, ReadStats, open_capture
from classifier.capture.packet import Packet
from classifier.features.schema import (
    FEATURE_COLUMNS,
    FLOW_COLUMNS,
    NAME_COLUMNS,
    WINDOW_COLUMNS,
    compute_features,
    snapshot_columns,
)
from classifier.features.view import FlowView
from classifier.flows import Flow, FlowConfig, FlowPlugin, FlowTable, TableStats
from classifier.names.plugin import NamesPlugin, flow_names
from classifier.names.services import category_for, service_for

if TYPE_CHECKING:
    # imported where frames are built: the fast engine writes tables without pandas
    import pandas as pd

__all__ = [
    "FeaturizeConfig",
    "FeaturizeStats",
    "Featurizer",
    "featurize",
    "featurize_packets",
    "iter_featurize",
    "concat_frames",
    "row_columns",
    "ROWS_PER_FRAME",
]

_ROW_CHUNK = 512
ROWS_PER_FRAME = 16384  # rows per streamed frame (<= ~60 MiB of features)


@dataclass(frozen=True, slots=True)
class FeaturizeConfig:
    """``snapshots``: early-verdict horizons in seconds (columns ``at3s__...``);
    ``window``: if set, one row per (flow, window of this many seconds) instead of one per
    flow."""

    flow: FlowConfig = field(default_factory=FlowConfig)
    snapshots: tuple[float, ...] = (3.0, 10.0)
    window: float | None = None

    def __post_init__(self) -> None:
        if any(s <= 0 for s in self.snapshots):
            raise ValueError("snapshot horizons must be positive")
        if self.window is not None and self.window <= 0:
            raise ValueError("window length must be positive")


@dataclass(slots=True)
class FeaturizeStats:
    """What one featurize run read and produced."""

    read: ReadStats = field(default_factory=ReadStats)
    table: TableStats = field(default_factory=TableStats)
    rows: int = 0
    seconds: float = 0.0


def row_columns(config: FeaturizeConfig) -> list[str]:
    """The columns of the table that ``config`` produces, in order."""
    cols = [*FLOW_COLUMNS, *NAME_COLUMNS]
    if config.window is not None:
        return [*cols, *WINDOW_COLUMNS, *FEATURE_COLUMNS]
    cols += FEATURE_COLUMNS
    for horizon in config.snapshots:
        cols += snapshot_columns(horizon)
    return cols


class Featurizer:
    """Streams packets through a flow table and turns every ended flow into rows."""

    def __init__(
        self,
        config: FeaturizeConfig | None = None,
        capture: str = "",
        plugins: Sequence[FlowPlugin] = (),
    ) -> None:
        self.config = config or FeaturizeConfig()
        self.capture = capture
        self.names = NamesPlugin()
        self.table = FlowTable(self.config.flow, plugins=[self.names, *plugins])

    def add(self, pkt: Packet) -> list[dict[str, Any]]:
        """Add one packet; return the rows of flows that ended meanwhile."""
        self.table.add(pkt)
        return self._drain()

    def finish(self) -> list[dict[str, Any]]:
        """End all flows (end of input) and return their rows."""
        self.table.flush()
        return self._drain()

    def flow_meta(self, flow: Flow) -> dict[str, Any]:
        """Identity and name columns of a flow."""
        key = flow.key
        meta: dict[str, Any] = {
            "capture": self.capture,
            "flow_id": flow.flow_id,
            "proto": key.proto,
            "client": key.client,
            "client_port": key.client_port,
            "server": key.server,
            "server_port": key.server_port,
            "first_ts": flow.first_ts,
            "last_ts": flow.last_ts,
            "end_reason": flow.end_reason,
            "packets": flow.packets,
            "wire_bytes": flow.wire_bytes,
        }
        meta.update(flow_names(flow, self.names.cache))
        service = service_for(meta["name"])
        meta["service"] = service
        meta["category"] = category_for(service)
        return meta

    def rows(self, flow: Flow) -> list[dict[str, Any]]:
        """The rows of one flow: one with snapshots, or one per non-empty window."""
        meta = self.flow_meta(flow)
        window = self.config.window
        if window is None:
            row = dict(meta)
            row.update(zip(FEATURE_COLUMNS, compute_features(FlowView.of(flow)), strict=True))
            for horizon in self.config.snapshots:
                values = compute_features(FlowView.of(flow, 0.0, horizon))
                row.update(zip(snapshot_columns(horizon), values, strict=True))
            return [row]
        out = []
        n_windows = max(1, math.ceil((flow.last_ts - flow.first_ts) / window + 1e-12))
        for k in _windows_with_packets(flow, window, n_windows):
            view = FlowView.of(flow, k * window, (k + 1) * window)
            if len(view) == 0:
                continue
            row = dict(meta, window_start=k * window, window_end=(k + 1) * window)
            row.update(zip(FEATURE_COLUMNS, compute_features(view), strict=True))
            out.append(row)
        return out

    def _drain(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for flow in self.table.pop_ended():
            out.extend(self.rows(flow))
        return out


def _windows_with_packets(flow: Flow, window: float, n_windows: int) -> list[int]:
    """The window indices ``k < n_windows`` that may hold a packet, ascending: a packet at
    ``t`` in window ``k`` (``k * window <= t < (k + 1) * window``) has ``t / window``
    within one of ``k`` even after rounding. Walking every ``k`` instead costs a view per
    empty window: billions for a flow whose times jump by years in a hostile capture."""
    t = np.frombuffer(flow.ts, dtype=np.float64) - flow.first_ts
    near = np.unique(np.floor(t[(t >= 0.0) & (t < (n_windows + 1) * window)] / window))
    return sorted(
        {k for g in near.tolist() for k in (int(g) - 1, int(g), int(g) + 1) if 0 <= k < n_windows}
    )


def featurize_packets(
    packets: Iterable[Packet], config: FeaturizeConfig | None = None, capture: str = ""
) -> Iterator[dict[str, Any]]:
    """Rows for every flow in ``packets`` (in the order flows end)."""
    featurizer = Featurizer(config, capture)
    for pkt in packets:
        yield from featurizer.add(pkt)
    yield from featurizer.finish()


def iter_featurize(
    path: str | Path,
    config: FeaturizeConfig | None = None,
    *,
    backend: str = BUILTIN,
    skip_bad: bool = False,
    stats: FeaturizeStats | None = None,
    progress: bool = False,
    rows_per_frame: int = ROWS_PER_FRAME,
) -> Iterator[pd.DataFrame]:
    """The rows of :func:`featurize` as a stream of frames of about ``rows_per_frame`` rows
    (flows in the order they end), so a caller that writes them out holds only one frame
    and the active flows, never the whole table. ``stats`` is complete once the stream is.

    Raises :class:`classifier.errors.CaptureError` when the file cannot be read (possibly
    after some frames: a damaged record in the middle of the file).
    """
    import pandas as pd
    from tqdm import tqdm

    config = config or FeaturizeConfig()
    stats = stats if stats is not None else FeaturizeStats()
    started = time.perf_counter()
    featurizer = Featurizer(config, capture=Path(path).name)
    columns = row_columns(config)
    # Rows as dicts cost ~40 KiB each; turn them into small frames as they come, so memory
    # follows one output frame (a few KiB a row), not dicts for every flow of the file.
    chunks: list[pd.DataFrame] = []
    held = 0
    rows: list[dict[str, Any]] = []
    small = min(_ROW_CHUNK, rows_per_frame)

    def spill(force: bool = False) -> Iterator[pd.DataFrame]:
        nonlocal rows, held, chunks
        if rows and (force or len(rows) >= small):
            chunks.append(pd.DataFrame(rows, columns=columns))
            stats.rows += len(rows)
            held += len(rows)
            rows = []
        if chunks and (force or held >= rows_per_frame):
            yield chunks[0] if len(chunks) == 1 else pd.concat(chunks, ignore_index=True)
            chunks, held = [], 0

    packets = open_capture(path, backend=backend, skip_bad=skip_bad, stats=stats.read)
    for pkt in tqdm(
        packets,
        desc=Path(path).name,
        unit=" pkt",
        disable=not progress,
        mininterval=0.5,
        leave=False,
    ):
        rows.extend(featurizer.add(pkt))
        yield from spill()
    featurizer.table.flush()  # as Featurizer.finish, but flow by flow into chunks
    for flow in featurizer.table.pop_ended():
        rows.extend(featurizer.rows(flow))
        yield from spill()
    stats.table = featurizer.table.stats
    stats.seconds = time.perf_counter() - started
    yield from spill(force=True)


def featurize(
    path: str | Path,
    config: FeaturizeConfig | None = None,
    *,
    backend: str = BUILTIN,
    skip_bad: bool = False,
    stats: FeaturizeStats | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """One row per flow (or per flow and window) of the capture at ``path``.

    ``progress`` shows a progress bar (packets) on stderr.

    Raises :class:`classifier.errors.CaptureError` when the file cannot be read.
    """
    config = config or FeaturizeConfig()
    frames = list(
        iter_featurize(
            path, config, backend=backend, skip_bad=skip_bad, stats=stats, progress=progress
        )
    )
    return concat_frames(frames, config)


def concat_frames(frames: list[pd.DataFrame], config: FeaturizeConfig) -> pd.DataFrame:
    """One table from a stream's frames (an empty table with the right columns if none)."""
    import pandas as pd

    if len(frames) <= 1:
        return frames[0] if frames else pd.DataFrame([], columns=row_columns(config))
    # a frame whose text column is all empty has it as object: infer the joined column
    # again, so the table's dtypes do not depend on where the frames were cut
    return pd.concat(frames, ignore_index=True).infer_objects()

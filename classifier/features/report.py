"""Featurize several captures, write tables, and describe the result for people."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from classifier.capture.reader import BUILTIN
from classifier.errors import CaptureError, ShortflowError
from classifier.features.column_batch import as_frame
from classifier.features.engine import FAST, iter_tables
from classifier.features.featurize import (
    FeaturizeConfig,
    FeaturizeStats,
    concat_frames,
    row_columns,
)
from classifier.features.table_sink import TableSink
from classifier.parallel import ordered_map

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "capture_files",
    "featurize_files",
    "featurize_to",
    "iter_tables",
    "flows_text",
    "summary_line",
    "CAPTURE_SUFFIXES",
]

log = logging.getLogger(__name__)

_PROTO = {6: "tcp", 17: "udp"}
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".pcap.gz", ".pcapng.gz")


def summary_line(path: Path, stats: FeaturizeStats) -> str:
    """One line: packets, flows, rows, what was skipped and why, seconds."""
    read, table = stats.read, stats.table
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(read.skipped.items())) or "none"
    evicted = f", {table.evicted} evicted (flow cap)" if table.evicted else ""
    if table.packet_capped:
        evicted += f", {table.packet_capped} cut at the packet cap"
    cut = f"; capture cut short at byte {read.truncated_at}" if read.truncated_at else ""
    return (
        f"{path}: {read.packets} packets, {table.flows} flows{evicted}, {stats.rows} rows;"
        f" skipped: {skipped}{cut}; {stats.seconds:.2f} s"
    )


def capture_files(paths: Sequence[Path]) -> list[Path]:
    """``paths`` with every directory replaced by the capture files under it (recursively,
    sorted by path). Raises :class:`ShortflowError` for a directory without captures."""
    out: list[Path] = []
    for path in paths:
        if not path.is_dir():
            out.append(path)
            continue
        found = sorted(
            f for f in path.rglob("*") if f.is_file() and f.name.lower().endswith(CAPTURE_SUFFIXES)
        )
        if not found:
            raise ShortflowError(
                f"{path}: no capture files in this directory (looked for "
                f"{', '.join(CAPTURE_SUFFIXES)})"
            )
        out.extend(found)
    return out


def featurize_files(
    paths: Sequence[Path],
    config: FeaturizeConfig,
    *,
    backend: str = BUILTIN,
    skip_bad: bool = False,
    progress: bool = False,
    engine: str = FAST,
) -> tuple[pd.DataFrame, str]:
    """Featurize every capture into one table held in memory; return it and a per-file
    summary. To write a table of any size, use :func:`featurize_to`. ``skip_bad``: also
    skip files that cannot be read as captures, as :func:`featurize_to` does. ``engine``
    and ``backend``: see :func:`classifier.features.engine.choose_engine`."""
    tables: list[pd.DataFrame] = []
    lines: list[str] = []
    failed = _Failed(len(paths))
    for path in paths:
        stats = FeaturizeStats()
        frames: list[pd.DataFrame] = []
        try:
            for t in iter_tables(
                path,
                config,
                stats=stats,
                engine=engine,
                backend=backend,
                skip_bad=skip_bad,
                progress=progress,
            ):
                frames.append(as_frame(t))
        except CaptureError as exc:
            if not skip_bad:
                raise
            failed.add(str(exc), rows=sum(len(f) for f in frames))
            if not frames:
                continue
        tables.append(concat_frames(frames, config))
        lines.append(summary_line(path, stats))
    failed.check()
    return concat_frames(tables, config), "\n".join(lines)


class _Failed:
    """Files that could not be read (``skip_bad``): each is logged as one warning line;
    :meth:`check` raises when no file was read at all."""

    def __init__(self, files: int) -> None:
        self.files = files
        self.unread: list[str] = []

    def add(self, error: str, rows: int) -> None:
        if rows:  # cut off part way: what came before stays in the table
            log.warning("stopped reading %s; its %d rows before that are kept", error, rows)
        else:
            if self.files > 1:  # a single file's reason is the error itself
                log.warning("skipped %s", error)
            self.unread.append(error)

    def check(self) -> None:
        if self.unread and len(self.unread) == self.files:
            raise ShortflowError(
                self.unread[0]
                if self.files == 1
                else f"none of the {self.files} files could be read as a capture"
            )


def featurize_to(
    paths: Sequence[Path],
    config: FeaturizeConfig,
    output: Path,
    *,
    engine: str = FAST,
    backend: str = BUILTIN,
    skip_bad: bool = False,
    progress: bool = False,
    jobs: int = 1,
    scheduler: str = "local",
) -> tuple[int, int, str]:
    """Featurize every capture into the table file ``output`` (.parquet or .csv), frame by
    frame. Return (rows, columns, per-file summary).

    One worker (``jobs <= 1``, local scheduler): memory holds one frame and the active
    flows, whatever the sizes of the files. More workers (``jobs`` processes, or a Dask
    cluster, see :func:`classifier.parallel.ordered_map`): one file per task, each worker
    streams its file's rows into a part file in a hidden folder beside ``output`` (so a
    running cluster's workers must see that folder, as they see the captures), and the
    parts are appended to ``output`` in the order of ``paths``, a row group at a time;
    same rows as one worker.

    Raises :class:`ShortflowError` (the output file is then left as it was).
    """
    columns = row_columns(config)
    lines: list[str] = []
    failed = _Failed(len(paths))
    with TableSink(output, columns) as sink:
        if jobs <= 1 and scheduler == "local":
            for path in paths:
                before = sink.rows
                line, error = _stream(path, config, sink, engine, backend, skip_bad, progress)
                if error is not None:
                    failed.add(error, rows=sink.rows - before)
                if line is not None:
                    lines.append(line)
            failed.check()
            return sink.rows, len(columns), "\n".join(lines)
        parts = output.with_name(f".{output.name}.{os.getpid()}.parts")
        try:
            parts.mkdir(parents=True, exist_ok=True)
            tasks = [
                (path, config, engine, backend, skip_bad, parts / f"{i:06d}{output.suffix}")
                for i, path in enumerate(paths)
            ]
            for part, rows, line, error in ordered_map(
                _featurize_part, tasks, jobs=jobs, scheduler=scheduler, progress=progress
            ):
                if error is not None:
                    failed.add(error, rows=rows)
                if rows:
                    sink.append_file(part, rows)
                part.unlink(missing_ok=True)
                if line is not None:
                    lines.append(line)
            failed.check()
        except OSError as exc:
            raise ShortflowError(
                f"{parts}: cannot use this folder for the workers' parts ({exc.strerror or exc})"
            ) from exc
        finally:
            shutil.rmtree(parts, ignore_errors=True)
    return sink.rows, len(columns), "\n".join(lines)


def _featurize_part(
    path: Path, config: FeaturizeConfig, engine: str, backend: str, skip_bad: bool, part: Path
) -> tuple[Path, int, str | None, str | None]:
    """A worker's task: stream one capture's rows into the table file ``part``; return it,
    its row count, the capture's summary line and the reason it could not be read (as
    :func:`_stream`; text, as exceptions with their own arguments do not travel back)."""
    with TableSink(part, row_columns(config)) as sink:
        line, error = _stream(path, config, sink, engine, backend, skip_bad, progress=False)
    return part, sink.rows, line, error


def _stream(
    path: Path,
    config: FeaturizeConfig,
    sink: TableSink,
    engine: str,
    backend: str,
    skip_bad: bool,
    progress: bool,
) -> tuple[str | None, str | None]:
    """Append the rows of the capture ``path`` to ``sink``; return its summary line (None
    when nothing of it was read) and, with ``skip_bad``, why it could not be read (the
    :class:`CaptureError` is raised without)."""
    stats = FeaturizeStats()
    before = sink.rows
    try:
        for frame in iter_tables(
            path,
            config,
            stats=stats,
            engine=engine,
            backend=backend,
            skip_bad=skip_bad,
            progress=progress,
        ):
            sink.write(frame)
    except CaptureError as exc:
        if not skip_bad:
            raise
        return (summary_line(path, stats) if sink.rows > before else None), str(exc)
    return summary_line(path, stats), None


def flows_text(table: pd.DataFrame, limit: int = 50) -> str:
    """A readable table: client, server, service, SNI, packets, bytes, duration; the
    biggest flows first. A table of windows (``--windows``) has a ``window`` column
    (seconds from the flow's start) and each flow's windows in time order."""
    import pandas as pd

    if table.empty:
        return "(no TCP/UDP flows)"
    windows = "window_start" in table.columns
    view = pd.DataFrame(
        {
            "proto": table["proto"].map(lambda p: _PROTO.get(int(p), str(p))),
            "client": table["client"] + ":" + table["client_port"].astype(str),
            "server": table["server"] + ":" + table["server_port"].astype(str),
            **(
                {
                    "window": [
                        f"{a:g}-{b:g} s"
                        for a, b in zip(table["window_start"], table["window_end"], strict=True)
                    ]
                }
                if windows
                else {}
            ),
            "service": table["service"],
            "name": table["name"].fillna("-"),
            "packets": (table["pkts_up"] + table["pkts_down"]).astype(int),
            "bytes": (table["bytes_up"] + table["bytes_down"]).astype(int),
            "seconds": table["duration"].round(2),
        }
    )
    if windows:
        order = view.assign(
            flow=table["flow_id"],
            start=table["window_start"],
            total=view.groupby(table["flow_id"])["bytes"].transform("sum"),
        )
        view = view.loc[
            order.sort_values(["total", "flow", "start"], ascending=[False, True, True]).index
        ]
    else:
        view = view.sort_values("bytes", ascending=False)
    text = view.head(limit).to_string(index=False)
    if len(view) > limit:
        what = "rows" if windows else "flows"
        text += f"\n... {len(view) - limit} more {what} (use --limit)"
    return text

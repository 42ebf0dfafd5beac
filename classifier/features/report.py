"""Featurize several captures, write tables, and describe the result for people."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from classifier.errors import ShortflowError
from classifier.features.featurize import FeaturizeConfig, FeaturizeStats, featurize

__all__ = ["featurize_files", "write_table", "flows_text", "summary_line"]

_PROTO = {6: "tcp", 17: "udp"}


def summary_line(path: Path, stats: FeaturizeStats) -> str:
    """One line: packets, flows, rows, what was skipped and why, seconds."""
    read, table = stats.read, stats.table
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(read.skipped.items())) or "none"
    evicted = f", {table.evicted} evicted (flow cap)" if table.evicted else ""
    if table.packet_capped:
        evicted += f", {table.packet_capped} cut at the packet cap"
    cut = f"; capture cut short at byte {read.truncated_at}" if read.truncated_at else ""
    return (f"{path}: {read.packets} packets, {table.flows} flows{evicted}, {stats.rows} rows;"
            f" skipped: {skipped}{cut}; {stats.seconds:.2f} s")


def featurize_files(paths: Sequence[Path], config: FeaturizeConfig, *, backend: str = "dpkt",
                    skip_bad: bool = False, progress: bool = False,
                    engine: str = "reference") -> tuple[pd.DataFrame, str]:
    """Featurize every capture; return the concatenated table and a per-file summary.

    ``engine="fast"`` uses the compiled path (same table, rows in flow_id order; the first
    run compiles it, which takes a minute); it reads only with the native decoder.
    """
    if engine == "fast" and backend != "dpkt":
        raise ShortflowError("--engine fast reads captures itself; drop --backend")
    tables: list[pd.DataFrame] = []
    lines: list[str] = []
    for path in paths:
        stats = FeaturizeStats()
        if engine == "fast":
            from classifier.features.fast import featurize_fast

            tables.append(featurize_fast(path, config, skip_bad=skip_bad, stats=stats))
        else:
            tables.append(featurize(path, config, backend=backend, skip_bad=skip_bad,
                                    stats=stats, progress=progress))
        lines.append(summary_line(path, stats))
    table = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]
    return table, "\n".join(lines)


def write_table(table: pd.DataFrame, output: Path) -> None:
    """Write ``table`` as Parquet or CSV, chosen by the file name's suffix.

    Raises :class:`ShortflowError` for another suffix or an unwritable path.
    """
    suffix = output.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise ShortflowError(f"{output}: output must end in .parquet or .csv")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".parquet":
            table.to_parquet(output, index=False)
        else:
            table.to_csv(output, index=False)
    except OSError as exc:
        raise ShortflowError(f"{output}: cannot write ({exc.strerror})") from exc


def flows_text(table: pd.DataFrame, limit: int = 50) -> str:
    """A readable table: client, server, service, SNI, packets, bytes, duration."""
    if table.empty:
        return "(no TCP/UDP flows)"
    view = pd.DataFrame({
        "proto": table["proto"].map(lambda p: _PROTO.get(int(p), str(p))),
        "client": table["client"] + ":" + table["client_port"].astype(str),
        "server": table["server"] + ":" + table["server_port"].astype(str),
        "service": table["service"],
        "name": table["name"].fillna("-"),
        "packets": (table["pkts_up"] + table["pkts_down"]).astype(int),
        "bytes": (table["bytes_up"] + table["bytes_down"]).astype(int),
        "seconds": table["duration"].round(2),
    })
    view = view.sort_values("bytes", ascending=False)
    text = view.head(limit).to_string(index=False)
    if len(view) > limit:
        text += f"\n... {len(view) - limit} more flows (use --limit)"
    return text

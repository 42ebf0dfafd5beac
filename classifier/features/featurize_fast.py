"""The fast ``featurize``: compiled read, flow assignment and features; same table as the
reference :func:`classifier.features.featurize.featurize`.

Pipeline per chunk of the capture (a fixed-size read buffer, so memory follows the active
flows, not the file size):

1. :func:`classifier.capture.reader_fast.iter_chunks` decodes records into column arrays;
2. :class:`classifier.flows.table_fast.FlowAssigner` gives every packet its flow id with the
   flow table's exact rules and reports the flows that ended (and at which packet);
3. the names stage (:class:`classifier.names.plugin_fast.NameStage`) reads the few
   packets that may carry names: a flow's first 24 entries with payload (TLS
   ClientHello / QUIC Initial) and DNS answers (port 53), a compiled scanner for whole
   ClientHellos, the reference's parsers for the rest, DNS answers and name lookups
   replayed in capture order;
4. entries of active flows wait in a pool; ended flows are cut out of it and
   :mod:`classifier.features.groups_fast` computes all their rows in one compiled pass.

Rows come out sorted by ``flow_id`` (then ``window_start``), which is the reference's
order up to flows that end at the same time (the reference emits those in hash order).
Sort the reference by ``flow_id`` (stable) to compare. Columns, dtypes and values match.

Files the compiled reader does not handle (gzip, damaged or cut-short records, exotic
timestamp resolutions, see :mod:`classifier.capture.reader_fast`) are featurized by the
reference path instead; ``skip_bad`` only matters there. :func:`iter_featurize_fast`
streams the rows in frames, flows in the order they end; :func:`featurize_fast` sorts.
:func:`iter_columns_fast` streams the same rows as column batches, for writers that do
not need pandas (importing it is a noticeable share of a short ``shortflow featurize``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from classifier.capture import ReadStats, reader_fast
from classifier.capture.decode_fast import (
    C_DPORT,
    C_DST_HI,
    C_DST_LO,
    C_FLAGS,
    C_IPLEN,
    C_PLEN,
    C_PROTO,
    C_SPORT,
    C_SRC_HI,
    C_SRC_LO,
    C_VER,
    C_WIRE,
)
from classifier.compiled import jit
from classifier.features import groups_fast
from classifier.features.column_batch import Column, ColumnBatch, as_frame
from classifier.features.featurize import (
    ROWS_PER_FRAME,
    FeaturizeConfig,
    FeaturizeStats,
    concat_frames,
    iter_featurize,
    row_columns,
)
from classifier.features.schema import FLOW_COLUMNS, NAME_COLUMNS, WINDOW_COLUMNS
from classifier.flows.table_fast import END_REASONS, EndedFlows, FlowAssigner
from classifier.names.plugin_fast import Addresses, NameStage
from classifier.parallel import ordered_map

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["featurize_fast", "featurize_many", "iter_columns_fast", "iter_featurize_fast"]

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]

_ROWS = (
    C_VER,
    C_SRC_HI,
    C_SRC_LO,
    C_DST_HI,
    C_DST_LO,
    C_PROTO,
    C_SPORT,
    C_DPORT,
    C_FLAGS,
    C_PLEN,
    C_WIRE,
)
_BUFFER_BYTES = 16 * 1024 * 1024  # read buffer (file bytes held at once)
_CHUNK_PACKETS = reader_fast.CHUNK_PACKETS  # packets decoded per compiled call
_WHOLE = 1 << 62  # rows_per_frame for one frame holding the whole table
_META = (*FLOW_COLUMNS, *NAME_COLUMNS)


# ---------------------------------------------------------------------------------------
# compiled helpers


@jit(
    "Tuple((float64[::1], int64[::1], int64[::1], int64[::1], int8[::1], "
    "int64[::1]))(float64[::1], int64[::1], int64[::1], int64[::1], int8[::1], "
    "int64[::1], int64[::1], int64, int64)",
    cache=True,
    nogil=True,
)
def _expand(
    ts: F64,
    ip_len: I64,
    plen: I64,
    flags: I64,
    dirn: I8,
    uid: I64,
    entries: I64,
    total: int,
    mss: int,
) -> tuple[F64, I64, I64, I64, I8, I64]:
    """Resegment packets whose payload exceeds ``mss`` into MSS-sized entries, as
    :meth:`FlowTable._append` does."""
    o_ts = np.empty(total, np.float64)
    o_size = np.empty(total, np.int64)
    o_pay = np.empty(total, np.int64)
    o_flags = np.empty(total, np.int64)
    o_dir = np.empty(total, np.int8)
    o_uid = np.empty(total, np.int64)
    k = 0
    for i in range(ts.shape[0]):
        if entries[i] == 1:
            o_ts[k], o_size[k], o_pay[k] = ts[i], ip_len[i], plen[i]
            o_flags[k], o_dir[k], o_uid[k] = flags[i], dirn[i], uid[i]
            k += 1
            continue
        header = max(ip_len[i] - plen[i], 0)
        remaining = plen[i]
        f = flags[i]
        while remaining > 0:
            chunk = min(mss, remaining)
            o_ts[k], o_size[k], o_pay[k] = ts[i], header + chunk, chunk
            o_flags[k], o_dir[k], o_uid[k] = f, dirn[i], uid[i]
            f &= ~(0x02 | 0x01 | 0x04)
            remaining -= chunk
            k += 1
    return o_ts, o_size, o_pay, o_flags, o_dir, o_uid


@jit("none(int64[::1], int64[::1], int64, int64[::1])", cache=True, nogil=True)
def _count_ended(uid: I64, rank: I64, base: int, counts: I64) -> None:
    """Add to ``counts[r + 1]`` the entries of ``uid`` whose flow has rank ``r >= 0``
    (``rank[uid - base]``; flows outside ``rank`` have not ended)."""
    span = rank.shape[0]
    for i in range(uid.shape[0]):
        r = uid[i] - base
        if 0 <= r < span and rank[r] >= 0:
            counts[rank[r] + 1] += 1


@jit(
    "int64(int64[::1], float64[::1], int64[::1], int64[::1], int64[::1], int8[::1], "
    "int64[::1], int64, int64[::1], float64[::1], int64[::1], int64[::1], int64[::1], "
    "int8[::1])",
    cache=True,
    nogil=True,
)
def _move_ended(
    uid: I64,
    ts: F64,
    size: I64,
    pay: I64,
    flags: I64,
    dirn: I8,
    rank: I64,
    base: int,
    pos: I64,
    o_ts: F64,
    o_size: I64,
    o_pay: I64,
    o_flags: I64,
    o_dir: I8,
) -> int:
    """Move the entries of ended flows out of one block, each to ``pos[rank]`` (then one
    further), in arrival order; compact the other entries to the block's front. Returns
    how many it kept."""
    span = rank.shape[0]
    w = 0
    for i in range(uid.shape[0]):
        r = uid[i] - base
        if 0 <= r < span and rank[r] >= 0:
            p = pos[rank[r]]
            o_ts[p], o_size[p], o_pay[p], o_flags[p], o_dir[p] = (
                ts[i],
                size[i],
                pay[i],
                flags[i],
                dirn[i],
            )
            pos[rank[r]] = p + 1
        else:
            if w != i:
                uid[w], ts[w], size[w], pay[w], flags[w], dirn[w] = (
                    uid[i],
                    ts[i],
                    size[i],
                    pay[i],
                    flags[i],
                    dirn[i],
                )
            w += 1
    return w


_Entries = tuple[I64, F64, I64, I64, I64, I8]  # uid, ts, size, pay, flags, dirn


class _Pool:
    """Entries (one per packet or resegmented piece) of flows still active.

    Each chunk's entries are copied into a block of their own, in arrival order. Cutting
    ended flows out walks the blocks in place (a counting pass, then a move pass that also
    compacts what stays), so the entries of long flows are not copied again at every cut;
    neighbouring blocks that have shrunk are merged so that the blocks stay few."""

    def __init__(self, block: int = 1 << 17) -> None:
        self.blocks: list[_Entries] = []
        self.block = block  # merge neighbours while together they hold fewer entries

    def append(self, uid: I64, ts: F64, size: I64, pay: I64, flags: I64, dirn: I8) -> None:
        if len(uid):
            self.blocks.append(
                (uid.copy(), ts.copy(), size.copy(), pay.copy(), flags.copy(), dirn.copy())
            )

    def cut(self, ended_uid: I64) -> tuple[I64, F64, I64, I64, I64, I8]:
        """Remove and return the entries of the flows ``ended_uid`` (grouped in that
        order, each in arrival order): (offsets, ts, size, pay, flags, dirn)."""
        base = int(ended_uid.min())
        rank = np.full(int(ended_uid.max()) - base + 1, -1, np.int64)
        rank[ended_uid - base] = np.arange(len(ended_uid))
        offsets = np.zeros(len(ended_uid) + 1, np.int64)
        for block in self.blocks:
            _count_ended(block[0], rank, base, offsets)
        np.cumsum(offsets, out=offsets)
        total = int(offsets[-1])
        out = (
            np.empty(total, np.float64),
            np.empty(total, np.int64),
            np.empty(total, np.int64),
            np.empty(total, np.int64),
            np.empty(total, np.int8),
        )
        pos = offsets[:-1].copy()
        kept: list[_Entries] = []
        for block in self.blocks:
            n = int(_move_ended(*block, rank, base, pos, *out))
            if n:  # a block that lost most of its entries is copied, freeing the rest
                few = n < len(block[0]) // 2
                kept.append(tuple(a[:n].copy() if few else a[:n] for a in block))  # type: ignore[arg-type]
        self.blocks = self._merged(kept)
        return (offsets, *out)

    def _merged(self, blocks: list[_Entries]) -> list[_Entries]:
        """``blocks`` with runs of neighbours that together hold fewer than ``block``
        entries joined into one (copies only small blocks; frees what they outgrew)."""
        merged: list[_Entries] = []
        run: list[_Entries] = []
        held = 0
        for block in [*blocks, None]:
            if block is not None and held + len(block[0]) < self.block:
                run.append(block)
                held += len(block[0])
                continue
            if len(run) == 1:
                merged.append(run[0])
            elif run:
                merged.append(tuple(np.concatenate(cols) for cols in zip(*run, strict=True)))  # type: ignore[arg-type]
            run, held = [], 0
            if block is not None:
                if len(block[0]) < self.block:
                    run, held = [block], len(block[0])
                else:
                    merged.append(block)
        return merged


# ---------------------------------------------------------------------------------------
# one run over one file


@dataclass(slots=True)
class _Batch:
    """What one set of ended flows contributes to the table."""

    ints: I64  # EndedFlows.ints of the flows
    times: F64
    text: dict[str, list[Any]]  # sni, alpn, dns_name, name, name_source, service, category
    features: F64  # one row per flow, or per (flow, window)
    views: I64 | None = None  # window mode: the flow (index in this batch) of each row
    ks: I64 | None = None  # window mode: the window index of each row


@dataclass(slots=True)
class _Table:
    """Table assembly: the feature rows of ended flows, with their identity and name
    columns, handed out as column batches."""

    config: FeaturizeConfig
    capture: str
    addresses: Addresses
    batches: list[_Batch] = field(default_factory=list)
    sort_rows: bool = False  # rows sorted by flow id (featurize_fast: the whole table)

    def add(self, batch: _Batch) -> None:
        self.batches.append(batch)

    def pending_rows(self) -> int:
        """Rows computed and not yet taken by :meth:`take_columns`."""
        return sum(len(b.features) for b in self.batches)

    def take_columns(self) -> ColumnBatch:
        """The rows computed so far, columns as the reference's; they are handed over (the
        next batch starts empty). Rows are sorted by flow id (then window) when
        ``sort_rows`` is set (one scatter copy); otherwise flows come in the order they
        ended, a flow's windows in order, and the features of one batch are not copied."""
        columns = row_columns(self.config)
        feature_names = [c for c in columns if c not in _META and c not in WINDOW_COLUMNS]
        batches = [b for b in self.batches if len(b.features)]
        self.batches.clear()
        if not batches:
            return ColumnBatch.empty(columns, feature_names)
        # per-row flow fields (a flow repeats once per window in window mode)
        ints = np.concatenate(
            [b.ints if b.views is None else b.ints[:, b.views] for b in batches], axis=1
        )
        times = np.concatenate(
            [b.times if b.views is None else b.times[:, b.views] for b in batches], axis=1
        )
        window = self.config.window
        ks = (
            np.concatenate([b.ks for b in batches if b.ks is not None])
            if window is not None
            else None
        )
        order = None
        if self.sort_rows:
            order = (
                np.argsort(ints[_I_UID], kind="stable")
                if ks is None
                else np.lexsort((ks, ints[_I_UID]))
            )
            ints, times = ints[:, order], times[:, order]
            ks = None if ks is None else ks[order]
        features = [b.features for b in batches]
        for b in batches:
            b.features = _EMPTY  # so _stack can free each batch once it is copied
        values = _stack(features, order)
        text: dict[str, list[Any]] = {k: [] for k in NAME_COLUMNS}
        for b in batches:
            views = None if b.views is None else b.views.tolist()
            for k in NAME_COLUMNS:
                text[k] += b.text[k] if views is None else [b.text[k][j] for j in views]
        if order is not None:
            pick = itemgetter(*order.tolist())
            text = {k: list(pick(v)) if len(order) > 1 else [v[order[0]]] for k, v in text.items()}
        n = ints.shape[1]
        version = ints[_I_VER].tolist()
        chi, clo = ints[_I_CHI].tolist(), ints[_I_CLO].tolist()
        shi, slo = ints[_I_SHI].tolist(), ints[_I_SLO].tolist()
        reasons = np.asarray(END_REASONS, dtype=object)[ints[_I_REASON]].tolist()
        head: dict[str, Column] = {
            "capture": [self.capture] * n,
            "flow_id": ints[_I_UID],
            "proto": ints[_I_PROTO],
            "client": [
                self.addresses.text(v, h, lo) for v, h, lo in zip(version, chi, clo, strict=True)
            ],
            "client_port": ints[_I_CPORT],
            "server": [
                self.addresses.text(v, h, lo) for v, h, lo in zip(version, shi, slo, strict=True)
            ],
            "server_port": ints[_I_SPORT],
            "first_ts": times[0],
            "last_ts": times[1],
            "end_reason": reasons,
            "packets": ints[_I_NPK],
            "wire_bytes": ints[_I_WIRE],
            **{k: text[k] for k in NAME_COLUMNS},
        }
        if window is not None and ks is not None:
            k_list = ks.tolist()
            head["window_start"] = [k * window for k in k_list]
            head["window_end"] = [(k + 1) * window for k in k_list]
        return ColumnBatch(head, feature_names, values)


@dataclass(slots=True)
class _Run:
    """One capture through the fast path: flow assignment (:class:`FlowAssigner` and the
    entry pool), the names stage (:class:`~classifier.names.plugin_fast.NameStage`), the
    feature kernels (:mod:`classifier.features.groups_fast`) and table assembly
    (:class:`_Table`)."""

    config: FeaturizeConfig
    capture: str
    rows_per_frame: int = ROWS_PER_FRAME
    sort_rows: bool = False  # frames sorted by flow id (featurize_fast: the whole table)
    assigner: FlowAssigner = field(init=False)
    pool: _Pool = field(default_factory=_Pool)
    names: NameStage = field(init=False)
    table: _Table = field(init=False)

    def __post_init__(self) -> None:
        self.assigner = FlowAssigner(self.config.flow)
        addresses = Addresses()
        self.names = NameStage(addresses)
        self.table = _Table(self.config, self.capture, addresses, sort_rows=self.sort_rows)

    # --- per chunk

    def add(self, chunk: reader_fast.ColumnChunk) -> Iterator[ColumnBatch]:
        """Take one chunk of packets; yield a batch whenever ``rows_per_frame`` rows are
        ready."""
        cols = chunk.cols
        a = self.assigner.assign(chunk.ts, cols, _ROWS)
        self.names.add(chunk, a.uid, a.direction, a.count_after, a.started, a.ended)
        ip_len, plen, flags = cols[C_IPLEN], cols[C_PLEN], cols[C_FLAGS]
        mss = self.config.flow.resegment_mss
        total = int(a.entries.sum())
        if mss is not None and total != len(chunk):
            ts, size, pay, fl, dirn, uid = _expand(
                chunk.ts, ip_len, plen, flags, a.direction, a.uid, a.entries, total, mss
            )
            self.pool.append(uid, ts, size, pay, fl, dirn)
        else:
            self.pool.append(a.uid, chunk.ts, ip_len, plen, flags, a.direction)
        if len(a.ended):
            yield from self._rows(a.ended)

    def finish(self) -> Iterator[ColumnBatch]:
        """End every flow (end of input); yield batches as :meth:`add` does."""
        ended = self.assigner.flush()
        if len(ended):
            for j in range(len(ended)):
                self.names.end_name(ended, j)
            yield from self._rows(ended)

    # --- rows

    def _rows(self, ended: EndedFlows) -> Iterator[ColumnBatch]:
        """Compute the rows of ``ended`` a slice of flows at a time, yielding a batch when
        enough rows are ready (bounds memory when a flood's flows end together)."""
        step = self.rows_per_frame
        for start in range(0, len(ended), step):
            self._batch(ended if len(ended) <= step else ended.slice(start, start + step))
            if self.table.pending_rows() >= step:
                yield self.table.take_columns()

    def _batch(self, ended: EndedFlows) -> None:
        offsets, ts, size, pay, flags, dirn = self.pool.cut(ended.uid)
        window = self.config.window
        text = self.names.text(ended)
        if window is None:
            feats = groups_fast.flow_features(
                ts, size, dirn, flags, pay, offsets, ended.first_ts, tuple(self.config.snapshots)
            )
            self.table.add(_Batch(ended.ints, ended.times, text, feats))
            return
        plan = groups_fast.window_views(ts, offsets, ended.first_ts, ended.last_ts, window)
        feats = groups_fast.window_features(
            ts, size, dirn, flags, pay, offsets, ended.first_ts, window, plan
        )
        self.table.add(_Batch(ended.ints, ended.times, text, feats, plan[2], plan[3]))

    def pending_rows(self) -> int:
        """Rows computed and not yet taken by :meth:`take_columns`."""
        return self.table.pending_rows()

    def take_columns(self) -> ColumnBatch:
        """The rows computed so far (see :meth:`_Table.take_columns`)."""
        return self.table.take_columns()


def _stack(features: list[F64], order: I64 | None) -> F64:
    """The batches' feature rows as one array: as they come (no copy for one batch), or
    scattered once into the places ``order`` sorts them to (each batch freed after)."""
    if order is None:
        return features[0] if len(features) == 1 else np.concatenate(features)
    n = len(order)
    values = np.empty((n, features[0].shape[1]), np.float64)
    where = np.empty(n, np.int64)
    where[order] = np.arange(n)
    start = 0
    while features:
        rows = features.pop(0)
        values[where[start : start + len(rows)]] = rows
        start += len(rows)
    return values


_EMPTY = np.empty((0, 0), np.float64)
(
    _I_UID,
    _I_REASON,
    _I_AT,
    _I_PROTO,
    _I_VER,
    _I_CHI,
    _I_CLO,
    _I_CPORT,
    _I_SHI,
    _I_SLO,
    _I_SPORT,
    _I_NPK,
    _I_WIRE,
) = range(13)


# ---------------------------------------------------------------------------------------
# entry points


def featurize_fast(
    path: str | os.PathLike[str],
    config: FeaturizeConfig | None = None,
    *,
    skip_bad: bool = False,
    stats: FeaturizeStats | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """One row per flow (or per flow and window) of the capture at ``path``: the same
    columns, dtypes and values as :func:`classifier.features.featurize.featurize`, rows
    sorted by ``flow_id`` (then ``window_start``).

    ``stats`` (when given) is filled as the reference fills it (read and table counters,
    rows, seconds). Files the compiled reader leaves alone go through the reference path
    (see the module docstring); ``skip_bad`` is passed on to it. ``progress``: a progress
    bar on stderr (bytes of the file read).

    Raises :class:`classifier.errors.CaptureError` when the file cannot be read (missing,
    not a capture, damaged without ``skip_bad`` ...), with the reference's message.
    """
    config = config or FeaturizeConfig()
    # one frame, sorted as it is built (the reference path may give several, unsorted)
    frames = list(_frames(path, config, skip_bad, stats, _WHOLE, sort_rows=True, progress=progress))
    df = concat_frames(frames, config)
    if len(frames) > 1 or not df["flow_id"].is_monotonic_increasing:
        df = df.sort_values(_order_keys(config), kind="stable", ignore_index=True)
    return df


def iter_featurize_fast(
    path: str | os.PathLike[str],
    config: FeaturizeConfig | None = None,
    *,
    skip_bad: bool = False,
    stats: FeaturizeStats | None = None,
    rows_per_frame: int = ROWS_PER_FRAME,
) -> Iterator[pd.DataFrame]:
    """:func:`featurize_fast` as a stream of frames of about ``rows_per_frame`` rows, flows
    in the order they end (not sorted), so that memory holds one frame and the active
    flows. Together the frames hold exactly the rows of :func:`featurize_fast`. Raises
    as :func:`featurize_fast` does, possibly after some frames."""
    return _frames(
        path, config or FeaturizeConfig(), skip_bad, stats, rows_per_frame, sort_rows=False
    )


def iter_columns_fast(
    path: str | os.PathLike[str],
    config: FeaturizeConfig | None = None,
    *,
    skip_bad: bool = False,
    stats: FeaturizeStats | None = None,
    rows_per_frame: int = ROWS_PER_FRAME,
    progress: bool = False,
) -> Iterator[ColumnBatch | pd.DataFrame]:
    """:func:`iter_featurize_fast` without building DataFrames: the compiled path's rows
    come as :class:`ColumnBatch` es (pandas is not imported for them); after a hand-over
    to the reference path (see the module docstring), its frames come as they are.
    ``progress``: a progress bar on stderr (bytes of the file read)."""
    return _tables(
        path,
        config or FeaturizeConfig(),
        skip_bad,
        stats,
        rows_per_frame,
        sort_rows=False,
        progress=progress,
    )


def _frames(
    path: str | os.PathLike[str],
    config: FeaturizeConfig,
    skip_bad: bool,
    stats: FeaturizeStats | None,
    rows_per_frame: int,
    *,
    sort_rows: bool,
    progress: bool = False,
) -> Iterator[pd.DataFrame]:
    """:func:`_tables` as DataFrames."""
    return map(
        as_frame,
        _tables(
            path, config, skip_bad, stats, rows_per_frame, sort_rows=sort_rows, progress=progress
        ),
    )


def _tables(
    path: str | os.PathLike[str],
    config: FeaturizeConfig,
    skip_bad: bool,
    stats: FeaturizeStats | None,
    rows_per_frame: int,
    *,
    sort_rows: bool,
    progress: bool = False,
) -> Iterator[ColumnBatch | pd.DataFrame]:
    """The rows of ``path`` in batches of about ``rows_per_frame`` rows (the reference
    path's frames if it takes over); an empty batch only when there are no rows."""
    stats = stats if stats is not None else FeaturizeStats()
    started = time.perf_counter()
    read = ReadStats()
    run = _Run(config, Path(path).name, rows_per_frame=rows_per_frame, sort_rows=sort_rows)
    emitted: list[I64] = []  # flow ids already handed out, should the reference take over
    bar = _byte_bar(path) if progress else None
    try:
        for chunk in reader_fast.iter_chunks(
            path, read, buffer_bytes=_BUFFER_BYTES, max_packets=_CHUNK_PACKETS, ahead=True
        ):
            if bar is not None:
                bar.update(max(0, read.bytes_read - bar.n))
            for rows in run.add(chunk):
                stats.rows += len(rows)
                emitted.append(np.array(rows.head["flow_id"], np.int64))  # a copy
                yield rows
        for rows in run.finish():
            stats.rows += len(rows)
            yield rows
    except reader_fast.ColumnsUnsupported as exc:
        logger.info("%s; featurizing it with the reference path", exc)
        if bar is not None:
            bar.close()
        done = np.concatenate(emitted) if emitted else np.empty(0, np.int64)
        yield from _reference(path, config, skip_bad, stats, started, done, progress)
        return
    finally:
        if bar is not None:
            bar.close()
    rows = run.take_columns()
    stats.read = read
    stats.table = run.assigner.stats
    stats.seconds = time.perf_counter() - started
    if len(rows) or not stats.rows:  # an empty table only when there are no rows at all
        stats.rows += len(rows)
        yield rows


def _order_keys(config: FeaturizeConfig) -> list[str]:
    return ["flow_id"] if config.window is None else ["flow_id", "window_start"]


def _byte_bar(path: str | os.PathLike[str]) -> Any:
    """A progress bar over the bytes of the file ``path`` (tqdm, imported only here)."""
    from tqdm import tqdm

    return tqdm(
        total=os.path.getsize(path),
        desc=Path(path).name,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        leave=False,
    )


def _reference(
    path: str | os.PathLike[str],
    config: FeaturizeConfig,
    skip_bad: bool,
    stats: FeaturizeStats,
    started: float,
    done: I64,
    progress: bool = False,
) -> Iterator[pd.DataFrame]:
    """The reference path's frames without the flows in ``done``
    (already handed out before the compiled reader gave up: the same rows, as flow ids
    and flows match up to the point where it stopped)."""
    fresh = FeaturizeStats()
    stats.rows = 0
    for df in iter_featurize(
        os.fspath(path), config, skip_bad=skip_bad, stats=fresh, progress=progress
    ):
        if len(done):
            df = df[~np.isin(df["flow_id"].to_numpy(), done)]
        stats.rows += len(df)
        yield df.reset_index(drop=True)
    stats.read, stats.table = fresh.read, fresh.table
    stats.rows += len(done)
    stats.seconds = time.perf_counter() - started


def _one(path: str, config: FeaturizeConfig, skip_bad: bool) -> pd.DataFrame:
    return featurize_fast(path, config, skip_bad=skip_bad)


def featurize_many(
    paths: Iterable[str | os.PathLike[str]],
    config: FeaturizeConfig | None = None,
    jobs: int = 1,
    *,
    skip_bad: bool = False,
) -> pd.DataFrame:
    """:func:`featurize_fast` over many captures, ``jobs`` worker processes at a time
    (:func:`classifier.parallel.ordered_map`; ``jobs <= 1`` runs in this process). Tables
    are concatenated in the order of ``paths`` (each sorted by ``flow_id``), with a fresh
    0..n-1 index.

    Raises :class:`classifier.errors.CaptureError` for the first file that cannot be read.
    """
    config = config or FeaturizeConfig()
    import pandas as pd

    tasks = [(os.fspath(p), config, skip_bad) for p in paths]
    tables = [t for t in ordered_map(_one, tasks, jobs=jobs) if len(t)]
    if not tables:
        return pd.DataFrame([], columns=row_columns(config))
    return pd.concat(tables, ignore_index=True)

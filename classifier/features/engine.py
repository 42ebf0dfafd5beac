"""Which featurizer runs, decided in one place: :func:`choose_engine`.

Two engines give the same feature table (see the twin table in ``docs/architecture.md``):

* ``fast``: the compiled path (:mod:`classifier.features.featurize_fast`), which reads captures
  itself with the built-in reader; a file its compiled reader does not handle (gzip, damaged
  records ...) is handed to the reference path inside it, so ``fast`` always gives a table;
* ``reference``: the plain Python path (:mod:`classifier.features.featurize`), which reads
  through any capture backend (``builtin``, or ``tshark``/``pyshark``).

:func:`featurize` (the public ``classifier.featurize``), :func:`iter_featurize` and
:func:`iter_tables` are the entry points: the CLI (``featurize``, ``flows``, ``classify``),
the API's captures router, the session timeline and training call them, and none of them
picks an engine on its own. ``engine="fast"`` (the default) is a preference: with another
backend than the built-in one it falls back to the reference engine.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from classifier.capture.reader import BUILTIN, is_builtin
from classifier.errors import ShortflowError
from classifier.features.column_batch import ColumnBatch, as_frame
from classifier.features.featurize import ROWS_PER_FRAME, FeaturizeConfig, FeaturizeStats

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ENGINES",
    "FAST",
    "REFERENCE",
    "choose_engine",
    "featurize",
    "iter_featurize",
    "iter_tables",
]

log = logging.getLogger(__name__)

FAST = "fast"
REFERENCE = "reference"
ENGINES = (FAST, REFERENCE)


def choose_engine(engine: str = FAST, backend: str = BUILTIN, *, strict: bool = False) -> str:
    """The engine that featurizes a capture read with ``backend`` when ``engine`` is asked
    for: ``"fast"`` or ``"reference"``. This is the only place that decides.

    ``reference`` is always taken as asked. ``fast`` reads only with the built-in reader
    (``builtin``, or its older names ``dpkt`` and ``native``); with another backend it
    falls back to ``reference``, or, with ``strict`` (the engine was asked for explicitly,
    e.g. ``--engine fast --backend tshark``), raises :class:`ShortflowError`. Every
    :class:`~classifier.features.featurize.FeaturizeConfig` option works with both.
    """
    if engine not in ENGINES:
        raise ShortflowError(f"engine {engine!r}: use {' or '.join(ENGINES)}")
    chosen = engine
    if engine == FAST and not is_builtin(backend):
        if strict:
            raise ShortflowError(
                f"--engine fast reads captures with the built-in reader; drop --backend "
                f"{backend} or use --engine reference"
            )
        chosen = REFERENCE
    log.debug("featurize engine: %s (asked for %s, backend %s)", chosen, engine, backend)
    return chosen


def iter_tables(
    path: str | os.PathLike[str],
    config: FeaturizeConfig | None = None,
    *,
    engine: str = FAST,
    backend: str = BUILTIN,
    skip_bad: bool = False,
    stats: FeaturizeStats | None = None,
    progress: bool = False,
    rows_per_frame: int = ROWS_PER_FRAME,
) -> Iterator[ColumnBatch | pd.DataFrame]:
    """The feature rows of the capture at ``path`` as a stream of tables of about
    ``rows_per_frame`` rows (flows in the order they end), as
    :class:`~classifier.features.table_sink.TableSink` takes them: the fast engine's are
    mostly :class:`ColumnBatch` es (pandas is not imported for them), the reference's are
    DataFrames. ``stats`` is complete once the stream is; ``progress`` shows a progress bar
    on stderr.

    Raises :class:`classifier.errors.CaptureError` when the file cannot be read (possibly
    after some tables), :class:`ShortflowError` for an unknown engine.
    """
    config = config or FeaturizeConfig()
    stats = stats if stats is not None else FeaturizeStats()
    if choose_engine(engine, backend) == FAST:
        from classifier.features.featurize_fast import iter_columns_fast

        return iter_columns_fast(
            path,
            config,
            skip_bad=skip_bad,
            stats=stats,
            rows_per_frame=rows_per_frame,
            progress=progress,
        )
    from classifier.features.featurize import iter_featurize as iter_reference

    return iter_reference(
        os.fspath(path),
        config,
        backend=backend,
        skip_bad=skip_bad,
        stats=stats,
        progress=progress,
        rows_per_frame=rows_per_frame,
    )


def iter_featurize(
    path: str | os.PathLike[str],
    config: FeaturizeConfig | None = None,
    *,
    engine: str = FAST,
    backend: str = BUILTIN,
    skip_bad: bool = False,
    stats: FeaturizeStats | None = None,
    progress: bool = False,
    rows_per_frame: int = ROWS_PER_FRAME,
) -> Iterator[pd.DataFrame]:
    """:func:`featurize` as a stream of DataFrames of about ``rows_per_frame`` rows, flows
    in the order they end (not sorted), so that memory holds one frame and the active
    flows. Arguments and errors as :func:`iter_tables`."""
    return map(
        as_frame,
        iter_tables(
            path,
            config,
            engine=engine,
            backend=backend,
            skip_bad=skip_bad,
            stats=stats,
            progress=progress,
            rows_per_frame=rows_per_frame,
        ),
    )


def featurize(
    path: str | os.PathLike[str],
    config: FeaturizeConfig | None = None,
    *,
    engine: str = FAST,
    backend: str = BUILTIN,
    skip_bad: bool = False,
    stats: FeaturizeStats | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """One row per flow (or per flow and window) of the capture at ``path``.

    ``engine``: ``"fast"`` (the default: the compiled path; the reference one with a
    ``backend`` other than the built-in reader, see :func:`choose_engine`) or
    ``"reference"`` (plain Python). Both give the same columns, dtypes and values; the fast
    engine's rows are sorted by ``flow_id`` (then ``window_start``), the reference's come
    in the order flows end (sort them by ``flow_id``, stable, to compare). ``backend``:
    ``"builtin"`` or ``"tshark"`` (see :func:`classifier.capture.open_capture`).
    ``skip_bad``: continue past damaged records (counted in ``stats.read.skipped``).
    ``progress`` shows a progress bar on stderr.

    Raises :class:`classifier.errors.CaptureError` when the file cannot be read.
    """
    config = config or FeaturizeConfig()
    if choose_engine(engine, backend) == FAST:
        from classifier.features.featurize_fast import featurize_fast

        return featurize_fast(path, config, skip_bad=skip_bad, stats=stats, progress=progress)
    from classifier.features.featurize import featurize as featurize_reference

    return featurize_reference(
        os.fspath(path), config, backend=backend, skip_bad=skip_bad, stats=stats, progress=progress
    )

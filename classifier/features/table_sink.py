"""Write a feature table frame by frame to Parquet or CSV, never holding it whole.

The schema is fixed up front from the column names (text, 64-bit integers, floats), so a
frame whose name columns happen to be all empty still writes as text. The table goes to a
temporary file beside the output and replaces it only when complete: a failed run leaves
no half-written table behind, and an existing output stays as it was.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import TracebackType

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from classifier.errors import ShortflowError
from classifier.features.schema import NAME_COLUMNS

__all__ = ["TableSink", "arrow_schema"]

_TEXT = frozenset(("capture", "client", "server", "end_reason", *NAME_COLUMNS))
_INTEGER = frozenset(("flow_id", "proto", "client_port", "server_port", "packets",
                      "wire_bytes"))
_SUFFIXES = (".parquet", ".csv")


def arrow_schema(columns: list[str]) -> pa.Schema:
    """Text for identity and name columns, int64 for counts and ports, float64 else."""
    def kind(name: str) -> pa.DataType:
        if name in _TEXT:
            return pa.string()
        return pa.int64() if name in _INTEGER else pa.float64()

    return pa.schema([(c, kind(c)) for c in columns])


class TableSink:
    """Append frames of one table to ``output`` (``.parquet`` or ``.csv``).

    Use as a context manager: the file appears at ``output`` on a clean exit and the
    partial file is removed on an exception. Raises :class:`ShortflowError` for another
    suffix or an unwritable path.
    """

    def __init__(self, output: Path, columns: list[str]) -> None:
        self.output = output
        self.suffix = output.suffix.lower()
        if self.suffix not in _SUFFIXES:
            raise ShortflowError(f"{output}: output must end in .parquet or .csv")
        self.columns = list(columns)
        self.schema = arrow_schema(self.columns)
        self.rows = 0
        self.tmp = output.with_name(f".{output.name}.{os.getpid()}.part")
        self._parquet: pq.ParquetWriter | None = None
        self._csv_started = False
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            self.tmp.unlink(missing_ok=True)
        except OSError as exc:
            raise self._error(exc) from exc

    def write(self, frame: pd.DataFrame) -> None:
        """Append ``frame`` (its columns must be this table's, in any order)."""
        if not len(frame):
            return
        if list(frame.columns) != self.columns:
            missing = set(self.columns) ^ set(frame.columns)
            if missing:
                raise ShortflowError(f"{self.output}: frame columns differ "
                                     f"({', '.join(sorted(missing)[:5])})")
            frame = frame[self.columns]
        try:
            if self.suffix == ".parquet":
                self._write_parquet(frame)
            else:
                frame.to_csv(self.tmp, index=False, mode="a", header=not self._csv_started)
                self._csv_started = True
        except OSError as exc:
            raise self._error(exc) from exc
        self.rows += len(frame)

    def append_file(self, part: Path, rows: int) -> None:
        """Append the ``rows`` rows of ``part``, a table file of the same columns and
        format written by another :class:`TableSink` (a worker's share), without
        holding it whole: Parquet a row group at a time, CSV as text."""
        try:
            if self.suffix == ".parquet":
                parquet = pq.ParquetFile(part)
                for i in range(parquet.num_row_groups):
                    group = parquet.read_row_group(i)
                    if group.num_rows:
                        self._write_arrow(group)
            else:
                with part.open("rb") as src, self.tmp.open("ab") as dst:
                    if self._csv_started:
                        src.readline()  # its header; the output has one already
                    shutil.copyfileobj(src, dst, 1 << 20)
                self._csv_started = True
        except OSError as exc:
            raise self._error(exc) from exc
        self.rows += rows

    def _write_parquet(self, frame: pd.DataFrame) -> None:
        self._write_arrow(pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False))

    def _write_arrow(self, table: pa.Table) -> None:
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.tmp, table.schema)
        self._parquet.write_table(table)

    def close(self) -> None:
        """Finish the file and move it to ``output`` (an empty table if nothing came)."""
        try:
            if self.suffix == ".parquet":
                if self._parquet is None:
                    self._write_parquet(pd.DataFrame({c: pd.Series([], dtype=object)
                                                      for c in self.columns}))
                assert self._parquet is not None
                self._parquet.close()
            elif not self._csv_started:
                pd.DataFrame([], columns=self.columns).to_csv(self.tmp, index=False)
            self.tmp.replace(self.output)
        except OSError as exc:
            raise self._error(exc) from exc

    def abort(self) -> None:
        """Drop the partial file."""
        if self._parquet is not None:
            self._parquet.close()
        self.tmp.unlink(missing_ok=True)

    def _error(self, exc: OSError) -> ShortflowError:
        return ShortflowError(f"{self.output}: cannot write ({exc.strerror or exc})")

    def __enter__(self) -> TableSink:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

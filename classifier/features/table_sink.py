"""Write a feature table frame by frame to Parquet or CSV, never holding it whole.

A frame is a DataFrame or a :class:`~classifier.features.column_batch.ColumnBatch` (the
fast engine's rows), which is written to Parquet without importing pandas: the same
fields, values and row groups as its DataFrame gives.

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
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from classifier.errors import ShortflowError
from classifier.features.column_batch import Column, ColumnBatch
from classifier.features.schema import NAME_COLUMNS, SCHEMA_VERSION

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["TableSink", "arrow_schema"]

_TEXT = frozenset(("capture", "client", "server", "end_reason", *NAME_COLUMNS))
_INTEGER = frozenset(("flow_id", "proto", "client_port", "server_port", "packets", "wire_bytes"))
_SUFFIXES = (".parquet", ".csv")
_PARQUET_METADATA = {b"shortflow_schema_version": SCHEMA_VERSION.encode()}


def arrow_schema(columns: list[str]) -> pa.Schema:
    """Text for identity and name columns, int64 for counts and ports, float64 else."""

    def kind(name: str) -> pa.DataType:
        if name in _TEXT:
            return pa.string()
        return pa.int64() if name in _INTEGER else pa.float64()

    return pa.schema([(c, kind(c)) for c in columns])


_NUMPY = {pa.int64(): np.dtype(np.int64), pa.float64(): np.dtype(np.float64)}


def _arrow_array(values: Column, kind: pa.DataType) -> pa.Array:
    """One column of a batch as Arrow ``kind`` (a type of :func:`arrow_schema`), with the
    values and nulls ``pa.Table.from_pandas`` gives its DataFrame column: None and float
    NaN are nulls. Built from buffers because ``pa.array`` imports pandas."""
    if kind == pa.string():
        return _text_array(values)
    data = np.ascontiguousarray(values, dtype=_NUMPY[kind])
    missing = np.isnan(data) if data.dtype.kind == "f" else None
    valid = None if missing is None or not missing.any() else _bitmap(~missing)
    return pa.Array.from_buffers(kind, len(data), [valid, pa.py_buffer(data)])


def _text_array(values: Column) -> pa.Array:
    """A UTF-8 string array of ``values`` (str, or None for a null)."""
    encoded = [b"" if v is None else v.encode() for v in values]
    offsets = np.zeros(len(encoded) + 1, np.int32)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    present = np.fromiter((v is not None for v in values), np.bool_, len(encoded))
    valid = None if present.all() else _bitmap(present)
    return pa.Array.from_buffers(
        pa.string(), len(encoded), [valid, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
    )


def _bitmap(flags: npt.NDArray[np.bool_]) -> pa.Buffer:
    """An Arrow validity bitmap (least significant bit first) of boolean ``flags``."""
    return pa.py_buffer(np.packbits(flags, bitorder="little"))


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

    def write(self, frame: ColumnBatch | pd.DataFrame) -> None:
        """Append ``frame`` (its columns must be this table's, in any order)."""
        if not len(frame):
            return
        missing = set(self.columns) ^ set(frame.columns)
        if missing:
            raise ShortflowError(
                f"{self.output}: frame columns differ ({', '.join(sorted(missing)[:5])})"
            )
        try:
            if self.suffix == ".parquet":
                self._write_arrow(self._arrow(frame))
            else:
                self._write_csv(frame.frame() if isinstance(frame, ColumnBatch) else frame)
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

    def _arrow(self, frame: ColumnBatch | pd.DataFrame) -> pa.Table:
        """``frame`` as an Arrow table of this table's schema (a batch's has no pandas
        metadata, which pandas does not need to read the file back the same)."""
        if isinstance(frame, ColumnBatch):
            columns = frame.by_name()
            return pa.Table.from_arrays(
                [_arrow_array(columns[f.name], f.type) for f in self.schema], schema=self.schema
            )
        return pa.Table.from_pandas(self._ordered(frame), schema=self.schema, preserve_index=False)

    def _write_csv(self, frame: pd.DataFrame) -> None:
        self._ordered(frame).to_csv(self.tmp, index=False, mode="a", header=not self._csv_started)
        self._csv_started = True

    def _ordered(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` with this table's column order (itself when it has it already)."""
        return frame if list(frame.columns) == self.columns else frame[self.columns]

    def _write_arrow(self, table: pa.Table) -> None:
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), **_PARQUET_METADATA}
        )
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.tmp, table.schema)
        self._parquet.write_table(table)

    def close(self) -> None:
        """Finish the file and move it to ``output`` (an empty table if nothing came)."""
        try:
            if self.suffix == ".parquet":
                if self._parquet is None:
                    self._write_arrow(self.schema.empty_table())
                assert self._parquet is not None
                self._parquet.close()
            elif not self._csv_started:
                import pandas as pd

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

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

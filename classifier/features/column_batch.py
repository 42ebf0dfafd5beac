"""Rows of a feature table held as columns, without pandas.

The fast engine computes its rows as arrays; a :class:`ColumnBatch` carries them as they
are, so that writing a table (:class:`classifier.features.table_sink.TableSink`) need not
import pandas, which costs a noticeable share of a whole ``shortflow featurize`` process.
:meth:`ColumnBatch.frame` builds the DataFrame the rest of the code uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Column", "ColumnBatch", "as_frame"]

#: One leading column: an array (integers, floats) or a list (text with None, floats).
Column = npt.NDArray[Any] | list[Any]


@dataclass(frozen=True, slots=True)
class ColumnBatch:
    """Some rows of a feature table: ``head`` maps the leading columns (identity, names,
    windows), in table order, to one column each; ``features`` holds the float columns
    ``feature_names`` that follow them, as one rows x columns array (the layout the
    compiled code computes them in, which the DataFrame keeps as one block)."""

    head: dict[str, Column]
    feature_names: list[str]
    features: npt.NDArray[np.float64]

    @classmethod
    def empty(cls, columns: list[str], feature_names: list[str]) -> ColumnBatch:
        """A batch of no rows with ``columns`` (all, in table order, ending with
        ``feature_names``)."""
        head = columns[: len(columns) - len(feature_names)]
        return cls(
            {c: [] for c in head}, feature_names, np.empty((0, len(feature_names)), np.float64)
        )

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def columns(self) -> list[str]:
        """All column names, in table order."""
        return [*self.head, *self.feature_names]

    def by_name(self) -> dict[str, Column]:
        """Every column by name, in table order (feature columns are strided views of
        ``features``)."""
        return {**self.head, **dict(zip(self.feature_names, self.features.T, strict=True))}

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame, with the dtypes the table has always had: the feature
        block is not copied, leading columns are inserted before it (text lists become
        pandas text columns). No rows: an empty frame with these columns (object)."""
        import pandas as pd

        if not len(self):
            return pd.DataFrame([], columns=self.columns)
        df = pd.DataFrame(self.features, columns=self.feature_names, copy=False)
        for loc, (name, value) in enumerate(self.head.items()):
            df.insert(loc, name, value)
        return df


def as_frame(rows: ColumnBatch | pd.DataFrame) -> pd.DataFrame:
    """``rows`` as a DataFrame (a frame is returned as it is)."""
    return rows.frame() if isinstance(rows, ColumnBatch) else rows

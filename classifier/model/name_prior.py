"""What a known service's name says before its traffic shape: which labels it rules out.

A service's category (``classifier/names/services.toml``) may rule out short-form video (a
call, music, a search page), long-form video (a platform whose video is short clips only,
or anything that is not video), or both. The models' probabilities are adjusted after the
fact, the same way for the flow model and the session model:

* short-form ruled out: its probability moves to the other labels in proportion;
* long-form ruled out: its probability ("this fetches like a long video") moves to
  short-form where short-form is possible (Instagram: what looks like video is Reels,
  Stories or feed clips), else to other.

Unnamed traffic (category ``unknown``) keeps the model's probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from classifier.names.services import may_be_long_form, may_be_short_form

__all__ = ["LONG", "OTHER", "SHORT", "NamePrior", "name_prior", "without_short_form"]

SHORT, LONG, OTHER = "short-form", "long-form", "other"
"""The labels the models give."""


def without_short_form(
    proba: npt.NDArray[np.float64], classes: Sequence[str], ruled_out: npt.NDArray[np.bool_]
) -> npt.NDArray[np.float64]:
    """``proba`` (rows x ``classes``) with short-form ruled out on the ``ruled_out`` rows:
    its probability moves to the other classes in proportion (the model's odds between
    them stay), or wholly to the last other class when the model gave them nothing."""
    if SHORT not in classes or not ruled_out.any():
        return proba
    out = np.array(proba, dtype=np.float64, copy=True)
    short = list(classes).index(SHORT)
    rest = np.array([i for i in range(len(classes)) if i != short], dtype=np.intp)
    rows = np.flatnonzero(ruled_out)
    block = out[np.ix_(rows, rest)]
    mass = block.sum(axis=1, keepdims=True)
    block = np.divide(block, mass, out=np.zeros_like(block), where=mass > 0)
    block[mass[:, 0] <= 0, -1] = 1.0
    out[np.ix_(rows, rest)] = block
    out[rows, short] = 0.0
    return out


@dataclass(frozen=True)
class NamePrior:
    """Probabilities after the names' rules, and per row which rule applied."""

    proba: npt.NDArray[np.float64]
    no_short: npt.NDArray[np.bool_]  # the name rules short-form out
    long_is_short: npt.NDArray[np.bool_]  # no long-form here: video-like means short-form


def name_prior(
    proba: npt.NDArray[np.float64], classes: Sequence[str], categories: Sequence[str]
) -> NamePrior:
    """``proba`` (rows x ``classes``) with what each row's service category rules out
    (see the module doc)."""
    no_short = np.array([not may_be_short_form(c) for c in categories], dtype=bool)
    no_long = np.array([not may_be_long_form(c) for c in categories], dtype=bool)
    out = without_short_form(proba, classes, no_short)
    long_is_short = no_long & ~no_short
    if LONG in classes and no_long.any():
        out = np.array(out, dtype=np.float64, copy=True)
        long = list(classes).index(LONG)
        for rows, to in ((long_is_short, SHORT), (no_long & no_short, OTHER)):
            if rows.any() and to in classes:
                out[rows, list(classes).index(to)] += out[rows, long]
                out[rows, long] = 0.0
    return NamePrior(out, no_short, long_is_short)

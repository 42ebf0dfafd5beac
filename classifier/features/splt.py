"""Sequence of packet lengths and times: the first packets of a view, signed by direction."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from classifier.features.view import FlowView

__all__ = ["Splt"]


class Splt:
    """The first ``n`` packets as signed IP size (+ client->server, - server->client) and
    inter-arrival time in seconds; zero-padded when the view has fewer packets."""

    name = "splt"

    def __init__(self, n: int = 32) -> None:
        self.n = n
        self.columns = tuple(f"splt_size_{i}" for i in range(n)) + tuple(
            f"splt_iat_{i}" for i in range(n)
        )

    def compute(self, view: FlowView) -> Sequence[float]:
        k = min(self.n, len(view))
        sizes = np.zeros(self.n)
        iats = np.zeros(self.n)
        sizes[:k] = view.size[:k] * view.direction[:k]
        if k > 1:
            iats[1:k] = np.diff(view.t[:k])
        return [*sizes.tolist(), *iats.tolist()]

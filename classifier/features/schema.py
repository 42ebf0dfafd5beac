"""The feature schema: which groups, in which order, under which version.

A model artifact stores ``SCHEMA_VERSION`` and ``FEATURE_COLUMNS``; loading a model built
for another schema is refused. Change the version whenever a column's meaning changes.
"""

from __future__ import annotations

from classifier.features.bursts import Bursts
from classifier.features.group import FeatureGroup
from classifier.features.splt import Splt
from classifier.features.view import FlowView
from classifier.features.volume import InterArrival, Sizes, TcpFlags, Throughput, Volume

__all__ = [
    "SCHEMA_VERSION",
    "GROUPS",
    "FEATURE_COLUMNS",
    "NAME_COLUMNS",
    "FLOW_COLUMNS",
    "WINDOW_COLUMNS",
    "compute_features",
    "snapshot_columns",
    "snapshot_prefix",
]

SCHEMA_VERSION = "1"

GROUPS: tuple[FeatureGroup, ...] = (
    Volume(),
    Sizes(),
    InterArrival(),
    Bursts(),
    Throughput(),
    TcpFlags(),
    Splt(),
)

FEATURE_COLUMNS: tuple[str, ...] = tuple(c for g in GROUPS for c in g.columns)
"""Numeric (float64) columns of one view: the model's packet-statistics input."""

NAME_COLUMNS = ("sni", "alpn", "dns_name", "name", "name_source", "service", "category")
"""Text columns from names in clear; ``service`` is also a model input (categorical)."""

FLOW_COLUMNS = (
    "capture",
    "flow_id",
    "proto",
    "client",
    "client_port",
    "server",
    "server_port",
    "first_ts",
    "last_ts",
    "end_reason",
    "packets",
    "wire_bytes",
)
"""Columns that identify a flow (not model inputs)."""

WINDOW_COLUMNS = ("window_start", "window_end")
"""With ``windows``: the row's slice, in seconds since the flow's start."""


def compute_features(view: FlowView) -> list[float]:
    """All numeric features of one view, in ``FEATURE_COLUMNS`` order."""
    out: list[float] = []
    for group in GROUPS:
        out.extend(group.compute(view))
    return out


def snapshot_prefix(seconds: float) -> str:
    """Column prefix of an early snapshot, e.g. ``at3s__`` for the first 3 seconds."""
    return f"at{seconds:g}s__"


def snapshot_columns(seconds: float) -> tuple[str, ...]:
    """The snapshot's copy of ``FEATURE_COLUMNS``."""
    prefix = snapshot_prefix(seconds)
    return tuple(prefix + c for c in FEATURE_COLUMNS)

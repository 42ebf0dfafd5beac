"""Every column of a featurize table in words: meaning, unit, direction.

``python -m classifier.features.describe`` prints ``docs/features.md``; a test checks that
the file equals this output and that every column of the schema has exactly one rule
here, so the page cannot drift from the code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from classifier.features.schema import (
    FEATURE_COLUMNS,
    FLOW_COLUMNS,
    NAME_COLUMNS,
    SCHEMA_VERSION,
    WINDOW_COLUMNS,
    snapshot_prefix,
)

__all__ = ["ColumnDoc", "RULES", "describe", "features_markdown"]


@dataclass(frozen=True)
class ColumnDoc:
    """A rule: columns whose name matches ``pattern`` (whole name) mean ``meaning``, in
    ``unit``. ``{d}`` in the meaning is the direction, ``{s}`` the statistic, other
    ``{name}``s the pattern's named groups."""

    pattern: str
    meaning: str
    unit: str


_STATS = {
    "min": "smallest",
    "max": "largest",
    "mean": "mean",
    "std": "standard deviation",
    "p10": "10th percentile",
    "p50": "median",
    "p90": "90th percentile",
}
_DIRS = {"up": "client -> server", "down": "server -> client", "all": "both directions"}
_S = "(" + "|".join(_STATS) + ")"
_D = "(up|down|all)"

RULES: tuple[ColumnDoc, ...] = (
    # flow identity
    ColumnDoc("capture", "the capture file the flow came from", "text"),
    ColumnDoc("flow_id", "the flow's number within its capture (1, 2, ...)", "count"),
    ColumnDoc("proto", "IP protocol: 6 TCP, 17 UDP", "number"),
    ColumnDoc(
        "client",
        "the client's address: the side that sent the SYN, else the side on "
        "the ephemeral port, else the first sender",
        "IP address",
    ),
    ColumnDoc("client_port", "the client's port", "port"),
    ColumnDoc("server", "the server's address", "IP address"),
    ColumnDoc("server_port", "the server's port", "port"),
    ColumnDoc("first_ts", "the flow's first packet", "epoch seconds"),
    ColumnDoc("last_ts", "the flow's last packet", "epoch seconds"),
    ColumnDoc(
        "end_reason",
        "why the flow ended: idle, active (timeouts), fin, rst, evicted "
        "(--max-flows), packets (--max-packets) or end (end of the capture)",
        "text",
    ),
    ColumnDoc("packets", "packets in the flow (both directions)", "count"),
    ColumnDoc("wire_bytes", "bytes on the wire (frame lengths as captured on the link)", "bytes"),
    # names in clear
    ColumnDoc("sni", "server name of the TLS or QUIC ClientHello (or Google QUIC CHLO)", "text"),
    ColumnDoc("alpn", "application protocols the ClientHello offered", "text"),
    ColumnDoc(
        "dns_name", "the name a DNS answer in the capture gave for the server's address", "text"
    ),
    ColumnDoc("name", "the name used for the service rules (SNI first, else the DNS name)", "text"),
    ColumnDoc(
        "name_source",
        "where ``name`` came from: the ClientHello's protocol (tls, "
        "quic, gquic for a Google QUIC CHLO) or dns",
        "text",
    ),
    ColumnDoc(
        "service",
        "the service its name rules give (``classifier/names/services.toml``; ``unknown`` "
        "without a name); a model input",
        "text",
    ),
    ColumnDoc("category", "the service's category (e.g. video-cdn, short-form-service)", "text"),
    # windows
    ColumnDoc(
        "window_start",
        "with ``--windows``: where the row's slice starts, after the flow's first packet",
        "seconds",
    ),
    ColumnDoc("window_end", "with ``--windows``: where the row's slice ends", "seconds"),
    # volume
    ColumnDoc("duration", "from the first to the last packet", "seconds"),
    ColumnDoc("pkts_(up|down)", "packets {d}", "count"),
    ColumnDoc("bytes_(up|down)", "IP bytes {d} (IP total lengths)", "bytes"),
    ColumnDoc("payload_(up|down)", "transport payload bytes {d}", "bytes"),
    ColumnDoc("down_up_byte_ratio", "bytes down / bytes up (up counted as at least 1)", "ratio"),
    ColumnDoc("pkts_per_s", "packets per second over the duration", "1/s"),
    ColumnDoc("bytes_per_s", "IP bytes (both directions) per second over the duration", "bytes/s"),
    # sizes and timing
    ColumnDoc(f"size_(up|down)_{_S}", "{s} of the IP packet sizes {d}", "bytes"),
    ColumnDoc(f"iat_{_D}_{_S}", "{s} of the times between consecutive packets ({d})", "seconds"),
    # bursts
    ColumnDoc(
        "burst_count",
        "download bursts: runs of server -> client payload with no gap over 0.5 s",
        "count",
    ),
    ColumnDoc("bursts_per_s", "download bursts per second over the duration", "1/s"),
    ColumnDoc(f"burst_bytes_{_S}", "{s} of the bursts' payload bytes", "bytes"),
    ColumnDoc("burst_bytes_cv", "standard deviation / mean of the bursts' payload bytes", "ratio"),
    ColumnDoc(f"burst_dur_{_S}", "{s} of the bursts' durations", "seconds"),
    ColumnDoc(f"burst_gap_{_S}", "{s} of the idle gaps between bursts", "seconds"),
    ColumnDoc(
        f"req_bytes_{_S}",
        "{s} of the client -> server payload sent between one "
        "burst's end and the next one's start (the request for it)",
        "bytes",
    ),
    ColumnDoc("req_count", "bursts that had such a request before them", "count"),
    ColumnDoc("first_burst_bytes", "payload bytes of the first download burst", "bytes"),
    ColumnDoc("first_burst_dur", "duration of the first download burst", "seconds"),
    ColumnDoc("idle_frac", "share of the duration spent in gaps between bursts", "ratio"),
    # throughput
    ColumnDoc(
        "(up|down)_bytes_first_(?P<h>1|3|10)s", "IP bytes {d} in the flow's first {h} s", "bytes"
    ),
    # flags
    ColumnDoc(
        "flag_(fin|syn|rst|psh|ack|urg)", "packets that carried this TCP flag (0 for UDP)", "count"
    ),
    # first packets
    ColumnDoc(
        r"splt_size_\d+",
        "the k-th packet's IP size, positive client -> server, "
        "negative server -> client; 0 past the flow's last packet",
        "bytes (signed)",
    ),
    ColumnDoc(
        r"splt_iat_\d+",
        "time from the (k-1)-th to the k-th packet (0 for the first and past the last)",
        "seconds",
    ),
)


def describe(column: str) -> tuple[str, str]:
    """``(meaning, unit)`` of one column (snapshot copies say which horizon). Raises
    ``KeyError`` for a column no rule matches and ``ValueError`` when several do."""
    snapshot = re.fullmatch(r"at(\d+(?:\.\d+)?)s__(.+)", column)
    base = snapshot.group(2) if snapshot else column
    hits = [(r, m) for r in RULES if (m := re.fullmatch(r.pattern, base))]
    if not hits:
        raise KeyError(column)
    if len(hits) > 1:
        raise ValueError(f"{column}: matched by {[r.pattern for r, _ in hits]}")
    rule, match = hits[0]
    parts = base.split("_")
    direction = next((_DIRS[p] for p in parts if p in _DIRS), "")
    stat = next((_STATS[p] for p in reversed(parts) if p in _STATS), "")
    meaning = rule.meaning.format(d=direction, s=stat, **match.groupdict())
    meaning = meaning[0].upper() + meaning[1:]
    if snapshot:
        meaning += f", over the flow's first {snapshot.group(1)} s only"
    return meaning, rule.unit


def _table(columns: tuple[str, ...]) -> list[str]:
    lines = ["| column | meaning | unit |", "|---|---|---|"]
    for c in columns:
        meaning, unit = describe(c)
        lines.append(f"| `{c}` | {meaning.replace('``', '`')} | {unit} |")
    return lines


def features_markdown() -> str:
    """The text of ``docs/features.md``."""
    example = snapshot_prefix(3.0)
    out = [
        "# Feature columns",
        "",
        "<!-- generated by `python -m classifier.features.describe > docs/features.md`; "
        "a test checks it -->",
        "",
        f"Schema version {SCHEMA_VERSION} (`classifier/features/schema.py`; stored in a "
        "model's `model.json` and in the metadata of every Parquet file `shortflow "
        "featurize` writes, key `shortflow_schema_version`). One row per flow, or per "
        "(flow, window) with `--windows`.",
        "",
        "Directions: *up* is client -> server, *down* is server -> client. The client is "
        "the side that sent the SYN, else the side on the ephemeral port, else the first "
        "sender. Sizes are IP total lengths (header-only captures give the same figures); "
        "burst sizes count transport payload, so offload-coalesced captures do not change "
        "them. Statistics of an empty set are 0.",
        "",
        f"Early snapshots repeat every feature column over the flow's first seconds under a "
        f"prefix: `{example}duration` is `duration` over the first 3 s (`--snapshots`, "
        "default 3 and 10).",
        "",
        "## Flow identity",
        "",
        *_table(FLOW_COLUMNS),
        "",
        "## Names in clear",
        "",
        *_table(NAME_COLUMNS),
        "",
        "## Windows",
        "",
        *_table(WINDOW_COLUMNS),
        "",
        "## Features (model inputs, with `service`)",
        "",
        *_table(FEATURE_COLUMNS),
        "",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    print(features_markdown(), end="")

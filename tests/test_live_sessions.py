"""Live mode's session tracker sees what the offline session view sees."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from classifier.capture.reader import open_capture
from classifier.features.featurize import FeaturizeConfig, Featurizer
from classifier.features.featurize_fast import featurize_fast
from classifier.features.session import (
    SESSION_FEATURES,
    WINDOW_COLUMNS,
    SessionConfig,
    latest_windows,
)
from classifier.live.sessions import SessionTracker
from classifier.model.timeline import ACTIVITY_CONFIG

SAMPLE = Path(__file__).resolve().parents[1] / "datasets" / "samples" / "sample.pcap"


def test_tracker_windows_equal_the_offline_windows_at_the_same_time() -> None:
    config = SessionConfig()
    holder: dict[str, Featurizer] = {}
    tracker = SessionTracker(config, lambda flow: holder["f"].flow_meta(flow))
    holder["f"] = Featurizer(FeaturizeConfig(snapshots=()), capture="live", plugins=[tracker])
    offline = featurize_fast(SAMPLE, ACTIVITY_CONFIG)
    ends: list[float] = []
    live: list[pd.DataFrame] = []  # the tracker's rows (dicts), as tables
    for pkt in open_capture(SAMPLE):
        if not ends:
            ends.append(math.floor(pkt.ts) + 10.0)
        while pkt.ts >= ends[-1] + 1:  # the tracker judges the window ending 1 s ago
            rows = tracker.windows(ends[-1] + 1)
            assert all(list(r) == list(WINDOW_COLUMNS) for r in rows)
            live.append(pd.DataFrame(rows, columns=list(WINDOW_COLUMNS)))
            ends.append(ends[-1] + 10.0)
        holder["f"].table.add(pkt)
    assert len(live) >= 2 and any(not w.empty for w in live)
    spans = pd.concat(live)[["window_start", "window_end"]].diff(axis=1)["window_end"]
    assert spans.min() < config.window  # a session's first windows are short, as offline
    for end, got in zip(ends, live, strict=False):
        want = latest_windows(offline, end, config)
        assert list(got["group"]) == list(want["group"]), end
        for col in ("window_start", "session_start", "window_bytes", *SESSION_FEATURES):
            assert got[col].to_numpy() == pytest.approx(want[col].to_numpy()), (end, col)
    assert tracker.media and all(flows for flows in tracker.media.values())

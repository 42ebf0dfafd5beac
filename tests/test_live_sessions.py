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
from classifier.flows import FlowTable
from classifier.live.sessions import NAMED_SERVERS_MAX, SessionTracker
from classifier.model.timeline import ACTIVITY_CONFIG
from tests.packets import downloads, to_server
from tests.shared_data import SHARED, needs_files
from training.netpkt import read_netpkt, write_netpkt_pcap

SAMPLE = Path(__file__).resolve().parents[1] / "datasets" / "samples" / "sample.pcap"
SHORTS = "traces/netpkt/netpkt_youtube_packets_03.txt.gz"


def test_tracker_windows_equal_the_offline_windows_at_the_same_time() -> None:
    _tracker_equals_offline(SAMPLE)


@needs_files(SHORTS)
def test_tracker_windows_equal_the_offline_windows_on_a_real_shorts_session(
    tmp_path: Path,
) -> None:
    """Five minutes of real YouTube Shorts (header-only, no names): the windows live mode
    judges are the ones the offline view gives for a window that ends then."""
    packets, _ = read_netpkt(SHARED / SHORTS)
    capture = tmp_path / "shorts.pcap"
    write_netpkt_pcap(packets, capture)
    windows = _tracker_equals_offline(capture)
    assert len(windows) >= 50 and windows["window_bytes"].sum() > 50e6


def test_a_connection_without_a_name_joins_the_service_a_named_one_reached() -> None:
    """A router started while a video plays joins its connection mid-way: no handshake, no
    name. Once a named connection reaches the same server, both are one session of that
    service; the server keeps the name for an hour after its last named connection."""
    tracker, table = _live_tracker()
    packets = downloads(50001, range(0, 40), None) + downloads(50002, range(20, 40))
    packets += downloads(50003, range(600, 640), None)
    packets += downloads(50004, range(4400, 4440), None)
    judged: dict[int, list[str]] = {}
    for pkt in sorted(packets, key=lambda p: p.ts):
        for now in (15, 35, 635, 4435):
            if now not in judged and pkt.ts >= now:
                judged[now] = sorted({r["group"] for r in tracker.windows(float(now))})
        table.add(pkt)
    assert judged == {
        15: ["net:10.77.2.0/24"],  # no name seen yet
        35: ["youtube"],  # both connections: one session
        635: ["youtube"],  # a new nameless connection, 10 minutes later
        4435: ["net:10.77.2.0/24"],  # over an hour after the last named one
    }


def test_named_servers_past_the_bound_are_forgotten_longest_unseen_first() -> None:
    first = downloads(50001, range(0, 20))
    second = to_server("10.77.3.2", downloads(50002, range(100, 120)))
    late = downloads(50003, range(200, 220), None)  # back to the first server
    judged: dict[int, dict[int, list[str]]] = {}
    for bound in (1, NAMED_SERVERS_MAX):
        tracker, table = _live_tracker(named_servers_max=bound)
        judged[bound] = {}
        for pkt in sorted(first + second + late, key=lambda p: p.ts):
            for now in (15, 115, 215):
                if now not in judged[bound] and pkt.ts >= now:
                    windows = tracker.windows(float(now))
                    judged[bound][now] = sorted({r["group"] for r in windows})
            table.add(pkt)
    # with room for one server, the second server's name pushed out the first's
    assert judged[1] == {15: ["youtube"], 115: ["youtube"], 215: ["net:10.77.2.0/24"]}
    assert judged[NAMED_SERVERS_MAX][215] == ["youtube"]


def _live_tracker(named_servers_max: int = NAMED_SERVERS_MAX) -> tuple[SessionTracker, FlowTable]:
    """A session tracker fed by a live featurizer's flow table (real names, real flows)."""
    holder: dict[str, Featurizer] = {}
    tracker = SessionTracker(
        SessionConfig(), lambda flow: holder["f"].flow_meta(flow), named_servers_max
    )
    holder["f"] = Featurizer(FeaturizeConfig(snapshots=()), capture="live", plugins=[tracker])
    return tracker, holder["f"].table


def _tracker_equals_offline(capture: Path) -> pd.DataFrame:
    """Feed ``capture`` to a session tracker packet by packet, take its windows every
    10 s and compare each with the offline view's window at the same end (in a session's
    first minute too: both cover the seconds it has lived); returns them."""
    config = SessionConfig()
    tracker, table = _live_tracker()
    offline = featurize_fast(capture, ACTIVITY_CONFIG)
    ends: list[float] = []
    live: list[pd.DataFrame] = []  # the tracker's rows (dicts), as tables
    for pkt in open_capture(capture):
        if not ends:
            ends.append(math.floor(pkt.ts) + 10.0)
        while pkt.ts >= ends[-1] + 1:  # the tracker judges the window ending 1 s ago
            rows = tracker.windows(ends[-1] + 1)
            assert all(list(r) == list(WINDOW_COLUMNS) for r in rows)
            live.append(pd.DataFrame(rows, columns=list(WINDOW_COLUMNS)))
            ends.append(ends[-1] + 10.0)
        table.add(pkt)
    assert len(live) >= 2 and any(not w.empty for w in live)
    for end, got in zip(ends, live, strict=False):
        want = latest_windows(offline, end, config)
        assert list(got["group"]) == list(want["group"]), end
        for col in ("window_start", "session_start", "window_bytes", *SESSION_FEATURES):
            assert got[col].to_numpy() == pytest.approx(want[col].to_numpy()), (end, col)
    assert tracker.media and all(flows for flows in tracker.media.values())
    return pd.concat(live, ignore_index=True)

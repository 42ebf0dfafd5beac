"""The session view: windows over a client's flows per service / server network."""

from __future__ import annotations

import pandas as pd
import pytest

from classifier.features.session import (
    SESSION_FEATURES,
    SessionConfig,
    group_of,
    latest_windows,
    session_groups,
    session_table,
)

T0 = 1_700_000_000.0


def _rows(flows: list[tuple[int, str, str, float, dict[int, float]]]) -> pd.DataFrame:
    """flows: (flow_id, server, service, opened at s, {second: bytes down})."""
    recs = []
    for fid, server, service, opened, per_sec in flows:
        for sec, nbytes in per_sec.items():
            recs.append(
                {
                    "client": "10.77.0.2",
                    "server": server,
                    "service": service,
                    "category": "video",
                    "flow_id": fid,
                    "first_ts": T0 + opened,
                    "window_start": sec - opened,
                    "bytes_down": nbytes,
                }
            )
    return pd.DataFrame(recs)


def _steady() -> pd.DataFrame:
    """One connection fetching 3 MB every 20 s for 200 s (a long-form player)."""
    return _rows([(1, "10.77.9.1", "unknown", 0.0, {s: 3e6 for s in range(0, 200, 20)})])


def _churn() -> pd.DataFrame:
    """A new connection every 15 s, each pulling 2 MB in its first second (swipes)."""
    return _rows([(i, f"10.77.9.{i}", "unknown", 15.0 * i, {15 * i: 2e6}) for i in range(1, 13)])


def _last_full(table: pd.DataFrame) -> pd.Series:
    full = table[table["window_end"] - table["window_start"] == 60]
    return full.iloc[len(full) // 2]


def test_steady_fetcher_is_one_long_lived_connection_on_a_clock() -> None:
    row = _last_full(session_table(_steady()))
    assert row["group"] == "net:10.77.9.0/24"
    assert row["bursts"] == 3 and row["burst_gap_median"] == 20
    assert row["burst_gap_cv"] == 0 and row["burst_mb_median"] == pytest.approx(3.0)
    assert row["media_flows"] == 1 and row["new_media_flows"] == 0
    assert row["media_age_median"] > 60 and row["top_flow_share"] == 1.0


def test_churning_fetcher_opens_new_media_connections() -> None:
    row = _last_full(session_table(_churn()))
    assert row["media_flows"] == 4 and row["new_media_flows"] == 4
    assert row["top_flow_share"] == pytest.approx(0.25)
    assert row["media_age_median"] < 60


def test_windows_step_and_cover_the_end_and_skip_quiet_ones() -> None:
    table = session_table(_steady(), SessionConfig(window=60, step=10))
    ends = (table["window_end"] - T0).tolist()
    assert ends == list(range(10, 190 + 10, 10))  # the last burst is in second 180
    assert (table["window_end"] - table["window_start"]).max() == 60
    assert table["bytes_step"].sum() == pytest.approx(30e6)  # every byte counted once
    quiet = session_table(_rows([(1, "10.77.9.1", "unknown", 0.0, {0: 50_000.0})]))
    assert quiet.empty
    assert list(session_table(_steady()).columns[-len(SESSION_FEATURES) :]) == list(
        SESSION_FEATURES
    )


def test_groups_named_flows_by_service_unless_names_are_withheld() -> None:
    rows = _rows(
        [
            (1, "10.77.9.1", "youtube", 0.0, {0: 2e6}),
            (2, "10.77.8.1", "youtube", 5.0, {5: 2e6}),
            (3, "10.77.7.1", "unknown", 5.0, {6: 2e6}),
        ]
    )
    named = session_table(rows)
    assert sorted(named["group"].unique()) == ["net:10.77.7.0/24", "youtube"]
    assert named[named["group"] == "youtube"]["media_flows"].max() == 2
    blind = session_table(rows, SessionConfig(use_names=False, unnamed_prefix=16))
    assert blind["group"].unique().tolist() == ["net:10.77.0.0/16"]
    assert blind["media_flows"].max() == 3
    pooled = session_table(rows, SessionConfig(use_names=False, unnamed_prefix=0))
    assert pooled["group"].unique().tolist() == ["unnamed"]


def test_nameless_ipv6_servers_group_by_their_48_and_nat64_ones_by_their_ipv4_24() -> None:
    """An IPv6 /24 spans many unrelated networks: nameless IPv6 flows are grouped by the
    server's /48; a NAT64 address (an IPv6-only client reaching an IPv4 server) by the
    /24 of the IPv4 address it carries, the group of the same server reached directly.
    The offline view and live mode's ``group_of`` agree."""
    servers = [
        "2001:db8:1:5::10",
        "2001:db8:1:9::20",  # same /48
        "2001:db8:2::30",  # same /32 and /24, another /48
        "64:ff9b::10.77.9.7",  # NAT64 (well-known prefix)
        "64:ff9b:1::a4d:905",  # NAT64 (local-use prefix): 10.77.9.5
        "10.77.9.1",
    ]
    rows = _rows([(i, s, "unknown", 0.0, {0: 2e6}) for i, s in enumerate(servers)])
    config = SessionConfig()
    groups = session_groups(rows, config).tolist()
    assert groups == [
        "net:2001:db8:1::/48",
        "net:2001:db8:1::/48",
        "net:2001:db8:2::/48",
        "net:10.77.9.0/24",
        "net:10.77.9.0/24",
        "net:10.77.9.0/24",
    ]
    assert [group_of("unknown", s, config) for s in servers] == groups
    wide = SessionConfig(unnamed_prefix6=32)
    assert session_groups(rows, wide).tolist()[:3] == ["net:2001:db8::/32"] * 3
    assert set(session_groups(rows, SessionConfig(unnamed_prefix=0))) == {"unnamed"}


def test_a_nameless_flow_joins_the_service_named_flows_reached_its_server_on() -> None:
    """A connection that began before the capture (no handshake, no name) to a video
    server that a later, named connection reached is part of that service's session; a
    server two services were named on (a shared front end) lends no name."""
    rows = _rows(
        [
            (1, "10.77.9.1", "unknown", 0.0, {0: 2e6, 20: 2e6}),  # began before the capture
            (2, "10.77.9.1", "youtube", 30.0, {30: 2e6}),
            (3, "10.77.8.1", "youtube", 5.0, {5: 1e6}),
            (4, "10.77.8.1", "google", 6.0, {6: 1e5}),
            (5, "10.77.8.1", "unknown", 7.0, {7: 2e6}),
        ]
    )
    groups = session_groups(rows, SessionConfig())
    by_flow = dict(zip(rows["flow_id"], groups, strict=True))
    assert by_flow == {1: "youtube", 2: "youtube", 3: "youtube", 4: "google", 5: "net:10.77.8.0/24"}
    table = session_table(rows)
    assert table[table["group"] == "youtube"]["media_flows"].max() == 3  # flows 1, 2 and 3
    blind = session_groups(rows, SessionConfig(use_names=False))
    assert set(blind) == {"net:10.77.9.0/24", "net:10.77.8.0/24"}


def test_bad_input_and_settings() -> None:
    with pytest.raises(ValueError, match="missing"):
        session_table(pd.DataFrame({"client": ["a"]}))
    with pytest.raises(ValueError, match="step"):
        SessionConfig(window=10, step=20)


def test_latest_window_equals_the_offline_window_that_ends_there() -> None:
    """Also in the session's first minute, where the offline view's windows are shorter
    than a minute: live mode must judge what the model was trained on."""
    rows = _churn()
    offline = session_table(rows)
    first_minute = offline["window_end"] - offline["session_start"] < 60
    assert first_minute.sum() >= 3
    for _, want in offline[offline["window_end"] <= rows["first_ts"].max()].iterrows():
        live = latest_windows(rows, float(want["window_end"]))
        assert len(live) == 1 and live.iloc[0]["group"] == want["group"]
        got = live.iloc[0]
        assert (
            got["window_start"] == want["window_start"]
            and got["session_start"] == want["session_start"]
        )
        for col in ("window_bytes", "bytes_step", *SESSION_FEATURES):
            assert got[col] == pytest.approx(want[col]), (want["window_end"], col)

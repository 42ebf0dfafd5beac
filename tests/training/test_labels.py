"""Flow-label rules on hand-made flow tables (and on one real Requet capture)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from classifier.errors import DatasetError
from tests.shared_data import SHARED, needs_files
from training.labels import (
    FLOW_LABELS,
    MEDIA_MIN_BYTES,
    SMALL_MAX_BYTES,
    flow_labels,
    is_media_name,
)
from training.manifest import ManifestRow

REPO = Path(__file__).resolve().parents[2]
BIG = MEDIA_MIN_BYTES + 1
SMALL = SMALL_MAX_BYTES - 1
MEDIUM = (MEDIA_MIN_BYTES + SMALL_MAX_BYTES) // 2


def _row(label: str, app: str) -> ManifestRow:
    return ManifestRow(
        path=Path("/x/s.pcap"),
        sha256="a" * 64,
        label=label,
        app=app,
        recorded="",
        device="",
        date="",
        license="",
        notes="",
        manifest=Path("/x/m.csv"),
    )


def _flows(*rows: tuple[str | None, float], port: int = 443, proto: int = 17) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "name": [n for n, _ in rows],
            "bytes_down": [b for _, b in rows],
            "server_port": [port] * len(rows),
            "proto": [proto] * len(rows),
        },
        index=[10 + i for i in range(len(rows))],
    )


def _labels(flows: pd.DataFrame, label: str, app: str) -> list[str | None]:
    out = flow_labels(flows, _row(label, app))
    assert list(out.index) == list(flows.index)
    assert set(out.dropna()) <= set(FLOW_LABELS)
    return list(out)


def test_youtube_shorts_session() -> None:
    flows = _flows(
        ("rr3---sn-abc.googlevideo.com", BIG),  # the video
        ("rr3---sn-abc.googlevideo.com", SMALL),  # a probe
        ("rr1---sn-xyz.googlevideo.com", MEDIUM),  # cannot tell
        ("www.youtube.com", BIG),  # page/API, even if big
        ("i.ytimg.com", BIG),  # thumbnails
        ("googleads.g.doubleclick.net", SMALL),  # ads
        (None, SMALL),  # unnamed small
        (None, BIG),  # unnamed big: maybe the video
    )
    assert _labels(flows, "short-form", "youtube") == [
        "short-form",
        "other",
        None,
        "other",
        "other",
        "other",
        "other",
        None,
    ]


def test_long_form_session_uses_same_rules() -> None:
    flows = _flows(("r4---sn-q4f.googlevideo.com", 5e6), ("www.youtube.com", 3e4))
    assert _labels(flows, "long-form", "YouTube") == ["long-form", "other"]


def test_instagram_reels_cdns() -> None:
    flows = _flows(
        ("scontent-mxp1-1.cdninstagram.com", BIG),
        ("video.fmxp1-1.fna.fbcdn.net", BIG),
        ("i.instagram.com", BIG),
        ("graph.instagram.com", SMALL),
        ("rr3---sn-abc.googlevideo.com", BIG),
    )  # another app's CDN
    assert _labels(flows, "short-form", "instagram") == [
        "short-form",
        "short-form",
        "other",
        "other",
        "other",
    ]


def test_tiktok_whole_service_and_unknown_app() -> None:
    flows = _flows(
        ("v16m-default.tiktokcdn-us.com", BIG),
        ("api16.tiktokv.com", BIG),
        ("www.google.com", BIG),
        ("v16m.tiktokcdn-us.com", SMALL),
        ("v16-webapp-prime.tiktok.com", BIG),
        ("www.tiktok.com", BIG),
    )
    assert _labels(flows, "short-form", "tiktok") == [
        "short-form",
        "other",
        "other",
        "other",
        "short-form",
        "other",
    ]
    assert is_media_name("v3.kwaicdn.com", "kwai")  # whole service short-form
    assert not is_media_name("v3.kwaicdn.com", "douyin")
    assert is_media_name("v.vimeocdn.com", "someapp")  # video category from services.toml
    assert not is_media_name("www.google.com", "someapp")
    assert not is_media_name(None, "youtube")
    assert not is_media_name("notgooglevideo.com", "youtube")


@pytest.mark.parametrize("session", ["web", "call", "other-video", "other"])
def test_non_video_sessions_are_all_other(session: str) -> None:
    flows = _flows(("rr3---sn-abc.googlevideo.com", BIG), (None, BIG), ("x.org", 10))
    assert _labels(flows, session, "youtube") == ["other"] * 3


def test_mixed_session_is_left_out() -> None:
    flows = _flows(("rr3---sn-abc.googlevideo.com", BIG), ("x.org", 10))
    assert _labels(flows, "mixed", "youtube") == [None, None]


def test_nameless_single_flow_takes_session_label() -> None:
    assert _labels(_flows((None, 1000.0)), "long-form", "youtube") == ["long-form"]
    assert _labels(_flows((None, 1000.0)), "other-video", "twitch") == ["other"]


def test_nameless_multi_flow_uses_volume_and_port() -> None:
    flows = _flows((None, BIG), (None, SMALL), (None, MEDIUM), (None, 5e6), port=443, proto=6)
    flows.loc[13, "server_port"] = 8009
    assert _labels(flows, "short-form", "instagram") == ["short-form", "other", None, None]


def test_window_table_uses_whole_flow_volume() -> None:
    flows = pd.DataFrame(
        {
            "capture": ["c"] * 4,
            "flow_id": [1, 1, 1, 2],
            "window_start": [0.0, 5.0, 10.0, 0.0],
            "name": ["r1.googlevideo.com"] * 3 + ["www.youtube.com"],
            "bytes_down": [MEDIA_MIN_BYTES / 2, MEDIA_MIN_BYTES / 2, 10.0, 10.0],
        }
    )
    assert _labels(flows, "short-form", "youtube") == ["short-form"] * 3 + ["other"]


def test_missing_columns_and_bad_label() -> None:
    with pytest.raises(DatasetError, match="lacks column"):
        flow_labels(pd.DataFrame({"name": ["a"]}), _row("web", "x"))
    with pytest.raises(DatasetError, match="unknown session label"):
        flow_labels(_flows(("a", 1.0)), _row("shorts", "x"))


def test_empty_table() -> None:
    empty = _flows()
    assert flow_labels(empty, _row("short-form", "youtube")).empty


REQUET = SHARED / "requet" / "B1_baseline_apartment_exp_315.pcap"


@needs_files("requet/B1_baseline_apartment_exp_315.pcap")
def test_requet_capture_googlevideo_flows_are_long_form() -> None:
    from classifier.features.featurize import featurize

    flows = featurize(REQUET)
    row = _row("long-form", "youtube")
    labels = flow_labels(flows, row)
    long = flows[labels == "long-form"]
    assert len(long) >= 1
    assert long["name"].str.endswith(".googlevideo.com").all()
    assert (long["bytes_down"] >= MEDIA_MIN_BYTES).all()
    assert long["bytes_down"].sum() > 0.8 * flows["bytes_down"].sum()
    assert (labels[flows["bytes_down"] >= MEDIA_MIN_BYTES] == "long-form").all()

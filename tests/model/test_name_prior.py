"""A known service whose category carries no short-form video (a call, music, a search
page) is never called short-form, by the flow model or the session model; one that carries
no long-form video is never called long-form (on a platform whose video is short clips
only, what fetches like a video is short-form; elsewhere it is other traffic); unnamed
traffic and video platforms are judged by their shape as before."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from classifier import featurize
from classifier.features.session import SessionConfig, session_table
from classifier.model.artifact import DEFAULT_MODEL_DIR, load_model
from classifier.model.name_prior import name_prior, without_short_form
from classifier.model.predict import classify_table
from classifier.model.session_model import load_session_model, window_probabilities
from tests.shared_data import SHARED, needs_files
from training.simulate import simulate

CLASSES = ["long-form", "other", "short-form"]


def test_ruled_out_rows_move_short_form_mass_to_the_others_in_proportion() -> None:
    proba = np.array([[0.2, 0.1, 0.7], [0.0, 0.0, 1.0], [0.5, 0.3, 0.2]])
    got = without_short_form(proba, CLASSES, np.array([True, True, False]))
    np.testing.assert_allclose(got[0], [2 / 3, 1 / 3, 0.0])
    np.testing.assert_allclose(got[1], [0.0, 1.0, 0.0])  # nothing left: the last other class
    np.testing.assert_allclose(got[2], proba[2])  # not ruled out: untouched
    np.testing.assert_allclose(got.sum(axis=1), 1.0)
    assert proba[0, 2] == 0.7  # the input is not changed in place


def test_name_prior_moves_long_form_to_short_form_on_a_short_video_platform() -> None:
    proba = np.tile([0.5, 0.3, 0.2], (5, 1))
    categories = ["short-video", "audio", "call", "video-cdn", "unknown"]
    prior = name_prior(proba, CLASSES, categories)
    np.testing.assert_allclose(prior.proba[0], [0.0, 0.3, 0.7])  # instagram: video is short
    np.testing.assert_allclose(prior.proba[1], [0.0, 1.0, 0.0])  # music: neither
    np.testing.assert_allclose(prior.proba[2], [0.0, 1.0, 0.0])
    np.testing.assert_allclose(prior.proba[3:], proba[3:])  # youtube, no name: the shape's
    assert prior.long_is_short.tolist() == [True, False, False, False, False]
    assert prior.no_short.tolist() == [False, True, True, False, False]
    np.testing.assert_allclose(prior.proba.sum(axis=1), 1.0)


def _windows(kind: str) -> pd.DataFrame:
    config = SessionConfig()
    tables = [session_table(simulate(kind, seed)[1], config) for seed in range(4)]
    return pd.concat(tables, ignore_index=True)


def _shorts_windows() -> pd.DataFrame:
    return _windows("shorts")


def test_session_windows_of_a_call_or_search_service_are_never_short_form() -> None:
    model = load_session_model(DEFAULT_MODEL_DIR)
    windows = _shorts_windows()
    as_youtube = window_probabilities(model.estimator, windows.assign(group="youtube"))
    as_unnamed = window_probabilities(model.estimator, windows.assign(group="net:10.77.1.0/24"))
    np.testing.assert_allclose(as_youtube[0], as_unnamed[0])
    assert (as_youtube[0] >= 0.8).sum() >= 5  # the shape says short-form in several windows
    for group in ("teams", "spotify"):  # carry no video at all
        p_short, p_long = window_probabilities(model.estimator, windows.assign(group=group))
        assert not p_short.any() and not p_long.any(), group
    for group in ("google", "netflix"):
        p_short, p_long = window_probabilities(model.estimator, windows.assign(group=group))
        assert not p_short.any(), group
        # the odds between long-form and other stay the model's
        p_other = 1.0 - as_youtube[0] - as_youtube[1]
        keep = as_youtube[0] < 0.99
        np.testing.assert_allclose(
            p_long[keep] / (1.0 - p_long[keep]),
            as_youtube[1][keep] / p_other[keep],
            rtol=1e-6,
        )


def test_long_video_shaped_windows_on_instagram_are_short_form() -> None:
    model = load_session_model(DEFAULT_MODEL_DIR)
    windows = _windows("long")
    p_short, p_long = window_probabilities(model.estimator, windows.assign(group="youtube"))
    assert (p_long >= 0.8).sum() >= 5  # the shape says long-form in several windows
    as_instagram = window_probabilities(model.estimator, windows.assign(group="instagram"))
    np.testing.assert_allclose(as_instagram[0], p_short + p_long)
    assert not as_instagram[1].any()


def _import_trace(trace: Path, out: Path) -> None:
    """``shortflow dataset import-trace``, as a user runs it."""
    run = subprocess.run(
        [sys.executable, "-m", "classifier.cli", "dataset", "import-trace", str(trace)]
        + ["--out", str(out), "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr


@needs_files("other/sdrdray_reels_01.json")
def test_flow_verdicts_of_a_real_short_form_trace_named_as_a_call(tmp_path: Path) -> None:
    _import_trace(SHARED / "other" / "sdrdray_reels_01.json", tmp_path)
    table = featurize(tmp_path / "sdrdray_reels_01.pcap")
    model = load_model()
    shaped = classify_table(model, table)
    assert (shaped["label"] == "short-form").sum() >= 3  # the flow model's view of its shape
    for service, category in (("teams", "call"), ("spotify", "audio"), ("google", "web")):
        named = classify_table(model, table.assign(service=service, category=category))
        assert not (named["label"] == "short-form").any(), service
        assert not named["p_short_form"].any()
        was_short = shaped["label"] == "short-form"
        assert named.loc[was_short, "reason"].str.contains("rules short-form out").all()
    video = classify_table(model, table.assign(service="instagram", category="video-cdn"))
    assert (video["label"] == "short-form").sum() >= 1  # a video platform stays open


@needs_files("traces/uuvideo_youtube_480_480_merged_002.csv")
def test_flow_verdicts_of_a_real_long_form_trace_named_as_instagram_or_music(
    tmp_path: Path,
) -> None:
    _import_trace(SHARED / "traces" / "uuvideo_youtube_480_480_merged_002.csv", tmp_path)
    table = featurize(sorted(tmp_path.glob("*.pcap"))[0])
    model = load_model()
    shaped = classify_table(model, table)
    assert (shaped["label"] == "long-form").sum() >= 1  # a YouTube video's shape
    long = shaped["label"] == "long-form"
    named = classify_table(model, table.assign(service="instagram", category="short-video"))
    assert (named.loc[long, "label"] == "short-form").all()
    assert named.loc[long, "reason"].str.contains("carries no long-form video").all()
    np.testing.assert_allclose(
        named.loc[long, "probability"],
        shaped.loc[long, "probability"] + shaped.loc[long, "p_short_form"],
        atol=2e-4,
    )
    music = classify_table(model, table.assign(service="spotify", category="audio"))
    assert (music["label"] == "other").all()

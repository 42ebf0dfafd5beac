"""Where the shared public captures are looked for (training/shared_captures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.manifest import resolve_capture
from training.shared_captures import DEFAULT_DIR, missing_reason, relocate, shared_captures_dir

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("SHORTFLOW_TEST_DATA", raising=False)
    monkeypatch.delenv("SHORTFLOW_PCAPS", raising=False)
    return monkeypatch


def test_default_is_beside_the_repository(no_env: pytest.MonkeyPatch) -> None:
    assert DEFAULT_DIR == REPO.parent / "shared" / "pcaps"
    assert shared_captures_dir() == DEFAULT_DIR


def test_test_data_wins_and_pcaps_is_an_alias(no_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    no_env.setenv("SHORTFLOW_PCAPS", str(tmp_path / "old"))
    assert shared_captures_dir() == tmp_path / "old"
    no_env.setenv("SHORTFLOW_TEST_DATA", str(tmp_path / "new"))
    assert shared_captures_dir() == tmp_path / "new"
    no_env.setenv("SHORTFLOW_TEST_DATA", "")  # empty counts as unset
    assert shared_captures_dir() == tmp_path / "old"


def test_relocate_and_manifest_rows_follow_the_setting(
    no_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    listed = DEFAULT_DIR / "zz-not-there" / "a.pcap"
    assert relocate(listed) == listed  # nothing set: unchanged
    no_env.setenv("SHORTFLOW_TEST_DATA", str(tmp_path))
    assert relocate(listed) == tmp_path / "zz-not-there" / "a.pcap"
    assert relocate(tmp_path / "b.pcap") == tmp_path / "b.pcap"  # elsewhere: unchanged
    assert resolve_capture(listed, "0" * 64) == listed  # not there either: the listed name
    (tmp_path / "zz-not-there").mkdir()
    (tmp_path / "zz-not-there" / "a.pcap").write_bytes(b"x")
    assert resolve_capture(listed, "0" * 64) == tmp_path / "zz-not-there" / "a.pcap"


def test_missing_reason_names_what_is_missing(no_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    no_env.setenv("SHORTFLOW_TEST_DATA", str(tmp_path))
    (tmp_path / "here.pcap").write_bytes(b"x")
    assert missing_reason() is None
    assert missing_reason("here.pcap") is None
    reason = missing_reason("here.pcap", "gone.pcap")
    assert reason is not None and "gone.pcap" in reason and "SHORTFLOW_TEST_DATA" in reason
    no_env.setenv("SHORTFLOW_TEST_DATA", str(tmp_path / "nowhere"))
    assert "the folder missing" in (missing_reason() or "")

"""Manifests: parsing and its errors, verify, add_row, the hash, the public manifests."""

from __future__ import annotations

import argparse
import csv
import hashlib
import re
from pathlib import Path

import pytest

from classifier.errors import DatasetError
from tests.shared_data import DEFAULT_DIR, SHARED, needs_files
from training.dataset_cli import register
from training.manifest import (
    MANIFEST_COLUMNS,
    OPTIONAL_COLUMNS,
    SESSION_LABELS,
    add_row,
    load_manifest,
    manifest_sha256,
    verify_manifest,
)

REPO = Path(__file__).resolve().parents[2]
DATASETS = REPO / "datasets"
HEADER = ",".join(MANIFEST_COLUMNS)


def _capture(folder: Path, name: str, data: bytes) -> tuple[Path, str]:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def _manifest(folder: Path, lines: list[str], name: str = "m.csv") -> Path:
    path = folder / name
    path.write_text("\n".join([HEADER, *lines]) + "\n", encoding="utf-8")
    return path


def test_load_resolves_paths_relative_to_manifest(tmp_path: Path) -> None:
    _, sha = _capture(tmp_path / "caps", "a.pcap", b"aaaa")
    sub = tmp_path / "manifests"
    sub.mkdir()
    m = _manifest(
        sub,
        [
            f'../caps/a.pcap,{sha},short-form,instagram,tcpdump,Pixel,2025-01-31,own,"x, y"',
            "",
            f"/abs/b.pcap,{'0' * 64},web,firefox,,,,,",
        ],
    )
    rows = load_manifest(m)
    assert [r.path for r in rows] == [tmp_path / "caps" / "a.pcap", Path("/abs/b.pcap")]
    assert rows[0].notes == "x, y" and rows[0].label == "short-form"
    assert rows[0].manifest == m
    assert rows[0].capture_id == sha[:16]


def test_columns_in_any_order(tmp_path: Path) -> None:
    cols = list(reversed(MANIFEST_COLUMNS))
    values = {"path": "a.pcap", "sha256": "ab" * 32, "label": "call", "app": "zoom"}
    m = tmp_path / "m.csv"
    m.write_text(",".join(cols) + "\n" + ",".join(values.get(c, "") for c in cols) + "\n")
    (row,) = load_manifest(m)
    assert (row.label, row.app, row.sha256) == ("call", "zoom", "ab" * 32)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("a.pcap,{sha},shorts,yt,,,,,", r"line 3: unknown label 'shorts'"),
        ("a.pcap,1234,web,ff,,,,,", r"line 3: sha256 must be 64 hex digits"),
        ("a.pcap,{sha},web,ff,,,", r"line 3: expected 9 fields, found 7"),
        (",{sha},web,ff,,,,,", r"line 3: empty path"),
        ("a.pcap,{sha},web,ff,,,31/01/2025,,", r"line 3: date '31/01/2025' is not an ISO date"),
        ("b.pcap,{sha},web,ff,,,,,", r"line 3: b.pcap is already listed on line 2"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    sha = "c" * 64
    m = _manifest(tmp_path, [f"b.pcap,{sha},web,ff,,,,,", line.format(sha=sha)])
    with pytest.raises(DatasetError, match=message) as info:
        load_manifest(m)
    assert str(m) in str(info.value) and "\n" not in str(info.value)


def test_bad_header_and_missing_file(tmp_path: Path) -> None:
    m = tmp_path / "m.csv"
    m.write_text("path,sha256,label\nx,y,z\n")
    with pytest.raises(DatasetError, match=r"line 1: header must hold exactly.*missing: app"):
        load_manifest(m)
    m.write_text("")
    with pytest.raises(DatasetError, match="manifest is empty"):
        load_manifest(m)
    with pytest.raises(DatasetError, match="manifest not found"):
        load_manifest(tmp_path / "nope.csv")


def test_verify_finds_missing_and_changed_files(tmp_path: Path) -> None:
    _, sha_a = _capture(tmp_path, "a.pcap", b"good")
    b, sha_b = _capture(tmp_path, "b.pcap", b"before")
    m = _manifest(
        tmp_path,
        [
            f"a.pcap,{sha_a},web,ff,,,,,",
            f"b.pcap,{sha_b},web,ff,,,,,",
            f"gone.pcap,{sha_a},web,ff,,,,,",
        ],
    )
    assert verify_manifest(m) == [f"{tmp_path / 'gone.pcap'}: missing (listed in m.csv)"]
    b.write_bytes(b"after")
    problems = verify_manifest(m)
    assert len(problems) == 2
    assert any("b.pcap: sha256 mismatch" in p for p in problems)


def test_add_row_creates_appends_and_refuses_duplicates(tmp_path: Path) -> None:
    cap, sha = _capture(tmp_path / "caps", "s1.pcap", b"\x00" * 100)
    cap2, _ = _capture(tmp_path / "caps", "s2.pcap", b"\x01" * 100)
    m = tmp_path / "sets" / "mine.csv"
    row = add_row(
        m,
        cap,
        "short-form",
        "tiktok",
        recorded="tcpdump",
        device="Pixel 7",
        date="2025-02-01",
        notes="scrolling, 5 min",
    )
    assert row.sha256 == sha and row.path == cap and row.manifest == m
    add_row(m, cap2, "long-form", "youtube")
    rows = load_manifest(m)
    assert [r.path.name for r in rows] == ["s1.pcap", "s2.pcap"]
    assert rows[1].date  # defaults to today
    text = m.read_text().splitlines()
    assert text[0] == ",".join((*MANIFEST_COLUMNS, *OPTIONAL_COLUMNS))
    assert text[1].startswith("../caps/s1.pcap,")
    with pytest.raises(DatasetError, match="already listed"):
        add_row(m, cap, "web", "x")
    with pytest.raises(DatasetError, match="unknown label"):
        add_row(m, cap2, "reels", "x")
    with pytest.raises(DatasetError, match="capture not found"):
        add_row(m, tmp_path / "none.pcap", "web", "x")
    assert len(load_manifest(m)) == 2
    assert verify_manifest(m) == []


def test_url_column_is_optional_and_checked(tmp_path: Path) -> None:
    cap, sha = _capture(tmp_path, "a.pcap", b"aaaa")
    old = _manifest(tmp_path, [f"a.pcap,{sha},web,ff,,,,,"], "old.csv")
    assert load_manifest(old)[0].url == ""
    with pytest.raises(DatasetError, match="has no url column"):
        add_row(
            old,
            _capture(tmp_path, "b.pcap", b"b")[0],
            "web",
            "ff",
            url="https://example.org/b.pcap",
        )
    new = tmp_path / "new.csv"
    new.write_text(
        "url,path,sha256,label,app,recorded,device,date,license,notes\n"
        f"https://example.org/a.pcap,a.pcap,{sha},web,ff,,,,,\n",
        encoding="utf-8",
    )
    assert load_manifest(new)[0].url == "https://example.org/a.pcap"
    new.write_text(new.read_text().replace("https://example.org", "ftp://example.org"))
    with pytest.raises(DatasetError, match=r"new.csv line 2: url 'ftp://.*https://"):
        load_manifest(new)
    row = add_row(tmp_path / "added.csv", cap, "web", "ff", url="https://example.org/a.pcap")
    assert row.url == load_manifest(tmp_path / "added.csv")[0].url == "https://example.org/a.pcap"


def test_manifest_sha256_tracks_content_and_order(tmp_path: Path) -> None:
    a = _manifest(tmp_path, [f"a.pcap,{'a' * 64},web,ff,,,,,"], "a.csv")
    b = _manifest(tmp_path, [f"b.pcap,{'b' * 64},web,ff,,,,,"], "b.csv")
    h = manifest_sha256([a, b])
    assert re.fullmatch(r"[0-9a-f]{64}", h)
    assert h == manifest_sha256([a, b]) != manifest_sha256([b, a])
    b.write_text(b.read_text().replace(",web,", ",other,"))
    assert manifest_sha256([a, b]) != h
    with pytest.raises(DatasetError):
        manifest_sha256([tmp_path / "missing.csv"])


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


def test_cli_add_and_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cap, _ = _capture(tmp_path, "c.pcap", b"123")
    m = tmp_path / "m.csv"
    assert _cli(["dataset", "add", str(m), str(cap), "--label", "web", "--app", "ff"]) == 0
    assert _cli(["dataset", "verify", str(m)]) == 0
    cap.write_bytes(b"changed")
    assert _cli(["dataset", "verify", str(m)]) == 1
    assert "sha256 mismatch" in capsys.readouterr().out
    assert _cli(["dataset", "summary", str(m)]) == 0
    assert "web" in capsys.readouterr().out


# --- the committed manifests ----------------------------------------------------------------


def _inventory_hashes() -> dict[str, str]:
    """``dir/file -> sha256`` from every table of the shared INVENTORY.md."""
    found: dict[str, str] = {}
    for line in (SHARED / "INVENTORY.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        shas = [c.strip("`") for c in cells if re.fullmatch(r"`[0-9a-f]{64}`", c)]
        if cells and "/" in cells[0] and not cells[0].endswith("/") and shas:
            found[cells[0]] = shas[0]
    return found


needs_shared = needs_files("INVENTORY.md")


@needs_shared
def test_public_manifest_matches_inventory() -> None:
    rows = load_manifest(DATASETS / "public.csv")
    inventory = _inventory_hashes()
    assert len(rows) == 70
    for row in rows:
        key = row.path.relative_to(DEFAULT_DIR).as_posix()  # as listed
        assert row.sha256 == inventory[key], key
        assert row.license and row.recorded
    pcaps = {k for k in inventory if not k.endswith(".json")}
    assert {r.path.relative_to(DEFAULT_DIR).as_posix() for r in rows} == pcaps
    labels = {r.path.name: r.label for r in rows}
    assert {r.label for r in rows if r.label == "long-form"} == {"long-form"}
    assert all(r.path.parent.name == "requet" for r in rows if r.label == "long-form")
    assert labels["youtube_quic.pcap"] == labels["quic.pcap"] == "other"
    assert all("STITCHED" in r.notes for r in rows if r.path.name in ("dns.pcap", "ookla.pcap"))
    assert set(labels.values()) <= set(SESSION_LABELS)


@needs_shared
def test_public_manifest_files_exist_and_hash() -> None:
    assert verify_manifest(DATASETS / "public.csv") == []


@needs_shared
def test_ci_manifest_is_a_subset_with_every_public_label() -> None:
    public = {r.path: r for r in load_manifest(DATASETS / "public.csv")}
    ci = load_manifest(DATASETS / "ci.csv")
    assert 10 <= len(ci) <= 30
    for row in ci:
        assert public[row.path].sha256 == row.sha256 and public[row.path].label == row.label
    assert {r.label for r in ci} == {r.label for r in public.values()}
    assert not any("STITCHED" in r.notes for r in ci)
    with open(DATASETS / "ci.csv", newline="") as fh:
        assert next(csv.reader(fh)) == [*MANIFEST_COLUMNS, *OPTIONAL_COLUMNS]

"""Dataset manifests: one CSV row per capture, saying how it was made and what it shows.

A manifest is a CSV file with the header ``MANIFEST_COLUMNS`` plus, optionally, the
``OPTIONAL_COLUMNS`` (any column order, no other columns). ``path`` is relative to the
manifest's own folder (or absolute); ``sha256`` is the capture file's hash; ``label`` is the
session label, one of ``SESSION_LABELS``; ``url`` (optional, may be empty) is where the
capture can be downloaded (``shortflow dataset fetch``). Labels come from how a capture was
made, never from a model. Splits group flows by :attr:`ManifestRow.capture_id`, so the flows
of one capture never land on both sides.

:attr:`ManifestRow.local_path` is the file to read: the listed path when it exists, else the
fetched copy ``<capture cache>/<sha256>-<basename>`` (:func:`capture_cache_dir`) when that
exists. It is the one place where rows are resolved to files.

Every problem with a manifest is a :class:`classifier.errors.DatasetError` whose one-line
message names the manifest file and, for a bad row, its line number.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date as _date
from datetime import datetime
from pathlib import Path

from classifier.errors import DatasetError
from classifier.manifest_format import MANIFEST_COLUMNS, OPTIONAL_COLUMNS, SESSION_LABELS
from training.shared_captures import relocate

__all__ = [
    "MANIFEST_COLUMNS",
    "OPTIONAL_COLUMNS",
    "SESSION_LABELS",
    "ManifestRow",
    "load_manifest",
    "manifest_sha256",
    "verify_manifest",
    "add_row",
    "file_sha256",
    "capture_cache_dir",
    "cached_capture_path",
    "resolve_capture",
]

log = logging.getLogger(__name__)


_HEX64 = re.compile(r"[0-9a-f]{64}")
_URL = re.compile(r"https?://\S+")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ManifestRow:
    """One capture of a manifest; ``path`` is absolute, ``manifest`` the file it came from."""

    path: Path
    sha256: str
    label: str
    app: str
    recorded: str
    device: str
    date: str
    license: str
    notes: str
    manifest: Path
    url: str = ""

    @property
    def capture_id(self) -> str:
        """Stable id of the capture (first 16 hex digits of its sha256): the split group."""
        return self.sha256[:16]

    @property
    def local_path(self) -> Path:
        """The file to read for this row (see :func:`resolve_capture`). ``path`` stays the
        listed path: names, sources and sidecars come from it."""
        return resolve_capture(self.path, self.sha256)


def capture_cache_dir() -> Path:
    """Where ``shortflow dataset fetch`` puts captures: ``$SHORTFLOW_CACHE/captures`` if set,
    else ``~/.cache/shortflow/captures``."""
    base = os.environ.get("SHORTFLOW_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "shortflow"
    return root / "captures"


def cached_capture_path(path: Path, sha256: str, cache_dir: Path | None = None) -> Path:
    """The fetched copy of a capture: ``<cache_dir>/<sha256>-<basename>``."""
    return (cache_dir or capture_cache_dir()) / f"{sha256}-{Path(path).name}"


def resolve_capture(path: Path, sha256: str, cache_dir: Path | None = None) -> Path:
    """``path`` when it exists; else, for a path in the default shared captures folder,
    the same file in the folder chosen by ``$SHORTFLOW_TEST_DATA`` (see
    :mod:`training.shared_captures`) when it exists there; else its fetched copy when that
    exists; else ``path`` (so a missing capture is reported under the name the manifest
    gives it)."""
    if path.exists():
        return path
    moved = relocate(path)
    if moved != path and moved.exists():
        return moved
    cached = cached_capture_path(path, sha256, cache_dir)
    return cached if cached.is_file() else path


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes. Raises :class:`DatasetError` if it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return digest.hexdigest()


def _check_label(label: str, where: str) -> None:
    if label not in SESSION_LABELS:
        raise DatasetError(
            f"{where}: unknown label {label!r} (expected one of {', '.join(SESSION_LABELS)})"
        )


def _check_date(value: str, where: str) -> None:
    if not value:
        return
    try:
        datetime.fromisoformat(value)
    except ValueError as exc:
        raise DatasetError(f"{where}: date {value!r} is not an ISO date like 2025-01-31") from exc


def _check_url(value: str, where: str) -> None:
    if value and not _URL.fullmatch(value):
        raise DatasetError(f"{where}: url {value!r} must start with https:// or http://")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: manifest not found") from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: manifest is not UTF-8 text") from exc
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read manifest: {exc.strerror or exc}") from exc


def _check_header(header: list[str] | None, manifest: Path) -> list[str]:
    if header is None:
        raise DatasetError(f"{manifest}: manifest is empty (expected a header line)")
    names = [h.strip() for h in header]
    missing = [c for c in MANIFEST_COLUMNS if c not in names]
    extra = [c for c in names if c not in MANIFEST_COLUMNS + OPTIONAL_COLUMNS]
    if missing or extra or len(set(names)) != len(names):
        raise DatasetError(
            f"{manifest} line 1: header must hold exactly the columns "
            f"{','.join(MANIFEST_COLUMNS)} and optionally {','.join(OPTIONAL_COLUMNS)} "
            f"(missing: {','.join(missing) or '-'}; unknown: {','.join(extra) or '-'})"
        )
    return names


def _parse_row(values: list[str], names: list[str], manifest: Path, line: int) -> ManifestRow:
    where = f"{manifest} line {line}"
    if len(values) != len(names):
        raise DatasetError(f"{where}: expected {len(names)} fields, found {len(values)}")
    fields = {name: value.strip() for name, value in zip(names, values, strict=True)}
    if not fields["path"]:
        raise DatasetError(f"{where}: empty path")
    sha = fields["sha256"].lower()
    if not _HEX64.fullmatch(sha):
        raise DatasetError(f"{where}: sha256 must be 64 hex digits, got {fields['sha256']!r}")
    _check_label(fields["label"], where)
    _check_date(fields["date"], where)
    url = fields.get("url", "")
    _check_url(url, where)
    path = Path(os.path.expanduser(fields["path"]))
    if not path.is_absolute():
        path = manifest.parent / path
    return ManifestRow(
        path=Path(os.path.normpath(path.absolute())),
        sha256=sha,
        label=fields["label"],
        app=fields["app"],
        recorded=fields["recorded"],
        device=fields["device"],
        date=fields["date"],
        license=fields["license"],
        notes=fields["notes"],
        manifest=manifest,
        url=url,
    )


def load_manifest(path: Path) -> list[ManifestRow]:
    """Parse a manifest CSV into rows (blank lines are skipped).

    Raises :class:`DatasetError` naming the file and line for a missing or unreadable file, a
    bad header, a row with the wrong number of fields, an empty path, a malformed sha256, an
    unknown label, a bad date, or a path listed twice.
    """
    manifest = Path(os.path.normpath(Path(path).absolute()))
    reader = csv.reader(io.StringIO(_read_text(manifest), newline=""))
    try:
        names = _check_header(next(reader, None), manifest)
        rows: list[ManifestRow] = []
        seen: dict[Path, int] = {}
        for values in reader:
            line = reader.line_num
            if not values or all(not v.strip() for v in values):
                continue
            row = _parse_row(values, names, manifest, line)
            if row.path in seen:
                raise DatasetError(
                    f"{manifest} line {line}: {row.path.name} is already listed on line "
                    f"{seen[row.path]}"
                )
            seen[row.path] = line
            rows.append(row)
    except csv.Error as exc:
        raise DatasetError(f"{manifest} line {reader.line_num}: bad CSV: {exc}") from exc
    return rows


def manifest_sha256(paths: Sequence[Path]) -> str:
    """One sha256 over the contents of the given manifests, in the given order.

    Each manifest contributes its byte length and bytes, so the hash changes with any edit
    (a row, a capture hash, a label) and with the order of the manifests. Raises
    :class:`DatasetError` if a manifest cannot be read.
    """
    digest = hashlib.sha256()
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise DatasetError(f"{path}: cannot read manifest: {exc.strerror or exc}") from exc
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def verify_manifest(path: Path) -> list[str]:
    """Check every row's capture (its :attr:`ManifestRow.local_path`): it exists and its
    sha256 matches. Returns the problems.

    An empty list means all captures are present and intact. Raises :class:`DatasetError`
    only when the manifest itself cannot be parsed (see :func:`load_manifest`).
    """
    problems: list[str] = []
    for row in load_manifest(path):
        local = row.local_path
        if not local.is_file():
            hint = " (shortflow dataset fetch can download it)" if row.url else ""
            problems.append(f"{row.path}: missing (listed in {row.manifest.name}){hint}")
            continue
        try:
            actual = file_sha256(local)
        except DatasetError as exc:
            problems.append(str(exc))
            continue
        if actual != row.sha256:
            problems.append(
                f"{local}: sha256 mismatch (manifest {row.sha256[:16]}..., file {actual[:16]}...)"
            )
    return problems


def _relative_to(target: Path, folder: Path) -> str:
    """``target`` relative to ``folder`` (POSIX separators), or absolute if on another drive."""
    try:
        return Path(os.path.relpath(target, folder)).as_posix()
    except ValueError:
        return target.as_posix()


def add_row(
    manifest: Path,
    capture: Path,
    label: str,
    app: str,
    recorded: str = "",
    device: str = "",
    date: str = "",
    license: str = "",
    notes: str = "",
    url: str = "",
) -> ManifestRow:
    """Append a row for ``capture`` (hashed now) to ``manifest``, creating it with a header.

    ``date`` defaults to today (UTC). The path is stored relative to the manifest's folder.
    A new manifest gets every column (``MANIFEST_COLUMNS`` and ``OPTIONAL_COLUMNS``); a
    ``url`` for a manifest without that column is refused.
    The append holds an exclusive lock on the manifest, so parallel writers do not interleave.
    Raises :class:`DatasetError` for an unknown label, a bad date, a missing capture, a
    capture already listed, or a manifest that cannot be parsed or written.
    """
    manifest = Path(os.path.normpath(Path(manifest).absolute()))
    capture = Path(os.path.normpath(Path(capture).absolute()))
    _check_label(label, str(manifest))
    date = date or _date.today().isoformat()
    _check_date(date, str(manifest))
    _check_url(url, str(manifest))
    if not capture.is_file():
        raise DatasetError(f"{capture}: capture not found")
    sha = file_sha256(capture)
    values = {
        "path": _relative_to(capture, manifest.parent),
        "sha256": sha,
        "label": label,
        "app": app,
        "recorded": recorded,
        "device": device,
        "date": date,
        "license": license,
        "notes": notes,
        "url": url,
    }
    try:
        manifest.parent.mkdir(parents=True, exist_ok=True)
        with open(manifest, "a+", encoding="utf-8", newline="") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                _append_locked(fh, manifest, capture, values)
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    except OSError as exc:
        raise DatasetError(f"{manifest}: cannot write manifest: {exc.strerror or exc}") from exc
    log.info("added %s (%s) to %s", capture.name, label, manifest)
    columns = (*MANIFEST_COLUMNS, *OPTIONAL_COLUMNS)
    return _parse_row([values[c] for c in columns], list(columns), manifest, 0)


def _append_locked(
    fh: io.TextIOWrapper, manifest: Path, capture: Path, values: dict[str, str]
) -> None:
    fh.seek(0)
    text = fh.read()
    if text.strip():
        for row in load_manifest(manifest):
            if row.path == capture:
                raise DatasetError(f"{manifest}: {capture.name} is already listed")
        columns: Sequence[str] = [h.strip() for h in next(csv.reader([text.splitlines()[0]]))]
        if values["url"] and "url" not in columns:
            raise DatasetError(f"{manifest}: has no url column; add one to the header first")
    else:
        columns = (*MANIFEST_COLUMNS, *OPTIONAL_COLUMNS)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if not text.strip():
        writer.writerow(columns)
    elif not text.endswith("\n"):
        buf.write("\n")
    writer.writerow([values[c] for c in columns])
    fh.seek(0, os.SEEK_END)
    fh.write(buf.getvalue())
    fh.flush()

"""`shortflow dataset fetch`: download the captures a manifest lists by ``url``.

For every row with a ``url`` whose listed file is missing (or differs from the manifest's
sha256), :func:`fetch_manifest` downloads the file into the capture cache as
``<cache>/<sha256>-<basename>`` (:func:`training.manifest.cached_capture_path`), hashing
while it writes to a temporary file in the same folder; a file whose sha256 matches is
renamed into place, any other is deleted. Rows already present and correct (listed file or
cached copy) are skipped. Each row gives one line; a failed row (HTTP error, timeout,
refused connection, hash mismatch) gives a one-line error and the others carry on.
Training finds the cached copies through :attr:`training.manifest.ManifestRow.local_path`.

Only the standard library (``urllib``) is used.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from classifier.errors import DatasetError
from training.manifest import (
    ManifestRow,
    cached_capture_path,
    capture_cache_dir,
    file_sha256,
    load_manifest,
)

__all__ = ["FetchSummary", "fetch_manifest", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = 60.0
"""Seconds without progress (connect or read) before a download is given up."""

_CHUNK = 1 << 16
_USER_AGENT = "shortflow-dataset-fetch"


@dataclass
class FetchSummary:
    """What :func:`fetch_manifest` did, row by row (names as the manifest gives them)."""

    downloaded: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    no_url: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    bytes_downloaded: int = 0


def _name(row: ManifestRow) -> str:
    """The row's path as its manifest writes it (unique within the manifest)."""
    try:
        return Path(os.path.relpath(row.path, row.manifest.parent)).as_posix()
    except ValueError:
        return row.path.as_posix()


def _matches(path: Path, sha256: str) -> bool:
    if not path.is_file():
        return False
    try:
        return file_sha256(path) == sha256
    except DatasetError:
        return False


def _reason(exc: BaseException, timeout: float) -> str:
    """One line for a failed download."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            return f"timed out after {timeout:g} s"
        if isinstance(reason, OSError) and reason.strerror:
            return reason.strerror
        return str(reason)
    if isinstance(exc, http.client.IncompleteRead):
        return f"connection closed after {len(exc.partial)} bytes ({exc.expected} missing)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _download_to_temp(url: str, folder: Path, timeout: float) -> tuple[Path, str, int]:
    """Stream ``url`` into a new temporary file in ``folder``; returns its path, sha256 and
    size. The temporary file is removed when the download fails."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    fd, name = tempfile.mkstemp(prefix=".fetch-", suffix=".part", dir=folder)
    tmp = Path(name)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as resp:
            expected = resp.headers.get("Content-Length")
            while chunk := resp.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            if expected is not None and expected.isdigit() and int(expected) != size:
                raise ConnectionError(f"connection closed after {size} of {expected} bytes")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, digest.hexdigest(), size


def _fetch_row(
    row: ManifestRow, cache: Path, timeout: float, summary: FetchSummary, say: Callable[[str], None]
) -> None:
    name = _name(row)
    if not row.url:
        summary.no_url.append(name)
        if (
            not row.path.is_file()
            and not cached_capture_path(row.path, row.sha256, cache).is_file()
        ):
            say(f"no url  {name}: missing and the manifest gives no url to fetch it from")
        return
    if _matches(row.path, row.sha256):
        summary.present.append(name)
        say(f"ok      {name} (present)")
        return
    target = cached_capture_path(row.path, row.sha256, cache)
    if _matches(target, row.sha256):
        summary.present.append(name)
        say(f"ok      {name} (cached {target.name})")
        return
    try:
        tmp, actual, size = _download_to_temp(row.url, cache, timeout)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        summary.failed.append(name)
        say(f"error   {name}: {row.url}: {_reason(exc, timeout)}")
        return
    if actual != row.sha256:
        tmp.unlink(missing_ok=True)
        summary.failed.append(name)
        say(
            f"error   {name}: sha256 mismatch: manifest {row.sha256}, downloaded {actual} "
            f"({size} bytes from {row.url}); file deleted"
        )
        return
    try:
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        summary.failed.append(name)
        say(f"error   {name}: cannot write {target}: {exc.strerror or exc}")
        return
    summary.downloaded.append(name)
    summary.bytes_downloaded += size
    note = (
        " (the listed file differs from the manifest; the cached copy is used once it is removed)"
        if row.path.exists()
        else ""
    )
    say(f"fetched {name} ({size:,} bytes) -> {target}{note}")


def fetch_manifest(
    manifest: Path,
    cache_dir: Path | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    say: Callable[[str], None] = print,
) -> FetchSummary:
    """Download the missing captures of ``manifest`` that have a url into ``cache_dir``
    (default :func:`training.manifest.capture_cache_dir`), one line per row through ``say``.

    Raises :class:`DatasetError` only when the manifest cannot be parsed or the cache folder
    cannot be created; per-row failures are reported and listed in ``FetchSummary.failed``.
    """
    rows = load_manifest(manifest)
    cache = Path(cache_dir) if cache_dir is not None else capture_cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(
            f"{cache}: cannot create the capture cache: {exc.strerror or exc}"
        ) from exc
    summary = FetchSummary()
    for row in rows:
        _fetch_row(row, cache, timeout, summary, say)
    return summary

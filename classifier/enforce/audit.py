"""Append-only audit log: one JSON object per line for every block, unblock and sinkhole.

The file is opened with ``O_APPEND`` (several writers never overwrite each other), each
line goes out in one ``write`` call and is flushed to disk with ``fsync`` before
:meth:`AuditLog.write` returns, so an entry that was acknowledged survives a crash.

Fields (missing ones are written as ``null``): ``time`` (UTC, ISO 8601), ``action``,
``client``, ``server``, ``port``, ``proto``, ``name`` (SNI or DNS name), ``label``,
``probability``, ``rule``, ``expiry`` (UTC, ISO 8601); extra keys are kept as given.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from classifier.errors import EnforcementError

__all__ = ["AuditLog", "ACTIONS", "FIELDS", "read_audit"]

log = logging.getLogger(__name__)

ACTIONS = ("block", "unblock", "dry-run-block", "sinkhole", "dry-run-sinkhole", "expire")
FIELDS = (
    "time",
    "action",
    "client",
    "server",
    "port",
    "proto",
    "name",
    "label",
    "probability",
    "rule",
    "expiry",
)


def _iso(value: Any) -> Any:
    """datetimes and epoch floats in time-like fields become ISO 8601 UTC strings."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.astimezone()
        return value.astimezone(UTC).isoformat(timespec="milliseconds")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC).isoformat(timespec="milliseconds")
    return value


class AuditLog:
    """An append-only JSON-lines file; thread-safe; one fsync per line.

    Raises EnforcementError when the file cannot be opened or written.
    """

    def __init__(self, path: str | Path, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self._fsync = fsync
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd: int | None = os.open(
                self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640
            )
        except OSError as exc:
            raise EnforcementError(f"cannot open audit log {self.path}: {exc.strerror}") from None

    def write(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Append one event and return the record as written.

        ``action`` must be one of :data:`ACTIONS`; ``time`` defaults to now; ``time`` and
        ``expiry`` may be datetimes or epoch seconds. Raises EnforcementError for an unknown
        action, a value that is not JSON, a closed log or a failed write.
        """
        action = event.get("action")
        if action not in ACTIONS:
            raise EnforcementError(
                f"audit event action {action!r} is not one of {', '.join(ACTIONS)}"
            )
        record: dict[str, Any] = {k: event.get(k) for k in FIELDS}
        record.update({k: v for k, v in event.items() if k not in record})
        record["time"] = _iso(record["time"] if record["time"] is not None else datetime.now(UTC))
        if record["expiry"] is not None:
            record["expiry"] = _iso(record["expiry"])
        try:
            line = json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"
        except (TypeError, ValueError) as exc:
            raise EnforcementError(f"audit event is not JSON-serialisable: {exc}") from None
        data = line.encode()
        with self._lock:
            if self._fd is None:
                raise EnforcementError(f"audit log {self.path} is closed")
            try:
                written = os.write(self._fd, data)
                while written < len(data):  # a short write: finish it
                    written += os.write(self._fd, data[written:])
                if self._fsync:
                    os.fsync(self._fd)
            except OSError as exc:
                raise EnforcementError(
                    f"cannot write audit log {self.path}: {exc.strerror}"
                ) from None
        return record

    def close(self) -> None:
        """Close the file; later writes raise EnforcementError. Idempotent."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_audit(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the events of an audit log, oldest first; a torn last line is skipped.

    Raises EnforcementError when the file cannot be read.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    log.warning("audit log %s line %d is damaged; skipped", path, lineno)
    except OSError as exc:
        raise EnforcementError(f"cannot read audit log {path}: {exc.strerror}") from None

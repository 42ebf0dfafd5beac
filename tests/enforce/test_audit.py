"""The audit log: JSON lines, O_APPEND from several writers, required fields, bad events."""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from classifier.enforce.audit import FIELDS, AuditLog, read_audit
from classifier.errors import EnforcementError


def test_write_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "audit.jsonl"
    with AuditLog(path) as audit:
        rec = audit.write(
            {
                "action": "block",
                "client": "10.77.1.2",
                "server": "10.77.2.2",
                "port": 443,
                "proto": "udp",
                "name": "rr1.googlevideo.com",
                "label": "shorts",
                "probability": 0.93,
                "rule": "test",
                "expiry": 1_700_000_300.0,
                "extra": 1,
            }
        )
    assert list(rec)[: len(FIELDS)] == list(FIELDS)
    events = list(read_audit(path))
    assert len(events) == 1
    ev = events[0]
    assert ev["action"] == "block" and ev["port"] == 443 and ev["extra"] == 1
    assert ev["expiry"] == "2023-11-14T22:18:20.000+00:00"
    t = datetime.fromisoformat(ev["time"])
    assert abs((datetime.now(UTC) - t).total_seconds()) < 60
    assert oct(os.stat(path).st_mode & 0o777) == "0o640"


def test_appends_never_truncate(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    AuditLog(path).write({"action": "sinkhole", "name": "a.test"})
    second = AuditLog(path)
    second.write({"action": "unblock"})
    second.close()
    assert [e["action"] for e in read_audit(path)] == ["sinkhole", "unblock"]


def test_concurrent_writers_give_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    logs = [AuditLog(path, fsync=False) for _ in range(3)]

    def work(i: int) -> None:
        for j in range(200):
            logs[i].write({"action": "dry-run-block", "client": f"c{i}", "n": j, "pad": "x" * 300})

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = path.read_text().splitlines()
    assert len(lines) == 600
    parsed = [json.loads(line) for line in lines]
    for i in range(3):
        assert [e["n"] for e in parsed if e["client"] == f"c{i}"] == list(range(200))


def test_bad_events(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl")
    with pytest.raises(EnforcementError, match="not one of"):
        audit.write({"action": "delete-everything"})
    with pytest.raises(EnforcementError, match="JSON"):
        audit.write({"action": "block", "server": object()})
    with pytest.raises(EnforcementError, match="JSON"):
        audit.write({"action": "block", "probability": float("nan")})
    audit.close()
    with pytest.raises(EnforcementError, match="closed"):
        audit.write({"action": "block"})
    assert (tmp_path / "audit.jsonl").read_text() == ""


def test_unopenable_path(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(EnforcementError, match="cannot open audit log"):
        AuditLog(tmp_path / "dir")


def test_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    AuditLog(path).write({"action": "block"})
    with open(path, "a") as fh:
        fh.write('{"action": "blo')
    assert [e["action"] for e in read_audit(path)] == ["block"]

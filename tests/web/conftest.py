"""A real LiveState (dry-run Enforcer, real audit log, policy file) for the web page tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from classifier.enforce.audit import AuditLog
from classifier.enforce.enforcer import Enforcer
from classifier.enforce.policy import PolicyHolder
from classifier.live.state import LiveState
from classifier.web.usage import UsageLog

TOKEN = "web-test-token-0123456789abcdef"
SCRIPT_NAME = "<script>alert(1)</script>.example"

POLICY = """mode = "dry-run"
block_seconds = 300
[agreement]
k = 2
n = 3
threshold = 0.5
"""


@dataclass
class WebLive:
    state: LiveState
    policy_path: Path
    audit_path: Path


@pytest.fixture
def web_live(tmp_path: Path) -> Iterator[WebLive]:
    policy_path = tmp_path / "policy.toml"
    policy_path.write_text(POLICY)
    audit_path = tmp_path / "audit.jsonl"
    audit = AuditLog(audit_path, fsync=False)
    holder = PolicyHolder(policy_path)
    enforcer = Enforcer("dry-run", None, audit, holder)
    state = LiveState(enforcer, holder)
    state.usage = UsageLog()
    state.audit_path = audit_path
    leases = tmp_path / "dnsmasq.leases"
    leases.write_text("1767225600 aa:bb:cc:dd:ee:01 10.77.1.2 annas-phone *\n")
    state.leases_path = leases
    try:
        yield WebLive(state, policy_path, audit_path)
    finally:
        enforcer.close()
        audit.close()


def feed(state: LiveState) -> None:
    """A Shorts session and a flow whose SNI is a script tag."""
    for _ in range(3):
        state.update_session(
            "10.77.1.2",
            "youtube",
            {"label": "short-form", "probability": 0.93, "action": "none", "reason": "churn"},
        )
    state.update_session(
        "10.77.1.3", SCRIPT_NAME, {"label": "other", "probability": 0.1, "reason": SCRIPT_NAME}
    )
    state.update_flow(
        {
            "proto": "tcp",
            "client": "10.77.1.2",
            "client_port": 40000,
            "server": "10.77.2.2",
            "server_port": 443,
        },
        {
            "label": "short-form",
            "probability": 0.9,
            "service": "youtube",
            "name": SCRIPT_NAME,
            "reason": "bursts",
        },
    )

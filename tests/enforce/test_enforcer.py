"""Enforcer: policy checks, dry-run leaves nftables alone, nft mode, audit, close, SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from classifier.enforce.audit import AuditLog, read_audit
from classifier.enforce.enforcer import Enforcer
from classifier.enforce.nft import NftTable
from classifier.enforce.policy import Policy, PolicyHolder, parse_policy
from classifier.errors import EnforcementError
from tests.netns import netns_available, requires_netns, run_in, scratch_netns

C, S = "10.77.1.2", "10.77.2.2"
OTHER = (
    "table ip keepme {\n  chain c {\n    type filter hook forward priority 10; policy accept;\n"
    "  }\n}\n"
)


class _Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def _policy(**doc: object) -> Policy:
    base: dict[str, object] = {
        "mode": "nft",
        "block_seconds": 30,
        "allow": {"names": ["ok.lab.test"], "ips": ["10.77.2.99"]},
    }
    base.update(doc)
    return parse_policy(base, "test")


def _events(path: Path) -> list[dict[str, object]]:
    return list(read_audit(path))


def test_bad_construction(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "a.jsonl")
    holder = PolicyHolder(initial=_policy())
    with pytest.raises(EnforcementError, match="not one of"):
        Enforcer("block", None, audit, holder)
    with pytest.raises(EnforcementError, match="needs an nftables table"):
        Enforcer("nft", None, audit, holder)


def test_off_and_dry_run_without_firewall(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    clock = _Clock()
    holder = PolicyHolder(initial=_policy())
    off = Enforcer("off", None, AuditLog(path), holder, clock=clock)
    assert off.block(C, S, 443, "udp", label="shorts", probability=0.99) is None
    dry = Enforcer("dry-run", None, AuditLog(path), holder, clock=clock)
    rec = dry.block(C, S, 443, "udp", label="shorts", probability=0.91, name="rr.lab.test")
    assert rec is not None and rec.dry_run and rec.expires == clock.now + 30
    again = dry.block(C, S, 443, "UDP", label="shorts", probability=0.95)
    assert again is not None and again.id == rec.id  # same flow: no second audit line
    assert [e["action"] for e in _events(path)] == ["dry-run-block"]
    ev = _events(path)[0]
    assert (ev["client"], ev["server"], ev["port"], ev["proto"], ev["name"], ev["label"]) == (
        C,
        S,
        443,
        "udp",
        "rr.lab.test",
        "shorts",
    )
    assert ev["probability"] == 0.91 and "shorts" in str(ev["rule"])
    assert [r.id for r in dry.active_blocks()] == [rec.id]
    clock.now += 31
    assert dry.active_blocks() == []
    dry.close()
    off.close()


def test_policy_gates(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    holder = PolicyHolder(
        initial=_policy(categories=["shorts"], clients={"only": ["10.77.1.0/24"]})
    )
    e = Enforcer("dry-run", None, AuditLog(path), holder)
    assert e.block(C, S, 443, "udp", label="reels", probability=0.99) is None  # category
    assert e.block("10.77.5.5", S, 443, "udp", label="shorts", probability=0.99) is None
    assert (
        e.block(C, S, 443, "udp", label="shorts", probability=0.99, name="a.ok.lab.test") is None
    )  # allowlisted name
    assert e.block(C, "10.77.2.99", 443, "udp", label="shorts", probability=0.99) is None
    with pytest.raises(EnforcementError, match="both port and proto"):
        e.block(C, S, 443, None, label="shorts", probability=0.99)
    assert _events(path) == []
    holder.set(_policy(mode="off"))  # a policy can turn enforcement down ...
    assert e.effective_mode == "off"
    assert e.block(C, S, 443, "udp", label="shorts", probability=0.99) is None
    e2 = Enforcer("dry-run", None, AuditLog(path), PolicyHolder(initial=_policy(mode="nft")))
    assert e2.effective_mode == "dry-run"  # ... but never escalate past the start mode


def test_observe_needs_k_of_n(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    holder = PolicyHolder(initial=_policy(agreement={"k": 2, "n": 3, "threshold": 0.8}))
    e = Enforcer("dry-run", None, AuditLog(path), holder)
    args = (C, S, 443, "udp")
    assert e.observe(*args, label="shorts", probability=0.9, name="v.lab.test") is None
    assert e.observe(*args, label="shorts", probability=0.3, name="v.lab.test") is None
    assert (
        e.observe(
            C, "10.77.2.3", 443, "udp", label="shorts", probability=0.95, name="other.lab.test"
        )
        is None
    )  # another service: its own votes
    rec = e.observe(*args, label="shorts", probability=0.85, name="v.lab.test")
    assert rec is not None and rec.probability == 0.85
    assert [x["action"] for x in _events(path)] == ["dry-run-block"]


@pytest.fixture
def router_ns() -> Iterator[str]:
    if not netns_available():
        pytest.skip("needs root and iproute2 to create network namespaces")
    with scratch_netns("sf-enf") as ns:
        run_in(ns, ["nft", "-f", "-"], input=OTHER)
        yield ns


@requires_netns
@pytest.mark.netns
def test_dry_run_leaves_ruleset_unchanged(router_ns: str, tmp_path: Path) -> None:
    before = run_in(router_ns, ["nft", "list", "ruleset"]).stdout
    e = Enforcer(
        "dry-run",
        NftTable(router_ns),
        AuditLog(tmp_path / "a.jsonl"),
        PolicyHolder(initial=_policy()),
    )
    assert e.block(C, S, 443, "tcp", label="shorts", probability=0.97) is not None
    assert e.block(C, "10.77.2.3", label="reels", probability=0.97) is not None
    assert run_in(router_ns, ["nft", "list", "ruleset"]).stdout == before
    e.close()
    assert run_in(router_ns, ["nft", "list", "ruleset"]).stdout == before
    assert [x["action"] for x in _events(tmp_path / "a.jsonl")] == ["dry-run-block"] * 2


@requires_netns
@pytest.mark.netns
def test_nft_mode_blocks_unblocks_and_closes(router_ns: str, tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    other_before = run_in(router_ns, ["nft", "list", "table", "ip", "keepme"]).stdout
    table = NftTable(router_ns)
    e = Enforcer("nft", table, AuditLog(path), PolicyHolder(initial=_policy()))
    assert table.exists() and table.list_blocks() == []
    rec = e.block(C, S, 443, "udp", label="shorts", probability=0.9, name="rr.lab.test")
    pair = e.block(C, "10.77.2.3", label="tiktok", probability=0.99)
    assert rec is not None and pair is not None and not rec.dry_run
    live = {(b.kind, b.server, b.port, b.proto, b.timeout_s) for b in table.list_blocks()}
    assert live == {("flow", S, 443, "udp", 30), ("pair", "10.77.2.3", None, None, 30)}
    renewed = e.block(C, S, 443, "udp", label="shorts", probability=0.95)
    assert renewed is not None and renewed.id == rec.id and renewed.expires >= rec.expires
    assert {r.id for r in e.active_blocks()} == {rec.id, pair.id}
    assert e.unblock(rec.id) is True and e.unblock(rec.id) is False
    assert [b.kind for b in table.list_blocks()] == ["pair"]
    e.close()
    e.close()  # idempotent
    assert not NftTable(router_ns, backend="cli").exists()
    assert run_in(router_ns, ["nft", "list", "table", "ip", "keepme"]).stdout == other_before
    assert e.block(C, S, 443, "udp", label="shorts", probability=0.9) is None
    actions = [(x["action"], x.get("renewed"), x["rule"]) for x in _events(path)]
    assert [a[0] for a in actions] == ["block", "block", "block", "unblock", "unblock"]
    assert actions[2][1] is True and actions[3][2] == "manual" and actions[4][2] == "shutdown"


SIGTERM_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from classifier.enforce import AuditLog, Enforcer, NftTable, PolicyHolder
    from classifier.enforce.policy import parse_policy
    ns, audit = sys.argv[1], sys.argv[2]
    holder = PolicyHolder(initial=parse_policy({"mode": "nft"}, "t"))
    e = Enforcer("nft", NftTable(ns), AuditLog(audit), holder)
    e.install_signal_handlers()
    e.block("10.77.1.2", "10.77.2.2", 443, "udp", label="shorts", probability=0.9)
    print("ready", flush=True)
    time.sleep(30)
    print("not reached", flush=True)
    """
)


@requires_netns
@pytest.mark.netns
def test_sigterm_removes_table(router_ns: str, tmp_path: Path) -> None:
    audit = tmp_path / "a.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGTERM_SCRIPT, router_ns, str(audit)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        assert NftTable(router_ns, backend="cli").exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 128 + signal.SIGTERM
        assert "not reached" not in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert not NftTable(router_ns, backend="cli").exists()
    assert "keepme" in run_in(router_ns, ["nft", "list", "ruleset"]).stdout
    assert [(e["action"], e["rule"]) for e in read_audit(audit)][-1] == ("unblock", "shutdown")

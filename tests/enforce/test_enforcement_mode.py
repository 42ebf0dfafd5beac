"""``shortflow live --enforce`` and the policy's ``mode``: the more cautious wins, and a
disagreement is said in one line (at start, after a reload, and in ``/v1/live/flows``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from classifier.enforce.audit import AuditLog
from classifier.enforce.enforcer import Enforcer
from classifier.enforce.policy import MODES, Policy, PolicyHolder, enforcement_status
from classifier.live.state import LiveState


def test_dry_run_flag_and_nft_policy_disagree_in_one_line() -> None:
    status = enforcement_status("dry-run", "nft")
    assert status == {
        "flag": "dry-run",
        "policy": "nft",
        "effective": "dry-run",
        "note": "enforcement: --enforce dry-run and policy mode nft disagree; using dry-run "
        "(the more cautious). Pass --enforce nft to block.",
    }


def test_nft_flag_and_dry_run_policy_point_at_the_policy_file() -> None:
    note = enforcement_status("nft", "dry-run")["note"]
    assert note is not None and "\n" not in note
    assert "using dry-run (the more cautious)" in note
    assert 'Set mode = "nft" in the policy to block.' in note


@pytest.mark.parametrize("flag", MODES)
@pytest.mark.parametrize("policy", MODES)
def test_the_more_cautious_wins_like_the_enforcer(flag: str, policy: str, tmp_path: Path) -> None:
    status = enforcement_status(flag, policy)
    assert status["effective"] == min(flag, policy, key=MODES.index)
    assert (status["note"] is None) == (flag == policy)
    # the enforcer's own rule gives the same answer (nft needs a table: compare below it)
    if flag != "nft":
        holder = PolicyHolder(initial=dataclasses.replace(Policy.default(), mode=policy))
        audit = AuditLog(tmp_path / "audit.jsonl", fsync=False)
        enforcer = Enforcer(flag, None, audit, holder)
        try:
            assert enforcer.effective_mode == status["effective"]
            assert LiveState(enforcer, holder).enforcement() == status
        finally:
            enforcer.close()
            audit.close()


def test_live_state_follows_a_policy_change(tmp_path: Path) -> None:
    holder = PolicyHolder(initial=Policy.default())  # mode dry-run
    audit = AuditLog(tmp_path / "audit.jsonl", fsync=False)
    enforcer = Enforcer("dry-run", None, audit, holder)
    state = LiveState(enforcer, holder)
    try:
        assert state.enforcement()["note"] is None
        holder.set(dataclasses.replace(Policy.default(), mode="nft"))
        assert state.enforcement()["effective"] == "dry-run"
        assert "Pass --enforce nft to block." in str(state.enforcement()["note"])
    finally:
        enforcer.close()
        audit.close()

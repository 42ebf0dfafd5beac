"""Live mode's log (a line per verdict change and per block action, a summary) and the
retention of ended flows and sessions in LiveState, on real objects with a fake clock."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest

from classifier.api.schemas import SessionVerdict
from classifier.capture.reader import open_capture
from classifier.cli import main as cli_main
from classifier.enforce.audit import AuditLog, read_audit
from classifier.enforce.enforcer import Enforcer
from classifier.enforce.policy import Policy, PolicyHolder, parse_policy
from classifier.live.report import SessionLabel, VerdictLog, summary_text
from classifier.live.state import LiveState
from classifier.model.session_model import pending_text
from tests.packets import replay

SAMPLE = Path(__file__).resolve().parents[1] / "datasets" / "samples" / "sample.pcap"
C, S = "10.77.1.2", "10.77.2.2"
VERDICT = re.compile(
    r"^verdict (\S+) (\S+)(?: \((\S+)\))?: (\S+) -> (\S+) p=(\d\.\d\d)(?: \([^)]+\))?"
    r"(?: window (\S+) s)?; action: ([^;]+)(?:; (.*))?$"
)


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _enforcer(tmp: Path, clock: Clock, **policy: object) -> Enforcer:
    doc = {"mode": "dry-run", "block_seconds": 30, **policy}
    return Enforcer(
        "dry-run",
        None,
        AuditLog(tmp / "audit.jsonl", fsync=False),
        PolicyHolder(initial=parse_policy(doc, "test")),
        clock=clock,
    )


def _lines(caplog: pytest.LogCaptureFixture, prefix: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.INFO and r.getMessage().startswith(prefix)
    ]


def test_a_session_judged_for_an_hour_logs_its_changes_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    enforcer = _enforcer(tmp_path, clock)
    reports = VerdictLog()
    policy = enforcer._policy.current
    caplog.set_level(logging.DEBUG, logger="classifier")
    made = 0

    def judge(p_short: float, p_long: float) -> None:
        nonlocal made
        label, p, *_ = reports.session_label(C, "youtube", p_short, p_long, policy)
        rec = enforcer.observe(
            C, S, 443, "udp", label="shorts", probability=p_short, name="youtube"
        )
        records = [rec] if rec is not None else []
        made += reports.report(
            C,
            "youtube",
            label=label,
            probability=p,
            name="rr3.gv.test",
            window=60.0,
            action="would block (dry-run)" if records else "none",
            records=records,
            reason="r",
        ).new_blocks
        clock.t += 10

    for _ in range(360):  # an hour of long-form, judged every 10 s
        judge(0.05, 0.9)
    assert _lines(caplog, "verdict") == [
        f"verdict {C} youtube (rr3.gv.test): - -> long-form p=0.90 window 60 s; action: none; r"
    ]
    for _ in range(30):  # five minutes of scrolling: 3 of 5 windows agree, then blocks
        judge(0.95, 0.04)  # long-form until 3 windows agree
    for _ in range(3):
        judge(0.05, 0.9)  # back to long-form (still 3 of the last 5 short-form windows)
    for _ in range(30):
        judge(0.05, 0.9)
    lines = _lines(caplog, "verdict")
    assert [VERDICT.match(x).group(4, 5, 8) for x in lines] == [  # type: ignore[union-attr]
        ("-", "long-form", "none"),
        ("long-form", "short-form", "would block (dry-run)"),
        ("short-form", "long-form", "none"),
    ], lines
    assert made == 1  # renewals are not new blocks
    assert [e["action"] for e in read_audit(tmp_path / "audit.jsonl")] == ["dry-run-block"]

    # the block (30 s, renewed while short-form) runs out 30 s after the last renewal
    assert reports.expired(enforcer.active_blocks(), clock.t) == [
        f"unblock {C} youtube (rr3.gv.test): 1 block expired (dry-run)"
    ]
    assert reports.expired(enforcer.active_blocks(), clock.t) == []  # said once
    assert reports.last(C, "youtube") == ("long-form", "none")
    enforcer.close()


def test_a_block_lifted_by_hand_and_made_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    enforcer = _enforcer(tmp_path, clock)
    reports = VerdictLog()
    caplog.set_level(logging.INFO, logger="classifier")

    def blocked() -> list[str]:
        records = [
            enforcer.block(C, s, 443, "udp", label="shorts", probability=0.9, name="youtube")
            for s in (S, "10.77.2.3")
        ]
        assert all(r is not None for r in records)
        reports.report(
            C,
            "youtube",
            label="short-form",
            probability=0.9,
            action="would block (dry-run)",
            records=records,
        )  # type: ignore[arg-type]
        return [r.id for r in records]  # type: ignore[union-attr]

    first = blocked()
    assert enforcer.unblock(first[0])
    assert reports.expired(enforcer.active_blocks(), clock.t) == []  # one still in force
    assert enforcer.unblock(first[1])
    assert reports.expired(enforcer.active_blocks(), clock.t) == [
        f"unblock {C} youtube: 2 blocks lifted (dry-run)"
    ]
    blocked()  # the same verdict, blocked again: a change from "none"
    lines = _lines(caplog, "verdict")
    assert len(lines) == 2 and lines[1].startswith(
        f"verdict {C} youtube: short-form -> short-form p=0.90; action: would block"
    )
    enforcer.close()


def test_a_young_sessions_window_is_no_vote() -> None:
    """A window of a session younger than ``MIN_VOTE_AGE`` (``vote=False``) is shown with
    its probability but counts as no vote: three windows at 0.95 make two votes."""
    reports = VerdictLog()
    policy = Policy.default()
    first = reports.session_label(C, "youtube", 0.95, 0.02, policy, vote=False)
    assert first == SessionLabel("other", pytest.approx(0.03), "short-form", 0)
    got = [reports.session_label(C, "youtube", 0.95, 0.02, policy).votes for _ in range(2)]
    assert got == [1, 2]
    assert reports.session_label(C, "youtube", 0.95, 0.02, policy).label == "short-form"


def test_short_form_pending_until_the_windows_agree(caplog: pytest.LogCaptureFixture) -> None:
    """Short-form likeliest but not yet agreed: the label stays long-form or other (what
    is blocked does not change) and says so; 3 of the last 5 windows confirm it."""
    reports = VerdictLog()
    policy = Policy.default()
    caplog.set_level(logging.INFO, logger="classifier")
    got = [reports.session_label(C, "youtube", p, 0.05, policy) for p in (0.3, 0.91, 0.6, 0.93)]
    assert got == [
        SessionLabel("other", pytest.approx(0.65), None, 0),
        SessionLabel("long-form", 0.05, "short-form", 1),
        SessionLabel("other", pytest.approx(0.35), "short-form", 1),  # 0.6: no vote
        SessionLabel("long-form", 0.05, "short-form", 2),
    ]
    assert reports.session_label(C, "youtube", 0.95, 0.05, policy) == (
        "short-form",
        0.95,
        None,
        3,
    )
    line = reports.report(
        C,
        "youtube",
        label="long-form",
        probability=0.05,
        action="none",
        window=60.0,
        note=pending_text(2, policy.agreement_k),
    ).line
    assert line == (
        f"verdict {C} youtube: - -> long-form p=0.05 (short-form likeliest, 2 of 3 windows "
        "needed) window 60 s; action: none"
    )
    assert VERDICT.match(line) and _lines(caplog, "verdict") == [line]

    # the same label and action: a line when short-form stops being pending, none while it
    # stays pending with another count
    def again(note: str | None) -> str | None:
        return reports.report(
            C, "youtube", label="long-form", probability=0.05, action="none", note=note
        ).line

    assert again(pending_text(1, 3)) is None
    gone = again(None)
    assert gone is not None and gone.startswith(f"verdict {C} youtube: long-form -> long-form")
    assert again(None) is None


def test_quiet_groups_log_at_debug_and_memory_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    reports = VerdictLog(max_sessions=3)
    caplog.set_level(logging.DEBUG, logger="classifier")
    for i in range(5):
        reports.report(
            C, f"net:10.77.{i}.0/24", label="other", probability=0.8, action="none", media=False
        )
    assert len(reports) == 3 and reports.last(C, "net:10.77.0.0/24") is None
    assert _lines(caplog, "verdict") == []  # no media, no short-form: debug only
    assert len([r for r in caplog.records if r.getMessage().startswith("verdict")]) == 5
    reports.report(
        C,
        "net:10.77.4.0/24",
        label="short-form",
        probability=0.9,
        action="none (no service name)",
        media=False,
    )
    assert _lines(caplog, "verdict") == [
        f"verdict {C} net:10.77.4.0/24: other -> short-form p=0.90; action: none (no service name)"
    ]


def test_summary_text() -> None:
    text = summary_text(
        {
            "packets": 81234,
            "received": 81240,
            "drops": 60,
            "verdicts": 500,
            "session_verdicts": 90,
            "blocks": 3,
        },
        {
            "session": {"other": 4, "short-form": 6, "long-form": 80},
            "flow": {"other": 480, "long-form": 20},
        },
        uptime=300.2,
        flows_open=42,
        sessions_open=3,
        blocks_active=2,
        mode="dry-run",
    )
    assert text == (
        "up 300 s; packets 81234 (received 81240, dropped 60 = 0.07 %); flows open 42; "
        "sessions open 3, judged 90: short-form 6, long-form 80, other 4; flow verdicts "
        "500: long-form 20, other 480; blocks active 2, made 3 (mode dry-run)"
    )
    assert "judged 0: none; flow verdicts 0: none" in summary_text(
        {}, {}, uptime=0, flows_open=0, sessions_open=0, blocks_active=0, mode="off"
    )


def _state(tmp: Path, clock: Clock, **kw: float) -> tuple[LiveState, Enforcer]:
    enforcer = _enforcer(tmp, clock)
    return LiveState(enforcer, enforcer._policy, clock=clock, **kw), enforcer  # type: ignore[arg-type]


def _key(port: int) -> dict[str, object]:
    return {"proto": "tcp", "client": C, "client_port": port, "server": S, "server_port": 443}


def test_ended_flows_stay_ten_minutes_with_their_verdicts(tmp_path: Path) -> None:
    clock = Clock()
    state, enforcer = _state(tmp_path, clock)
    for port in (40000, 40001):
        state.update_flow(_key(port), {"label": "long-form", "probability": 0.8})
    state.update_flow(_key(40000), {"label": "short-form", "probability": 0.9})
    clock.t += 5
    assert state.remove_flow(_key(40000)) is True
    assert state.remove_flow(_key(40000)) is False  # ended already
    flows = state.flows()
    assert [(f["key"]["client_port"], f["ended"]) for f in flows] == [(40001, False), (40000, True)]
    ended = flows[1]
    assert ended["ended_at"] == clock.t and ended["verdict"]["label"] == "short-form"
    assert ended["first_verdict"]["label"] == "long-form" and ended["verdicts"] == 2
    assert flows[0]["ended_at"] is None and state.flow_count() == 1
    # the same 5-tuple starts again: a new active flow, the ended one stays
    state.update_flow(_key(40000), {"label": "other", "probability": 0.7})
    assert [(f["key"]["client_port"], f["ended"]) for f in state.flows()] == [
        (40000, False),
        (40001, False),
        (40000, True),
    ]
    clock.t += 600
    assert len(state.flows()) == 3  # 600 s: still kept
    clock.t += 1
    assert [f["ended"] for f in state.flows()] == [False, False]  # 601 s: gone
    assert state.label_counts()["flow"] == {"long-form": 2, "short-form": 1, "other": 1}
    enforcer.close()


def test_ended_flows_are_capped(tmp_path: Path) -> None:
    clock = Clock()
    state, enforcer = _state(tmp_path, clock, max_ended=100)
    for port in range(1000, 1300):
        state.update_flow(_key(port), {"label": "other"})
        clock.t += 0.01
        state.remove_flow(_key(port))
    flows = state.flows()
    assert len(flows) == 100 and all(f["ended"] for f in flows)
    assert [f["key"]["client_port"] for f in flows] == list(range(1299, 1199, -1))
    enforcer.close()


def test_sessions_end_when_no_longer_judged(tmp_path: Path) -> None:
    clock = Clock()
    state, enforcer = _state(tmp_path, clock, keep_ended=60)
    state.update_session(C, "youtube", {"label": "short-form", "action": "block"})
    state.update_session(C, "net:10.77.9.0/24", {"label": "other"})
    clock.t += 10
    assert state.end_sessions([(C, "youtube")]) == 1
    state.update_session(C, "youtube", {"label": "long-form", "action": "none"})
    got = [(s["group"], s["ended"], s["ended_at"], s["verdict"]["label"]) for s in state.sessions()]
    assert got == [
        ("youtube", False, None, "long-form"),
        ("net:10.77.9.0/24", True, clock.t, "other"),
    ]
    assert state.session_count() == 1
    clock.t += 10
    state.end_sessions()
    assert [(s["group"], s["ended"]) for s in state.sessions()] == [
        ("youtube", True),
        ("net:10.77.9.0/24", True),
    ]
    clock.t += 55  # keep_ended 60: the first ended 65 s ago, the second 55 s ago
    assert [s["group"] for s in state.sessions()] == ["youtube"]
    assert state.label_counts()["session"] == {"short-form": 1, "other": 1, "long-form": 1}
    enforcer.close()


def test_verbose_and_quiet_contradict(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main(["-v", "live", "-q", "--iface", "lo"])
    assert exc.value.code == 2
    assert "-v (debug) and -q" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() != 0, reason="a live router opens an AF_PACKET socket (root)")
def test_router_logs_changes_not_judgements(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The live decision path (shipped session model, dry-run) on the sample capture
    replayed four times with a fake clock: every session is judged every 10 s, the log
    has a line per change only, the would-be block is said once and counted once."""
    from classifier.live.router import LiveConfig, LiveRouter

    policy = tmp_path / "policy.toml"  # low enough for the sample's Shorts to be blocked
    policy.write_text('mode = "dry-run"\n[agreement]\nk = 2\nn = 3\nthreshold = 0.15\n')
    packets = list(open_capture(SAMPLE))
    clock = Clock(packets[0].ts)
    caplog.set_level(logging.INFO, logger="classifier")
    # the socket on lo is opened but never read: only the replayed packets are seen
    router = LiveRouter(
        LiveConfig(
            ifaces=("lo",), policy=policy, summary_every=60, audit_log=tmp_path / "audit.jsonl"
        ),
        clock=clock,
    )
    try:
        replay(router.process, clock, packets, 4)
        judged = router.state.counters_snapshot()["session_verdicts"]
        sessions = router.state.sessions()
    finally:
        router.close()
    lines = _lines(caplog, "verdict")
    assert judged >= 12 and 1 <= len(lines) < judged / 2, lines
    last: dict[tuple[str, str], tuple[str, str, bool]] = {}
    for line in lines:
        m = VERDICT.match(line)
        assert m is not None, line
        client, group, _, old, new, _, window, action, _ = m.groups()
        assert 10 <= int(window) <= 60  # what the window covered: less in a session's first minute
        assert old == last.get((client, group), ("-", "", False))[0], lines
        state = (new, action, "short-form likeliest" in line)
        assert state != last.get((client, group)), lines  # a change every time
        last[(client, group)] = state
    assert any("-> short-form" in x and "action: would block (dry-run)" in x for x in lines)
    audit = [e for e in read_audit(tmp_path / "audit.jsonl") if e["action"] == "dry-run-block"]
    assert audit and router.state.counters_snapshot()["blocks"] == len(audit)
    summaries = _lines(caplog, "summary: ")
    assert [s.split(";")[0] for s in summaries] == ["summary: up 60 s", "summary: up 120 s"]
    assert {s["verdict"]["label"] for s in sessions} <= {"short-form", "long-form", "other"}
    for s in sessions:  # what /v1/live/sessions serves: every field filled in
        verdict = SessionVerdict.model_validate(s["verdict"])
        assert verdict.short_form_needed == 2 and verdict.short_form_votes <= 3
        assert verdict.pending is None or verdict.label != "short-form"


@pytest.mark.skipif(os.geteuid() != 0, reason="a live router opens an AF_PACKET socket (root)")
def test_a_burst_of_new_flows_gets_a_verdict_each(tmp_path: Path) -> None:
    """More new flows at once than one model call takes (a scan, a flood): every flow is
    judged at its first check, each with its own verdict."""
    from classifier.capture.packet import Packet
    from classifier.live.router import _JUDGE_SLICE, LiveConfig, LiveRouter

    count = 2 * _JUDGE_SLICE + 5
    clock = Clock(1_700_000_000.0)
    router = LiveRouter(
        LiveConfig(ifaces=("lo",), summary_every=0, audit_log=tmp_path / "audit.jsonl"),
        clock=clock,
    )
    try:
        burst = [
            Packet(
                clock.t,
                74,
                60,
                4,
                "10.77.1.2",
                "10.77.2.2",
                17,
                40000,
                10000 + i,
                0,
                0,
                32,
                b"x" * 32,
            )
            for i in range(count)
        ]
        router.process(burst)
        clock.t += 1.5  # past the first check (1 s)
        router.process([])
        flows = router.state.flows()
    finally:
        router.close()
    assert len(flows) == count
    assert {f["key"]["server_port"] for f in flows} == set(range(10000, 10000 + count))
    assert all(f["verdicts"] == 1 and f["verdict"]["label"] for f in flows)

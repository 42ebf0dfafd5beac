"""What keeps live mode's per-flow memory small: a flow's columns in one buffer, the flow
table without a second key per flow, the check schedule popped a slice at a time and
LiveState's shared verdict values (docs/performance.md, "Memory holding many flows")."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from classifier.flows import Flow, FlowConfig, FlowKey, FlowTable
from classifier.live.router import _CheckSchedule
from classifier.live.state import _Shared
from tests.packets import udp
from tests.test_live_verdicts import _state, _verdict


def test_flow_columns_read_back_as_appended_across_growth() -> None:
    rng = random.Random(7)
    flow = Flow(1, FlowKey(6, "10.0.0.2", 40000, "10.0.0.9", 443), 5.0)
    assert flow.last_ts == 5.0  # no packet yet: the first time
    rows: list[tuple[float, int, int, int, int]] = []
    for _ in range(300):
        row = (
            rng.uniform(5, 99),
            rng.randrange(2**40),
            rng.choice((1, -1)),
            0x1FF,
            rng.randrange(2**40),
        )
        flow.append(*row)
        rows.append(row)
        assert flow.packets == len(rows) and flow.last_ts == row[0]
    assert flow.ts.tolist() == [r[0] for r in rows]
    assert flow.size.tolist() == [r[1] for r in rows]
    assert flow.direction.tolist() == [r[2] for r in rows]
    assert flow.flags.tolist() == [0xFF] * len(rows)  # the NS bit is not kept
    assert flow.payload_len.tolist() == [r[4] for r in rows]
    assert (flow.ts.typecode, flow.size.typecode, flow.direction.typecode) == ("d", "q", "b")


def test_a_one_packet_flow_holds_one_entry_of_26_bytes() -> None:
    flow = Flow(1, FlowKey(17, "10.0.0.2", 40000, "10.0.0.9", 53), 5.0)
    flow.append(5.0, 60, 1, 0, 32)
    assert len(flow._buf) == 26
    flow.append(6.0, 60, -1, 0, 32)
    assert len(flow._buf) == 2 * 26


def test_both_directions_join_the_flow_under_its_own_key() -> None:
    table = FlowTable(FlowConfig())
    up = table.add(udp(1.0, True, 10))
    down = table.add(udp(1.5, False, 20))
    assert up is down and up.direction.tolist() == [1, -1]
    (key,) = table._by_activity
    assert key is up.key


def test_due_checks_popped_in_slices_come_in_the_same_order() -> None:
    def schedule() -> tuple[_CheckSchedule, list[Flow]]:
        sched = _CheckSchedule((1.0, 3.0), recheck=10.0)
        flows = []
        for fid in range(1, 8):
            flow = Flow(fid, FlowKey(17, "10.0.0.2", 40000 + fid, "10.0.0.9", 443), fid / 10)
            sched.on_init(flow, udp(fid / 10, True, 10))
            flows.append(flow)
        return sched, flows

    whole, _ = schedule()
    expected = [(f.flow_id, end) for f, end in whole.pop_due(30.0)]
    sliced, _ = schedule()
    got: list[tuple[int, float]] = []
    while due := sliced.pop_due(30.0, 3):
        assert len(due) <= 3
        got += [(f.flow_id, end) for f, end in due]
    assert got == expected and len(got) == 7 * 4  # checks at 1, 3, 13 and 23 s


def test_equal_verdict_values_are_stored_once(tmp_path: Path) -> None:
    state = _state(tmp_path)
    for port in (40000, 40001):
        reason = "".join(["traffic shape: ", "0 download bursts"])  # a new str each time
        verdict: dict[str, Any] = _verdict("other", 1.0, reason)
        verdict["probability"] = float("0.75")
        state.update_flow(("udp", "10.0.0.2", port, "10.0.0.9", 443), verdict)
    a, b = (e.verdict for e in state._flows.values())
    assert a[6] is b[6] and a[1] is b[1]  # reason, probability
    assert state.flows()[0]["verdict"] == _verdict("other", 1.0, "traffic shape: 0 download bursts")


def test_the_shared_values_stay_bounded() -> None:
    share = _Shared(size=3)
    first = share("".join(["a", "b"]))
    assert share("".join(["a", "b"])) is first
    for word in ("c", "d", "e"):
        share(word)
    again = "".join(["a", "b"])
    assert share(again) is again  # the cache started again empty
    assert share(-0.0) == 0.0 and str(share(-0.0)) == "-0.0"
    assert share(1) == 1 and type(share(1)) is int

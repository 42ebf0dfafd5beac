"""When live mode judges a flow: at its check points, then every recheck, never once ended."""

from __future__ import annotations

from classifier.flows import Flow, FlowKey
from classifier.live.router import _CheckSchedule
from tests.packets import udp


def _flow(fid: int, t0: float) -> Flow:
    return Flow(fid, FlowKey(17, "10.77.1.2", 40000 + fid, "10.77.2.2", 443), t0)


def test_checks_then_rechecks_in_time_order() -> None:
    sched = _CheckSchedule((1.0, 3.0), recheck=10.0)
    a, b = _flow(1, 100.0), _flow(2, 100.5)
    sched.on_init(a, udp(100.0, True, 10))
    sched.on_init(b, udp(100.5, True, 10))
    assert sched.pop_due(100.9) == []
    assert sched.pop_due(101.0) == [(a, 1.0)]
    assert sched.pop_due(103.6) == [(b, 1.0), (a, 3.0), (b, 3.0)]
    assert sched.pop_due(112.9) == []
    assert sched.pop_due(113.0) == [(a, 13.0)]


def test_ended_flows_are_dropped() -> None:
    sched = _CheckSchedule((1.0,), recheck=5.0)
    a = _flow(1, 0.0)
    sched.on_init(a, udp(0.0, True, 10))
    a.end_reason = "idle"
    assert sched.pop_due(100.0) == []
    assert sched.pop_due(200.0) == []

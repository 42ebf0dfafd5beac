"""The per-client usage accumulator and the client names (dnsmasq leases, aliases)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from classifier.errors import ShortflowError
from classifier.web.clients import Aliases, parse_leases, read_leases
from classifier.web.usage import UsageLog

H = 3600.0
T0 = 1_800_000_000.0 - (1_800_000_000.0 % H)  # an hour boundary


def _verdict(label: str) -> dict[str, str]:
    return {"label": label}


def test_steps_count_the_seconds_since_the_last_verdict() -> None:
    u = UsageLog(step=10.0, max_gap=30.0)
    for i in range(6):  # one Shorts session judged every 10 s for a minute
        u.observe("10.77.1.2", "youtube", _verdict("short-form"), T0 + 100 + 10 * i)
    assert u.total("10.77.1.2", T0) == [60.0, 0.0, 0.0]
    # a long pause: the next verdict counts one step, not the whole gap
    u.observe("10.77.1.2", "youtube", _verdict("long-form"), T0 + 1000)
    u.observe("10.77.1.2", "youtube", _verdict("long-form"), T0 + 1007)
    assert u.total("10.77.1.2", T0) == [60.0, 17.0, 0.0]
    # another label counts into its own kind; unknown labels are "other"
    u.observe("10.77.1.2", "web", _verdict("web"), T0 + 1007)
    assert u.total("10.77.1.2", T0) == [60.0, 17.0, 10.0]


def test_two_services_of_one_kind_count_once_per_step() -> None:
    u = UsageLog()
    for i in range(3):
        u.observe("c", "youtube", _verdict("short-form"), T0 + 10 * i)
        u.observe("c", "instagram", _verdict("short-form"), T0 + 10 * i)
    assert u.total("c", T0 - H) == [30.0, 0.0, 0.0]


def test_seconds_straddling_an_hour_are_split() -> None:
    u = UsageLog()
    u.observe("c", "g", _verdict("short-form"), T0 + 3595)
    u.observe("c", "g", _verdict("short-form"), T0 + 3605)  # 10 s: 5 before, 5 after
    assert u.total("c", T0, T0 + H) == [15.0, 0.0, 0.0]  # first step 10 + 5
    assert u.total("c", T0 + H) == [5.0, 0.0, 0.0]
    chart = u.last_hours("c", T0 + H + 1, hours=3)
    assert chart["t"] == [T0 - H, T0, T0 + H]
    assert chart["short"] == [0.0, 0.25, round(5 / 60, 2)]


def test_old_hours_and_extra_clients_are_dropped() -> None:
    u = UsageLog(keep_days=8, max_clients=2)
    u.add("old", 0, T0, 60)
    u.add("a", 1, T0 + 8 * 24 * H + 10, 60)  # 8 days later: "old"'s hour goes
    assert "old" not in u.clients()
    u.add("b", 1, T0 + 8 * 24 * H + 20, 60)
    u.add("c", 1, T0 + 8 * 24 * H + 30, 60)  # a third client: the one seen longest ago goes
    assert u.clients() == ["c", "b"]
    with pytest.raises(ValueError):
        u.add("c", 3, T0, 1)


def test_save_and_load(tmp_path: Path) -> None:
    u = UsageLog()
    u.add("10.77.1.2", 0, T0 + 50, 50)
    u.add("10.77.1.2", 1, T0 + H + 30, 30)
    path = tmp_path / "usage.json"
    u.save(path)
    back = UsageLog.load(path, now=T0 + 2 * H)
    assert back.total("10.77.1.2", T0) == [50.0, 30.0, 0.0]
    path.write_text("{not json")
    assert UsageLog.load(path).clients() == []
    assert UsageLog.load(tmp_path / "missing.json").clients() == []


def test_leases_parsing(tmp_path: Path) -> None:
    text = (
        "1767225600 aa:bb:cc:dd:ee:01 10.77.1.20 annas-phone 01:aa:bb:cc:dd:ee:01\n"
        "1767225600 AA:BB:CC:DD:EE:02 10.77.1.21 * *\n"
        "duid 00:01:00:01:2c:4e:3a:1b:aa:bb:cc:dd:ee:ff\n"
        "garbage line\n"
        "1767225600 aa:bb:cc:dd:ee:03 not-an-ip host *\n"
    )
    leases = parse_leases(text)
    assert set(leases) == {"10.77.1.20", "10.77.1.21"}
    assert leases["10.77.1.20"].hostname == "annas-phone"
    assert leases["10.77.1.20"].mac == "aa:bb:cc:dd:ee:01"
    assert leases["10.77.1.21"].hostname is None and leases["10.77.1.21"].mac == "aa:bb:cc:dd:ee:02"
    path = tmp_path / "dnsmasq.leases"
    path.write_text(text)
    assert read_leases(path) == leases
    assert read_leases(tmp_path / "none") == {} and read_leases(None) == {}


def test_aliases_saved_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "aliases.json"
    a = Aliases(path)
    a.set("10.77.1.20", "Anna's  phone")
    a.set("AA-BB-CC-DD-EE-02", "Ben")
    assert json.loads(path.read_text()) == {
        "10.77.1.20": "Anna's phone",
        "aa:bb:cc:dd:ee:02": "Ben",
    }
    assert Aliases(path).get("nope", "aa:bb:cc:dd:ee:02") == "Ben"
    with pytest.raises(ShortflowError, match="neither an IP nor a MAC"):
        a.set("phone", "x")
    with pytest.raises(ShortflowError, match="at most"):
        a.set("10.77.1.20", "x" * 65)
    a.set("10.77.1.20", "")
    assert Aliases(path).get("10.77.1.20") is None


def test_a_loaded_log_saves_itself_now_and_then(tmp_path: Path) -> None:
    path = tmp_path / "usage.json"
    u = UsageLog.load(path, autosave=600)
    u.observe("c", "g", _verdict("short-form"), T0 + 100)  # the first verdict saves
    assert UsageLog.load(path).total("c", T0) == [10.0, 0.0, 0.0]
    u.observe("c", "g", _verdict("short-form"), T0 + 110)  # not yet due
    assert UsageLog.load(path).total("c", T0) == [10.0, 0.0, 0.0]
    for i in range(2, 62):
        u.observe("c", "g", _verdict("short-form"), T0 + 100 + 10 * i)
    assert UsageLog.load(path).total("c", T0) == [610.0, 0.0, 0.0]
    UsageLog().observe("c", "g", _verdict("short-form"), T0 + 100)  # no file: never saves
    assert len(list(tmp_path.iterdir())) == 1

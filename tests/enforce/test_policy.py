"""Policy loading, validation messages, schedules, client rules, allowlist and reloads."""

from __future__ import annotations

from datetime import UTC, datetime, time
from pathlib import Path

import pytest

from classifier.enforce.policy import (
    DEFAULT_SINKHOLE_NAMES,
    Policy,
    PolicyHolder,
    load_policy,
    parse_policy,
)
from classifier.errors import PolicyError, ShortflowError

GOOD = """
mode = "nft"
categories = ["shorts", "tiktok"]
block_seconds = 120
schedules = ["21:00-07:00"]

[agreement]
k = 2
n = 3
threshold = 0.7

[clients]
only = ["10.77.1.0/24", "AA-BB-CC-DD-EE-FF"]
never = ["10.77.1.50"]

[allow]
names = ["*.example.org", "kids.lab.test"]
ips = ["10.77.2.100/32"]

[sinkhole]
names = ["tiktok.com", "bytecdn.lab.test"]
answer = "nxdomain"
"""


def _write(tmp_path: Path, text: str, name: str = "policy.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_default_policy() -> None:
    p = Policy.default()
    assert p.mode == "dry-run"
    assert p.categories == {"shorts", "reels", "tiktok"}
    assert p.block_seconds == 300
    assert p.applies("10.0.0.1", None, datetime(2024, 1, 1, 12, 0))
    assert p.should_block("shorts") and not p.should_block("longform")
    assert "tiktokcdn.com" in p.sinkhole_names and len(DEFAULT_SINKHOLE_NAMES) >= 10
    assert p.sinkhole_rule("v16m.tiktokcdn.com.") == "tiktokcdn.com"
    assert p.sinkhole_rule("nottiktokcdn.com") is None
    assert p.sinkhole_answer == "zero"


def test_load_good_file(tmp_path: Path) -> None:
    p = load_policy(_write(tmp_path, GOOD))
    assert p.mode == "nft" and p.block_seconds == 120
    assert p.categories == {"shorts", "tiktok"} and not p.should_block("reels")
    assert (p.agreement_k, p.agreement_n, p.threshold) == (2, 3, 0.7)
    night, day = datetime(2024, 5, 1, 23, 30), datetime(2024, 5, 1, 12, 0)
    early = datetime(2024, 5, 2, 6, 59)
    assert p.applies("10.77.1.7", None, night)
    assert p.applies("10.77.1.7", None, early)
    assert not p.applies("10.77.1.7", None, day)
    assert not p.applies("10.77.1.7", None, datetime(2024, 5, 2, 7, 0))
    assert not p.applies("10.77.9.7", None, night)  # not in "only"
    assert p.applies("10.77.9.7", "aa:bb:cc:dd:ee:ff", night)  # MAC in "only"
    assert not p.applies("10.77.1.50", None, night)  # "never" wins
    spare = parse_policy({"clients": {"never": ["aa:bb:cc:dd:ee:01", "10.77.1.50"]}}, "t")
    assert spare.names_macs and not parse_policy({}, "t").names_macs
    assert spare.applies("10.77.1.7", "aa:bb:cc:dd:ee:02", night)
    assert not spare.applies("10.77.1.7", "AA:BB:CC:DD:EE:01", night)
    assert not spare.applies("10.77.1.7", None, night)  # MAC unknown: may be the spared one
    why = p.match("10.77.1.7", None, night)
    assert why is not None and "10.77.1.0/24" in why and "21:00-07:00" in why
    assert p.allowed("cdn.example.org", None) and p.allowed(None, "10.77.2.100")
    assert not p.allowed("example.com", "10.77.2.101")
    assert p.sinkhole_rule("a.bytecdn.lab.test") == "bytecdn.lab.test"
    assert p.sinkhole_rule("tiktokcdn.com") is None  # list replaced, not merged
    assert p.sinkhole_answer == "nxdomain"


def test_aware_time_is_converted_to_local() -> None:
    p = Policy.default()
    assert p.applies("10.0.0.1", None, datetime(2024, 5, 1, 12, 0, tzinfo=UTC))


def test_agreement_k_of_n() -> None:
    p = load_policy_text("[agreement]\nk = 2\nn = 3\nthreshold = 0.8\n")
    assert not p.agrees([0.9])
    assert p.agrees([0.9, 0.1, 0.85])
    assert not p.agrees([0.9, 0.9, 0.1, 0.1, 0.1])  # only the last 3 count
    assert p.agrees([0.1, 0.1, 0.8, 0.8])


def load_policy_text(text: str) -> Policy:
    import tomllib

    from classifier.enforce.policy import parse_policy

    return parse_policy(tomllib.loads(text), "inline.toml")


def test_schedule_edges() -> None:
    p = load_policy_text('schedules = ["08:00-12:00", "22:00-24:00"]\n')
    assert [s.contains(time(8, 0)) for s in p.schedules] == [True, False]
    assert not p.applies("10.0.0.1", None, datetime(2024, 1, 1, 12, 0))
    assert p.applies("10.0.0.1", None, datetime(2024, 1, 1, 23, 59))
    assert not p.applies("10.0.0.1", None, datetime(2024, 1, 1, 0, 0))


@pytest.mark.parametrize(
    ("text", "key", "hint"),
    [
        ("blok_seconds = 5\n", "blok_seconds", "known keys"),
        ('mode = "block"\n', "mode", "off, dry-run, nft"),
        ("block_seconds = 0\n", "block_seconds", "1..86400"),
        ('block_seconds = "60"\n', "block_seconds", "whole number"),
        ('categories = ["shorts", "cats"]\n', "categories", "choose from"),
        ('schedules = ["21:00"]\n', "schedules", "HH:MM-HH:MM"),
        ('schedules = ["25:00-07:00"]\n', "schedules", "does not exist"),
        ('schedules = ["07:00-07:00"]\n', "schedules", "empty window"),
        ("[agreement]\nk = 6\nn = 5\n", "agreement.k", "must not exceed"),
        ("[agreement]\nthreshold = 1.5\n", "agreement.threshold", "0..1"),
        ("[agreement]\nquorum = 1\n", "agreement.quorum", "known keys"),
        ('[clients]\nonly = ["kid-phone"]\n', "clients.only", "neither an IP"),
        ('[allow]\nnames = ["bad name/"]\n', "allow.names", "not a DNS name"),
        ('[sinkhole]\nanswer = "refused"\n', "sinkhole.answer", "zero, nxdomain"),
        ('clients = "all"\n', "clients", "must be a table"),
    ],
)
def test_bad_values_are_refused_with_file_and_key(
    tmp_path: Path, text: str, key: str, hint: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    msg = str(info.value)
    assert str(path) in msg and f"'{key}'" in msg and hint in msg
    assert "\n" not in msg
    assert isinstance(info.value, ShortflowError)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="not found"):
        load_policy(tmp_path / "missing.toml")
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy(_write(tmp_path, "mode = \n"))
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b"\xff\xfe mode")
    with pytest.raises(PolicyError, match="not UTF-8"):
        load_policy(bad)


def test_holder_keeps_running_policy_on_bad_reload(tmp_path: Path) -> None:
    path = _write(tmp_path, 'mode = "nft"\nblock_seconds = 60\n')
    holder = PolicyHolder(path)
    assert holder.current.mode == "nft" and holder.current.block_seconds == 60
    path.write_text('mode = "nft"\nblock_secnds = 90\n')
    err = holder.reload()
    assert isinstance(err, PolicyError) and "block_secnds" in str(err)
    assert holder.current.block_seconds == 60 and holder.last_error is err
    path.write_text('mode = "off"\nblock_seconds = 90\n')
    assert holder.reload() is None
    assert holder.current.mode == "off" and holder.current.block_seconds == 90
    assert holder.last_error is None


def test_holder_without_file_and_bad_initial(tmp_path: Path) -> None:
    assert PolicyHolder().current == Policy.default()
    assert PolicyHolder().reload() is None
    with pytest.raises(PolicyError):
        PolicyHolder(_write(tmp_path, "nope = 1\n"))

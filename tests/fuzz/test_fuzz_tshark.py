"""Fuzz the tshark backend: its parser of tshark's field lines, and real tshark over damaged
capture files (bounded run; benchmarks/fuzz.py runs the same harnesses far longer)."""

from __future__ import annotations

import shutil

import pytest
from hypothesis import given
from hypothesis import strategies as st

from classifier.capture.tshark import FIELDS
from tests.fuzz.harness import (
    OPS,
    check_capture,
    check_tshark_line,
    edit_fields,
    fuzz_settings,
    mutate,
    seeds,
)

_LINES = [s.decode() for s in seeds("tshark")]
_CAPTURES = seeds("capture")
_N = len(FIELDS)

#: values tshark never writes but a damaged or hostile line may hold, per field kind
_ODD_VALUES = (
    "",
    "0",
    "-1",
    "0x",
    "0x-1",
    "0xzz",
    "1_0",
    "\u0663",
    "\uff11",
    " 1",
    "1.5",
    "1,2",
    "nan",
    "inf",
    "-inf",
    "1e400",
    "65536",
    "4294967296",
    "9" * 5000,
    "True",
    "False",
    "::",
    "::1",
    "1.2.3.4",
    "300.1.1.1",
    "fe80::1%eth0",
    "1.2.3.4/24",
    "ab:cd:e",
    "a",
    "eth:ethertype:ipv6:ipv6.hopopts:ipv6.fraghdr:udp",
    "eth:ethertype:ip:data",
    "ip:icmp",
    "sll:arp",
    "ipv6:tcp",
    "ip:ip:udp",
    "raw:ipv6:ah:tcp",
    ":",
    "ip:",
    "\x00",
    "\ufffd",
    "\r",
    "\x85",
)
_FIELD_EDITS = st.lists(
    st.tuples(
        st.integers(0, _N + 2), st.one_of(st.sampled_from(_ODD_VALUES), st.text(max_size=20))
    ),
    max_size=6,
)


def test_line_seeds_are_real_tshark_lines() -> None:
    assert len(_LINES) >= 16
    got = [check_tshark_line(line) for line in _LINES]
    packets = [g for g in got if not isinstance(g, str)]
    assert len(packets) == len(_LINES), [g for g in got if isinstance(g, str)]
    assert {p.proto for p in packets} == {6, 17}
    assert any(p.payload for p in packets)


@fuzz_settings(1500)
@given(seed=st.integers(0, len(_LINES) - 1), edits=_FIELD_EDITS)
def test_parser_on_edited_fields(seed: int, edits: list[tuple[int, str]]) -> None:
    check_tshark_line(edit_fields(_LINES[seed], edits))


@fuzz_settings(1000)
@given(seed=st.integers(0, len(_LINES) - 1), ops=OPS, last_ts=st.floats(allow_nan=False))
def test_parser_on_mutated_bytes(
    seed: int, ops: list[tuple[int, int, int]], last_ts: float
) -> None:
    # decoded the way iter_tshark reads tshark's stdout
    line = mutate(_LINES[seed].encode(), ops).decode("utf-8", "replace")
    check_tshark_line(line, last_ts)


@fuzz_settings(800)
@given(
    st.one_of(
        st.lists(st.text(max_size=12), max_size=_N + 4).map("\t".join),
        st.binary(max_size=400).map(lambda b: b.decode("utf-8", "replace")),
    )
)
def test_parser_on_arbitrary_text(line: str) -> None:
    check_tshark_line(line)


needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")


@needs_tshark
@fuzz_settings(30)
@given(seed=st.integers(0, len(_CAPTURES) - 1), ops=OPS.filter(bool))
def test_real_tshark_on_damaged_captures(seed: int, ops: list[tuple[int, int, int]]) -> None:
    # ~0.3 s a file (tshark start-up): 30 files here, more in benchmarks/fuzz.py
    check_capture(mutate(_CAPTURES[seed], ops), backend="tshark")


@needs_tshark
def test_real_tshark_capture_seeds_read() -> None:
    counts = [check_capture(s, backend="tshark", featurize=False) for s in _CAPTURES]
    assert sum(c > 0 for c in counts) >= len(counts) - 2, counts

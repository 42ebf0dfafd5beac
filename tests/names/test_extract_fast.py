"""The compiled ClientHello scanner against the reference extractor.

The scanner may settle a flow only with exactly the names one fresh
:class:`~classifier.names.extract.NameExtractor` reads from the same first payload; it
must never raise and never give another answer. It must also settle every hello it is
meant to take (whole message in the first record, ASCII names), so deferring everything
would fail here too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from classifier.capture import open_capture
from classifier.features import featurize_fast as fast
from classifier.features.featurize import FeaturizeConfig, featurize
from classifier.features.featurize_fast import featurize_fast
from classifier.names import plugin_fast
from classifier.names.extract import NameExtractor
from classifier.names.extract_fast import (
    DONE,
    PYTHON,
    UNSEEN,
    scan_first_payloads,
    scan_payload,
)
from classifier.names.tls import build_client_hello
from tests.fuzz.harness import fuzz_settings, mutate, seeds
from tests.shared_data import SHARED, missing_reason
from tests.synthetic_captures import write_many_flows

CAPTURES = sorted(p for p in SHARED.rglob("*") if p.suffix in (".pcap", ".pcapng"))
needs_shared = pytest.mark.skipif(
    not CAPTURES, reason=missing_reason() or "no capture in the shared folder"
)

Names = tuple[str | None, str | None]


def _reference(payload: bytes) -> Names | None:
    """(sni, alpn) when one fresh extractor fed ``payload`` (TCP) parses a hello."""
    ext = NameExtractor()
    ext.feed(1, 6, payload, 1234)
    return (ext.sni, ext.alpn) if ext.hello is not None else None


def _meant_for_scanner(payload: bytes, ref: Names | None) -> bool:
    """Whether the scanner must settle this payload: the reference found a hello whose
    message lies in the first record, and its names are ASCII."""
    if ref is None or len(payload) < 9:
        return False
    record = int.from_bytes(payload[3:5], "big")
    need = 4 + int.from_bytes(payload[6:9], "big")
    return need <= min(record, len(payload) - 5) and all(s is None or s.isascii() for s in ref)


def _check(payload: bytes) -> Names | None:
    got = scan_payload(payload)
    ref = _reference(payload)
    if got is not None:
        assert got == ref, payload.hex()
        assert all(s is None or type(s) is str for s in got)
    elif _meant_for_scanner(payload, ref):
        raise AssertionError(f"deferred a plain hello {ref}: {payload.hex()}")
    return got


# --- hand-made hellos -------------------------------------------------------------------


def _ext(kind: int, body: bytes) -> tuple[int, bytes]:
    return kind, body


def _u16(n: int) -> bytes:
    return (n % 65536).to_bytes(2, "big")


def _sni_body(*entries: tuple[int, bytes], skew: int = 0, host_skew: int = 0) -> bytes:
    """A server_name body; ``skew``/``host_skew`` add to the list / host lengths sent."""
    names = b"".join(bytes([t]) + _u16(len(h) + host_skew) + h for t, h in entries)
    return _u16(len(names) + skew) + names


def _alpn_body(*protos: bytes, skew: int = 0) -> bytes:
    block = b"".join(bytes([len(p) % 256]) + p for p in protos)
    return _u16(len(block) + skew) + block


def _raw_hello(
    session: bytes,
    extensions: list[tuple[int, bytes]] | None,
    *,
    ext_skew: int = 0,
    trailing: bytes = b"",
) -> bytes:
    """A hello record built field by field (``build_client_hello`` fixes the session id
    at 32 bytes); ``ext_skew`` adds to every extension length sent."""
    body = b"\x03\x03" + bytes(32) + bytes([len(session) % 256]) + session
    body += b"\x00\x02\x13\x01\x01\x00"
    if extensions is not None:
        block = b"".join(_u16(k) + _u16(len(v) + ext_skew) + v for k, v in extensions)
        body += _u16(len(block)) + block
    body += trailing
    msg = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + _u16(len(msg)) + msg


_TWO_SNI = (_ext(0, _sni_body((1, b"other"), (0, b""))), _ext(0, _sni_body((0, b"second.x"))))
_TWO_ALPN = (_ext(16, b"\x00\x05\x09abc"), _ext(16, _alpn_body(b"h3")))
_CUT_ALPN = (_ext(16, b"\x00\x06\x02h2\x05ab"),)
_AFTER = bytes.fromhex("140303000101") + b"\x17\x03\x03\x00\x02ab"


@pytest.mark.parametrize(
    ("hello", "expected"),
    [
        (build_client_hello("a.example", ("h2", "http/1.1")), ("a.example", "h2,http/1.1")),
        (build_client_hello(None, ("h2",)), (None, "h2")),
        (build_client_hello("only.sni", ()), ("only.sni", None)),
        (build_client_hello("x", ("",)), ("x", "")),
        (build_client_hello("x", ("", "")), ("x", ",")),
        # first server_name gives nothing (type 1, then empty host): the second one counts
        (build_client_hello(None, (), extra_extensions=_TWO_SNI), ("second.x", None)),
        # an ALPN list that yields no protocol does not stop the next ALPN extension
        (build_client_hello(None, (), extra_extensions=_TWO_ALPN), (None, "h3")),
        # a cut protocol keeps the protocols before it
        (build_client_hello("c.x", (), extra_extensions=_CUT_ALPN), ("c.x", "h2")),
        # more records after the hello (change cipher spec, early data) do not matter
        (build_client_hello("d.x", ("h2",)) + _AFTER, ("d.x", "h2")),
        # a host one byte longer than its list (the extension has the byte): no name there
        (
            _raw_hello(
                b"", [(0, _sni_body((0, b"abcdef"), skew=-1) + b"f"), (0, _sni_body((0, b"ok.x")))]
            ),
            ("ok.x", None),
        ),
        (_raw_hello(bytes(32), [(16, _alpn_body(b"h2"))]), (None, "h2")),
        (_raw_hello(b"", None), (None, None)),  # no extensions at all
        (_raw_hello(b"", None, trailing=b"\x00"), (None, None)),  # one stray byte is ignored
    ],
)
def test_hand_made_hellos(hello: bytes, expected: Names) -> None:
    assert _reference(hello) == expected
    assert scan_payload(hello) == expected


@pytest.mark.parametrize(
    "payload",
    [
        build_client_hello("é.example", ("h2",)),  # UTF-8 name: Python decodes it
        build_client_hello("a.example", ("h\xff",)),  # non-ASCII protocol
        build_client_hello("cut.example", ("h2",))[:-1],  # one byte short
        b"",
        b"\x16\x03\x01\x00",
        _raw_hello(bytes(33), [(0, _sni_body((0, b"long.session")))]),  # session id > 32
        _raw_hello(b"", [(0, _sni_body((0, b"a.x")))], ext_skew=1),  # extension overruns
        _raw_hello(b"", [(0, _sni_body((0, b"a.x")))], ext_skew=-1),  # extension stops short
        bytes.fromhex("170303001000") + b"\x00" * 16,  # application data
    ],
)
def test_defers(payload: bytes) -> None:
    assert scan_payload(payload) is None


def test_hello_over_two_records_defers_and_python_reads_it() -> None:
    msg = build_client_hello("split.example", ("h2",), record=False)
    cut = 40
    two = (
        b"\x16\x03\x01"
        + cut.to_bytes(2, "big")
        + msg[:cut]
        + b"\x16\x03\x01"
        + (len(msg) - cut).to_bytes(2, "big")
        + msg[cut:]
    )
    assert _reference(two) == ("split.example", "h2")
    assert scan_payload(two) is None


def test_flow_states_across_packets_and_chunks() -> None:
    """First fed payload decides; old flows follow the state given; Python gets the rest."""
    hello = build_client_hello("s.example", ("h2",))
    junk = b"GET / HTTP/1.1\r\n\r\n"
    payloads = [hello, hello, junk, hello, hello, junk, hello, b"\x16\x03\x01\x00\x10\x01", hello]
    uid = np.array([11, 11, 12, 12, 3, 4, 5, 13, 13], np.int64)
    buf = np.frombuffer(b"".join(payloads), np.uint8)
    size = np.array([len(p) for p in payloads], np.int64)
    at = np.concatenate([[0], np.cumsum(size)[:-1]]).astype(np.int64)
    proto = np.full(len(uid), 6, np.int64)
    old_uid = np.array([3, 4, 5], np.int64)
    old_state = np.array([UNSEEN, PYTHON, DONE], np.int8)
    scan = scan_first_payloads(buf, uid, proto, at, size, 10, 13, old_uid, old_state)
    # 11: hello first -> done (its second hello ignored); 12: junk first -> Python, both
    # packets; 3: old unseen -> scanned; 4: old Python flow -> Python; 5: done -> skipped;
    # 13: a cut hello first -> Python, both packets
    assert scan.uids == [11, 3]
    assert scan.names == [("s.example", "h2")] * 2
    assert scan.python.tolist() == [2, 3, 5, 7, 8]
    assert old_state.tolist() == [DONE, PYTHON, DONE]
    proto[0] = 17  # UDP is never scanned
    scan = scan_first_payloads(
        buf, uid, proto, at, size, 10, 13, old_uid, np.array([UNSEEN, PYTHON, DONE], np.int8)
    )
    assert scan.uids == [3]
    assert scan.python.tolist() == [0, 1, 2, 3, 5, 7, 8]


# --- every ClientHello (and every other TCP payload) of the shared captures -------------


@needs_shared
def test_shared_capture_payloads() -> None:
    settled = hellos = 0
    for path in CAPTURES:
        for pkt in open_capture(path):
            if pkt.proto != 6 or not pkt.payload:
                continue
            payload = bytes(pkt.payload)
            hellos += _reference(payload) is not None
            settled += _check(payload) is not None
    assert hellos > 100
    assert settled > 0.9 * hellos  # nearly all real hellos fit in one packet


# --- fuzzing: mutated real hellos, built hellos with odd fields, random bytes -----------

_TLS = seeds("tls")
_OPS = st.lists(
    st.tuples(st.integers(0, 7), st.integers(0, 1 << 16), st.integers(0, 1 << 16)), max_size=8
)


@pytest.mark.skipif(not _TLS, reason="fuzz corpus missing")
@fuzz_settings(2000)
@given(seed=st.integers(0, max(len(_TLS) - 1, 0)), ops=_OPS)
def test_mutated_corpus_hellos(seed: int, ops: list[tuple[int, int, int]]) -> None:
    _check(mutate(_TLS[seed], ops))


_NAME = st.one_of(st.binary(max_size=40), st.text(max_size=20).map(lambda t: t.encode()))
_EXTENSION = st.one_of(
    st.tuples(
        st.just(0),
        st.lists(st.tuples(st.integers(0, 2), _NAME), max_size=3).map(
            lambda entries: _sni_body(*entries)
        ),
    ),
    st.tuples(
        st.just(16),
        st.lists(_NAME.map(lambda b: b[:255]), max_size=4).map(lambda protos: _alpn_body(*protos)),
    ),
    st.tuples(st.sampled_from([0, 16, 43, 21, 0x0A0A]), st.binary(max_size=30)),
)


@fuzz_settings(1500)
@given(
    sni=st.one_of(st.none(), st.text(min_size=1, max_size=30)),
    alpn=st.lists(st.text(max_size=8), max_size=3),
    extra=st.lists(_EXTENSION, max_size=5),
    ops=_OPS,
    cut=st.one_of(st.none(), st.integers(0, 600)),
    tail=st.binary(max_size=12),
)
def test_built_hellos(
    sni: str | None,
    alpn: list[str],
    extra: list[tuple[int, bytes]],
    ops: list[tuple[int, int, int]],
    cut: int | None,
    tail: bytes,
) -> None:
    try:
        hello = build_client_hello(
            sni, tuple(alpn), key_share_len=32, extra_extensions=tuple(extra)
        )
    except ValueError:  # a field too long for its length prefix
        return
    payload = mutate(hello, ops)[:cut] + tail
    _check(payload)


_SKEW = st.integers(-2, 2)
_FIELD_EXTENSION = st.one_of(
    st.tuples(
        st.just(0),
        st.builds(
            lambda entries, skew, host_skew: _sni_body(*entries, skew=skew, host_skew=host_skew),
            st.lists(st.tuples(st.integers(0, 1), st.binary(max_size=6)), max_size=3),
            _SKEW,
            _SKEW,
        ),
    ),
    st.tuples(
        st.just(16),
        st.builds(
            lambda protos, skew: _alpn_body(*protos, skew=skew),
            st.lists(st.binary(max_size=4), max_size=3),
            _SKEW,
        ),
    ),
    st.tuples(st.sampled_from([43, 0x0A0A]), st.binary(max_size=4)),
)


@fuzz_settings(1500)
@given(
    session=st.binary(min_size=30, max_size=34) | st.binary(max_size=2),
    extensions=st.none() | st.lists(_FIELD_EXTENSION, max_size=4),
    ext_skew=st.sampled_from([0, 0, 0, -1, 1]),
    trailing=st.binary(max_size=3),
)
def test_hellos_with_skewed_length_fields(
    session: bytes, extensions: list[tuple[int, bytes]] | None, ext_skew: int, trailing: bytes
) -> None:
    _check(_raw_hello(session, extensions, ext_skew=ext_skew, trailing=trailing))


@fuzz_settings(1000)
@given(
    head=st.sampled_from([b"\x16\x03\x01", b"\x16\x03\x03", b"\x16\x03\x05", b"\x16\x02\x01"]),
    record=st.integers(0, 0xFFFF),
    body=st.binary(max_size=300),
)
def test_random_bytes_after_a_record_header(head: bytes, record: int, body: bytes) -> None:
    _check(head + record.to_bytes(2, "big") + b"\x01" + body)


# --- in the fast path ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hello") / "many.pcap"
    write_many_flows(path, flows=300, spacing=0.02)
    return path


@pytest.mark.parametrize("chunk", [1 << 17, 7])
def test_fast_path_settles_every_generated_hello(
    generated: Path, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each of the 300 TLS flows is settled by the scanner (also when its hello comes in
    a later chunk than its SYN), and the table is the reference's."""
    settled: list[int] = []
    real = plugin_fast.scan_first_payloads

    def spy(*args: object) -> object:
        scan = real(*args)  # type: ignore[arg-type]
        settled.extend(scan.uids)
        return scan

    monkeypatch.setattr(plugin_fast, "scan_first_payloads", spy)
    monkeypatch.setattr(fast, "_CHUNK_PACKETS", chunk)
    got = featurize_fast(generated)
    assert len(settled) == len(set(settled)) == 300
    assert got["sni"].str.endswith(".bench.example").sum() == 300
    ref = featurize(generated, FeaturizeConfig()).sort_values("flow_id", kind="stable")
    pd.testing.assert_frame_equal(
        got, ref.reset_index(drop=True), check_exact=False, rtol=1e-9, atol=0.0
    )
    monkeypatch.setattr(plugin_fast, "_SCAN_HELLOS", False)
    pd.testing.assert_frame_equal(featurize_fast(generated), got)

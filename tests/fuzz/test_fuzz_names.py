"""Fuzz the parsers of names in clear (TLS, QUIC, DNS, name cache) from real seeds."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.harness import (
    OPS,
    check_dns,
    check_name_extractor,
    check_quic_datagrams,
    check_quic_plain,
    check_tls,
    check_tls_segments,
    fuzz_settings,
    mutate,
    seeds,
)

_TLS = seeds("tls")
_QUIC = seeds("quic")
_PLAIN = seeds("quic_plain")
_DNS = seeds("dns")
_PLAIN_COMPLETE = {i for i, p in enumerate(_PLAIN) if check_quic_plain(p, 0, b"\x11" * 8, 0)}


@fuzz_settings(2000)
@given(seed=st.integers(0, len(_TLS) - 1), ops=OPS)
def test_tls_client_hello(seed: int, ops: list[tuple[int, int, int]]) -> None:
    check_tls(mutate(_TLS[seed], ops))


@fuzz_settings(1500)
@given(
    seed=st.integers(0, len(_TLS) - 1),
    ops=st.lists(OPS.map(tuple), max_size=1),
    cuts=st.lists(st.integers(0, 4000), max_size=8),
    order=st.lists(st.integers(0, 16), max_size=9),
    seq0=st.integers(0, (1 << 32) - 1),
)
def test_tls_reassembly(
    seed: int,
    ops: list[tuple[tuple[int, int, int], ...]],
    cuts: list[int],
    order: list[int],
    seq0: int,
) -> None:
    data = mutate(_TLS[seed], ops[0] if ops else ())
    got = check_tls_segments(data, cuts, seq0, order)
    if not ops and not order:  # an intact hello cut anywhere (in order) is always found
        assert got is not None and got == check_tls(data)


@fuzz_settings(1500)
@given(
    seed=st.integers(0, len(_QUIC) - 1),
    ops=OPS,
    other=st.integers(0, len(_QUIC) - 1),
    twice=st.booleans(),
)
def test_quic_datagrams(
    seed: int, ops: list[tuple[int, int, int]], other: int, twice: bool
) -> None:
    mutated = mutate(_QUIC[seed], ops)
    check_quic_datagrams([mutated, _QUIC[other]] if twice else [mutated])


@fuzz_settings(1800)
@given(
    seed=st.integers(0, len(_PLAIN) - 1),
    ops=OPS,
    version=st.integers(0, 5),
    dcid=st.binary(min_size=0, max_size=20),
    pn=st.integers(0, 1 << 30),
    split=st.integers(0, 3000),
)
def test_quic_decrypted_frames(
    seed: int, ops: list[tuple[int, int, int]], version: int, dcid: bytes, pn: int, split: int
) -> None:
    plain = mutate(_PLAIN[seed], ops)
    got = check_quic_plain(plain, version, dcid, pn, split)
    if not ops and not split and version in (0, 1) and seed in _PLAIN_COMPLETE:
        # intact frames in a valid Initial: the hello comes out whatever the DCID and PN
        assert got is not None


@fuzz_settings(3000)
@given(seed=st.integers(0, len(_DNS) - 1), ops=OPS, ts=st.floats(0, 2e9))
def test_dns_and_name_cache(seed: int, ops: list[tuple[int, int, int]], ts: float) -> None:
    check_dns(mutate(_DNS[seed], ops), ts)


@fuzz_settings(1200)
@given(st.binary(min_size=12, max_size=400).map(lambda b: b[:2] + b"\x81\x80" + b[4:]))
def test_dns_random_responses(data: bytes) -> None:
    check_dns(data)


@fuzz_settings(800)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([1, -1]),
            st.sampled_from([6, 17, 1]),
            st.integers(0, len(_TLS) + len(_QUIC) - 1),
            OPS,
            st.integers(0, (1 << 32) - 1),
        ),
        max_size=10,
    )
)
def test_name_extractor(
    packets: list[tuple[int, int, int, list[tuple[int, int, int]], int]],
) -> None:
    pool = _TLS + _QUIC
    check_name_extractor([(d, p, mutate(pool[i], ops), seq) for d, p, i, ops, seq in packets])

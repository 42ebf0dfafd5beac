"""Fuzz the compiled fast featurize path against the reference (bounded run).

Two input shapes: the capture heads of the corpus mutated byte-wise (record framing,
block lengths, file headers), and conversations built from corpus hellos, DNS answers
and QUIC Initials with valid framing and edited frames (link, IP, TCP/UDP headers,
payloads, times, wire lengths, duplicated and dropped records), which reach the compiled
decoders, the flow assigner and the name parsers. benchmarks/fuzz.py runs the same
harnesses far longer (``fast_capture``, ``fast_packets``), with numba bounds checks on.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.harness import (
    FAST_CHUNKS,
    FAST_CONFIGS,
    FRAME_EDITS,
    OPS,
    FrameEdit,
    check_fast_capture,
    check_fast_packets,
    fast_packets_from_bytes,
    fuzz_settings,
    mutate,
    scene_bytes,
    scenes,
    seeds,
)

_CAPTURES = seeds("capture")
_CONFIG = st.integers(0, len(FAST_CONFIGS) - 1)
_CHUNK = st.integers(0, len(FAST_CHUNKS) - 1)


def test_scenes_reach_the_name_stage() -> None:
    # Unedited, every scene must give its names, or edits would never exercise the name
    # parsers: the hello's SNI on the TLS flow, the DNS answer's name on the port-80 flow.
    tls_named = dns_named = 0
    for i, scene in enumerate(scenes()):
        table = check_fast_capture(scene_bytes(scene), i % len(FAST_CONFIGS), i % len(FAST_CHUNKS))
        assert table is not None and len(table) >= 4
        tls_named += bool(table["sni"].notna().any())
        dns_named += bool((table["name_source"] == "dns").any())
    assert tls_named == len(scenes())
    assert dns_named >= len(scenes()) // 2


@fuzz_settings(100)
@given(seed=st.integers(0, len(_CAPTURES) - 1), ops=OPS, config=_CONFIG, chunk=_CHUNK)
def test_fast_capture_heads(
    seed: int, ops: list[tuple[int, int, int]], config: int, chunk: int
) -> None:
    check_fast_capture(mutate(_CAPTURES[seed], ops), config, chunk)


@fuzz_settings(220)
@given(scene=st.integers(0, len(scenes()) - 1), edits=FRAME_EDITS, config=_CONFIG, chunk=_CHUNK)
def test_fast_packets(scene: int, edits: list[FrameEdit], config: int, chunk: int) -> None:
    check_fast_packets(scene, edits, config, chunk)


@fuzz_settings(30)
@given(st.binary(min_size=2, max_size=120))
def test_fast_packets_from_raw_bytes(data: bytes) -> None:
    # the byte-oriented form the long runs (atheris, random engine) feed
    scene, edits, config, chunk = fast_packets_from_bytes(data)
    assert len(edits) == max(0, (len(data) - 2) // 7)
    check_fast_packets(scene, edits, config, chunk)

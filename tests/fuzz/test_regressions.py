"""Bugs the fuzzers found, pinned as plain tests."""

from __future__ import annotations

from classifier.features.tls import HelloReassembler, parse_client_hello
from tests.fuzz.harness import seeds


def test_hello_whose_record_header_is_split_into_tiny_segments_is_found() -> None:
    # DPI-evasion tools send the first 1-5 bytes of a ClientHello alone; the reassembler
    # used to look for the record header inside single segments only and never found it.
    hello = seeds("tls")[0]
    want = parse_client_hello(hello)
    assert want is not None and want.sni
    for cuts in ([1], [2], [1, 2, 3, 4, 5], [3, 40]):
        reasm = HelloReassembler()
        bounds = [0, *cuts, len(hello)]
        got = None
        for a, b in zip(bounds, bounds[1:], strict=False):
            got = reasm.feed(hello[a:b], 1000 + a) or got
        assert got == want, cuts

"""The seed corpus is real and each harness accepts it unmutated (so fuzzing starts deep)."""

from __future__ import annotations

from pathlib import Path

from tests.fuzz.harness import (
    CORPUS,
    check_capture,
    check_dns,
    check_dns_query,
    check_quic_datagrams,
    check_quic_plain,
    check_tls,
    dns_sinks,
    seeds,
)

_KINDS = ("tls", "quic", "quic_plain", "dns", "dns_query", "capture", "tshark")


def test_corpus_is_small_and_complete() -> None:
    files = [p for p in CORPUS.rglob("*.bin")]
    assert sum(p.stat().st_size for p in files) < 2 * 1024 * 1024
    for kind in _KINDS:
        assert len(seeds(kind)) >= 8, kind


def test_tls_seeds_are_client_hellos_with_names() -> None:
    infos = [check_tls(s) for s in seeds("tls")]
    named = [i for i in infos if i is not None and i.sni]
    assert len(named) >= len(infos) * 3 // 4


def test_quic_seeds_decrypt() -> None:
    # Chrome splits its hello over two Initials: a single datagram may not complete it,
    # but the plaintext seeds exist only because the datagram decrypted.
    assert len(seeds("quic_plain")) == len(seeds("quic"))
    done = [check_quic_datagrams([s]) for s in seeds("quic")]
    assert any(d is not None and d.sni for d in done)
    rebuilt = [check_quic_plain(p, 0, b"\x11" * 8, 0) for p in seeds("quic_plain")]
    assert any(r is not None and r.sni for r in rebuilt)


def test_dns_seeds_are_answers() -> None:
    answers = [check_dns(s) for s in seeds("dns")]
    assert sum(a is not None for a in answers) >= len(answers) // 2
    assert any(a is not None and a.addresses for a in answers)


def test_dns_query_seeds_are_forwarded_queries() -> None:
    # none of them asks for a listed name: with the default policy all go upstream
    sink = dns_sinks()[2]  # nft mode, the default names
    outcomes = [check_dns_query(s, sink, "10.77.1.5") for s in seeds("dns_query")]
    assert [o.action for o in outcomes] == ["forward"] * len(outcomes)


def test_capture_heads_read() -> None:
    counts = [check_capture(s, skip_bad=False) for s in seeds("capture")]
    assert sum(c > 0 for c in counts) >= len(counts) - 2


def test_corpus_file_names_say_where_they_came_from() -> None:
    for p in CORPUS.rglob("*.bin"):
        assert p.parent.name in _KINDS
        assert Path(p.name).stem.rsplit("-", 1)[0].split("_")[0] in ("ndpi", "nfstream", "requet")

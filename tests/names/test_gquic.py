"""Google QUIC CHLO names: hand-built packets of each version, damaged ones, the compiled
twin, and agreement with tshark (``gquic.tag.sni``) on the shared gQUIC captures.

The reference reader is :func:`classifier.names.gquic.parse_gquic_packet` (through
:class:`~classifier.names.extract.NameExtractor`); the compiled scanner
(:mod:`classifier.names.extract_fast`) may settle a flow only with exactly its answer.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from classifier.features.featurize import FeaturizeConfig, featurize
from classifier.features.featurize_fast import featurize_fast
from classifier.flows import FlowConfig
from classifier.names import plugin_fast
from classifier.names.extract import NameExtractor
from classifier.names.extract_fast import scan_payload
from classifier.names.gquic import GQuicHello, parse_gquic_packet, read_chlo
from classifier.names.quic import QUIC_Q050, QuicInitialParser, encrypt_initial
from tests.capture import make_captures as mk
from tests.fuzz.harness import OPS, fuzz_settings, mutate
from tests.names import gquic_packets as gp
from tests.shared_data import SHARED

VERSIONS = ["Q024", "Q025", "Q030", "Q033", "Q034", "Q035", "Q037", "Q039", "Q043", "Q046"]


def _version(tag: str) -> int:
    return int.from_bytes(tag.encode(), "big")


def _reference(payload: bytes) -> tuple[str | None, str | None] | None:
    """(sni, alpn) when one fresh extractor names the flow from this UDP payload by its
    gQUIC CHLO, else None: what the scanner must answer."""
    ex = NameExtractor()
    ex.feed(+1, 17, payload, 0)
    return (ex.sni, ex.alpn) if ex.source == "gquic" else None


def _check(payload: bytes) -> tuple[str | None, str | None] | None:
    """The scanner never disagrees with the reference: it settles with the same name or
    defers (a name with bytes above 0x7F is always deferred)."""
    ref = _reference(payload)
    got = scan_payload(payload, 17)
    if got is not None:
        assert got == ref
    elif ref is not None:
        assert not ref[0].isascii()  # type: ignore[union-attr]
    return ref


# --- each version, as Chrome sent it -----------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_chlo_of_each_version(version: str) -> None:
    name = f"r3---sn-{version.lower()}.googlevideo.com"
    pkt = gp.packet(version, name)
    assert parse_gquic_packet(pkt) == GQuicHello(_version(version), name)
    ex = NameExtractor()
    ex.feed(+1, 17, pkt, 0)
    assert ex.done and ex.sni == name and ex.source == "gquic" and ex.alpn is None
    assert ex.quic_version == _version(version) and ex.hello is None
    assert scan_payload(pkt, 17) == (name, None)
    assert scan_payload(pkt, 6) is None  # never read as TCP


def test_chlo_without_sni_and_other_gquic_packets() -> None:
    for version in ("Q035", "Q046"):
        pkt = gp.packet(version, None)
        assert parse_gquic_packet(pkt) == GQuicHello(_version(version), None)
        assert _check(pkt) is None
    # the extractor keeps looking: a later CHLO of the flow still names it
    ex = NameExtractor()
    ex.feed(+1, 17, gp.packet("Q043", None), 0)
    ex.feed(-1, 17, b"\x00" * 40, 0)
    assert not ex.done
    ex.feed(+1, 17, gp.packet("Q043", "late.example"), 0)
    assert ex.sni == "late.example" and ex.source == "gquic"
    # ... up to the UDP give-up count
    ex = NameExtractor()
    for _ in range(4):
        ex.feed(+1, 17, gp.packet("Q043", None), 0)
    assert ex.done and ex.sni is None


def test_frame_and_header_variants() -> None:
    msg = gp.chrome_chlo("v.example")
    for big, version in (
        (False, "Q033"),
        (False, "Q035"),
        (False, "Q037"),
        (True, "Q039"),
        (True, "Q043"),
    ):
        cases = [
            gp.stream_frame(msg, big=big, data_len=None),  # no length: to the packet end
            gp.stream_frame(msg, big=big, id_len=2),  # byte order of the stream ID
            # byte order of the data length: padding after a 0x0100-byte CHLO
            gp.stream_frame(gp.chlo([(b"PAD", b"-" * 223), (b"SNI", b"v.example")]), big=big)
            + bytes(300),
            gp.stream_frame(msg, big=big, offset=1024, off_len=2),  # a second CHLO
            gp.stream_frame(msg, big=big, id_len=4, offset=7, off_len=8),
            gp.stream_frame(msg, big=big, data_len=60000),  # lying: cut to the packet
        ]
        for frame in cases:
            for pn_len in (1, 2, 4, 6):
                for flags in (0x0C, 0x08, 0x00):  # 8-byte connection ID, or none
                    pkt = gp.public_packet(version, frame, pn_len=pn_len, flags=flags)
                    want = GQuicHello(_version(version), "v.example")
                    assert parse_gquic_packet(pkt) == want
                    assert _check(pkt) == ("v.example", None)
    for cid_lens in (0x50, 0x00, 0x05, 0xFF, 0x5F):
        for pn_len in (1, 2, 3, 4):
            pkt = gp.long_packet(
                "Q046", gp.stream_frame(msg, big=True), cid_lens=cid_lens, pn_len=pn_len
            )
            assert _check(pkt) == ("v.example", None)


@pytest.mark.parametrize(
    "payload",
    [
        gp.public_packet(
            "Q043", gp.stream_frame(gp.chrome_chlo("x.example"), big=True, stream_id=3)
        ),  # not the crypto stream
        gp.public_packet(
            "Q043", b"\x07" + gp.stream_frame(gp.chrome_chlo("x.example"), big=True)
        ),  # PING first
        gp.public_packet("Q043", b"\x00" * 200),  # padding only
        gp.public_packet(
            "Q043", gp.stream_frame(b"SHLO" + gp.chrome_chlo("x.example")[4:], big=True)
        ),  # not a CHLO
        gp.public_packet("Q048", gp.stream_frame(gp.chrome_chlo("x.example"), big=True)),
        gp.public_packet("Q0x3", gp.stream_frame(gp.chrome_chlo("x.example"), big=True)),
        gp.public_packet(
            "Q043", gp.stream_frame(gp.chrome_chlo("x.example"), big=True), flags=0x0C | 0x02
        ),  # public reset
        bytes([0x05])
        + gp.public_packet("Q043", gp.stream_frame(gp.chrome_chlo("x.example"), big=True))[
            1:
        ],  # CID flag off
        gp.long_packet("Q043", gp.stream_frame(gp.chrome_chlo("x.example"), big=True)),
        gp.long_packet("Q050", gp.stream_frame(gp.chrome_chlo("x.example"), big=True)),
    ],
)
def test_packets_that_give_no_name(payload: bytes) -> None:
    got = parse_gquic_packet(payload)
    assert got is None or got.sni is None
    assert _check(payload) is None


def test_lying_chlo_lengths() -> None:
    sni = (b"SNI", b"lie.example")
    pad = (b"PAD", b"-" * 40)
    ver = (b"VER", b"Q043")
    cases = {
        "ok": (gp.chlo([pad, sni, ver]), "lie.example"),
        "too many entries": (gp.chlo([pad, sni, ver], entries=129), None),
        "more entries than written": (gp.chlo([pad, sni, ver], entries=60), None),
        "fewer entries": (gp.chlo([pad, sni, ver], entries=1), None),
        "SNI end past the data": (gp.chlo([pad, sni, ver], ends=[40, 4000, 4004]), None),
        "SNI end before its start": (gp.chlo([pad, sni, ver], ends=[40, 30, 55]), None),
        "empty SNI": (gp.chlo([pad, (b"SNI", b""), ver]), None),
        "only the table": (gp.chlo([pad, sni, ver])[: 8 + 24], None),
    }
    for label, (msg, want) in cases.items():
        for version in ("Q035", "Q043", "Q046"):
            number = int(version[1:])
            build = gp.long_packet if number >= 44 else gp.public_packet
            pkt = build(version, gp.stream_frame(msg, big=number >= 39))
            got = parse_gquic_packet(pkt)
            assert got is not None and got.sni == want, (label, version)
            assert _check(pkt) == (None if want is None else (want, None)), (label, version)
    # the data length cuts the CHLO before its SNI: no name from past the frame
    msg = gp.chlo([pad, sni, ver])
    pkt = gp.public_packet("Q043", gp.stream_frame(msg, big=True, data_len=50) + b"\x00" * 100)
    assert parse_gquic_packet(pkt) == GQuicHello(_version("Q043"), None)
    assert _check(pkt) is None


def test_read_chlo_settles_only_when_final() -> None:
    msg = gp.chrome_chlo("final.example")
    sni_end = msg.index(b"final.example") + len("final.example")
    for cut in range(len(msg) + 1):
        settled, name = read_chlo(msg[:cut])
        if cut >= sni_end:
            assert (settled, name) == (True, "final.example")
        else:
            assert name is None and not settled, cut  # never a partial name
    assert read_chlo(b"REJ\x00" + msg[4:]) == (True, None)
    assert read_chlo(b"CH") == (False, None) and read_chlo(b"XH") == (True, None)


@pytest.mark.parametrize("version", ["Q024", "Q039", "Q046"])
def test_every_truncation(version: str) -> None:
    name = "cut.example.org"
    pkt = gp.packet(version, name, pad_to=600)
    sni_end = pkt.index(name.encode()) + len(name)
    for cut in range(len(pkt) + 1):
        got = parse_gquic_packet(pkt[:cut])
        assert got is None or got.sni == (name if cut >= sni_end else None), cut
        assert _check(pkt[:cut]) == ((name, None) if cut >= sni_end else None), cut


def test_non_ascii_name_goes_to_python() -> None:
    pkt = gp.packet("Q043", "bücher.example".encode())
    assert parse_gquic_packet(pkt) == GQuicHello(_version("Q043"), "bücher.example")
    assert _reference(pkt) == ("bücher.example", None)
    assert scan_payload(pkt, 17) is None
    bad = gp.packet("Q043", b"\xff\xfe.example")
    assert _reference(bad) == ("\ufffd\ufffd.example", None)
    assert scan_payload(bad, 17) is None


# --- Q050: CHLO in protected Initials ------------------------------------------------------


def test_q050_initial() -> None:
    (pkt,) = gp.q050_initials("q050.example.com")
    assert parse_gquic_packet(pkt) is None  # not in clear
    assert scan_payload(pkt, 17) is None  # the compiled scanner leaves it to Python
    ex = NameExtractor()
    ex.feed(+1, 17, pkt, 0)
    assert ex.done and ex.sni == "q050.example.com" and ex.source == "gquic"
    assert ex.quic_version == QUIC_Q050 and ex.hello is None


def test_q050_chlo_split_over_initials_any_order() -> None:
    first, second = gp.q050_initials("split.q050.example", split=300)
    for order in ((first, second), (second, first)):
        p = QuicInitialParser()
        assert p.feed(order[0]) is None and not p.done
        p.feed(order[1])
        assert p.chlo_sni == "split.q050.example" and p.result is None


def test_q050_without_sni_or_not_a_chlo_gives_up() -> None:
    (pkt,) = gp.q050_initials(None)
    p = QuicInitialParser()
    p.feed(pkt)
    assert p.failed and p.chlo_sni is None
    garbage = b"\x08\x00\x20" + b"JUNK" * 8
    p = QuicInitialParser()
    p.feed(encrypt_initial(QUIC_Q050, gp.CID, b"", 1, garbage, pad_to=1200))
    assert p.failed


def test_q050_truncated_never_raises() -> None:
    (pkt,) = gp.q050_initials("t.example")
    for cut in range(0, len(pkt), 23):
        ex = NameExtractor()
        ex.feed(+1, 17, pkt[:cut], 0)
        assert ex.sni is None


# --- tshark reads the hand-built packets the same way ----------------------------------------

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")


def _tshark_snis(path: Path) -> dict[int, str]:
    out = subprocess.run(
        [
            "tshark",
            "-n",
            "-r",
            str(path),
            "-Y",
            "gquic.tag.sni",
            "-T",
            "fields",
            "-e",
            "udp.srcport",
            "-e",
            "gquic.tag.sni",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return {int(port): sni for port, sni in (line.split("\t") for line in out.splitlines())}


@needs_tshark
def test_built_packets_read_by_tshark(tmp_path: Path) -> None:
    """The builders are not only self-consistent: tshark finds the same names (for Q050
    this checks the salt and the CRYPTO framing)."""
    packets = {
        4000 + i: (v, gp.packet(v, f"{v.lower()}.example.com")) for i, v in enumerate(VERSIONS)
    }
    packets[5000] = ("Q050", gp.q050_initials("q050.example.com")[0])
    recs = [
        (1000 + k, 0, mk.ether(mk.ipv4(mk.udp(port, 443, pkt), proto=17)))
        for k, (port, (_, pkt)) in enumerate(packets.items())
    ]
    path = tmp_path / "gquic.pcap"
    path.write_bytes(mk.pcap_file(recs))
    theirs = _tshark_snis(path)
    assert theirs == {port: f"{v.lower()}.example.com" for port, (v, _) in packets.items()}
    table = featurize(path, FeaturizeConfig())
    ours = {int(r.client_port): (r.sni, r.name_source) for r in table.itertuples()}
    assert ours == {port: (sni, "gquic") for port, sni in theirs.items()}
    pd.testing.assert_frame_equal(
        featurize_fast(path), table.sort_values("flow_id").reset_index(drop=True)
    )


# --- fuzzing: mutated built packets; the twins agree, nothing raises -------------------------

_SEEDS = [gp.packet(v, f"{v}.fuzz.example", pad_to=300) for v in VERSIONS]


@fuzz_settings(1500)
@given(seed=st.integers(0, len(_SEEDS) - 1), ops=OPS)
def test_mutated_packets(seed: int, ops: list[tuple[int, int, int]]) -> None:
    _check(mutate(_SEEDS[seed], ops))


@fuzz_settings(500)
@given(
    version=st.sampled_from(VERSIONS),
    body=st.binary(max_size=120),
    entries=st.integers(0, 140),
    ends=st.lists(st.integers(0, (1 << 32) - 1), max_size=4),
)
def test_random_chlo_tables(version: str, body: bytes, entries: int, ends: list[int]) -> None:
    tags = [(b"SNI" if i == 1 else b"T%d" % i, b"v" * 5) for i in range(len(ends))]
    msg = gp.chlo(tags, entries=entries, ends=ends) + body
    number = int(version[1:])
    build = gp.long_packet if number >= 44 else gp.public_packet
    _check(build(version, gp.stream_frame(msg, big=number >= 39)))


# --- the shared gQUIC captures, against tshark ------------------------------------------------

#: captures with gQUIC client hellos: Q024-Q033 (quic), Q035 (wechat, youtube_quic),
#: Q039 (youtubeupload; Requet A: header-only), Q043 (Requet B1: header-only, no SNI),
#: Q046 (quic046)
GQUIC_CAPTURES = [
    SHARED / p
    for p in (
        "ndpi/quic.pcap",
        "ndpi/quic046.pcap",
        "ndpi/wechat.pcap",
        "ndpi/youtube_quic.pcap",
        "ndpi/youtubeupload.pcap",
        "ndpi/gquic_only_from_server.pcap",
        "requet/A_baseline_Mar15_exp_160.pcap",
        "requet/B1_baseline_apartment_exp_288.pcap",
    )
]
NO_TIMEOUTS = FeaturizeConfig(
    flow=FlowConfig(idle_timeout=1e12, active_timeout=1e12, close_linger=1e12), snapshots=()
)
needs_captures = pytest.mark.skipif(
    shutil.which("tshark") is None or not all(p.is_file() for p in GQUIC_CAPTURES),
    reason="needs tshark and the gQUIC captures of the shared folder "
    f"({SHARED}; see tests/shared_data.py)",
)

Ends = frozenset[tuple[str, int]]


def _tshark_flow_names(path: Path) -> dict[Ends, set[str]]:
    out = subprocess.run(
        [
            "tshark",
            "-n",
            "-r",
            str(path),
            "-Y",
            "gquic.tag.sni",
            "-T",
            "fields",
            "-e",
            "ip.src",
            "-e",
            "udp.srcport",
            "-e",
            "ip.dst",
            "-e",
            "udp.dstport",
            "-e",
            "gquic.tag.sni",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    names: dict[Ends, set[str]] = {}
    for line in out.splitlines():
        src, sport, dst, dport, sni = line.split("\t")
        names.setdefault(frozenset({(src, int(sport)), (dst, int(dport))}), set()).add(sni)
    return names


@needs_captures
@pytest.mark.parametrize("path", GQUIC_CAPTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_flow_names_match_tshark(path: Path) -> None:
    """Every flow where tshark shows a CHLO SNI has that name (source gquic) in
    shortflow's table, and no other flow gets a gquic name."""
    theirs = _tshark_flow_names(path)
    table = featurize(path, NO_TIMEOUTS)
    ours: dict[Ends, tuple[str | None, str | None]] = {}
    for r in table.itertuples():
        if int(r.proto) == 17:
            ours[frozenset({(r.client, int(r.client_port)), (r.server, int(r.server_port))})] = (
                r.sni,
                r.name_source,
            )
    for ends, names in theirs.items():
        assert len(names) == 1, (ends, names)
        assert ours.get(ends) == (next(iter(names)), "gquic"), ends
    assert {e for e, (_, src) in ours.items() if src == "gquic"} == set(theirs)
    if path.name in (
        "quic.pcap",
        "quic046.pcap",
        "wechat.pcap",
        "youtube_quic.pcap",
        "youtubeupload.pcap",
    ):
        assert theirs  # these do carry names: the comparison is not vacuous


@needs_captures
@pytest.mark.parametrize("path", GQUIC_CAPTURES[:5], ids=lambda p: p.name)
def test_fast_path_on_gquic_captures(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path (compiled scanner settling the gQUIC flows) gives the reference's
    table, and the scanner does settle every gQUIC-named flow itself."""
    settled: list[str] = []
    real = plugin_fast.scan_first_payloads

    def spy(*args: object) -> object:
        scan = real(*args)  # type: ignore[arg-type]
        settled.extend(scan.sources)
        return scan

    monkeypatch.setattr(plugin_fast, "scan_first_payloads", spy)
    config = FeaturizeConfig()
    ref = featurize(path, config).sort_values("flow_id", kind="stable").reset_index(drop=True)
    got = featurize_fast(path, config)
    pd.testing.assert_frame_equal(got, ref, check_exact=False, rtol=1e-9, atol=0.0)
    named = int((ref["name_source"] == "gquic").sum())
    assert named > 0 and settled.count("gquic") == named

"""The fast featurize path gives the reference's table: same columns, dtypes, rows, values.

Compared on every shared public capture (ndpi, nfstream, requet), with snapshots, with
windows and with resegmentation + small tables, on generated captures that carry TLS
ClientHellos and DNS answers (names), on random packet soups (timestamps going backwards,
port collisions), on hand-made captures of every link type and pcapng variant, and on
damaged / compressed files (where the fast path hands over to the reference). The
reference's rows are sorted by flow_id (stable) first: it emits flows that close at the
same sweep in hash order. Floats must match within 1e-9 relative; in practice they are
bit-identical, which one test checks too.
"""

from __future__ import annotations

import gzip
import random
import socket
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from classifier.capture import ReadStats, open_capture
from classifier.capture import decode_fast as dc
from classifier.capture import reader_fast as cc
from classifier.errors import CaptureError
from classifier.features import featurize_fast as fast
from classifier.features import groups_fast as batch
from classifier.features.featurize import FeaturizeConfig, FeaturizeStats, featurize
from classifier.features.featurize_fast import featurize_fast, featurize_many
from classifier.flows import FlowConfig
from classifier.names import plugin_fast
from tests.capture import make_captures as mk
from tests.shared_data import SHARED, missing_reason
from tests.synthetic_captures import write_many_flows

CAPTURES = sorted(
    p
    for d in ("ndpi", "nfstream", "requet")
    if (SHARED / d).is_dir()
    for p in (SHARED / d).iterdir()
    if p.suffix in (".pcap", ".pcapng")
)
needs_shared = pytest.mark.skipif(
    not CAPTURES, reason=missing_reason("ndpi") or "no capture in the shared folder"
)

WINDOWS = FeaturizeConfig(window=5.0)
SMALL_TABLE = FeaturizeConfig(
    flow=FlowConfig(
        resegment_mss=536,
        idle_timeout=10.0,
        active_timeout=30.0,
        max_flows=20,
        close_linger=0.2,
        sweep_interval=0.5,
        max_packets=300,
    ),
    snapshots=(1.0, 3.0, 10.0),
)


def _sorted(df: pd.DataFrame, config: FeaturizeConfig) -> pd.DataFrame:
    keys = ["flow_id"] if config.window is None else ["flow_id", "window_start"]
    if not len(df):
        return df
    return df.sort_values(keys, kind="stable").reset_index(drop=True)


def _check(path: Path, config: FeaturizeConfig, *, exact: bool = False) -> pd.DataFrame:
    ref_stats, got_stats = FeaturizeStats(), FeaturizeStats()
    ref = _sorted(featurize(path, config, stats=ref_stats), config)
    got = featurize_fast(path, config, stats=got_stats)
    pd.testing.assert_frame_equal(got, ref, check_exact=False, rtol=1e-9, atol=0.0)
    if exact:
        for col in ref.columns:
            if ref[col].dtype == np.float64:
                assert np.array_equal(got[col].to_numpy(), ref[col].to_numpy()), col
    r, g = ref_stats.read, got_stats.read
    assert (g.records, g.packets, g.skipped, g.noted, g.bytes_read, g.linktypes, g.format) == (
        r.records,
        r.packets,
        r.skipped,
        r.noted,
        r.bytes_read,
        r.linktypes,
        r.format,
    )
    rt, gt = ref_stats.table, got_stats.table
    assert (gt.packets, gt.flows, gt.peak_flows, gt.ended) == (
        rt.packets,
        rt.flows,
        rt.peak_flows,
        rt.ended,
    )
    assert got_stats.rows == ref_stats.rows == len(ref)
    return got


# --- shared public captures ------------------------------------------------------------


@needs_shared
@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shared_capture_default(path: Path) -> None:
    _check(path, FeaturizeConfig(), exact=True)


WINDOW_SET = [p for p in CAPTURES if p.parent.name == "requet"][:2] + [
    p
    for p in CAPTURES
    if p.name
    in ("alexa-app.pcapng", "quic.pcap", "ookla.pcap", "telegram_videocall.pcapng", "wa_video.pcap")
]


@needs_shared
@pytest.mark.parametrize("path", WINDOW_SET, ids=lambda p: p.name)
def test_shared_capture_windows(path: Path) -> None:
    _check(path, WINDOWS)


@needs_shared
@pytest.mark.parametrize("path", WINDOW_SET, ids=lambda p: p.name)
def test_shared_capture_small_table_resegmented(path: Path) -> None:
    _check(path, SMALL_TABLE)


@needs_shared
def test_chunk_boundaries_do_not_matter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny read buffers and chunks: records, flows and names straddle every boundary."""
    path = next(p for p in CAPTURES if p.name == "alexa-app.pcapng")
    whole = featurize_fast(path)
    monkeypatch.setattr(fast, "_BUFFER_BYTES", 1 << 20)
    monkeypatch.setattr(fast, "_CHUNK_PACKETS", 37)
    pd.testing.assert_frame_equal(featurize_fast(path), whole)
    _check(path, FeaturizeConfig())


def _chunks(path: Path, ahead: bool, **kw: int) -> tuple[list[tuple[bytes, ...]], ReadStats]:
    """Every chunk's arrays and payload bytes, copied as it comes (a chunk is only valid
    until the next one), and the read counters."""
    stats = ReadStats()
    got = [
        (
            ch.ts.tobytes(),
            ch.cols.tobytes(),
            ch.first_record_offset.to_bytes(8, "big"),
            *(ch.payload(i) for i in range(len(ch))),
        )
        for ch in cc.iter_chunks(path, stats, ahead=ahead, **kw)
    ]
    return got, stats


@needs_shared
@pytest.mark.parametrize("name", ["alexa-app.pcapng", "quic.pcap", "wa_video.pcap"])
def test_reading_ahead_gives_the_same_chunks(name: str) -> None:
    """A second thread reading ahead (two sets of arrays, two buffers swapped at every
    refill) hands out the chunks one thread does, byte for byte, and the same counters;
    tiny buffers and chunks make records straddle every refill."""
    path = next(p for p in CAPTURES if p.name == name)
    for kw in ({}, {"buffer_bytes": 1 << 20, "max_packets": 7}):
        one, one_stats = _chunks(path, False, **kw)
        two, two_stats = _chunks(path, True, **kw)
        assert one == two and len(one) > 0
        assert (two_stats.records, two_stats.packets, two_stats.skipped, two_stats.bytes_read) == (
            one_stats.records,
            one_stats.packets,
            one_stats.skipped,
            one_stats.bytes_read,
        )


def test_reading_ahead_stops_with_its_caller_and_raises_in_order(tmp_path: Path) -> None:
    frame = mk.ether(_v4())
    path = mk.write(
        tmp_path, "many.pcap", mk.pcap_file([(1_700_000_000, i, frame) for i in range(5000)])
    )
    chunks = cc.iter_chunks(path, ReadStats(), max_packets=10, ahead=True)
    assert len(next(chunks)) == 10
    chunks.close()  # the reading thread is waiting for a free set: it must end
    assert not [t for t in threading.enumerate() if t.name == "shortflow-read"]
    good = mk.pcap_file([(1_700_000_000, i, frame) for i in range(40)])
    damaged = good + (1).to_bytes(4, "little") * 2 + (10**6).to_bytes(4, "little") * 2
    path = mk.write(tmp_path, "damaged.pcap", damaged)
    got = []
    with pytest.raises(cc.ColumnsUnsupported) as err:
        for ch in cc.iter_chunks(path, ReadStats(), max_packets=16, ahead=True):
            got.append(len(ch))
    assert got == [16, 16, 8] and "damaged" in str(err.value)


@needs_shared
@pytest.mark.parametrize("config", [FeaturizeConfig(), WINDOWS], ids=["flows", "windows"])
def test_features_in_two_threads_are_the_same(
    config: FeaturizeConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large batches of ended flows are cut in two runs computed in two threads."""
    for path in WINDOW_SET[:4]:
        one = featurize_fast(path, config)
        monkeypatch.setattr(batch, "SPLIT_ENTRIES", 2)
        two = featurize_fast(path, config)
        monkeypatch.undo()
        pd.testing.assert_frame_equal(two, one, check_exact=True)
        assert len(one) > 1


# --- generated captures ----------------------------------------------------------------


@pytest.fixture(scope="module")
def many_flows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gen") / "many.pcap"
    write_many_flows(path, flows=600, spacing=0.02)
    return path


def test_names_and_dns_on_generated_capture(
    many_flows: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fast, "_CHUNK_PACKETS", 1000)
    got = _check(many_flows, FeaturizeConfig(), exact=True)
    assert got["sni"].notna().sum() == 600  # every TCP flow has a ClientHello
    assert got["dns_name"].notna().sum() > 0  # servers named by earlier DNS answers
    assert got["flow_id"].is_monotonic_increasing


def test_windows_on_generated_capture(many_flows: Path) -> None:
    _check(many_flows, FeaturizeConfig(window=0.05))


def _soup(seed: int, n: int) -> bytes:
    """Random TCP/UDP packets over few hosts/ports; times that sometimes go backwards."""
    rng = random.Random(seed)
    hosts4 = ("10.77.0.1", "10.77.0.2", "10.77.0.3")
    hosts6 = ("fd77::1", "fd77::2")
    records = []
    t = 1_700_000_000.0
    for _ in range(n):
        t += rng.choice((0.0, 1e-6, 0.01, 0.3, 0.6, 2.0, 40.0, -0.7))
        payload = bytes(rng.randrange(256) for _ in range(rng.choice((0, 0, 5, 300, 1400))))
        sport, dport = rng.choice((53, 443, 5000, 40000, 50001)), rng.choice((53, 443, 40000))
        if rng.random() < 0.6:
            l4 = mk.tcp(
                sport,
                dport,
                payload,
                seq=rng.randrange(2**32),
                flags=rng.choice((0x02, 0x12, 0x10, 0x18, 0x11, 0x04, 0x01)),
            )
            proto = 6
        else:
            l4, proto = mk.udp(sport, dport, payload), 17
        if rng.random() < 0.8:
            frame = mk.ether(mk.ipv4(l4, proto, rng.choice(hosts4), rng.choice(hosts4)))
        else:
            frame = mk.ether(mk.ipv6(l4, proto, rng.choice(hosts6), rng.choice(hosts6)), 0x86DD)
        sec = int(t)
        records.append((sec, int(round((t - sec) * 1e6)) % 1_000_000, frame))
    return mk.pcap_file(records)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    "config", [FeaturizeConfig(), WINDOWS, SMALL_TABLE], ids=["default", "windows", "small-table"]
)
def test_random_packet_soup(tmp_path: Path, seed: int, config: FeaturizeConfig) -> None:
    path = mk.write(tmp_path, "soup.pcap", _soup(seed, 400))
    _check(path, config)


# --- link types, pcapng variants: the column reader against open_capture ---------------


def _v4(payload: bytes = b"hello", proto: int = 6) -> bytes:
    l4 = mk.tcp(40000, 443, payload) if proto == 6 else mk.udp(40000, 53, payload)
    return mk.ipv4(l4, proto)


def _v6(ext: bytes = b"", nxt: int = 6) -> bytes:
    return mk.ipv6(mk.tcp(40000, 443, b"six"), nxt=nxt, ext=ext)


FRAMES: list[tuple[int, bytes]] = [
    (1, mk.ether(_v4())),
    (1, mk.ether(_v4(proto=17), vlans=[(0x8100, 5), (0x88A8, 7)])),
    (1, mk.ether(_v6(), 0x86DD)),
    (1, mk.ether(_v6(mk.v6_ext(0, 43) + mk.v6_ext(43, 60) + mk.v6_ext(60, 6), 0), 0x86DD)),
    (1, mk.ether(_v6(mk.v6_ext(44, 6, frag_word=1), 44), 0x86DD)),  # first fragment
    (1, mk.ether(_v6(mk.v6_ext(44, 6, frag_word=8 << 3), 44), 0x86DD)),  # later fragment
    (1, mk.ether(mk.ipv4(mk.tcp(1, 2), 6, frag_offset=10))),
    (1, mk.ether(mk.ipv4(mk.tcp(1, 2, b"x"), 6, more_fragments=True))),
    (1, mk.ether(mk.ipv4(b"\x08\x00" + b"\x00" * 6, 1))),  # ICMP
    (1, mk.ether(mk.ipv4(b"\x00" * 8, 47))),  # GRE
    (1, mk.ether(b"\x00" * 28, 0x0806)),  # ARP
    (1, mk.ether(mk.ipv4(mk.tcp(1, 2, b"abc"), 6, total_len=0))),  # TSO: length from wire
    (1, mk.ether(mk.ipv4(mk.tcp(1, 2, b"abc", doff=4), 6))),  # bad TCP header length
    (1, mk.ether(_v4())[:30]),  # cut by the snap length
    (1, mk.ether(b"\x00\x01" + b"\x00" * 40, 0x8847)),  # MPLS, not IP below
    (113, mk.sll(_v4())),
    (276, mk.sll2(mk.ipv6(mk.udp(5353, 5353, b"m"), nxt=17), 0x86DD)),
    (0, mk.null(_v4(), 2)),
    (0, mk.null(_v6(), 30, ">")),
    (101, _v4()),
    (228, _v4()),
    (229, _v6()),
]


def _same_packets(path: Path) -> None:
    ref_stats = ReadStats()
    ref = [
        (
            p.ts,
            p.wire_len,
            p.ip_len,
            p.version,
            p.src,
            p.dst,
            p.proto,
            p.sport,
            p.dport,
            p.tcp_flags,
            p.seq,
            p.payload_len,
            p.payload,
        )
        for p in open_capture(path, stats=ref_stats)
    ]
    got_stats = ReadStats()
    got = []
    for ch in cc.iter_chunks(path, got_stats, max_packets=3):
        c = ch.cols
        for i in range(len(ch)):
            v = int(c[dc.C_VER, i])
            fam = socket.AF_INET if v == 4 else socket.AF_INET6

            def addr(hi: int, lo: int, v: int = v, fam: int = fam) -> str:
                raw = (
                    (lo & 0xFFFFFFFF).to_bytes(4, "big")
                    if v == 4
                    else (hi & (2**64 - 1)).to_bytes(8, "big")
                    + (lo & (2**64 - 1)).to_bytes(8, "big")
                )
                return socket.inet_ntop(fam, raw)

            got.append(
                (
                    float(ch.ts[i]),
                    int(c[dc.C_WIRE, i]),
                    int(c[dc.C_IPLEN, i]),
                    v,
                    addr(int(c[dc.C_SRC_HI, i]), int(c[dc.C_SRC_LO, i])),
                    addr(int(c[dc.C_DST_HI, i]), int(c[dc.C_DST_LO, i])),
                    int(c[dc.C_PROTO, i]),
                    int(c[dc.C_SPORT, i]),
                    int(c[dc.C_DPORT, i]),
                    int(c[dc.C_FLAGS, i]),
                    int(c[dc.C_SEQ, i]),
                    int(c[dc.C_PLEN, i]),
                    ch.payload(i),
                )
            )
    assert got == ref
    assert (
        got_stats.records,
        got_stats.packets,
        got_stats.skipped,
        got_stats.noted,
        got_stats.bytes_read,
        got_stats.linktypes,
        got_stats.format,
    ) == (
        ref_stats.records,
        ref_stats.packets,
        ref_stats.skipped,
        ref_stats.noted,
        ref_stats.bytes_read,
        ref_stats.linktypes,
        ref_stats.format,
    )


@pytest.mark.parametrize("linktype", sorted({lt for lt, _ in FRAMES}))
@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_link_types(tmp_path: Path, linktype: int, order: str, nano: bool) -> None:
    frames = [f for lt, f in FRAMES if lt == linktype]
    records = [(1_700_000_000 + i, 123_456 * (i + 1), f) for i, f in enumerate(frames * 2)]
    path = mk.write(tmp_path, "x.pcap", mk.pcap_file(records, linktype, nano, order))
    _same_packets(path)


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_interfaces_sections_and_blocks(tmp_path: Path, order: str) -> None:
    eth = [f for lt, f in FRAMES if lt == 1]
    data = (
        mk.pcapng_shb(order)
        + mk.pcapng_idb(1, order=order)
        + mk.pcapng_idb(113, tsresol=9, tsoffset=-100, order=order)
        + mk.pcapng_idb(147, order=order)  # unknown link type: its packets are skipped
        + mk.pcapng_idb(101, tsresol=0x80 | 20, order=order)
    )
    for i, f in enumerate(eth):
        data += mk.pcapng_epb(0, 1_700_000_000_000_000 + i * 1000, f, order=order)
    data += mk.pcapng_epb(1, 1_700_000_000_123_456_789, mk.sll(_v4()), order=order)
    data += mk.pcapng_epb(2, 5, b"\x00" * 20, order=order)
    data += mk.pcapng_epb(3, 1_782_570_000 << 20 | 12345, _v4(), order=order)
    data += mk.pcapng_opb(0, 1_700_000_001_000_000, eth[0], order=order)
    data += mk.pcapng_spb(eth[1], order=order)
    data += mk.pcapng_block(5, b"\x00" * 16, order)  # interface statistics: skipped
    # a second section forgets the interfaces of the first
    data += mk.pcapng_shb(order) + mk.pcapng_idb(228, snaplen=40, order=order)
    data += mk.pcapng_epb(0, 1_700_000_002_000_000, _v4(b"x" * 100), order=order)
    data += mk.pcapng_spb(_v4(b"y" * 100), order=order)
    path = mk.write(tmp_path, "x.pcapng", data)
    _same_packets(path)


# --- files the fast path hands to the reference -----------------------------------------


@needs_shared
def test_gzip_goes_through_reference(tmp_path: Path) -> None:
    src = next(p for p in CAPTURES if p.name == "chrome.pcap")
    path = tmp_path / "chrome.pcap.gz"
    path.write_bytes(gzip.compress(src.read_bytes()))
    _check(path, FeaturizeConfig())


def test_cut_short_capture_goes_through_reference(tmp_path: Path) -> None:
    path = mk.write(tmp_path, "cut.pcap", _soup(1, 200)[:-7])
    got = _check(path, FeaturizeConfig())
    assert len(got)


def test_damaged_record_same_error_and_skip_bad(tmp_path: Path) -> None:
    good = _soup(2, 50)
    frame = mk.ether(_v4())
    bad = mk.pcap_file([(1_700_000_000, 0, frame), (1_700_000_000, 1, frame, 60)])
    # second record claims an absurd captured length, good records follow
    damaged = (
        bad[: 24 + 16 + len(frame) + 8]
        + (10**6).to_bytes(4, "little")
        + bad[24 + 16 + len(frame) + 12 :]
        + good[24:]
    )
    path = mk.write(tmp_path, "bad.pcap", damaged)
    with pytest.raises(CaptureError) as ref_err:
        featurize(path)
    with pytest.raises(CaptureError) as got_err:
        featurize_fast(path)
    assert str(got_err.value) == str(ref_err.value)
    ref = _sorted(featurize(path, skip_bad=True), FeaturizeConfig())
    pd.testing.assert_frame_equal(featurize_fast(path, skip_bad=True), ref)


@pytest.mark.parametrize("content", [b"", b"not a capture at all", b"\x0a\x0d\x0d\x0a"])
def test_bad_files_raise_capture_error(tmp_path: Path, content: bytes) -> None:
    path = mk.write(tmp_path, "x.pcap", content)
    with pytest.raises(CaptureError) as ref_err:
        featurize(path)
    with pytest.raises(CaptureError) as got_err:
        featurize_fast(path)
    assert str(got_err.value) == str(ref_err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="no such file"):
        featurize_fast(tmp_path / "nope.pcap")


def test_capture_without_flows_has_the_reference_columns(tmp_path: Path) -> None:
    frame = mk.ether(b"\x00" * 28, 0x0806)
    path = mk.write(tmp_path, "arp.pcap", mk.pcap_file([(1, 0, frame)]))
    got = _check(path, FeaturizeConfig())
    assert got.empty


# --- many files ---------------------------------------------------------------------------


@needs_shared
def test_featurize_many_in_processes() -> None:
    paths = [p for p in CAPTURES if p.name in ("chrome.pcap", "dns.pcap", "safari.pcap")]
    one_by_one = pd.concat([featurize_fast(p) for p in paths], ignore_index=True)
    pd.testing.assert_frame_equal(featurize_many(paths, jobs=2), one_by_one)
    pd.testing.assert_frame_equal(featurize_many(paths, jobs=1), one_by_one)


# --- the DNS shortcut: lookups are skipped only for addresses no answer carried ----------


DNS_RICH = (
    "dns.pcap",
    "android.pcap",
    "iphone.pcap",
    "alexa-app.pcapng",
    "1kxun.pcap",
    "wechat.pcap",
    "sites.pcapng",
)


def _dns_payloads() -> list[bytes]:
    out = []
    for path in (p for p in CAPTURES if p.name in DNS_RICH):
        for p in open_capture(path):
            if p.proto == 17 and 53 in (p.sport, p.dport) and p.payload:
                out.append(p.payload)
    return out


@needs_shared
def test_dns_address_walk_covers_every_cached_address() -> None:
    from classifier.names.dns import parse_dns_response

    payloads = _dns_payloads()
    assert len(payloads) > 20
    rng = random.Random(7)
    mutated = []
    for p in payloads:
        for _ in range(8):  # flipped bytes: odd lengths, pointers, record types
            b = bytearray(p)
            for _ in range(rng.randint(1, 3)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            mutated.append(bytes(b))
    checked = 0
    for msg in payloads + mutated:
        answer = parse_dns_response(msg)
        found: set[bytes] = set()
        if not plugin_fast._dns_addresses(msg, found) or answer is None:
            continue
        for ip, _ttl in answer.addresses:
            fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
            assert socket.inet_pton(fam, ip) in found, (msg.hex(), ip)
            checked += 1
    assert checked > 20

"""Bugs the fuzzers found, pinned as plain tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dnslib import RCODE, DNSRecord

from classifier.enforce.dnsmasq import render_dnsmasq_conf
from classifier.enforce.policy import parse_policy
from classifier.errors import EnforcementError, PolicyError
from classifier.features import groups_fast as batch
from classifier.features.featurize import FeaturizeConfig, featurize
from classifier.names.tls import HelloReassembler, parse_client_hello
from tests.capture import make_captures as mk
from tests.fuzz.harness import (
    FAST_CONFIGS,
    check_dns_query,
    check_fast_capture,
    check_tshark_line,
    dns_sinks,
    edit_fields,
    seeds,
)


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


def test_tshark_line_values_tshark_never_writes_are_bad_packets() -> None:
    # The first raised ValueError out of the tshark backend's line parser (the fragment
    # offset of an IP packet whose payload tshark calls "data" was read outside the
    # parser's try); the others came out as Packets with a NaN time, a negative payload
    # length, a port of -1 or 65536, or an address that is none.
    base = next(s.decode() for s in seeds("tshark") if s.split(b"\t")[2].endswith(b":udp:dns"))
    udp_v6 = edit_fields(
        base,
        [
            (2, "eth:ethertype:ipv6:udp"),
            (9, "2001:db8::1"),
            (10, "2001:db8::2"),
            (11, "0"),
            (23, "0"),
        ],
    )
    cases = {
        "ip-data with a bad fragment offset": (
            edit_fields(base, [(2, "eth:ethertype:ip:data"), (7, "0x")]),
            "bad-packet",
        ),
        "ip-data, fragment offset 0": (
            edit_fields(base, [(2, "eth:ethertype:ip:data"), (7, "0")]),
            "other-l4",
        ),
        "NaN time": (edit_fields(base, [(0, "nan")]), "bad-packet"),
        "infinite time": (edit_fields(base, [(0, "1e400")]), "bad-packet"),
        "UDP length 0 over IPv6": (udp_v6, "bad-packet"),
        "IP length shorter than the headers": (edit_fields(base, [(5, "20")]), "bad-packet"),
        "negative port": (edit_fields(base, [(21, "-1")]), "bad-packet"),
        "port past 65535": (edit_fields(base, [(22, "65536")]), "bad-packet"),
        "not an address": (edit_fields(base, [(3, "example.com")]), "bad-packet"),
        "IPv6 address in an IPv4 header": (edit_fields(base, [(4, "::1")]), "bad-packet"),
        "digits of another script": (edit_fields(base, [(1, "\u0663")]), "bad-packet"),
    }
    for what, (line, want) in cases.items():
        assert check_tshark_line(line) == want, what
    assert not isinstance(check_tshark_line(base), str)


@pytest.mark.parametrize("name", ["a.com\n.", "q\n.", "tiktok.com\n..", "*.x.com\n."])
def test_name_with_a_newline_before_the_final_dot_is_refused(name: str) -> None:
    # "$" in the name pattern also matches before a final newline: after the trailing dot
    # was stripped, "a.com\n" passed, and the dnsmasq snippet got a line break inside its
    # nftset= line (the policy kept the name too, and then never matched it).
    with pytest.raises(PolicyError, match="sinkhole.names"):
        parse_policy({"sinkhole": {"names": [name]}}, "p.toml")
    with pytest.raises(EnforcementError, match="not a DNS name"):
        render_dnsmasq_conf(["ok.example", name])


def test_sinkhole_answer_does_not_copy_the_query_rcode() -> None:
    # dnslib's reply() copies the query's flag word: a query with RCODE bits set got
    # 0.0.0.0 under SERVFAIL (2), REFUSED (5) or 15.
    sink = dns_sinks()[2]  # nft mode, the default names
    for junk in (2, 5, 15):
        q = DNSRecord.question("www.tiktok.com", "A")
        q.header.rcode = junk
        out = check_dns_query(q.pack(), sink, "10.77.1.5")
        reply = DNSRecord.parse(out.reply or b"")
        assert reply.header.rcode == RCODE.NOERROR
        assert [str(r.rdata) for r in reply.rr] == ["0.0.0.0"]


def _window_rows(ts: list[float], window: float) -> np.ndarray:
    n = len(ts)
    t = np.asarray(ts, np.float64)
    size, pay, flags = (
        np.full(n, 100, np.int64),
        np.full(n, 60, np.int64),
        np.full(n, 0x10, np.int64),
    )
    dirn = np.ones(n, np.int8)
    offsets = np.array([0, n], np.int64)
    first, last = np.array([t[0]]), np.array([t[-1]])
    plan = batch.window_views(t, offsets, first, last, window)
    return batch.window_features(t, size, dirn, flags, pay, offsets, first, window, plan)


def test_entry_outside_every_window_does_not_split_a_window_view() -> None:
    # A packet whose time jumped far ahead (and back) lies past the flow's last window:
    # in no window. The window kernel ended the view at it and started a second view of
    # the same window after it: one row more than planned, written past the output array
    # (heap corruption, "corrupted double-linked list" aborts), and the first row missed
    # the packets after the stray one.
    got = _window_rows([0.0, 30.0, 0.1, 0.2], 0.5)
    assert got.shape == (1, batch.N_FEATURES)
    assert got[:, 1].tolist() == [3.0] and got[:, 3].tolist() == [300.0]  # pkts, bytes up
    # a stray packet before the flow's first time, among the first window's packets
    got = _window_rows([1.0, 1.1, 0.5, 1.2, 1.7, 1.8], 0.5)
    assert got.shape == (2, batch.N_FEATURES)
    assert got[:, 1].tolist() == [3.0, 2.0]


def _tcp_flow(steps: list[tuple[float, bool, int]], lead: float | None = None) -> bytes:
    """A pcap of one TCP flow: (time, client to server, flags) per packet; with ``lead``,
    a UDP packet of another flow at that time comes first."""
    up = ("10.77.0.1", "10.77.0.2")
    records = []
    if lead is not None:
        sec, usec = divmod(round(lead * 1e6), 1_000_000)
        records.append((sec, usec, mk.ether(mk.ipv4(mk.udp(5000, 5001, b"u"), 17))))
    for ts, c2s, flags in steps:
        src, dst = up if c2s else up[::-1]
        sport, dport = (50000, 443) if c2s else (443, 50000)
        frame = mk.ether(mk.ipv4(mk.tcp(sport, dport, b"x" * 10, flags=flags), 6, src, dst))
        usec = round(ts * 1e6)
        records.append((usec // 1_000_000, usec % 1_000_000, frame))
    return mk.pcap_file(records)


_WINDOWS = FAST_CONFIGS.index(FeaturizeConfig(window=0.5, snapshots=(1.0,)))


def test_time_jump_inside_a_flow_same_windows_as_the_reference(tmp_path: Path) -> None:
    # The capture the packet fuzzer found it with, reduced: the SYN/ACK of a TLS flow
    # 30 s late, the flow's other packets at their times.
    t = 1_700_000_000.0
    data = _tcp_flow(
        [
            (t, True, mk.SYN),
            (t + 30.3, False, mk.SYN | mk.ACK),
            (t + 0.02, True, mk.ACK),
            (t + 0.03, True, mk.PSH | mk.ACK),
            (t + 0.05, False, mk.ACK),
            (t + 0.30, True, mk.FIN),
            (t + 0.31, False, mk.FIN | mk.ACK),
            (t + 0.32, True, mk.ACK),
        ]
    )
    for chunk in (0, 1):
        table = check_fast_capture(data, _WINDOWS, chunk)
        assert table is not None and len(table) == 1
    path = mk.write(tmp_path, "jump.pcap", data)
    assert featurize(path, FAST_CONFIGS[_WINDOWS])["packets"].tolist() == [8]


@pytest.mark.timeout(60)
def test_flow_spanning_decades_windows_in_time() -> None:
    # A flow's first packet stamped 1970 in the middle of a 2023 capture (no sweep runs
    # before the next packet, so it joins the flow): the reference walked all 3.4e9
    # half-second windows of its "duration" (libFuzzer timeout, hours of CPU); it now
    # visits only windows near a packet. The fast path always did.
    t = 1_700_000_000.0
    data = _tcp_flow(
        [
            (1.0, True, mk.SYN),
            (t + 0.01, False, mk.SYN | mk.ACK),
            (t + 0.02, True, mk.PSH | mk.ACK),
            (t + 0.03, False, mk.ACK),
        ],
        lead=t,
    )
    table = check_fast_capture(data, _WINDOWS, 0)
    assert table is not None
    tcp = table[table["proto"] == 6]
    assert tcp["first_ts"].tolist() == [1.0, 1.0] and tcp["packets"].tolist() == [4, 4]
    assert tcp["window_start"].tolist()[0] == 0.0
    assert tcp["window_start"].tolist()[1] > 1.6e9  # seconds

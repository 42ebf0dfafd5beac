"""Fuzz harnesses: one checker per decoder, shared by the pytest runs and benchmarks/fuzz.py.

Each ``check_*`` function feeds one input to a decoder and asserts its contract:

* capture readers (:func:`classifier.capture.open_capture`): packets or one
  :class:`~classifier.errors.CaptureError` with a one-line message, nothing else; the
  packets also go through the reference featurizer (flow table, names, features);
* :func:`classifier.capture.decode_frame`: a :class:`Packet` with sane fields or one of the
  documented skip reasons, never an exception;
* the tshark backend: :func:`classifier.capture.tshark.parse_line` on any line gives a
  sane Packet or one of its skip reasons; real tshark over a damaged file goes through
  :func:`check_capture` with ``backend="tshark"``;
* the DNS sinkhole: :meth:`~classifier.enforce.dns_sinkhole.DnsSinkhole.decide` on any
  datagram gives a well-formed reply (or none) that keeps the client's ID and question,
  sinkholes exactly the listed names, and writes an audit line that reads back;
* the dnsmasq snippet writer: hostile names are refused with EnforcementError, or every
  line written is a comment or one well-formed ``nftset=`` line;
* TLS ClientHello parsers and :class:`~classifier.names.tls.HelloReassembler`, QUIC
  :class:`~classifier.names.quic.QuicInitialParser` (raw datagrams, and valid Initials
  around fuzzed plaintext so the frame parser is reached), DNS
  (:func:`~classifier.names.dns.parse_dns_response`,
  :class:`~classifier.names.cache.NameCache`): a result or ``None`` / ``failed``, never
  an exception, and bounded state.

Any other exception escapes and is a bug. :func:`mutate` turns a seed from
``tests/fuzz/corpus`` plus a list of edit operations into a new input (the operations come
from hypothesis in the tests, from :mod:`random` in the long benchmark run).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import math
import os
import re
import struct
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from dnslib import QTYPE, RCODE, DNSError, DNSRecord
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from classifier.capture import KNOWN_LINKTYPES, Packet, ReadStats, decode_frame, open_capture
from classifier.capture.tshark import parse_line
from classifier.enforce.audit import AuditLog, read_audit
from classifier.enforce.dns_sinkhole import DnsSinkhole, QueryOutcome
from classifier.enforce.dnsmasq import render_dnsmasq_conf
from classifier.enforce.policy import parse_policy
from classifier.errors import CaptureError, EnforcementError, PolicyError
from classifier.features import featurize_fast as fast
from classifier.features.featurize import (
    FeaturizeConfig,
    FeaturizeStats,
    featurize,
    featurize_packets,
    row_columns,
)
from classifier.features.featurize_fast import featurize_fast
from classifier.flows import FlowConfig
from classifier.names.cache import NameCache
from classifier.names.dns import DnsAnswer, parse_dns_response, split_tcp_dns
from classifier.names.extract import NameExtractor
from classifier.names.quic import QUIC_V1, QUIC_V2, QuicInitialParser, encrypt_initial
from classifier.names.tls import (
    MAX_HELLO_BYTES,
    ClientHelloInfo,
    HelloReassembler,
    parse_client_hello,
    parse_handshake_client_hello,
)
from tests.capture import make_captures as mk

__all__ = [
    "CORPUS",
    "FAST_CHUNKS",
    "FAST_CONFIGS",
    "FRAME_EDITS",
    "FrameEdit",
    "Record",
    "Scene",
    "SKIP_REASONS",
    "OPS",
    "Op",
    "check_capture",
    "check_decode",
    "check_fast_capture",
    "check_fast_packets",
    "check_dns",
    "check_dns_query",
    "check_dnsmasq_names",
    "check_policy_names",
    "dns_sinks",
    "SINK_CLIENTS",
    "SINK_NAMES",
    "check_name_extractor",
    "check_quic_datagrams",
    "check_quic_plain",
    "check_tls",
    "check_tls_segments",
    "check_tshark_line",
    "edit_fields",
    "fast_packets_from_bytes",
    "fuzz_settings",
    "mutate",
    "scene_bytes",
    "scenes",
    "seeds",
]

CORPUS = Path(__file__).parent / "corpus"

SKIP_REASONS = frozenset(
    (
        "unknown-linktype",
        "non-ip",
        "arp",
        "icmp",
        "other-l4",
        "ip-fragment",
        "truncated-header",
        "bad-packet",
    )
)
#: the skip reasons tshark's output lets the tshark backend tell apart
TSHARK_SKIP_REASONS = frozenset(("non-ip", "arp", "icmp", "other-l4", "ip-fragment", "bad-packet"))

#: One edit: (kind, position, value); kinds are listed in :func:`mutate`.
Op = tuple[int, int, int]
_N_OPS = 8
#: hypothesis strategy for the edit list :func:`mutate` takes
OPS = st.lists(
    st.tuples(st.integers(0, _N_OPS - 1), st.integers(0, 1 << 16), st.integers(0, 1 << 16)),
    max_size=8,
)
_MAX_INPUT = 1 << 16
_FEATURIZE = FeaturizeConfig(flow=FlowConfig(max_flows=64, max_packets=50), snapshots=(3.0,))
_COLUMNS = row_columns(_FEATURIZE)
_QUIC_VERSIONS = (QUIC_V1, QUIC_V2, 0xFF00001D, 0xFACEB002, 0x51303531, 0x0A1A2A3A)


def fuzz_settings(examples: int) -> settings:
    """Hypothesis settings for a bounded run: ``examples`` times the factor in the
    environment variable ``SHORTFLOW_FUZZ_SCALE`` (default 1; benchmarks/fuzz.py raises
    it), no deadline (the machine is shared), no database writes in CI."""
    scale = float(os.environ.get("SHORTFLOW_FUZZ_SCALE", "1"))
    return settings(
        max_examples=max(1, int(examples * scale)),
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


def seeds(kind: str) -> list[bytes]:
    """The corpus seeds of one kind (``tls``, ``quic``, ``quic_plain``, ``dns``,
    ``dns_query``, ``capture``, ``tshark``), sorted by file name; empty if the folder is
    missing."""
    folder = CORPUS / kind
    if not folder.is_dir():
        return []
    return [p.read_bytes() for p in sorted(folder.glob("*.bin"))]


def mutate(data: bytes, ops: Sequence[Op]) -> bytes:
    """Apply edit operations to ``data``. Kinds (``kind % 8``): 0 set a byte, 1 flip a bit,
    2 truncate, 3 delete a run, 4 insert a run of one byte, 5 duplicate a chunk, 6 write
    a big-endian 16-bit value (length fields), 7 write an extreme byte (0x00/0x7f/0x80/0xff).
    Positions wrap around the current length; the result is capped at 64 KiB."""
    buf = bytearray(data)
    for kind, pos, value in ops:
        n = len(buf)
        k = kind % _N_OPS
        if n == 0:
            if k == 4:
                buf += bytes([value & 0xFF]) * (1 + value % 64)
            continue
        i = pos % n
        if k == 0:
            buf[i] = value & 0xFF
        elif k == 1:
            buf[i] ^= 1 << (value % 8)
        elif k == 2:
            del buf[i:]
        elif k == 3:
            del buf[i : i + 1 + value % 256]
        elif k == 4:
            buf[i:i] = bytes([value & 0xFF]) * (1 + value % 64)
        elif k == 5:
            chunk = buf[i : i + 1 + value % 512]
            buf[i:i] = chunk
        elif k == 6:
            word = (0, 1, 0xFFFF, 0x7FFF, n, n - 1, n + 1, value)[value % 8] & 0xFFFF
            buf[i : i + 2] = word.to_bytes(2, "big")
        else:
            buf[i] = (0x00, 0x7F, 0x80, 0xFF)[value % 4]
        if len(buf) > _MAX_INPUT:
            del buf[_MAX_INPUT:]
    return bytes(buf)


# -- capture files ----------------------------------------------------------------------------

_tmpdir: tempfile.TemporaryDirectory[str] | None = None


def _scratch() -> Path:
    global _tmpdir
    if _tmpdir is None:
        _tmpdir = tempfile.TemporaryDirectory(prefix="sf-fuzz-")
    return Path(_tmpdir.name) / f"in-{os.getpid()}.cap"


def check_capture(
    data: bytes, skip_bad: bool = False, featurize: bool = True, backend: str = "builtin"
) -> int:
    """Read ``data`` as a capture file with ``backend``; return the number of packets read.

    Asserts: only CaptureError escapes (one line); every packet has sane fields; the
    counters agree; with ``featurize``, the packets go through the reference featurizer
    and every row has the table's columns.
    """
    path = _scratch()
    path.write_bytes(data)
    stats = ReadStats()
    packets: list[Packet] = []
    try:
        for pkt in open_capture(path, skip_bad=skip_bad, stats=stats, backend=backend):
            _check_packet(pkt)
            packets.append(pkt)
    except CaptureError as exc:
        assert "\n" not in str(exc), f"multi-line CaptureError: {exc!r}"
        assert str(exc).startswith(str(path)), f"CaptureError without the path: {exc}"
    assert stats.packets == len(packets)
    assert stats.packets <= stats.records
    if "gzip" not in stats.format:
        assert stats.bytes_read <= len(data)
    if featurize and packets:
        for row in featurize_packets(packets, _FEATURIZE, capture="fuzz"):
            assert list(row) == _COLUMNS
    return len(packets)


def edit_fields(line: str, edits: Iterable[tuple[int, str]]) -> str:
    """A tshark field line with field ``index`` set to ``value`` for each edit (an index
    past the end appends a field)."""
    fields = line.split("\t")
    for index, value in edits:
        if index < len(fields):
            fields[index] = value
        else:
            fields.append(value)
    return "\t".join(fields)


def check_tshark_line(line: str, last_ts: float = 1.0) -> Packet | str:
    """One line of tshark field output through the tshark backend's parser: a sane Packet
    or one of :data:`TSHARK_SKIP_REASONS`, only the two documented notes counted."""
    notes: dict[str, int] = {}
    found = parse_line(line, notes, last_ts)
    if isinstance(found, str):
        assert found in TSHARK_SKIP_REASONS, found
    else:
        _check_packet(found)
    assert set(notes) <= {"ip-len-from-wire", "ip-fragment-first"}, notes
    assert all(v == 1 for v in notes.values()), notes
    return found


def _check_packet(pkt: Packet) -> None:
    assert isinstance(pkt, Packet)
    assert pkt.version in (4, 6)
    assert pkt.proto in (6, 17)
    assert 0 <= pkt.sport <= 0xFFFF and 0 <= pkt.dport <= 0xFFFF
    assert 0 <= pkt.tcp_flags <= 0x1FF
    assert pkt.ip_len >= 0 and pkt.payload_len >= 0 and pkt.wire_len >= 0
    assert len(pkt.payload) <= pkt.payload_len, (len(pkt.payload), pkt.payload_len)
    assert math.isfinite(pkt.ts), pkt.ts
    ipaddress.ip_address(pkt.src)
    ipaddress.ip_address(pkt.dst)


def check_decode(linktype: int, data: bytes, wire_len: int | None = None) -> Packet | str:
    """Decode one frame: a sane Packet or a documented skip reason."""
    notes: dict[str, int] = {}
    found = decode_frame(linktype, data, 1.0, len(data) if wire_len is None else wire_len, notes)
    if isinstance(found, str):
        assert found in SKIP_REASONS, found
        if linktype not in KNOWN_LINKTYPES:
            assert found == "unknown-linktype"
    else:
        _check_packet(found)
    return found


# -- the compiled fast path --------------------------------------------------------------------

#: Table layouts :func:`check_fast_capture` compares under (its ``config`` picks one): the
#: small table of :func:`check_capture`; time windows; a tiny table that evicts, caps
#: flows at a few packets, times them out quickly and resegments at an MSS of 536.
FAST_CONFIGS: tuple[FeaturizeConfig, ...] = (
    _FEATURIZE,
    FeaturizeConfig(window=0.5, snapshots=(1.0,)),
    FeaturizeConfig(
        flow=FlowConfig(
            resegment_mss=536,
            idle_timeout=1.0,
            active_timeout=3.0,
            max_flows=4,
            close_linger=0.05,
            sweep_interval=0.1,
            max_packets=6,
        ),
        snapshots=(0.01, 1.0),
    ),
)
#: Packets per compiled chunk (``chunk`` picks one): the default, and 3, so that flows,
#: names and ended-flow events straddle chunk boundaries.
FAST_CHUNKS = (0, 3)


@contextlib.contextmanager
def _chunk_packets(packets: int) -> Iterator[None]:
    """Run the fast path with ``packets`` per compiled chunk (0: its default)."""
    saved = fast._CHUNK_PACKETS  # noqa: SLF001 - the tuning knob under test
    if packets:
        fast._CHUNK_PACKETS = packets  # noqa: SLF001
    try:
        yield
    finally:
        fast._CHUNK_PACKETS = saved  # noqa: SLF001


def _fast_order(df: pd.DataFrame, config: FeaturizeConfig) -> pd.DataFrame:
    keys = ["flow_id"] if config.window is None else ["flow_id", "window_start"]
    if not len(df):
        return df
    return df.sort_values(keys, kind="stable").reset_index(drop=True)


def check_fast_capture(data: bytes, config: int = 0, chunk: int = 0) -> pd.DataFrame | None:
    """``data`` as a capture file through :func:`~classifier.features.featurize_fast.featurize_fast`
    and the reference :func:`~classifier.features.featurize.featurize`, with ``skip_bad``
    off and on, under ``FAST_CONFIGS[config]`` and ``FAST_CHUNKS[chunk]`` packets per
    compiled chunk. Returns the fast path's table with ``skip_bad`` (None if it raised).

    Asserts: both raise a CaptureError of the same class with the same message, or both
    give the same table (the reference sorted by flow id, stable; floats to ``rtol``
    1e-9, ``atol`` 0) and the same read and flow-table counters. Any other exception (an
    IndexError from a bounds-checked compiled walker, say) escapes and is a bug.
    """
    path = _scratch()
    path.write_bytes(data)
    cfg = FAST_CONFIGS[config % len(FAST_CONFIGS)]
    table: pd.DataFrame | None = None
    for skip_bad in (False, True):
        ref_stats, got_stats = FeaturizeStats(), FeaturizeStats()
        ref: pd.DataFrame | CaptureError
        got: pd.DataFrame | CaptureError
        try:
            ref = featurize(path, cfg, skip_bad=skip_bad, stats=ref_stats)
        except CaptureError as exc:
            ref = exc
        try:
            with _chunk_packets(FAST_CHUNKS[chunk % len(FAST_CHUNKS)]):
                got = featurize_fast(path, cfg, skip_bad=skip_bad, stats=got_stats)
        except CaptureError as exc:
            got = exc
        if isinstance(ref, CaptureError) or isinstance(got, CaptureError):
            assert type(got) is type(ref), (skip_bad, repr(got), repr(ref))
            assert str(got) == str(ref), (skip_bad, str(got), str(ref))
            continue
        pd.testing.assert_frame_equal(
            got, _fast_order(ref, cfg), check_exact=False, rtol=1e-9, atol=0.0
        )
        r, g = ref_stats.read, got_stats.read
        assert (g.records, g.packets, g.skipped, g.noted, g.bytes_read, g.linktypes, g.format) == (
            r.records,
            r.packets,
            r.skipped,
            r.noted,
            r.bytes_read,
            r.linktypes,
            r.format,
        ), (skip_bad, g, r)
        rt, gt = ref_stats.table, got_stats.table
        assert (gt.packets, gt.flows, gt.peak_flows, gt.ended) == (
            rt.packets,
            rt.flows,
            rt.peak_flows,
            rt.ended,
        ), (skip_bad, gt, rt)
        assert got_stats.rows == ref_stats.rows == len(ref)
        table = got
    return table


# Packet-level inputs: valid record framing around conversations built from the corpus
# (a DNS answer naming the server, a TCP handshake, a ClientHello in the first payload
# packet, server data, a QUIC Initial, FINs), so that edits of the frame bytes reach the
# link/IP/TCP/UDP decoders, the flow table and the name parsers instead of dying at a
# record header.


@dataclass(slots=True)
class Record:
    """One packet of a scene: time, frame bytes, header length (link + IP + TCP/UDP; the
    payload follows) and the wire length written (None: the captured length)."""

    ts: float
    frame: bytes
    head: int
    orig: int | None = None


@dataclass(slots=True)
class Scene:
    linktype: int
    pcapng: bool
    records: list[Record]


#: one edit of a scene: (record index, region, (kind, position, value)); regions: 0 the
#: headers, 1 the payload, 2 the whole frame (a :func:`mutate` op each), 3 the record's
#: time (even kind) or wire length (odd kind), 4 duplicate the record, 5 drop it
FrameEdit = tuple[int, int, Op]
FRAME_EDITS = st.lists(
    st.tuples(
        st.integers(0, 63),
        st.integers(0, 5),
        st.tuples(st.integers(0, _N_OPS - 1), st.integers(0, 1 << 16), st.integers(0, 1 << 16)),
    ),
    max_size=8,
)
_LINKS = (1, 1, 113, 101, 276, 0)


def _link_frame(linktype: int, variant: int, ip: bytes, v6: bool) -> bytes:
    etype = 0x86DD if v6 else 0x0800
    if linktype == 1:
        return mk.ether(ip, etype, vlans=[(0x8100, 7)] if variant % 2 else ())
    if linktype == 113:
        return mk.sll(ip, etype)
    if linktype == 276:
        return mk.sll2(ip, etype)
    if linktype == 0:
        return mk.null(ip, 30 if v6 else 2)
    return ip


def _scene(i: int) -> Scene:
    """Scene ``i``: corpus hello, DNS answer and QUIC Initial number ``i`` (wrapping),
    link type and file format by ``i``."""
    hellos, answers, initials = seeds("tls"), seeds("dns"), seeds("quic")
    hello = hellos[i % len(hellos)]
    answer = answers[i % len(answers)]
    initial = initials[i % len(initials)]
    linktype = _LINKS[i % len(_LINKS)]
    parsed = parse_dns_response(answer) or parse_dns_response(answer[2:])
    server = parsed.addresses[0][0] if parsed and parsed.addresses else "10.77.0.2"
    v6 = ":" in server
    client, resolver = ("fd77::1", "fd77::53") if v6 else ("10.77.0.1", "10.77.0.53")
    records: list[Record] = []
    t = 1_700_000_000.0 + i

    def add(dt: float, src: str, dst: str, proto: int, l4: bytes, payload: bytes) -> None:
        ip = mk.ipv6(l4, proto, src, dst) if v6 else mk.ipv4(l4, proto, src, dst)
        frame = _link_frame(linktype, i, ip, v6)
        records.append(Record(t + dt, frame, len(frame) - len(payload)))

    def tcp(
        dt: float,
        up: bool,
        flags: int,
        payload: bytes = b"",
        sport: int = 50000,
        dport: int = 443,
        to: str = server,
    ) -> None:
        seq = 1000 + len(records) * 1400
        if up:
            add(dt, client, to, 6, mk.tcp(sport, dport, payload, seq, flags), payload)
        else:
            add(dt, to, client, 6, mk.tcp(dport, sport, payload, seq, flags), payload)

    syn, ack, psh, fin = mk.SYN, mk.ACK, mk.PSH, mk.FIN
    if answer[:2] == len(answer[2:]).to_bytes(2, "big"):  # a TCP answer, length first
        tcp(0.0, False, psh | ack, answer, 40000, 53, resolver)
    else:
        add(0.0, resolver, client, 17, mk.udp(53, 40000, answer), answer)
    tcp(0.010, True, syn)
    tcp(0.020, False, syn | ack)
    tcp(0.030, True, ack)
    if i % 2:  # the hello over two segments, the first only a few bytes
        tcp(0.031, True, psh | ack, hello[:3])
        tcp(0.032, True, psh | ack, hello[3:])
    else:
        tcp(0.031, True, psh | ack, hello)
    tcp(0.050, False, ack, bytes(range(256)) * 5)
    add(0.060, client, server, 17, mk.udp(50001, 443, initial), initial)
    add(0.080, server, client, 17, mk.udp(443, 50001, b"\x40" * 40), b"\x40" * 40)
    tcp(0.100, True, syn, sport=50002, dport=80)  # a second flow: named by DNS only
    tcp(0.110, False, syn | ack, sport=50002, dport=80)
    tcp(0.300, True, fin | ack)
    tcp(0.310, False, fin | ack)
    tcp(0.320, True, ack)
    return Scene(linktype, i % 3 == 2, records)


@functools.cache
def scenes() -> tuple[Scene, ...]:
    """One scene per corpus ClientHello (at least one per link type)."""
    return tuple(_scene(i) for i in range(max(len(seeds("tls")), 2 * len(_LINKS))))


def _edit_record(rec: Record, region: int, op: Op) -> list[Record]:
    kind, pos, value = op
    frame, head = rec.frame, rec.head
    if region == 0:
        frame = mutate(frame[:head], [op]) + frame[head:]
        head = len(frame) - (len(rec.frame) - rec.head)
    elif region == 1:
        frame = frame[:head] + mutate(frame[head:], [op])
    elif region == 2:
        frame = mutate(frame, [op])
    elif region == 3:
        if kind % 2 == 0:  # time: up to ~33 s either way, or to 0
            ts = 0.0 if value == 0 else max(0.0, rec.ts + (pos - (1 << 15)) / 1000.0)
            return [Record(ts, frame, head, rec.orig)]
        return [Record(rec.ts, frame, head, value * (1 + pos % 4))]
    elif region == 4:
        return [rec, Record(rec.ts + (pos % 3) * 1e-6, frame, head, rec.orig)]
    else:
        return []
    return [Record(rec.ts, frame, min(head, len(frame)), rec.orig)]


def scene_bytes(scene: Scene, edits: Sequence[FrameEdit] = ()) -> bytes:
    """The capture file of ``scene`` after ``edits`` (record indices wrap around), pcap
    (microseconds) or pcapng (one Ethernet-or-other interface, microsecond ticks)."""
    records = list(scene.records)
    for index, region, op in edits:
        if not records:
            break
        at = index % len(records)
        records[at : at + 1] = _edit_record(records[at], region, op)
    if scene.pcapng:
        out = [mk.pcapng_shb(), mk.pcapng_idb(scene.linktype)]
        out += [mk.pcapng_epb(0, round(r.ts * 1e6), r.frame, r.orig) for r in records]
        return b"".join(out)
    rows = []
    for r in records:
        micros = round(r.ts * 1e6)
        sec, usec = divmod(micros, 1_000_000)
        rows.append(
            (sec % (1 << 32), usec, r.frame, len(r.frame) if r.orig is None else r.orig % (1 << 32))
        )
    return mk.pcap_file(rows, scene.linktype)


def check_fast_packets(
    scene: int, edits: Sequence[FrameEdit], config: int = 0, chunk: int = 0
) -> bytes:
    """Scene number ``scene`` (wrapping) with ``edits`` through :func:`check_fast_capture`;
    returns the capture bytes (to save a failing input)."""
    all_scenes = scenes()
    data = scene_bytes(all_scenes[scene % len(all_scenes)], edits)
    check_fast_capture(data, config, chunk)
    return data


def fast_packets_from_bytes(data: bytes) -> tuple[int, list[FrameEdit], int, int]:
    """Raw fuzzer bytes as a packet-level input (for byte-oriented engines): byte 0 the
    scene, byte 1 the config (low nibble) and chunk size (high), then 7 bytes per edit
    (record, region, kind, position u16, value u16)."""
    scene = data[0] if data else 0
    mode = data[1] if len(data) > 1 else 0
    edits: list[FrameEdit] = []
    for at in range(2, len(data) - 6, 7):
        rec, region, kind = data[at], data[at + 1] % 6, data[at + 2] % _N_OPS
        pos, value = struct.unpack_from(">HH", data, at + 3)
        edits.append((rec, region, (kind, pos, value)))
    return scene, edits, mode & 0x0F, mode >> 4


# -- names in clear ----------------------------------------------------------------------------


def _check_hello(info: ClientHelloInfo | None) -> None:
    if info is None:
        return
    assert isinstance(info, ClientHelloInfo)
    assert info.sni is None or isinstance(info.sni, str)
    assert all(isinstance(a, str) for a in info.alpn)
    assert all(0 <= c <= 0xFFFF for c in info.cipher_suites)
    assert all(0 <= e <= 0xFFFF for e in info.extensions)


def check_tls(data: bytes) -> ClientHelloInfo | None:
    """Both ClientHello parsers on ``data`` (record layer and bare handshake message)."""
    info = parse_client_hello(data)
    _check_hello(info)
    _check_hello(parse_handshake_client_hello(data))
    _check_hello(parse_handshake_client_hello(data[5:]))
    return info


def check_tls_segments(
    data: bytes, cuts: Iterable[int], seq0: int, order: Iterable[int] = ()
) -> ClientHelloInfo | None:
    """Feed ``data`` cut at ``cuts`` into a HelloReassembler, in the permuted ``order``
    (indices; missing ones follow in order), with TCP sequence numbers from ``seq0``
    (wrapping at 2**32). The result must be None, or, when it parsed, the same hello the
    whole stream gives; memory stays within MAX_HELLO_BYTES."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    segs = [(a, data[a:b]) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
    picked: list[int] = []
    for i in order:
        if segs and i % len(segs) not in picked:
            picked.append(i % len(segs))
    picked += [i for i in range(len(segs)) if i not in picked]
    reasm = HelloReassembler()
    result: ClientHelloInfo | None = None
    for i in picked:
        off, chunk = segs[i]
        got = reasm.feed(chunk, (seq0 + off) % (1 << 32))
        _check_hello(got)
        result = got or result
        assert reasm._stored <= MAX_HELLO_BYTES  # noqa: SLF001 - the bound under test
    if result is not None and not reasm.failed:
        whole = parse_client_hello(data)
        # The reassembler may stop at the first complete hello of a longer stream.
        assert whole is None or whole == result or len(data) > MAX_HELLO_BYTES
    return result


def check_quic_datagrams(datagrams: Sequence[bytes]) -> ClientHelloInfo | None:
    """Feed raw datagrams to one QuicInitialParser; bounded state, no exception."""
    parser = QuicInitialParser()
    result: ClientHelloInfo | None = None
    for d in datagrams:
        result = parser.feed(d)
        _check_hello(result)
        assert parser._stored <= 2 * parser.max_bytes  # noqa: SLF001
    return result


def check_quic_plain(
    plain: bytes, version_index: int, dcid: bytes, pn: int, split: int = 0
) -> ClientHelloInfo | None:
    """Wrap fuzzed plaintext frames in valid protected Initials (so decryption succeeds and
    the frame walker, CRYPTO reassembly and hello parser see the fuzzed bytes). With
    ``split``, the plaintext goes out as two Initials cut at that offset, second first."""
    version = _QUIC_VERSIONS[version_index % len(_QUIC_VERSIONS)]
    dcid = dcid[:20]
    body = plain[:16000]
    parts = [body]
    if split and len(body) > 1:
        cut = split % len(body)
        parts = [body[cut:], body[:cut]]
    datagrams = []
    for i, part in enumerate(parts):
        try:
            datagrams.append(
                encrypt_initial(version, dcid, b"\x01\x02", (pn + i) % (1 << 30), part, pad_to=1200)
            )
        except ValueError:
            return None  # documented refusal of the builder (payload too large)
    return check_quic_datagrams(datagrams)


def _check_answer(ans: DnsAnswer | None) -> None:
    if ans is None:
        return
    assert isinstance(ans.qname, str) and ans.qname
    assert len(ans.cname_chain) <= 16
    for ip, ttl in ans.addresses:
        assert ipaddress.ip_address(ip).compressed == ip, ip
        assert ttl >= 0


def check_dns(data: bytes, ts: float = 1000.0, max_entries: int = 8) -> DnsAnswer | None:
    """parse_dns_response, split_tcp_dns and NameCache.feed_dns (UDP, TCP and guessed)."""
    ans = parse_dns_response(data)
    _check_answer(ans)
    for msg in split_tcp_dns(data):
        _check_answer(parse_dns_response(msg))
    cache = NameCache(max_entries=max_entries)
    for tcp in (None, True, False):
        cache.feed_dns(data, ts, tcp=tcp)
        assert len(cache) <= max_entries
        assert len(cache.names_seen) <= max_entries
    if ans is not None:
        for ip, _ in ans.addresses[:max_entries]:
            got = cache.lookup(ip, ts)
            assert got is None or isinstance(got, str)
    assert cache.lookup("not an address", ts) is None
    return ans


def check_name_extractor(packets: Sequence[tuple[int, int, bytes, int]]) -> None:
    """Feed (direction, proto, payload, seq) tuples to one NameExtractor."""
    ext = NameExtractor()
    for direction, proto, payload, seq in packets:
        ext.feed(direction, proto, payload, seq % (1 << 32))
        assert ext.sni is None or isinstance(ext.sni, str)
        assert ext.source in (None, "tls", "quic", "gquic")


# -- DNS sinkhole and dnsmasq snippet ---------------------------------------------------------

#: names the sinkholes of :func:`dns_sinks` list, and client addresses to ask from
SINK_NAMES = ("tiktok.com", "bytecdn.lab.test")
SINK_CLIENTS = ("10.77.1.5", "10.77.9.9", "fd77::5", "127.0.0.1")


def dns_sinks() -> list[DnsSinkhole]:
    """Sinkholes that are never started (``decide`` needs no socket), one per policy
    shape: zero answers with an allowlisted subdomain, NXDOMAIN, the default names,
    dry-run, clients limited to 10.77.1.0/24, off."""

    def sink(**doc: object) -> DnsSinkhole:
        return DnsSinkhole(("127.0.0.1", 0), ("127.0.0.1", 53), policy=parse_policy(doc, "fuzz"))

    names = list(SINK_NAMES)
    return [
        sink(mode="nft", sinkhole={"names": names}, allow={"names": ["ok.bytecdn.lab.test"]}),
        sink(mode="nft", sinkhole={"names": names, "answer": "nxdomain"}),
        sink(mode="nft"),
        sink(mode="dry-run", sinkhole={"names": names}),
        sink(mode="nft", sinkhole={"names": names}, clients={"only": ["10.77.1.0/24"]}),
        sink(mode="off"),
    ]


def _raw_labels(data: bytes, qend: int) -> list[bytes]:
    """The question name's labels as sent (case kept), from a query ``_question`` took."""
    labels, pos = [], 12
    while data[pos]:
        labels.append(data[pos + 1 : pos + 1 + data[pos]])
        pos += 1 + data[pos]
    assert pos + 5 == qend, (pos, qend)
    return labels


def _plain_name(labels: Sequence[bytes]) -> str | None:
    """The name in lower case when every label is plain LDH/underscore ASCII, else None
    (the oracle below only judges names whose spelling nobody can argue about)."""
    text = [lb.decode("ascii", "replace").lower() for lb in labels]
    ok = all(t and all(c.isascii() and (c.isalnum() or c in "-_") for c in t) for t in text)
    return ".".join(text) if ok and text else None


def check_dns_query(
    data: bytes, sink: DnsSinkhole, client_ip: str, audit: bool = False
) -> QueryOutcome:
    """One client datagram through ``sink.decide`` (the sinkhole's whole request path
    short of the sockets). Asserts:

    * the outcome is malformed / sinkhole / forward; an answer (QR set) never gets a reply;
    * every reply parses (dnslib), carries the client's ID, QR set, rcode FORMERR for a
      malformed query, NOERROR or NXDOMAIN for a sinkhole, and the query's question
      (same labels, same type) when it has one;
    * a ``zero`` sinkhole of an A / AAAA question answers exactly 0.0.0.0 / ``::``;
    * for a plain name, sinkhole <=> policy lists it and covers the client in nft mode;
    * with ``audit``, the event goes through a real AuditLog as one line that reads back.
    """
    out = sink.decide(data, client_ip)
    assert isinstance(out, QueryOutcome)
    assert out.action in ("malformed", "sinkhole", "forward"), out.action
    is_answer = len(data) > 2 and data[2] & 0x80
    if out.action == "malformed":
        assert out.event is None and out.qend == 0
        if out.reply is None:
            assert len(data) < 12 or is_answer
        else:
            assert not is_answer
            _check_reply(out.reply, data, 12, RCODE.FORMERR)
        return out
    assert not is_answer
    assert 17 <= out.qend <= len(data)
    labels = _raw_labels(data, out.qend)
    qtype = int.from_bytes(data[out.qend - 4 : out.qend - 2], "big")
    policy = sink._policy()  # noqa: SLF001 - the policy the sink is running
    name = _plain_name(labels)
    if name is not None:
        listed = policy.sinkhole_rule(name) is not None and policy.applies(client_ip, None)
        assert (out.action == "sinkhole") == (listed and policy.mode == "nft"), (name, out)
        assert (out.event is not None) == listed, (name, out.event)
    if out.action == "forward":
        assert out.reply is None
        assert out.event is None or out.event["action"] == "dry-run-sinkhole"
    else:
        assert out.reply is not None and out.event is not None
        assert out.event["action"] == "sinkhole"
        rec = _check_reply(out.reply, data, out.qend, RCODE.NOERROR, RCODE.NXDOMAIN)
        rcode = out.reply[3] & 0x0F
        if rec is None:  # dnslib reads UTF-8 labels only; this reply must be the bare one
            assert any(_not_utf8(lb) for lb in labels) and out.reply[6:12] == bytes(6)
        elif rcode == RCODE.NXDOMAIN or policy.sinkhole_answer == "nxdomain":
            assert rec.rr == []
        elif qtype in (QTYPE.A, QTYPE.AAAA):
            want = "0.0.0.0" if qtype == QTYPE.A else "::"
            assert [str(r.rdata) for r in rec.rr] == [want], rec.rr
        else:
            assert rec.rr == []
    if out.event is not None:
        json.dumps(out.event, allow_nan=False)
        assert out.event["name"] == ".".join(lb.decode("ascii", "replace").lower() for lb in labels)
        if audit:
            path = _scratch().with_suffix(".jsonl")
            path.unlink(missing_ok=True)
            with AuditLog(path, fsync=False) as log:
                log.write(out.event)
            assert path.read_bytes().count(b"\n") == 1
            (back,) = read_audit(path)
            assert back["name"] == out.event["name"] and back["client"] == client_ip
    return out


def _check_reply(reply: bytes, query: bytes, qend: int, *rcodes: int) -> DNSRecord | None:
    """A reply the sinkhole made for ``query``: its ID, QR set, rcode in ``rcodes``, the
    question ``query[12:qend]`` echoed byte for byte (none when ``qend`` is 12). Returns
    the reply as dnslib reads it, or None when dnslib cannot (labels that are not UTF-8,
    which DNS allows)."""
    assert len(reply) >= qend and reply[:2] == query[:2]
    flags, qdcount = struct.unpack_from("!HH", reply, 2)
    assert flags & 0x8000 and (flags & 0x0F) in rcodes, (hex(flags), rcodes)
    assert qdcount == (0 if qend == 12 else 1)
    assert reply[12:qend] == query[12:qend]
    try:
        rec = DNSRecord.parse(reply)
    except DNSError:
        return None
    assert len(rec.questions) == qdcount
    return rec


def _not_utf8(label: bytes) -> bool:
    try:
        label.decode()
    except UnicodeDecodeError:
        return True
    return False


#: a line the dnsmasq snippet may contain, and the names in an nftset= line
_SNIPPET_LINE = re.compile(
    r"# [ -~]*|nftset=/((?:[a-z0-9_.-]+/)+)4#inet#(\w+)#(\w+),6#inet#\2#(\w+)"
)


def check_dnsmasq_names(names: Sequence[str]) -> list[str] | None:
    """Render the dnsmasq snippet for ``names``: EnforcementError (one line), or a text
    whose every line (split the way dnsmasq and Python both split) is a printable-ASCII
    comment or a well-formed ``nftset=`` line, carrying exactly the cleaned names.
    A list is refused only for a name that is refused on its own (so one bad name cannot
    hide the others from the check). Returns the names written, or None when refused."""
    try:
        text = render_dnsmasq_conf(names)
    except EnforcementError as exc:
        assert "\n" not in str(exc) and "\r" not in str(exc)
        if len(names) > 1:
            alone = [check_dnsmasq_names([name]) for name in names]
            assert None in alone, names
        return None
    assert text.isascii() and text.endswith("\n")
    assert text.splitlines() == text[:-1].split("\n")  # no \r, \x0b, \x1c... inside
    written: list[str] = []
    for line in text.splitlines():
        m = _SNIPPET_LINE.fullmatch(line)
        assert m is not None, f"unsafe line {line!r}"
        if m.group(1):
            written += m.group(1).strip("/").split("/")
    for name in written:
        assert 1 <= len(name) <= 253 and all(1 <= len(lb) <= 63 for lb in name.split("."))
        assert name.lower() == name and not name.startswith(("-", ".")), name
    want = {n.strip().lower().strip(".").removeprefix("*.") for n in names}
    assert set(written) == want and len(written) == len(want), (written, want)
    return written


def check_policy_names(names: Sequence[str]) -> None:
    """``names`` as a policy's sinkhole names, each alone and all together: a one-line
    PolicyError naming the key, or a policy whose names the dnsmasq snippet writes as
    they are (a policy that loads is always writable)."""
    for some in [[name] for name in names] + [list(names)]:
        try:
            policy = parse_policy({"sinkhole": {"names": some}}, "p.toml")
        except PolicyError as exc:
            assert str(exc).startswith("p.toml: key 'sinkhole.names' has ")
            assert "\n" not in str(exc)
            continue
        written = check_dnsmasq_names(sorted(policy.sinkhole_names))
        assert written is not None and set(written) == policy.sinkhole_names

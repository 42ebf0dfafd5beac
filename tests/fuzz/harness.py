"""Fuzz harnesses: one checker per decoder, shared by the pytest runs and benchmarks/fuzz.py.

Each ``check_*`` function feeds one input to a decoder and asserts its contract:

* capture readers (:func:`classifier.capture.open_capture`): packets or one
  :class:`~classifier.errors.CaptureError` with a one-line message, nothing else; the
  packets also go through the reference featurizer (flow table, names, features);
* :func:`classifier.capture.decode_frame`: a :class:`Packet` with sane fields or one of the
  documented skip reasons, never an exception;
* TLS ClientHello parsers and :class:`~classifier.features.tls.HelloReassembler`, QUIC
  :class:`~classifier.features.quic.QuicInitialParser` (raw datagrams, and valid Initials
  around fuzzed plaintext so the frame parser is reached), DNS
  (:func:`~classifier.features.dns.parse_dns_response`,
  :class:`~classifier.features.names.NameCache`): a result or ``None`` / ``failed``, never
  an exception, and bounded state.

Any other exception escapes and is a bug. :func:`mutate` turns a seed from
``tests/fuzz/corpus`` plus a list of edit operations into a new input (the operations come
from hypothesis in the tests, from :mod:`random` in the long benchmark run).
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from hypothesis import HealthCheck, settings

from classifier.capture import KNOWN_LINKTYPES, Packet, ReadStats, decode_frame, open_capture
from classifier.errors import CaptureError
from classifier.features.dns import DnsAnswer, parse_dns_response, split_tcp_dns
from classifier.features.featurize import FeaturizeConfig, featurize_packets, row_columns
from classifier.features.names import NameCache, NameExtractor
from classifier.features.quic import QUIC_V1, QUIC_V2, QuicInitialParser, encrypt_initial
from classifier.features.tls import (
    MAX_HELLO_BYTES,
    ClientHelloInfo,
    HelloReassembler,
    parse_client_hello,
    parse_handshake_client_hello,
)
from classifier.flows import FlowConfig

__all__ = [
    "CORPUS",
    "SKIP_REASONS",
    "Op",
    "check_capture",
    "check_decode",
    "check_dns",
    "check_name_extractor",
    "check_quic_datagrams",
    "check_quic_plain",
    "check_tls",
    "check_tls_segments",
    "fuzz_settings",
    "mutate",
    "seeds",
]

CORPUS = Path(__file__).parent / "corpus"

SKIP_REASONS = frozenset((
    "unknown-linktype", "non-ip", "arp", "icmp", "other-l4", "ip-fragment",
    "truncated-header", "bad-packet",
))

#: One edit: (kind, position, value); kinds are listed in :func:`mutate`.
Op = tuple[int, int, int]
_N_OPS = 8
_MAX_INPUT = 1 << 16
_FEATURIZE = FeaturizeConfig(flow=FlowConfig(max_flows=64, max_packets=50), snapshots=(3.0,))
_COLUMNS = row_columns(_FEATURIZE)
_QUIC_VERSIONS = (QUIC_V1, QUIC_V2, 0xFF00001D, 0xFACEB002, 0x51303531, 0x0A1A2A3A)


def fuzz_settings(examples: int) -> settings:
    """Hypothesis settings for a bounded run: ``examples`` times the factor in the
    environment variable ``SHORTFLOW_FUZZ_SCALE`` (default 1; benchmarks/fuzz.py raises
    it), no deadline (the machine is shared), no database writes in CI."""
    scale = float(os.environ.get("SHORTFLOW_FUZZ_SCALE", "1"))
    return settings(max_examples=max(1, int(examples * scale)), deadline=None,
                    database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def seeds(kind: str) -> list[bytes]:
    """The corpus seeds of one kind (``tls``, ``quic``, ``quic_plain``, ``dns``,
    ``capture``), sorted by file name; empty if the folder is missing."""
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


def check_capture(data: bytes, skip_bad: bool = False, featurize: bool = True) -> int:
    """Read ``data`` as a capture file; return the number of packets read.

    Asserts: only CaptureError escapes (one line); every packet has sane fields; the
    counters agree; with ``featurize``, the packets go through the reference featurizer
    and every row has the table's columns.
    """
    path = _scratch()
    path.write_bytes(data)
    stats = ReadStats()
    packets: list[Packet] = []
    try:
        for pkt in open_capture(path, skip_bad=skip_bad, stats=stats):
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


def _check_packet(pkt: Packet) -> None:
    assert isinstance(pkt, Packet)
    assert pkt.version in (4, 6)
    assert pkt.proto in (6, 17)
    assert 0 <= pkt.sport <= 0xFFFF and 0 <= pkt.dport <= 0xFFFF
    assert 0 <= pkt.tcp_flags <= 0x1FF
    assert pkt.ip_len >= 0 and pkt.payload_len >= 0 and pkt.wire_len >= 0
    assert len(pkt.payload) <= pkt.payload_len, (len(pkt.payload), pkt.payload_len)
    assert pkt.ts == pkt.ts, "NaN timestamp"  # noqa: PLR0124
    ipaddress.ip_address(pkt.src)
    ipaddress.ip_address(pkt.dst)


def check_decode(linktype: int, data: bytes, wire_len: int | None = None) -> Packet | str:
    """Decode one frame: a sane Packet or a documented skip reason."""
    notes: dict[str, int] = {}
    found = decode_frame(linktype, data, 1.0, len(data) if wire_len is None else wire_len,
                         notes)
    if isinstance(found, str):
        assert found in SKIP_REASONS, found
        if linktype not in KNOWN_LINKTYPES:
            assert found == "unknown-linktype"
    else:
        _check_packet(found)
    return found


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


def check_tls_segments(data: bytes, cuts: Iterable[int], seq0: int,
                       order: Iterable[int] = ()) -> ClientHelloInfo | None:
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


def check_quic_plain(plain: bytes, version_index: int, dcid: bytes, pn: int,
                     split: int = 0) -> ClientHelloInfo | None:
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
            datagrams.append(encrypt_initial(version, dcid, b"\x01\x02", (pn + i) % (1 << 30),
                                             part, pad_to=1200))
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
        assert ext.source in (None, "tls", "quic")

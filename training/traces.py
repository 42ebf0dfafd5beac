"""Import packet-metadata traces (sizes, times, directions; no bytes) as pcap files.

Three public trace formats are known (see the shared captures' ``INVENTORY.md``):

* **netpkt text** (``traces/netpkt/*.txt.gz``): one packet a line with real addresses,
  ports, TCP flags and timing; read by :mod:`training.netpkt` and written as one
  header-only pcap per file (real addresses kept; the rest of this list does not apply).

* **Per-session CSV** (``traces/uuvideo_*.csv``, from UUuUUuUUo/Video-traffic-dataset): a
  ``session,NAME`` line starts each session, then a ``rel_ts_us,len`` header and one row per
  packet: microseconds since the session's first packet and the length, positive for
  client->server. Each session becomes one pcap with one flow: UDP/443 for YouTube (QUIC),
  TCP/443 for Twitch (TLS), or what ``proto`` says.
* **JSON packet list** (``other/sdrdray_reels_01.json``): ``{timestamp, size, protocol,
  src_port, dst_port, direction, tcp_flags, ...}`` per packet, several TCP connections told
  apart by their port pair; becomes one pcap with one flow per connection, each connection
  to its own synthetic server address. Real timestamps and TCP flags are kept.

What the written pcaps hold (so that :func:`classifier.features.featurize.featurize` sees
the trace's packets):

* Link type Ethernet. The trace lengths are **Ethernet frame lengths**: the traces hold
  54-byte TCP frames (a bare ACK: 14 + 20 + 20), 60-byte frames (the padded Ethernet
  minimum) and 1514-byte frames (a full 1500-byte IP packet). So each frame is written with
  exactly the trace's length on the wire, and its IPv4 total length (the featurizer's
  ``ip_len``) is the length minus 14. A TCP frame of exactly 60 bytes is read as a bare
  ACK (IP length 40) plus 6 bytes of Ethernet padding.
* IPv4 from 10.77.200.2 (client) to servers in 10.77.201.0/24 and up, correct IP header
  checksums, TCP or UDP headers without options, a zero-filled payload of the right length
  (or none, with ``snaplen``: header-only records keep the wire length, like the Requet
  captures), TCP/UDP checksums left at zero. No TCP handshake is added: CSV sessions start
  mid-connection, every TCP packet gets the ACK flag only (the trace has no flags), so the
  TCP flag features are meaningless for CSV-imported flows. TCP sequence numbers advance by
  the payload length. Client ports are >= 50000, so the flow table orients flows by port.
* Frames above the MTU (the sdrdray trace holds 288 offload-coalesced frames up to 16,460
  bytes) are written as they are; featurize with ``FlowConfig(resegment_mss=...)`` to split
  them. Packets are sorted by time (stably): the traces hold a few out-of-order timestamps
  (under a millisecond apart); their count goes into the manifest row's notes.

The import is deterministic: the same input gives byte-identical pcaps and manifest.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import logging
import os
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from classifier.capture.pcap_writer import LINKTYPE_ETHERNET, PcapWriter
from classifier.errors import DatasetError
from training.manifest import (
    MANIFEST_COLUMNS,
    SESSION_LABELS,
    ManifestRow,
    file_sha256,
    load_manifest,
)
from training.netpkt import is_netpkt, read_netpkt, skip_or_raise, write_netpkt_pcap
from training.shared_captures import shared_captures_dir

__all__ = [
    "TraceSpec",
    "TracePacket",
    "TraceSession",
    "TRACE_SPECS",
    "default_cache_dir",
    "default_source_dir",
    "read_csv_trace",
    "read_json_trace",
    "write_session_pcap",
    "import_traces",
    "ensure_imported",
]

log = logging.getLogger(__name__)

TCP, UDP = 6, 17
ETH_LEN = 14
_IP_LEN = 20
_L4_LEN = {TCP: 20, UDP: 8}
_ETH_MIN_FRAME = 60
_MAX_FRAME = ETH_LEN + 65535
_CLIENT_ADDR = (10, 77, 200, 2)
_CLIENT_MAC = bytes.fromhex("020000c80002")
_SERVER_MAC = bytes.fromhex("020000c90002")
_CLIENT_PORT_BASE = 50000
_CSV_BASE_US = 1_600_000_000 * 1_000_000  # 2020-09-13T12:26:40Z: a fixed, arbitrary epoch
_FLAG_BITS = {
    "F": 0x01,
    "S": 0x02,
    "R": 0x04,
    "P": 0x08,
    "A": 0x10,
    "U": 0x20,
    "E": 0x40,
    "C": 0x80,
}
_ACK = 0x10
_SYN = 0x02
_SYN_FIN = 0x03
_MSS_OPTION = bytes((2, 4, 0x05, 0xB4))  # MSS 1460
_MAX_TCP_OPTIONS = 40
_ISN_CLIENT = 0x10000000
_ISN_SERVER = 0x20000000
_IMPORTER_VERSION = "2"


@dataclass(frozen=True)
class TraceSpec:
    """What a known trace file holds: its label, app, transport and provenance."""

    pattern: str
    label: str
    app: str
    proto: int
    recorded: str
    device: str
    license: str
    notes: str


TRACE_SPECS: tuple[TraceSpec, ...] = (
    TraceSpec(
        pattern=r"uuvideo_youtube_.*\.csv",
        label="long-form",
        app="youtube",
        proto=UDP,
        recorded="packet trace (UUuUUuUUo/Video-traffic-dataset @8cdaeb4), imported",
        device="unknown client, 100 Mbit/s access link",
        license="research use (no license file in the source repo; do not redistribute)",
        notes="YouTube long-form over QUIC, first 30 s after playback start, 480p; "
        "no names, no handshake",
    ),
    TraceSpec(
        pattern=r"uuvideo_twitch_.*\.csv",
        label="other-video",
        app="twitch",
        proto=TCP,
        recorded="packet trace (UUuUUuUUo/Video-traffic-dataset @8cdaeb4), imported",
        device="unknown client, 100 Mbit/s access link",
        license="research use (no license file in the source repo; do not redistribute)",
        notes="Twitch live over TLS 1.3, first 30 s after playback start, 480p; "
        "no names, no handshake, TCP flags synthetic (ACK)",
    ),
    *(
        TraceSpec(
            pattern=rf"netpkt_{name}\.txt(\.gz)?",
            label=label,
            app=app,
            proto=UDP,
            recorded="packet trace (eusoubrasileiro/netpkt_vidcls @33e1111 python/data), imported",
            device="Linux laptop, browser, home Wi-Fi (Brazil, 2024-09)",
            license="research use (no license file in the source repo; do not redistribute)",
            notes=f"{what}; real addresses, ports, TCP flags and timing; header-only "
            "(wire lengths kept); no payload, no names",
        )
        for name, label, app, what in (
            ("youtube_packets_03", "short-form", "youtube", "YouTube Shorts, first 300 s"),
            ("youtube_packets_01", "long-form", "youtube", "YouTube long-form, 11 minutes"),
            (
                "insta_packets_01",
                "mixed",
                "instagram",
                "Instagram web, feed scrolling with videos (Reels share unknown)",
            ),
            ("working_packets_01", "other", "work", "Spotify, Teams, WhatsApp"),
            ("working_packets_03", "other", "idle", "nothing: locked screen"),
        )
    ),
    TraceSpec(
        pattern=r"sdrdray_reels_.*\.json",
        label="short-form",
        app="instagram",
        proto=TCP,
        recorded="packet-metadata JSON (sdrdray/samsung-ennovatex-traffic-detection "
        "@808d590 data/data-old), imported",
        device="phone (per the author), receive offload on",
        license="Apache-2.0",
        notes="Instagram Reels per its author; no IPs or names; 288 GRO-coalesced frames "
        "above 1514 B kept as they are (use resegment_mss); capped at 10000 packets",
    ),
)


@dataclass(frozen=True, slots=True)
class TracePacket:
    """One packet of a trace: time (µs), frame length, direction and connection."""

    ts_us: int
    length: int
    to_server: bool
    conn: int = 0
    flags: int = _ACK


@dataclass(frozen=True, slots=True)
class _Conn:
    proto: int
    client_port: int
    server_port: int


@dataclass
class TraceSession:
    """The packets of one session and the connections they belong to (index = ``conn``)."""

    name: str
    source: Path
    packets: list[TracePacket]
    conns: list[_Conn]
    reordered: int = 0
    start: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# --- reading ------------------------------------------------------------------------------


def _check_length(length: int, proto: int, where: str) -> None:
    smallest = ETH_LEN + _IP_LEN + _L4_LEN[proto]
    if length < smallest or length > _MAX_FRAME:
        raise DatasetError(
            f"{where}: packet length {length} impossible for {_proto_name(proto)} "
            f"(frames are {smallest}..{_MAX_FRAME} bytes)"
        )


def _proto_name(proto: int) -> str:
    return "TCP" if proto == TCP else "UDP"


def _sorted(packets: list[TracePacket]) -> tuple[list[TracePacket], int]:
    """Packets stably sorted by time, and how many were out of order."""
    backwards = sum(1 for a, b in zip(packets, packets[1:], strict=False) if b.ts_us < a.ts_us)
    if not backwards:
        return packets, 0
    return sorted(packets, key=lambda p: p.ts_us), backwards


def read_csv_trace(path: Path, proto: int, skipped: list[str] | None = None) -> list[TraceSession]:
    """Sessions of a per-session CSV trace; every session is one flow over ``proto``.

    Raises :class:`DatasetError` naming the file and line for a malformed line, a length
    that no frame can have, a data line before any ``session`` line, or an empty session.
    With ``skipped`` (a list), such a line or session is left out and its error appended
    there instead.
    """
    sessions: list[TraceSession] = []
    try:
        fh = open(path, encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read trace: {exc.strerror or exc}") from exc
    try:
        with fh:
            _parse_csv_lines(fh, path, proto, sessions, skipped)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not a text trace (cannot decode as UTF-8)") from exc
    if not sessions:
        raise DatasetError(f"{path}: no 'session,NAME' line: not a per-session trace CSV")
    names = [s.name for s in sessions]
    if len(set(names)) != len(names):
        raise DatasetError(f"{path}: session names repeat")
    for index, session in enumerate(sessions):
        session.conns = [_Conn(proto, _CLIENT_PORT_BASE + index, 443)]
    return sessions


def _parse_csv_lines(
    lines: Iterable[str],
    path: Path,
    proto: int,
    sessions: list[TraceSession],
    skipped: list[str] | None,
) -> None:
    current: TraceSession | None = None
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.replace(" ", "") == "rel_ts_us,len":
            continue
        where = f"{path} line {lineno}"
        if line.startswith("session,"):
            if current is not None:
                _close_session(current, where, sessions, skipped)
            name = line.split(",", 1)[1].strip()
            if not name:
                raise DatasetError(f"{where}: session without a name")
            current = TraceSession(name, path, [], [_Conn(proto, 0, 443)])
            continue
        try:
            if current is None:
                raise DatasetError(f"{where}: packet line before the first 'session,' line")
            current.packets.append(_csv_packet(line, where, proto))
        except DatasetError as exc:
            skip_or_raise(exc, skipped)
    if current is not None:
        _close_session(current, f"{path} end", sessions, skipped)


def _csv_packet(line: str, where: str, proto: int) -> TracePacket:
    parts = line.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        ts_us, signed = int(parts[0]), int(parts[1])
    except ValueError as exc:
        raise DatasetError(
            f"{where}: expected 'rel_ts_us,len' integers, got {line[:40]!r}"
        ) from exc
    if ts_us < 0:
        raise DatasetError(f"{where}: negative time {ts_us}")
    _check_length(abs(signed), proto, where)
    return TracePacket(ts_us, abs(signed), signed > 0)


def _close_session(
    session: TraceSession, where: str, sessions: list[TraceSession], skipped: list[str] | None
) -> None:
    """Sort ``session`` and add it to ``sessions``; an empty one is an error, or with
    ``skipped`` a note there."""
    if not session.packets:
        skip_or_raise(DatasetError(f"{where}: session {session.name!r} has no packets"), skipped)
        return
    session.packets, session.reordered = _sorted(session.packets)
    sessions.append(session)


def _json_flags(value: object, where: str) -> int:
    if value is None:
        return _ACK
    if isinstance(value, int) and 0 <= value <= 0xFF:
        return value
    if not isinstance(value, str):
        raise DatasetError(f"{where}: tcp_flags must be letters like 'PA', got {value!r}")
    bits = 0
    for letter in value.strip().upper():
        if letter not in _FLAG_BITS:
            raise DatasetError(f"{where}: unknown TCP flag {letter!r} in {value!r}")
        bits |= _FLAG_BITS[letter]
    return bits


def _json_record(rec: object, where: str) -> tuple[float, int, int, int, int, bool, int]:
    if not isinstance(rec, dict):
        raise DatasetError(f"{where}: expected an object per packet")
    try:
        ts = float(rec["timestamp"])
        size = int(rec["size"])
        sport, dport = int(rec["src_port"]), int(rec["dst_port"])
        direction = str(rec["direction"]).lower()
    except KeyError as exc:
        raise DatasetError(f"{where}: missing field {exc.args[0]!r}") from exc
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{where}: bad number in {rec!r:.80}") from exc
    proto = {"TCP": TCP, "UDP": UDP}.get(str(rec.get("protocol", "TCP")).upper())
    if proto is None:
        raise DatasetError(f"{where}: protocol must be TCP or UDP, got {rec.get('protocol')!r}")
    if direction not in ("inbound", "outbound"):
        raise DatasetError(f"{where}: direction must be inbound or outbound, got {direction!r}")
    if not (0 < sport < 65536 and 0 < dport < 65536):
        raise DatasetError(f"{where}: port out of range")
    flags = _json_flags(rec.get("tcp_flags"), where) if proto == TCP else 0
    _check_length(size, proto, where)
    return ts, size, proto, sport, dport, direction == "outbound", flags


def read_json_trace(path: Path, skipped: list[str] | None = None) -> TraceSession:
    """The packets of a JSON packet-metadata trace, grouped into connections by port pair.

    Raises :class:`DatasetError` (naming the file and record number) for invalid JSON, a
    missing field, an unknown direction, protocol or flag, or an impossible length. With
    ``skipped`` (a list), a bad record is left out and its error appended there instead.
    """
    try:
        records = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read trace: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not a JSON trace: {exc}") from exc
    if not isinstance(records, list) or not records:
        raise DatasetError(f"{path}: expected a non-empty JSON list of packet records")
    conns: dict[_Conn, int] = {}
    packets: list[TracePacket] = []
    for i, rec in enumerate(records):
        try:
            ts, size, proto, sport, dport, out, flags = _json_record(rec, f"{path} record {i}")
        except DatasetError as exc:
            skip_or_raise(exc, skipped)
            continue
        client_port, server_port = (sport, dport) if out else (dport, sport)
        conn = conns.setdefault(_Conn(proto, client_port, server_port), len(conns))
        packets.append(TracePacket(round(ts * 1_000_000), size, out, conn, flags))
    if not packets:
        raise DatasetError(f"{path}: no readable packet record ({skipped[0] if skipped else ''})")
    ordered, reordered = _sorted(packets)
    start = datetime.fromtimestamp(ordered[0].ts_us / 1e6, tz=UTC)
    return TraceSession(Path(path).stem, Path(path), ordered, list(conns), reordered, start)


# --- writing ------------------------------------------------------------------------------


def _server_addr(conn: int) -> bytes:
    third, fourth = divmod(conn, 250)
    if 201 + third > 255:
        raise DatasetError("trace has more connections than the synthetic address range holds")
    return bytes((10, 77, 201 + third, 2 + fourth))


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack("!10H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@dataclass
class _ConnState:
    conn: _Conn
    server: bytes
    seq: list[int]
    ip_id: list[int]


def _frame(state: _ConnState, pkt: TracePacket) -> tuple[bytes, int]:
    """Headers of one frame and the length of the rest (payload + padding) on the wire."""
    conn = state.conn
    side = 0 if pkt.to_server else 1
    client = bytes(_CLIENT_ADDR)
    src, dst = (client, state.server) if pkt.to_server else (state.server, client)
    sport, dport = (
        (conn.client_port, conn.server_port)
        if pkt.to_server
        else (conn.server_port, conn.client_port)
    )
    ip_len = pkt.length - ETH_LEN
    if conn.proto == TCP and pkt.length == _ETH_MIN_FRAME:
        ip_len = _IP_LEN + _L4_LEN[TCP]  # padded minimum frame: a bare ACK
    payload = ip_len - _IP_LEN - _L4_LEN[conn.proto]
    if conn.proto == TCP:
        seq, ack = state.seq[side], state.seq[1 - side]
        flags = pkt.flags
        options = b""
        if flags & _SYN:  # a SYN carries no data: its extra bytes are TCP options
            size = min(payload - payload % 4, _MAX_TCP_OPTIONS)
            options = (_MSS_OPTION + b"\x01" * (size - 4)) if size >= 4 else b"\x01" * size
            payload -= size
        l4 = (
            struct.pack(
                "!HHIIBBHHH",
                sport,
                dport,
                seq,
                ack if flags & _ACK else 0,
                (5 + len(options) // 4) << 4,
                flags,
                65535,
                0,
                0,
            )
            + options
        )
        state.seq[side] = (seq + payload + (1 if flags & _SYN_FIN else 0)) & 0xFFFFFFFF
    else:
        l4 = struct.pack("!HHHH", sport, dport, _L4_LEN[UDP] + payload, 0)
    ip_id = state.ip_id[side]
    state.ip_id[side] = (ip_id + 1) & 0xFFFF
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, ip_len, ip_id, 0x4000, 64, conn.proto, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", _ip_checksum(ip)) + ip[12:]
    eth = (_SERVER_MAC + _CLIENT_MAC) if pkt.to_server else (_CLIENT_MAC + _SERVER_MAC)
    return eth + b"\x08\x00" + ip + l4, pkt.length - ETH_LEN - _IP_LEN - len(l4)


def _write_records(
    out: PcapWriter, session: TraceSession, base_us: int, snaplen: int | None
) -> None:
    states = [
        _ConnState(
            c,
            _server_addr(i),
            [_ISN_CLIENT + i * 0x10000, _ISN_SERVER + i * 0x10000],
            [0x1000 + i, 0x8000 + i],
        )
        for i, c in enumerate(session.conns)
    ]
    zeros = bytes(_MAX_FRAME)
    for pkt in session.packets:
        headers, rest = _frame(states[pkt.conn], pkt)
        kept = len(headers) + rest if snaplen is None else min(snaplen, len(headers) + rest)
        ts = base_us + pkt.ts_us
        data = headers[:kept]
        if kept > len(data):
            data += zeros[: kept - len(data)]
        out.write_us(ts // 1_000_000, ts % 1_000_000, data, pkt.length)


def write_session_pcap(
    session: TraceSession, out: Path, *, base_us: int = 0, snaplen: int | None = None
) -> None:
    """Write one session as an Ethernet pcap (microsecond timestamps) at ``out``, atomically.

    Packet times are ``base_us + ts_us``. ``snaplen`` keeps only that many bytes per frame
    (the wire length stays). Raises :class:`DatasetError` if the file cannot be written.
    """
    if snaplen is not None and snaplen < ETH_LEN + _IP_LEN + _L4_LEN[TCP]:
        raise DatasetError(f"snaplen {snaplen} is too small to keep the headers (min 54)")
    tmp = out.with_name(out.name + ".part")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with PcapWriter(tmp, LINKTYPE_ETHERNET) as writer:
            _write_records(writer, session, base_us, snaplen)
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DatasetError(f"{out}: cannot write pcap: {exc.strerror or exc}") from exc


# --- import -------------------------------------------------------------------------------


def _spec_for(path: Path, label: str | None, app: str | None, proto: str | None) -> TraceSpec:
    spec = next((s for s in TRACE_SPECS if re.fullmatch(s.pattern, path.name)), None)
    if spec is None:
        if label is None or app is None:
            raise DatasetError(
                f"{path}: unknown trace source; give its label and app (and proto for CSV); "
                "--label mixed keeps it out of training and evaluation"
            )
        spec = TraceSpec("", label, app, TCP, "packet trace, imported", "", "", "")
    chosen_proto = spec.proto
    if proto is not None:
        if proto.lower() not in ("tcp", "udp"):
            raise DatasetError(f"proto must be tcp or udp, got {proto!r}")
        chosen_proto = TCP if proto.lower() == "tcp" else UDP
    chosen_label = label or spec.label
    if chosen_label not in SESSION_LABELS:
        raise DatasetError(
            f"unknown label {chosen_label!r} (expected one of {', '.join(SESSION_LABELS)})"
        )
    return TraceSpec(
        spec.pattern,
        chosen_label,
        app or spec.app,
        chosen_proto,
        spec.recorded,
        spec.device,
        spec.license,
        spec.notes,
    )


def _is_trace(path: Path) -> bool:
    return path.suffix.lower() in (".csv", ".json") or is_netpkt(path)


def _trace_files(src: Path) -> list[Path]:
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if _is_trace(p))
        if not files:
            raise DatasetError(f"{src}: no .csv, .json or .txt(.gz) trace in this folder")
        return files
    if not src.is_file():
        raise DatasetError(f"{src}: trace not found")
    if not _is_trace(src):
        raise DatasetError(
            f"{src}: not a packet trace (expected a .csv, .json, or netpkt .txt/.txt.gz file)"
        )
    return [src]


def _sessions(path: Path, spec: TraceSpec, skipped: list[str] | None) -> list[TraceSession]:
    if path.suffix.lower() == ".json":
        return [read_json_trace(path, skipped)]
    return read_csv_trace(path, spec.proto, skipped)


def _pcap_name(path: Path, session: TraceSession) -> str:
    if path.suffix.lower() == ".json":
        return f"{path.stem}.pcap"
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", session.name)
    return f"{path.stem}__{safe}.pcap"


def _row_values(
    out: Path, manifest: Path, spec: TraceSpec, session: TraceSession, source: Path
) -> dict[str, str]:
    notes = spec.notes
    if session.reordered:
        notes += f"; {session.reordered} out-of-order timestamps sorted"
    where = (
        source.name
        if source.suffix.lower() == ".json"
        else (f"{source.name} session {session.name}")
    )
    return {
        "path": Path(os.path.relpath(out, manifest.parent)).as_posix(),
        "sha256": file_sha256(out),
        "label": spec.label,
        "app": spec.app,
        "recorded": f"{spec.recorded}: {where}",
        "device": spec.device,
        "date": session.start.date().isoformat() if session.start else "",
        "license": spec.license,
        "notes": notes,
    }


def _write_manifest(manifest: Path, new_rows: Sequence[dict[str, str]]) -> None:
    """Rewrite ``manifest`` keeping its rows for other captures and adding ``new_rows``."""
    manifest.parent.mkdir(parents=True, exist_ok=True)
    lock = manifest.with_name(manifest.name + ".lock")
    with open(lock, "w") as lock_fh:
        fcntl.flock(lock_fh, fcntl.LOCK_EX)
        new_paths = {os.path.normpath(manifest.parent / r["path"]) for r in new_rows}
        kept: list[dict[str, str]] = []
        if manifest.exists() and manifest.stat().st_size:
            load_manifest(manifest)  # refuse to rewrite a manifest we cannot parse
            with open(manifest, encoding="utf-8", newline="") as fh:
                for rec in csv.DictReader(fh):
                    path = os.path.normpath(manifest.parent / os.path.expanduser(rec["path"]))
                    if path not in new_paths and any(v for v in rec.values()):
                        kept.append({c: rec.get(c) or "" for c in MANIFEST_COLUMNS})
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows([*kept, *new_rows])
        tmp = manifest.with_name(manifest.name + ".part")
        tmp.write_text(buf.getvalue(), encoding="utf-8")
        os.replace(tmp, manifest)


def import_traces(
    src: Path,
    out_dir: Path,
    manifest: Path | None = None,
    *,
    label: str | None = None,
    app: str | None = None,
    proto: str | None = None,
    snaplen: int | None = None,
    progress: bool = False,
    skip_bad: bool = False,
) -> list[ManifestRow]:
    """Write one pcap per trace session of ``src`` (a trace file or a folder of them).

    Known sources (``TRACE_SPECS``) bring their own label, app and transport; ``label``,
    ``app`` and ``proto`` ("tcp"/"udp") override them and are required for unknown files.
    The rows are written to ``manifest`` (default ``out_dir/traces.csv``), replacing rows
    for the same pcaps and keeping the others; they are also returned. Raises
    :class:`DatasetError` for an unreadable or malformed trace or an unknown source;
    with ``skip_bad``, malformed records are left out instead (a warning per file, and
    the count of problems in the rows' notes).
    """
    out_dir = Path(os.path.normpath(Path(out_dir).absolute()))
    manifest = Path(os.path.normpath(Path(manifest or out_dir / "traces.csv").absolute()))
    files = _trace_files(Path(src))
    values: list[dict[str, str]] = []
    for path in files:
        spec = _spec_for(path, label, app, proto)
        skipped: list[str] | None = [] if skip_bad else None
        first = len(values)
        if is_netpkt(path):
            values.append(_import_netpkt(path, out_dir, manifest, spec, skipped))
        else:
            sessions = _sessions(path, spec, skipped)
            for session in tqdm(
                sessions, desc=path.name, unit=" session", disable=not progress, leave=False
            ):
                out = out_dir / _pcap_name(path, session)
                base = 0 if session.start is not None else _CSV_BASE_US
                write_session_pcap(session, out, base_us=base, snaplen=snaplen)
                values.append(_row_values(out, manifest, spec, session, path))
            log.info("imported %d session(s) from %s", len(sessions), path.name)
        if skipped:
            log.warning(
                "%s: %d problem(s), their records left out; first: %s",
                path,
                len(skipped),
                skipped[0],
            )
            for row in values[first:]:
                row["notes"] += f"; {len(skipped)} problems on import, their records left out"
    _write_manifest(manifest, values)
    mine = {os.path.normpath(manifest.parent / v["path"]) for v in values}
    return [r for r in load_manifest(manifest) if str(r.path) in mine]


def _import_netpkt(
    path: Path, out_dir: Path, manifest: Path, spec: TraceSpec, skipped: list[str] | None
) -> dict[str, str]:
    packets, reordered = read_netpkt(path, skipped)
    stem = path.name[: -len(".txt.gz")] if path.name.lower().endswith(".gz") else path.stem
    out = out_dir / f"{stem}.pcap"
    write_netpkt_pcap(packets, out)
    notes = spec.notes + (f"; {reordered} out-of-order timestamps sorted" if reordered else "")
    start = datetime.fromtimestamp(packets[0].ts_us / 1e6, tz=UTC)
    log.info("imported %d packets from %s", len(packets), path.name)
    return {
        "path": Path(os.path.relpath(out, manifest.parent)).as_posix(),
        "sha256": file_sha256(out),
        "label": spec.label,
        "app": spec.app,
        "recorded": f"{spec.recorded}: {path.name}",
        "device": spec.device,
        "date": start.date().isoformat(),
        "license": spec.license,
        "notes": notes,
    }


def default_cache_dir() -> Path:
    """``$SHORTFLOW_CACHE/traces`` if set, else ``~/.cache/shortflow/traces``."""
    root = os.environ.get("SHORTFLOW_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "shortflow"
    return base / "traces"


def default_source_dir() -> Path:
    """The shared public captures: :func:`training.shared_captures.shared_captures_dir`
    (``$SHORTFLOW_TEST_DATA``, ``$SHORTFLOW_PCAPS``, else ``../shared/pcaps`` beside the
    repository)."""
    return shared_captures_dir()


def _source_traces(source: Path) -> list[Path]:
    files = (
        sorted((source / "traces").glob("*.csv"))
        + sorted((source / "other").glob("*.json"))
        + sorted((source / "traces" / "netpkt").glob("*.txt.gz"))
    )
    return [f for f in files if any(re.fullmatch(s.pattern, f.name) for s in TRACE_SPECS)]


def _stamp(files: Iterable[Path], snaplen: int | None) -> str:
    parts = [f"v{_IMPORTER_VERSION}", f"snaplen={snaplen}"]
    for f in files:
        st = f.stat()
        parts.append(f"{f.name}:{st.st_size}:{int(st.st_mtime)}")
    return "\n".join(parts) + "\n"


def _cached(cache_dir: Path, stamp: str) -> list[Path] | None:
    stamp_file = cache_dir / ".import-stamp"
    manifest = cache_dir / "traces.csv"
    if not (stamp_file.is_file() and manifest.is_file()):
        return None
    if stamp_file.read_text(encoding="utf-8") != stamp:
        return None
    try:
        rows = load_manifest(manifest)
    except DatasetError:
        return None
    if not rows or not all(r.path.is_file() for r in rows):
        return None
    return [r.path for r in rows]


def ensure_imported(
    cache_dir: Path | None = None,
    *,
    source: Path | None = None,
    snaplen: int | None = None,
    progress: bool = True,
) -> list[Path]:
    """Import every known public trace into ``cache_dir`` once; return the pcap paths.

    ``cache_dir`` defaults to :func:`default_cache_dir`, ``source`` to
    :func:`default_source_dir` (its ``traces/*.csv`` and ``other/*.json``). The manifest is
    ``cache_dir/traces.csv``; a stamp of the sources' names, sizes and times makes later
    calls return at once. Raises :class:`DatasetError` if no trace is found or one is bad.
    """
    cache_dir = Path(cache_dir or default_cache_dir()).expanduser().absolute()
    source = Path(source or default_source_dir())
    files = _source_traces(source)
    if not files:
        raise DatasetError(f"{source}: no known traces (traces/*.csv, other/*.json) found")
    stamp = _stamp(files, snaplen)
    hit = _cached(cache_dir, stamp)
    if hit is not None:
        return hit
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".import-lock", "w") as lock_fh:
        fcntl.flock(lock_fh, fcntl.LOCK_EX)
        hit = _cached(cache_dir, stamp)
        if hit is not None:
            return hit
        (cache_dir / "traces.csv").unlink(missing_ok=True)
        rows: list[ManifestRow] = []
        for path in _iter_progress(files, progress):
            rows += import_traces(
                path, cache_dir, cache_dir / "traces.csv", snaplen=snaplen, progress=progress
            )
        (cache_dir / ".import-stamp").write_text(stamp, encoding="utf-8")
    return [r.path for r in rows]


def _iter_progress(files: list[Path], progress: bool) -> Iterator[Path]:
    yield from tqdm(files, desc="importing traces", unit=" file", disable=not progress)

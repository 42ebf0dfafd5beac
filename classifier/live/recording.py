"""Record a client's own traffic on the live router, labelled, for training.

"Record this phone for 10 minutes as reels": :class:`Recorder` writes every packet the live
capture decodes where the client's address is either end (both directions) to a classic
pcap file (link type raw IP), and when the recording ends (its time is up, it is stopped,
or it reaches its size cap) adds a row for it to ``<data dir>/recordings/manifest.csv``, in
the manifest format of ``shortflow dataset`` (so ``shortflow dataset verify`` and
``shortflow train`` take it), plus a ``<id>.timeline.json`` sidecar with its labelled time
intervals (the traffic lab's form). A recording can be relabelled or deleted later.

The packets are the ones live mode decoded (:class:`~classifier.capture.packet.Packet`):
each is written back as an IP packet carrying the same addresses, ports, TCP flags and
sequence number, the same IP and payload lengths and the captured payload bytes, so reading
the file gives the packets, flows and features live mode saw. IP ids, TTLs, TCP
acknowledgement numbers, windows and options were not kept by the capture and are not in
the file (options become NOPs of the same length; checksums are 0).

The live path only hands packets over (:meth:`Recorder.offer`): they go to one bounded
queue that a writer thread drains; when the queue is full, packets are dropped and counted
(per recording and in total), never waited for. :meth:`Recorder.close` (SIGTERM) writes
what is queued and finishes the open recordings with their manifest rows. After a SIGKILL
a pcap may end inside a record; the next start cuts that partial record off and finishes
the recording (``stopped``, reason "interrupted").

Each recording also has ``<id>.json``, its record (client, alias, label, counts, state,
reason). The runtime does not import ``training/``: the manifest columns and session labels
are repeated here (a test checks they agree).
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import ipaddress
import json
import logging
import math
import os
import re
import secrets
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from classifier.capture.packet import TCP, Packet
from classifier.capture.pcap_writer import LINKTYPE_RAW, RECORD_HEADER, global_header, whole_records
from classifier.errors import RecordingError, RecordingNotFound
from classifier.manifest_format import MANIFEST_COLUMNS, OPTIONAL_COLUMNS, SESSION_LABELS

__all__ = [
    "Recorder",
    "RECORDING_LABELS",
    "SESSION_LABELS",
    "MANIFEST_HEADER",
    "session_label_of",
    "pcap_record",
    "DEFAULT_MAX_MB",
    "DEFAULT_DIR_MAX_MB",
]

log = logging.getLogger(__name__)

#: The columns of a recordings manifest: the required ones, then ``url``.
MANIFEST_HEADER = (*MANIFEST_COLUMNS, *OPTIONAL_COLUMNS)
#: What a household recording says in the manifest's ``recorded`` column (its data source).
RECORDED = "household"
#: Label words a recording takes -> (session label, app implied or None).
_WORDS: dict[str, tuple[str, str | None]] = {
    "shorts": ("short-form", "youtube"),
    "reels": ("short-form", "instagram"),
    "tiktok": ("short-form", "tiktok"),
    "long-form": ("long-form", None),
}
RECORDING_LABELS: tuple[str, ...] = (
    *_WORDS,
    *(lab for lab in SESSION_LABELS if lab not in _WORDS),
)
"""Labels a recording takes: shorts, reels, tiktok (short-form with their app), then the
dataset's session labels."""
#: The app of a long-form recording when none is given.
_DEFAULT_LONG_APP = "youtube"

DEFAULT_MAX_MB = 200.0
DEFAULT_DIR_MAX_MB = 2000.0
MAX_MINUTES = 24 * 60.0
_ID = re.compile(r"rec-[0-9]{8}T[0-9]{6}-[0-9a-f]{6}")
_APP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")
_PCAP_HEADER = global_header(LINKTYPE_RAW)
_pack_record_header = RECORD_HEADER.pack
_FLUSH_EVERY = 1.0
_WAKE = 0.2


def session_label_of(label: str) -> tuple[str, str | None]:
    """(session label, implied app or None) of a recording label; raises
    :class:`RecordingError` for an unknown one."""
    word = str(label).strip().lower()
    if word in _WORDS:
        return _WORDS[word]
    if word in SESSION_LABELS:
        return word, None
    raise RecordingError(f"unknown label {label!r}: use one of {', '.join(RECORDING_LABELS)}")


# -- pcap -----------------------------------------------------------------------------------


_V4 = struct.Struct("!BBHHHBBH4s4s")
_V6 = struct.Struct("!IHBB16s16s")
_TCP_HEAD = struct.Struct("!HHIIBBHHH")
_UDP_HEAD = struct.Struct("!HHHH")
_NOPS = tuple(b"\x01" * n for n in range(41))
_ADDRESSES: dict[str, tuple[bytes, int]] = {}  # text -> (packed, sum of its 16-bit words)


def _address(text: str) -> tuple[bytes, int]:
    """The packed address and the sum of its 16-bit words (for the IPv4 checksum)."""
    hit = _ADDRESSES.get(text)
    if hit is None:
        if len(_ADDRESSES) >= 65536:
            _ADDRESSES.clear()
        packed = socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)
        words = sum(struct.unpack(f"!{len(packed) // 2}H", packed))
        hit = _ADDRESSES[text] = (packed, words)
    return hit


def _transport(pkt: Packet, l4len: int) -> bytes:
    """The TCP or UDP header of ``pkt`` for an on-wire transport length ``l4len``."""
    if pkt.proto == TCP:
        hlen = l4len - pkt.payload_len
        if not (20 <= hlen <= 60 and hlen % 4 == 0):
            hlen = 20
        flags = pkt.tcp_flags
        head = _TCP_HEAD.pack(
            pkt.sport,
            pkt.dport,
            pkt.seq & 0xFFFFFFFF,
            0,
            (hlen // 4) << 4 | (flags >> 8 & 0x01),
            flags & 0xFF,
            0xFFFF,
            0,
            0,
        )
        return head + _NOPS[hlen - 20]  # options: NOPs of the original length
    return _UDP_HEAD.pack(pkt.sport, pkt.dport, min(pkt.payload_len + 8, 0xFFFF), 0)


def _ip_packet(pkt: Packet) -> tuple[bytes, int]:
    """(captured bytes, on-wire IP length) of ``pkt`` rebuilt as an IP packet."""
    l4min = (20 if pkt.proto == TCP else 8) + pkt.payload_len
    src, src_sum = _address(pkt.src)
    dst, dst_sum = _address(pkt.dst)
    if pkt.version == 6:
        ip_len = pkt.ip_len if pkt.ip_len >= 40 + l4min else 40 + l4min
        plen = ip_len - 40
        head = _V6.pack(6 << 28, plen if plen <= 0xFFFF else 0, pkt.proto, 64, src, dst)
        l4 = _transport(pkt, plen)
    else:
        ip_len = pkt.ip_len if pkt.ip_len >= 20 + l4min else 20 + l4min
        total = ip_len if ip_len <= 0xFFFF else 0
        # the header checksum: one's complement sum of its 16-bit words (checksum 0)
        word_sum = 0x4500 + total + 0x4000 + (64 << 8 | pkt.proto) + src_sum + dst_sum
        while word_sum >> 16:
            word_sum = (word_sum & 0xFFFF) + (word_sum >> 16)
        head = _V4.pack(0x45, 0, total, 0, 0x4000, 64, pkt.proto, ~word_sum & 0xFFFF, src, dst)
        l4 = _transport(pkt, ip_len - 20)
    return head + l4 + pkt.payload[: pkt.payload_len], ip_len


def pcap_record(pkt: Packet) -> bytes:
    """One pcap record (header and data, link type raw IP) holding ``pkt``."""
    data, ip_len = _ip_packet(pkt)
    sec = int(pkt.ts)
    usec = min(int(round((pkt.ts - sec) * 1e6)), 999_999)
    return _pack_record_header(sec, usec, len(data), max(ip_len, len(data))) + data


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- records --------------------------------------------------------------------------------


@dataclass
class _Recording:
    id: str
    client: str
    alias: str | None
    label: str
    session_label: str
    app: str
    start: float
    planned_s: float
    state: str = "running"
    reason: str | None = None
    end: float | None = None
    bytes: int = 0
    packets: int = 0
    dropped: int = 0
    sha256: str | None = None
    intervals: list[dict[str, Any]] = field(default_factory=list)
    # not saved
    fh: io.BufferedWriter | None = field(default=None, repr=False, compare=False)

    SAVED = (
        "id",
        "client",
        "alias",
        "label",
        "session_label",
        "app",
        "start",
        "planned_s",
        "state",
        "reason",
        "end",
        "bytes",
        "packets",
        "dropped",
        "sha256",
        "intervals",
    )

    def saved(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.SAVED}
        out["intervals"] = [dict(iv) for iv in self.intervals]
        return out


def _check_id(rec_id: str) -> str:
    if not isinstance(rec_id, str) or not _ID.fullmatch(rec_id):
        raise RecordingNotFound(f"no recording {rec_id!r}")
    return rec_id


class Recorder:
    """Recordings of clients' traffic in ``<data_dir>/recordings``.

    ``max_mb``: size cap of one recording's pcap; ``dir_max_mb``: of all files in the
    recordings folder together (a recording that reaches either ends, ``capped``);
    ``queue_packets``: packets waiting for the writer at most (beyond: dropped and
    counted); ``max_running``: recordings at once. Raises :class:`RecordingError` when the
    folder cannot be created.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        max_mb: float = DEFAULT_MAX_MB,
        dir_max_mb: float = DEFAULT_DIR_MAX_MB,
        queue_packets: int = 20_000,
        max_running: int = 16,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not (max_mb > 0 and dir_max_mb > 0):
            raise RecordingError("recording size caps must be positive")
        self.dir = Path(data_dir) / "recordings"
        self.manifest = self.dir / "manifest.csv"
        self.max_bytes = int(max_mb * 1e6)
        self.dir_max_bytes = int(dir_max_mb * 1e6)
        self.queue_packets = queue_packets
        self.max_running = max_running
        self._clock = clock
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RecordingError(
                f"{self.dir}: cannot create the recordings folder ({exc.strerror or exc})"
            ) from None
        self._lock = threading.RLock()  # recordings, files, manifest
        self._records: dict[str, _Recording] = {}
        self._clients: dict[str, str] = {}  # running: client address -> id (copy on write)
        # the queue: the live path appends (client id, packet) pairs under _cv only
        self._cv = threading.Condition(threading.Lock())
        self._queue: deque[tuple[str, Packet]] = deque()
        self._drops: dict[str, int] = {}
        self.dropped = 0
        self._closing = False
        self._dir_bytes = 0
        self._recover()
        self._writer = threading.Thread(target=self._run, name="shortflow-recorder", daemon=True)
        self._writer.start()

    # -- the live path ----------------------------------------------------------------------

    @property
    def recording(self) -> bool:
        """Whether a recording runs (its client's packets are wanted)."""
        return bool(self._clients)

    def offer(self, packets: Sequence[Packet]) -> int:
        """Queue the packets of the clients being recorded; never waits. Returns how many
        were dropped because the queue was full."""
        clients = self._clients
        if not clients or not packets:
            return 0
        picked: list[tuple[str, Packet]] = []
        for pkt in packets:
            a = clients.get(pkt.src)
            b = clients.get(pkt.dst)
            if a is not None:
                picked.append((a, pkt))
            if b is not None and b != a:
                picked.append((b, pkt))
        if not picked:
            return 0
        lost = 0
        with self._cv:
            room = max(0, self.queue_packets - len(self._queue))
            if room < len(picked):
                for rid, _ in picked[room:]:
                    self._drops[rid] = self._drops.get(rid, 0) + 1
                lost = len(picked) - room
                self.dropped += lost
                picked = picked[:room]
            self._queue.extend(picked)
            self._cv.notify()
        return lost

    # -- the writer thread ------------------------------------------------------------------

    def _run(self) -> None:
        next_flush = self._clock() + _FLUSH_EVERY
        while True:
            with self._cv:
                if not self._queue and not self._closing:
                    self._cv.wait(_WAKE)
                batch, self._queue = self._queue, deque()
                drops, self._drops = self._drops, {}
                closing = self._closing
            ended: list[_Recording] = []
            try:
                with self._lock:
                    for rid, n in drops.items():
                        rec = self._records.get(rid)
                        if rec is not None:
                            rec.dropped += n
                    for rid, pkt in batch:
                        rec = self._records.get(rid)
                        if rec is not None and rec.state == "running":
                            self._write(rec, pkt, ended)
                    now = self._clock()
                    for rec in list(self._records.values()):
                        if rec.state == "running" and now >= rec.start + rec.planned_s:
                            self._end(rec, "done", "its time was up")
                            ended.append(rec)
                    if now >= next_flush:
                        for rec in self._records.values():
                            if rec.fh is not None:
                                rec.fh.flush()
                        next_flush = now + _FLUSH_EVERY
                for rec in ended:
                    self._finish(rec)
            except Exception:  # the writer must go on: log, and keep the live path free
                log.exception("recording: writer error")
            if closing and not batch:
                return

    def _write(self, rec: _Recording, pkt: Packet, ended: list[_Recording]) -> None:
        try:
            data = pcap_record(pkt)
        except (OSError, ValueError, struct.error):
            rec.dropped += 1  # an address that does not pack (cannot happen for decoded ones)
            return
        if rec.bytes + len(data) > self.max_bytes:
            self._end(rec, "capped", f"size cap of {self.max_bytes / 1e6:g} MB reached")
            ended.append(rec)
            return
        if self._dir_bytes + len(data) > self.dir_max_bytes:
            self._end(
                rec,
                "capped",
                f"the recordings folder reached its cap of {self.dir_max_bytes / 1e6:g} MB",
            )
            ended.append(rec)
            return
        assert rec.fh is not None
        try:
            rec.fh.write(data)
        except OSError as exc:
            self._end(rec, "stopped", f"write failed: {exc.strerror or exc}")
            ended.append(rec)
            return
        rec.bytes += len(data)
        rec.packets += 1
        self._dir_bytes += len(data)

    def _end(self, rec: _Recording, state: str, reason: str) -> None:
        """Stop writing ``rec`` (under ``_lock``): close its file, take it off the live
        path. :meth:`_finish` then hashes it and writes its manifest row."""
        rec.state, rec.reason, rec.end = state, reason, self._clock()
        self._clients = {c: i for c, i in self._clients.items() if i != rec.id}
        if rec.fh is not None:
            try:
                rec.fh.flush()
                os.fsync(rec.fh.fileno())
                rec.fh.close()
            except OSError as exc:
                log.warning("recording %s: closing its file: %s", rec.id, exc)
            rec.fh = None
        with self._cv:
            rec.dropped += self._drops.pop(rec.id, 0)
        log.info(
            "recording %s of %s ended (%s: %s): %d packets, %d bytes, %d dropped",
            rec.id,
            rec.client,
            state,
            reason,
            rec.packets,
            rec.bytes + len(_PCAP_HEADER),
            rec.dropped,
        )

    def _finish(self, rec: _Recording) -> None:
        """Hash an ended recording, write its timeline, record and manifest row."""
        with self._lock:
            if rec.id not in self._records:
                return  # deleted meanwhile
            path = self.pcap_path(rec.id)
            try:
                rec.sha256 = _sha256(path)
            except OSError as exc:
                log.error("recording %s: cannot hash %s: %s", rec.id, path, exc)
                rec.sha256 = None
            if not rec.intervals:
                rec.intervals = [self._interval(rec, rec.start, rec.end or rec.start, rec.label)]
            self._save(rec)
            self._write_manifest()

    # -- files ------------------------------------------------------------------------------

    def pcap_path(self, rec_id: str) -> Path:
        return self.dir / f"{rec_id}.pcap"

    def _timeline_path(self, rec_id: str) -> Path:
        return self.dir / f"{rec_id}.timeline.json"

    def _json_path(self, rec_id: str) -> Path:
        return self.dir / f"{rec_id}.json"

    def _interval(self, rec: _Recording, start: float, end: float, label: str) -> dict[str, Any]:
        session, _ = session_label_of(label)
        return {
            "start": round(start, 6),
            "end": round(end, 6),
            "label": session,
            "start_s": round(start - rec.start, 3),
            "end_s": round(end - rec.start, 3),
        }

    def _save(self, rec: _Recording) -> None:
        """Write the record, and for an ended recording its timeline sidecar."""
        try:
            _write_atomic(self._json_path(rec.id), json.dumps(rec.saved(), indent=1))
            if rec.state != "running" and rec.intervals:
                timeline = {
                    "capture": self.pcap_path(rec.id).name,
                    "clock": "unix seconds, same clock as the pcap timestamps",
                    "start": rec.start,
                    "end": rec.end,
                    "intervals": rec.intervals,
                }
                _write_atomic(self._timeline_path(rec.id), json.dumps(timeline, indent=1))
        except OSError as exc:
            log.error("recording %s: cannot write its record: %s", rec.id, exc)

    def _row(self, rec: _Recording) -> dict[str, str]:
        duration = (rec.end or rec.start) - rec.start
        notes = (
            f"shortflow live recording {rec.id}: client {rec.client}"
            f"{f' ({rec.alias})' if rec.alias else ''}; as {rec.label}; start "
            f"{_iso(rec.start)}; duration {duration:.1f} s; {rec.packets} packets; "
            f"{rec.dropped} dropped; {rec.state}: {rec.reason or ''}; timeline "
            f"{self._timeline_path(rec.id).name}"
        )
        return {
            "path": self.pcap_path(rec.id).name,
            "sha256": rec.sha256 or "",
            "label": rec.session_label,
            "app": rec.app,
            "recorded": RECORDED,
            "device": rec.alias or rec.client,
            "date": datetime.fromtimestamp(rec.start, UTC).date().isoformat(),
            "license": "own recording",
            "notes": notes,
            "url": "",
        }

    def _write_manifest(self) -> None:
        """Rewrite the manifest: a row per ended recording (oldest first), after the rows
        someone else put there (kept as they are)."""
        ours = {self.pcap_path(i).name for i in self._records}
        kept: list[dict[str, str]] = []
        lock_path = self.dir / ".manifest.lock"
        try:
            with open(lock_path, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if self.manifest.is_file():
                    with open(self.manifest, encoding="utf-8", newline="") as fh:
                        for row in csv.DictReader(fh):
                            name = (row.get("path") or "").strip()
                            if name and name not in ours and not _ID.fullmatch(Path(name).stem):
                                kept.append({k: row.get(k) or "" for k in MANIFEST_HEADER})
                buf = io.StringIO()
                writer = csv.DictWriter(buf, fieldnames=MANIFEST_HEADER, lineterminator="\n")
                writer.writeheader()
                writer.writerows(kept)
                done = sorted(
                    (r for r in self._records.values() if r.state != "running" and r.sha256),
                    key=lambda r: r.start,
                )
                writer.writerows(self._row(r) for r in done)
                _write_atomic(self.manifest, buf.getvalue())
        except (OSError, csv.Error) as exc:
            log.error("recordings: cannot write %s: %s", self.manifest, exc)

    def _recover(self) -> None:
        """Load the records of earlier runs; finish those a killed process left running."""
        for path in sorted(self.dir.glob("rec-*.json")):
            if path.name.endswith(".timeline.json") or not _ID.fullmatch(path.stem):
                continue
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
                rec = _Recording(**{k: doc[k] for k in _Recording.SAVED if k in doc})
            except (OSError, ValueError, TypeError) as exc:
                log.warning("recordings: skipping unreadable record %s (%s)", path, exc)
                continue
            if rec.id != path.stem:
                continue
            self._records[rec.id] = rec
            if rec.state == "running":
                self._repair(rec)
        for file in self.dir.iterdir():
            if file.is_file():
                self._dir_bytes += file.stat().st_size
        if any(r.sha256 for r in self._records.values()):
            self._write_manifest()

    def _repair(self, rec: _Recording) -> None:
        pcap = self.pcap_path(rec.id)
        try:
            # a raw-IP record holds at least an IPv4 header (20 bytes)
            good, records = whole_records(pcap, min_caplen=20) if pcap.is_file() else (0, 0)
            if pcap.is_file() and good < pcap.stat().st_size:
                if good == 0:
                    pcap.write_bytes(_PCAP_HEADER)
                    good = len(_PCAP_HEADER)
                else:
                    os.truncate(pcap, good)
            elif not pcap.is_file():
                pcap.write_bytes(_PCAP_HEADER)
                good = len(_PCAP_HEADER)
        except OSError as exc:
            log.warning("recordings: cannot repair %s (%s)", pcap, exc)
            return
        rec.packets, rec.bytes = records, max(0, good - len(_PCAP_HEADER))
        rec.state = "stopped"
        rec.reason = "interrupted: live mode ended without finishing it (recovered at start)"
        rec.end = pcap.stat().st_mtime
        log.warning("recording %s was interrupted; kept %d packets", rec.id, records)
        rec.sha256 = _sha256(pcap)
        rec.intervals = [self._interval(rec, rec.start, rec.end, rec.label)]
        self._save(rec)

    # -- what LiveState calls ---------------------------------------------------------------

    def _get(self, rec_id: str) -> _Recording:
        rec = self._records.get(_check_id(rec_id))
        if rec is None:
            raise RecordingNotFound(f"no recording {rec_id!r}")
        return rec

    def _public(self, rec: _Recording) -> dict[str, Any]:
        end = rec.end if rec.end is not None else self._clock()
        with self._cv:
            pending = self._drops.get(rec.id, 0)
        return {
            "id": rec.id,
            "client": rec.client,
            "alias": rec.alias,
            "label": rec.label,
            "session_label": rec.session_label,
            "app": rec.app,
            "start": rec.start,
            "end": rec.end,
            "planned_s": rec.planned_s,
            "duration_s": round(max(0.0, end - rec.start), 3),
            "bytes": rec.bytes + len(_PCAP_HEADER),
            "packets": rec.packets,
            "dropped": rec.dropped + pending,
            "state": rec.state,
            "reason": rec.reason,
            "path": str(self.pcap_path(rec.id)),
            "sha256": rec.sha256,
            "intervals": [dict(iv) for iv in rec.intervals],
        }

    def start(
        self,
        client: str,
        minutes: float,
        label: str,
        app: str | None = None,
        alias: str | None = None,
    ) -> dict[str, Any]:
        """Start recording ``client`` (an IP address) for ``minutes`` as ``label``.

        Raises :class:`RecordingError` for a bad address, duration, label, app or alias,
        a client already being recorded, too many recordings at once, or a full folder.
        """
        try:
            addr = str(ipaddress.ip_address(str(client).strip()))
        except ValueError:
            raise RecordingError(f"client {client!r} is not an IP address") from None
        try:
            mins = float(minutes)
        except (TypeError, ValueError):
            raise RecordingError(f"minutes must be a number, got {minutes!r}") from None
        if not (math.isfinite(mins) and 0 < mins <= MAX_MINUTES):
            raise RecordingError(f"minutes must be more than 0 and at most {MAX_MINUTES:g}")
        session, implied = session_label_of(label)
        if app is not None and str(app).strip():
            app = str(app).strip().lower()
            if not _APP.fullmatch(app):
                raise RecordingError(
                    f"app {app!r}: use letters, digits, '.', '_' or '-' (at most 40)"
                )
        else:
            app = implied or (_DEFAULT_LONG_APP if session == "long-form" else "")
        if alias is not None:
            alias = " ".join(str(alias).split())[:64] or None
        with self._lock:
            if self._closing:
                raise RecordingError("live mode is stopping: no new recordings")
            if addr in self._clients:
                raise RecordingError(
                    f"client {addr} is already being recorded ({self._clients[addr]})"
                )
            running = sum(1 for r in self._records.values() if r.state == "running")
            if running >= self.max_running:
                raise RecordingError(
                    f"{running} recordings are running, the most at once; stop one first"
                )
            headroom = min(1_000_000, self.dir_max_bytes // 10)  # room for a useful recording
            if self.dir_max_bytes - self._dir_bytes < headroom:
                raise RecordingError(
                    f"the recordings folder is full ({self._dir_bytes / 1e6:.0f} MB of "
                    f"{self.dir_max_bytes / 1e6:g} MB); delete recordings first"
                )
            now = self._clock()
            stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%S")
            rec = _Recording(
                id=f"rec-{stamp}-{secrets.token_hex(3)}",
                client=addr,
                alias=alias,
                label=str(label).strip().lower(),
                session_label=session,
                app=app,
                start=now,
                planned_s=round(mins * 60.0, 3),
            )
            try:
                fh = open(self.pcap_path(rec.id), "wb")  # noqa: SIM115 (kept open while running)
                fh.write(_PCAP_HEADER)
                fh.flush()
            except OSError as exc:
                raise RecordingError(
                    f"{self.dir}: cannot create a capture file ({exc.strerror or exc})"
                ) from None
            rec.fh = fh
            self._dir_bytes += len(_PCAP_HEADER)
            self._records[rec.id] = rec
            self._save(rec)
            self._clients = {**self._clients, addr: rec.id}
        log.info(
            "recording %s: %s%s for %g min as %s",
            rec.id,
            addr,
            f" ({alias})" if alias else "",
            mins,
            rec.label,
        )
        return self._public(rec)

    def stop(self, rec_id: str) -> dict[str, Any]:
        """End a running recording (``stopped``) and write its manifest row; a recording
        that ended already is returned as it is. Raises :class:`RecordingNotFound`."""
        with self._lock:
            rec = self._get(rec_id)
            if rec.state == "running":
                self._end(rec, "stopped", "stopped by hand")
                self._finish(rec)
            return self._public(rec)

    def list(self) -> list[dict[str, Any]]:
        """Every recording, the latest started first."""
        with self._lock:
            recs = sorted(self._records.values(), key=lambda r: r.start, reverse=True)
            return [self._public(r) for r in recs]

    def relabel(
        self, rec_id: str, label: str, intervals: Iterable[Mapping[str, Any]] | None = None
    ) -> dict[str, Any]:
        """Give a recording a new label and, optionally, labelled time intervals
        (``{"start", "end", "label"}`` in unix seconds, or ``start_s``/``end_s`` seconds
        from its start); without intervals the whole recording takes ``label``. A label that
        names an app (shorts, reels, tiktok) sets the app too. Rewrites its manifest row and
        timeline. Raises :class:`RecordingNotFound` and :class:`RecordingError`."""
        session, implied = session_label_of(label)
        with self._lock:
            rec = self._get(rec_id)
            end = rec.end if rec.end is not None else rec.start + rec.planned_s
            spans: list[dict[str, Any]] = []
            for n, iv in enumerate(intervals or ()):
                if not isinstance(iv, Mapping):
                    raise RecordingError(f"interval {n + 1} must be an object")
                try:
                    if iv.get("start") is not None and iv.get("end") is not None:
                        lo, hi = float(iv["start"]), float(iv["end"])
                    else:
                        lo = rec.start + float(iv["start_s"])
                        hi = rec.start + float(iv["end_s"])
                except (KeyError, TypeError, ValueError):
                    raise RecordingError(
                        f"interval {n + 1}: give start and end (unix seconds) or start_s and "
                        "end_s (seconds from the recording's start)"
                    ) from None
                if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
                    raise RecordingError(f"interval {n + 1}: end must come after start")
                spans.append(self._interval(rec, lo, hi, str(iv.get("label", ""))))
            rec.label = str(label).strip().lower()
            rec.session_label = session
            if implied is not None:
                rec.app = implied
            elif session == "long-form" and not rec.app:
                rec.app = _DEFAULT_LONG_APP
            rec.intervals = spans or (
                [] if rec.state == "running" else [self._interval(rec, rec.start, end, label)]
            )
            self._save(rec)
            if rec.state != "running":
                self._write_manifest()
            log.info("recording %s relabelled as %s", rec.id, rec.label)
            return self._public(rec)

    def delete(self, rec_id: str) -> bool:
        """Delete a recording (stopping it first when running): its pcap, record,
        timeline and manifest row. False when there is no such recording."""
        try:
            _check_id(rec_id)
        except RecordingNotFound:
            return False
        with self._lock:
            rec = self._records.get(rec_id)
            if rec is None:
                return False
            if rec.state == "running":
                self._end(rec, "stopped", "deleted")
            del self._records[rec_id]
            for path in (
                self.pcap_path(rec_id),
                self._json_path(rec_id),
                self._timeline_path(rec_id),
            ):
                try:
                    size = path.stat().st_size
                    path.unlink()
                    self._dir_bytes = max(0, self._dir_bytes - size)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    log.error("recording %s: cannot delete %s: %s", rec_id, path, exc)
            self._write_manifest()
        log.info("recording %s deleted", rec_id)
        return True

    def file(self, rec_id: str) -> Path:
        """The pcap of an ended recording. Raises :class:`RecordingNotFound`, and
        :class:`RecordingError` while it is still running."""
        with self._lock:
            rec = self._get(rec_id)
            if rec.state == "running":
                raise RecordingError(f"recording {rec_id} is still running; stop it first")
            path = self.pcap_path(rec_id)
            if not path.is_file():
                raise RecordingNotFound(f"recording {rec_id}: its capture file is gone")
            return path

    def close(self) -> None:
        """Write what is queued, finish the open recordings (``stopped``) with their
        manifest rows, stop the writer. Idempotent."""
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._writer.join(timeout=30)
        with self._lock:
            for rec in list(self._records.values()):
                if rec.state == "running":
                    self._end(rec, "stopped", "live mode stopped")
                    self._finish(rec)

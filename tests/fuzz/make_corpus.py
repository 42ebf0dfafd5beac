"""Extract the fuzz seed corpus (tests/fuzz/corpus) from the real captures in shared/pcaps.

Run once by hand (the corpus is kept in the repo; this script documents where it came
from)::

    .venv/bin/python -m tests.fuzz.make_corpus ../shared/pcaps

Seeds: whole TLS ClientHello records (TCP payloads), QUIC client Initial datagrams and
their decrypted plaintext frames, DNS responses (UDP and TCP) and queries (UDP), the first
few KB of a few pcap / pcapng files (cut at a byte count, so the last record is usually
cut short: readers must cope with that too), and lines of tshark's field output for those
heads (``tshark_command``; needs tshark). Small on purpose: the whole corpus stays far
below 2 MB.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from classifier.capture import open_capture
from classifier.capture.tshark import tshark_command
from classifier.errors import CaptureError
from classifier.names.quic import (
    _initial_type_bits,
    _parse_long_header,
    _unprotect,
    initial_keys,
    is_long_header,
)

__all__ = ["CORPUS", "extract", "main"]

log = logging.getLogger(__name__)

CORPUS = Path(__file__).parent / "corpus"

#: (kind, max seeds kept of that kind)
_LIMITS = {
    "tls": 24,
    "quic": 16,
    "quic_plain": 16,
    "dns": 40,
    "capture": 10,
    "dns_query": 24,
    "tshark": 32,
}
#: kind -> max seeds of that kind from one capture (variety over volume)
_PER_ORIGIN = {"dns_query": 3, "tshark": 4}
_HEAD_BYTES = 6000
_HEADS = (
    "ndpi/443-safari.pcap",
    "ndpi/cachefly.pcapng",
    "ndpi/dns.pcap",
    "ndpi/hls.pcapng",
    "ndpi/quic-28.pcap",
    "nfstream/quic_t51.pcap",
    "ndpi/youtube_quic.pcap",
    "ndpi/sites.pcapng",
    "ndpi/spotify_tcp.pcap",
    "requet/A_baseline_Jan17_exp_41.pcap",
)


def _quic_plain(datagram: bytes) -> bytes | None:
    """Plaintext frames of the first client Initial in ``datagram``, or None."""
    hdr = _parse_long_header(datagram, 0)
    if hdr is None or hdr.end == 0 or hdr.ptype != _initial_type_bits(hdr.version):
        return None
    got = _unprotect(datagram, hdr, 0, initial_keys(hdr.version, hdr.dcid), -1)
    return None if got is None else got[1]


def extract(pcaps: Path, out: Path = CORPUS) -> dict[str, int]:
    """Write seeds from the captures under ``pcaps`` into ``out``; return counts per kind."""
    seen: dict[str, set[str]] = {k: set() for k in _LIMITS}
    per_origin: Counter[tuple[str, str]] = Counter()

    def keep(kind: str, data: bytes, origin: str) -> None:
        digest = hashlib.sha256(data).hexdigest()[:12]
        if len(seen[kind]) >= _LIMITS[kind] or digest in seen[kind] or not data:
            return
        if per_origin[kind, origin] >= _PER_ORIGIN.get(kind, _LIMITS[kind]):
            return
        per_origin[kind, origin] += 1
        seen[kind].add(digest)
        folder = out / kind
        folder.mkdir(parents=True, exist_ok=True)
        stem = origin.replace("/", "_").rsplit(".", 1)[0]
        (folder / f"{stem}-{digest}.bin").write_bytes(data)

    for path in sorted(pcaps.rglob("*.pcap*")):
        origin = str(path.relative_to(pcaps))
        try:
            for pkt in open_capture(path, skip_bad=True):
                p = pkt.payload
                if not p:
                    continue
                if pkt.proto == 6 and len(p) > 5 and p[0] == 22 and p[5] == 1:
                    keep("tls", p, origin)
                elif (
                    pkt.proto == 17 and 53 in (pkt.sport, pkt.dport) and len(p) > 12 and p[2] & 0x80
                ):
                    keep("dns", p, origin)
                elif pkt.proto == 6 and pkt.sport == 53 and len(p) > 14:
                    keep("dns", p, origin)
                elif pkt.proto == 17 and is_long_header(p) and pkt.dport == 443:
                    plain = _quic_plain(p)
                    if plain is not None:
                        keep("quic", p, origin)
                        keep("quic_plain", plain.rstrip(b"\x00")[:1400], origin)
                elif pkt.proto == 17 and pkt.dport == 53 and len(p) > 12 and not p[2] & 0x80:
                    keep("dns_query", p, origin)
        except CaptureError as exc:
            log.warning("skipped %s: %s", origin, exc)
    for rel in _HEADS:
        path = pcaps / rel
        if path.is_file():
            head = path.read_bytes()[:_HEAD_BYTES]
            keep("capture", head, rel)
            for line in _tshark_lines(head):
                keep("tshark", line.encode(), rel)
    return {k: len(v) for k, v in seen.items()}


def _tshark_lines(head: bytes) -> list[str]:
    """tshark's field lines for a capture head, one per distinct ``frame.protocols`` first
    (so the seeds cover TCP, UDP, IPv6, ARP... before repeating a shape); [] without
    tshark."""
    if shutil.which("tshark") is None:
        return []
    with tempfile.NamedTemporaryFile(suffix=".cap") as tmp:
        tmp.write(head)
        tmp.flush()
        proc = subprocess.run(
            tshark_command(tmp.name),
            capture_output=True,
            text=True,
            errors="replace",
            timeout=120,
            check=False,
        )
    lines = proc.stdout.splitlines()
    by_shape: dict[str, str] = {}
    for line in lines:
        by_shape.setdefault(line.split("\t")[2] if line.count("\t") >= 2 else "", line)
    return [*by_shape.values(), *lines]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pcaps", type=Path, help="the shared/pcaps folder")
    args = parser.parse_args(argv)
    counts = extract(args.pcaps)
    print(counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())

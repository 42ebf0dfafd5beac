"""Extract the fuzz seed corpus (tests/fuzz/corpus) from the real captures in shared/pcaps.

Run once by hand (the corpus is kept in the repo; this script documents where it came
from)::

    .venv/bin/python -m tests.fuzz.make_corpus /work/shared/pcaps

Seeds: whole TLS ClientHello records (TCP payloads), QUIC client Initial datagrams and
their decrypted plaintext frames, DNS responses (UDP and TCP), and the first few KB of a
few pcap / pcapng files (cut at a byte count, so the last record is usually cut short:
readers must cope with that too). Small on purpose: the whole corpus stays far below 2 MB.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
from pathlib import Path

from classifier.capture import open_capture
from classifier.errors import CaptureError
from classifier.features.quic import (
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
_LIMITS = {"tls": 24, "quic": 16, "quic_plain": 16, "dns": 40, "capture": 10}
_HEAD_BYTES = 6000
_HEADS = ("ndpi/443-safari.pcap", "ndpi/cachefly.pcapng", "ndpi/dns.pcap", "ndpi/hls.pcapng",
          "ndpi/quic-28.pcap", "nfstream/quic_t51.pcap", "ndpi/youtube_quic.pcap",
          "ndpi/sites.pcapng", "ndpi/spotify_tcp.pcap", "requet/A_baseline_Jan17_exp_41.pcap")


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

    def keep(kind: str, data: bytes, origin: str) -> None:
        digest = hashlib.sha256(data).hexdigest()[:12]
        if len(seen[kind]) >= _LIMITS[kind] or digest in seen[kind] or not data:
            return
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
                elif pkt.proto == 17 and 53 in (pkt.sport, pkt.dport) and len(p) > 12 \
                        and p[2] & 0x80:
                    keep("dns", p, origin)
                elif pkt.proto == 6 and pkt.sport == 53 and len(p) > 14:
                    keep("dns", p, origin)
                elif pkt.proto == 17 and is_long_header(p) and pkt.dport == 443:
                    plain = _quic_plain(p)
                    if plain is not None:
                        keep("quic", p, origin)
                        keep("quic_plain", plain.rstrip(b"\x00")[:1400], origin)
        except CaptureError as exc:
            log.warning("skipped %s: %s", origin, exc)
    for rel in _HEADS:
        path = pcaps / rel
        if path.is_file():
            keep("capture", path.read_bytes()[:_HEAD_BYTES], rel)
    return {k: len(v) for k, v in seen.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pcaps", type=Path, help="the shared/pcaps folder")
    args = parser.parse_args(argv)
    counts = extract(args.pcaps)
    print(counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())

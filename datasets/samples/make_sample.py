"""Make the bundled demo capture from a lab capture, small enough for the repo.

Keeps every packet's timing and wire length but stores only the first 96 bytes of packets
after the first 24 of each flow (as a router's NFLOG copy would): SNIs, QUIC Initials and DNS
stay whole, so `shortflow classify` sees exactly the features of the full capture.

    python datasets/samples/make_sample.py LAB.pcap datasets/samples/sample.pcap
"""

from __future__ import annotations

import sys
from pathlib import Path

import dpkt

from classifier.capture.pcap_writer import PcapWriter

FULL_PACKETS = 24
SNAPLEN = 96


def _flow_key(buf: bytes) -> tuple[object, ...] | None:
    eth = dpkt.ethernet.Ethernet(buf)
    ip = eth.data
    if not isinstance(ip, dpkt.ip.IP) or not isinstance(ip.data, (dpkt.tcp.TCP, dpkt.udp.UDP)):
        return None
    ends = sorted([(ip.src, ip.data.sport), (ip.dst, ip.data.dport)])
    return (ip.p, *ends)


def snap(src: Path, dst: Path) -> None:
    with src.open("rb") as fin:
        reader = dpkt.pcap.Reader(fin)
        with PcapWriter(dst, reader.datalink(), snaplen=65535) as out:
            _snap_records(reader, out)


def _snap_records(reader: dpkt.pcap.Reader, out: PcapWriter) -> None:
    seen: dict[tuple[object, ...], int] = {}
    for ts, buf in reader:
        key = _flow_key(buf)
        n = seen.get(key, 0) if key is not None else 0
        if key is not None:
            seen[key] = n + 1
        keep = buf if key is None or n < FULL_PACKETS else buf[:SNAPLEN]
        out.write(ts, keep, len(buf))


if __name__ == "__main__":
    snap(Path(sys.argv[1]), Path(sys.argv[2]))

"""Packet sources: pcap/pcapng files (native walker or tshark) decoded to :class:`Packet`.

Public surface::

    from classifier.capture import open_capture, ReadStats, Packet

    stats = ReadStats()
    for pkt in open_capture("trace.pcapng", backend="dpkt", skip_bad=False, stats=stats):
        ...
"""

from __future__ import annotations

from classifier.capture.decode import KNOWN_LINKTYPES, decode_frame
from classifier.capture.packet import TCP, UDP, Packet
from classifier.capture.reader import BACKENDS, open_capture
from classifier.capture.stats import ReadStats

__all__ = [
    "BACKENDS",
    "KNOWN_LINKTYPES",
    "Packet",
    "ReadStats",
    "TCP",
    "UDP",
    "decode_frame",
    "open_capture",
]

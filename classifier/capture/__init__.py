"""Packet sources: pcap/pcapng files (built-in walker or tshark) decoded to :class:`Packet`.

Public surface::

    from classifier.capture import open_capture, ReadStats, Packet

    stats = ReadStats()
    for pkt in open_capture("trace.pcapng", backend="builtin", skip_bad=False, stats=stats):
        ...
"""

from __future__ import annotations

from classifier.capture.decode import KNOWN_LINKTYPES, decode_frame
from classifier.capture.packet import TCP, UDP, Packet
from classifier.capture.reader import BACKENDS, BUILTIN, backend_name, is_builtin, open_capture
from classifier.capture.stats import ReadStats

__all__ = [
    "BACKENDS",
    "BUILTIN",
    "KNOWN_LINKTYPES",
    "Packet",
    "ReadStats",
    "TCP",
    "UDP",
    "backend_name",
    "decode_frame",
    "is_builtin",
    "open_capture",
]

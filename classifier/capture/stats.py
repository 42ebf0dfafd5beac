"""What reading one capture found: :class:`ReadStats`, filled in by every packet source.

Its own module so that the reader (:mod:`~classifier.capture.reader`) and the walkers it
calls (:mod:`~classifier.capture.pcap`, :mod:`~classifier.capture.pcapng`,
:mod:`~classifier.capture.tshark`) all import it from below instead of from each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ReadStats"]


@dataclass(slots=True)
class ReadStats:
    """What reading one capture found; filled in while packets are yielded.

    ``records``: packet records seen (pcap records, pcapng packet blocks), ``packets``:
    packets yielded, ``skipped``: reason -> count for records not yielded (``"non-ip"``,
    ``"arp"``, ``"icmp"``, ``"other-l4"``, ``"ip-fragment"``, ``"truncated-header"``,
    ``"bad-packet"``, ``"bad-record"``, ``"unknown-linktype"``), ``noted``: fact -> count for
    packets that were yielded but are worth knowing about (``"ip-fragment-first"``,
    ``"ip-len-from-wire"``), ``bytes_read``: file offset reached (of the decompressed stream
    for gzip files), ``truncated_at``: offset of a last record cut short, ``resync_failed_at``:
    offset of a damaged record after which no valid record was found, ``linktypes``: link
    types declared in the file, ``format``: ``"pcap"``, ``"pcapng"`` (``+gzip``) or
    ``"tshark"``.
    """

    records: int = 0
    packets: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    noted: dict[str, int] = field(default_factory=dict)
    bytes_read: int = 0
    truncated_at: int | None = None
    resync_failed_at: int | None = None
    linktypes: set[int] = field(default_factory=set)
    format: str = ""

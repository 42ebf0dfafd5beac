"""The decoded packet record that every packet source yields."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Packet", "TCP", "UDP"]

TCP = 6
UDP = 17


@dataclass(slots=True, frozen=True)
class Packet:
    """One IP packet carrying TCP or UDP, as the flow table needs it.

    ``ip_len`` is the IP packet's length on the wire (header + payload), independent of the
    link layer and of the capture's snap length; ``payload_len`` is the transport payload's
    length on the wire. ``payload`` holds the transport payload bytes that were captured,
    which may be fewer than ``payload_len`` (header-only captures) or none at all.
    """

    ts: float
    wire_len: int
    ip_len: int
    version: int
    src: str
    dst: str
    proto: int
    sport: int
    dport: int
    tcp_flags: int
    seq: int
    payload_len: int
    payload: bytes

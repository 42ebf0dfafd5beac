"""Bidirectional flow keys and the rule that decides which side is the client."""

from __future__ import annotations

from typing import NamedTuple

from classifier.capture.packet import TCP, Packet

__all__ = ["EPHEMERAL_MIN", "FlowKey", "orient"]

#: Ports from here up are ephemeral (client) ports: Linux's default ip_local_port_range
#: starts here; IANA's at 49152.
EPHEMERAL_MIN = 32768
_TCP_SYN = 0x02
_TCP_ACK = 0x10


class FlowKey(NamedTuple):
    """A flow's 5-tuple seen from its client."""

    proto: int
    client: str
    client_port: int
    server: str
    server_port: int


def _port_says_client(src_port: int, dst_port: int) -> bool | None:
    """True if the port numbers say the sender is the client, False if the receiver is."""
    if src_port >= 1024 > dst_port:
        return True
    if dst_port >= 1024 > src_port:
        return False
    src_eph = src_port >= EPHEMERAL_MIN
    dst_eph = dst_port >= EPHEMERAL_MIN
    if src_eph != dst_eph:
        return src_eph
    return None


def orient(pkt: Packet) -> FlowKey:
    """Key of the flow that ``pkt`` opens, with the client decided by the documented rule.

    The client is the side that sent a SYN (without ACK); else the side using the ephemeral
    (or unprivileged, against a privileged) port; else the sender of this first packet.
    A SYN+ACK names its receiver as the client.
    """
    sender_is_client: bool
    if pkt.proto == TCP and pkt.tcp_flags & _TCP_SYN:
        sender_is_client = not pkt.tcp_flags & _TCP_ACK
    else:
        by_port = _port_says_client(pkt.sport, pkt.dport)
        sender_is_client = True if by_port is None else by_port
    if sender_is_client:
        return FlowKey(pkt.proto, pkt.src, pkt.sport, pkt.dst, pkt.dport)
    return FlowKey(pkt.proto, pkt.dst, pkt.dport, pkt.src, pkt.sport)

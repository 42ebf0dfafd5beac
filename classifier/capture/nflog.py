"""NFLOG wire numbers (``linux/netfilter/nfnetlink_log.h``) that both readers of NFLOG
messages use: the reference parser (:class:`classifier.capture.live.NflogParser`) and its
compiled twin (:func:`classifier.capture.live_fast.walk_nflog`)."""

from __future__ import annotations

__all__ = ["ATTR_PAYLOAD", "ATTR_SEQ", "ATTR_TIMESTAMP", "MSG_PACKET", "NFNL_SUBSYS_ULOG"]

#: nfnetlink subsystem of NFLOG
NFNL_SUBSYS_ULOG = 4
#: netlink message type of a logged packet (NFULNL_MSG_PACKET)
MSG_PACKET = (NFNL_SUBSYS_ULOG << 8) | 0
#: attributes of a packet message read here: NFULA_TIMESTAMP, NFULA_PAYLOAD, NFULA_SEQ
ATTR_TIMESTAMP, ATTR_PAYLOAD, ATTR_SEQ = 3, 9, 12

"""A client's MAC address from the router's neighbour table, for the policy's MAC rules.

The policy's ``[clients]`` lists may name devices by MAC address; live mode sees IP
packets, so it asks the kernel which link-layer address each client IP has: the neighbour
table (ARP for IPv4, NDP for IPv6) as ``ip neigh show`` prints it (iproute2, and BusyBox
on OpenWrt). The table is read at most once every ``refresh_s`` seconds, and only when a
MAC is asked for, which the enforcer does only while the policy names MACs. A client on
the router's LAN that is sending traffic has an entry; one behind a VPN tunnel or another
router has none (``None``: the policy then treats it as a device of unknown MAC).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import subprocess
import threading
import time

__all__ = ["Neighbours", "parse_neighbours"]

log = logging.getLogger(__name__)

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_UNUSABLE = {"FAILED", "INCOMPLETE", "NOARP"}
"""States whose link-layer address (if any is printed) does not belong to a live device."""


def _ip_key(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.split("%", 1)[0]))
    except ValueError:
        return None


def parse_neighbours(text: str) -> dict[str, str]:
    """IP -> MAC (lower case) from ``ip neigh show`` output: one entry per line, ``ADDR dev
    IFACE lladdr MAC [router] STATE``; lines without a MAC-48 link-layer address or in a
    failed or incomplete state are left out."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) < 2 or "lladdr" not in words[:-1] or _UNUSABLE & set(words[1:]):
            continue
        ip = _ip_key(words[0])
        mac = words[words.index("lladdr") + 1].lower()
        if ip is not None and _MAC.match(mac):
            out[ip] = mac
    return out


def _run_ip(args: list[str]) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=5.0, check=True)
    return done.stdout


class Neighbours:
    """``lookup(ip)``: the MAC of a client IP, or None. ``netns``: read the table of that
    network namespace (``ip -n NETNS``; iproute2 only) instead of this process's."""

    def __init__(self, netns: str | None = None, refresh_s: float = 5.0) -> None:
        self._args = ["ip", *(["-n", netns] if netns else []), "neigh", "show"]
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._table: dict[str, str] = {}
        self._read_at: float | None = None
        self._warned = False

    def lookup(self, ip: str) -> str | None:
        """The MAC address of ``ip`` (lower case, ``aa:bb:cc:dd:ee:ff``), or None when the
        table has no usable entry for it or cannot be read (said once in the log)."""
        key = _ip_key(ip)
        if key is None:
            return None
        with self._lock:
            now = time.monotonic()
            if self._read_at is None or now - self._read_at >= self.refresh_s:
                self._read_at = now
                self._table = self._read()
            return self._table.get(key)

    def _read(self) -> dict[str, str]:
        try:
            table = parse_neighbours(_run_ip(self._args))
        except (OSError, subprocess.SubprocessError) as exc:
            if not self._warned:
                log.warning(
                    "cannot read the neighbour table (%s: %s): the policy's MAC rules match "
                    "no client, and while [clients] never lists a MAC no client is blocked",
                    " ".join(self._args),
                    exc,
                )
                self._warned = True
            return {}
        self._warned = False
        return table

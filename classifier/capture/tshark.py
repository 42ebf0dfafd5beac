"""tshark backend: the same :class:`Packet` stream, decoded by Wireshark instead of by us.

Runs ``tshark -T fields`` once per file and parses its tab-separated lines (pyshark drives
the same binary but costs about a millisecond per packet; the plain subprocess reads tens of
thousands of packets per second). IP reassembly and TCP desegmentation are switched off so
that there is one output line per captured frame, and the first occurrence of each field
is taken, i.e. the outermost IP and transport header, like the built-in decoder does.

The packet kept is the first IPv4/IPv6 header and the TCP or UDP header right after it
(IPv6 extension headers in between are allowed); everything else is counted in
``stats.skipped`` with the same reasons as the built-in backend, as far as tshark tells them
apart (``"non-ip"``, ``"arp"``, ``"icmp"``, ``"other-l4"``, ``"ip-fragment"``,
``"bad-packet"``).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from functools import lru_cache

from classifier.capture.packet import TCP, UDP, Packet
from classifier.capture.stats import ReadStats
from classifier.errors import CaptureError

__all__ = ["FIELDS", "tshark_command", "iter_tshark", "parse_line"]

logger = logging.getLogger(__name__)

FIELDS: tuple[str, ...] = (
    "frame.time_epoch",
    "frame.len",
    "frame.protocols",
    "ip.src",
    "ip.dst",
    "ip.len",
    "ip.hdr_len",
    "ip.frag_offset",
    "ip.flags.mf",
    "ipv6.src",
    "ipv6.dst",
    "ipv6.plen",
    "ipv6.fraghdr.offset",
    "ipv6.fraghdr.more",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.flags",
    "tcp.seq_raw",
    "tcp.len",
    "tcp.hdr_len",
    "tcp.payload",
    "udp.srcport",
    "udp.dstport",
    "udp.length",
    "udp.payload",
)

_PREFERENCES: tuple[str, ...] = (
    "ip.defragment:FALSE",
    "ipv6.defragment:FALSE",
    "tcp.desegment_tcp_streams:FALSE",
    "tcp.analyze_sequence_numbers:FALSE",
    "udp.try_heuristic_first:FALSE",
)

_V6_EXTENSION_LAYERS = frozenset(
    ("ipv6.hopopts", "ipv6.routing", "ipv6.fraghdr", "ipv6.dstopts", "ah")
)
_TRUE = frozenset(("1", "True", "true"))


def tshark_command(path: str, binary: str = "tshark") -> list[str]:
    """The tshark command line that :func:`iter_tshark` runs for ``path``."""
    cmd = [binary, "-n", "-r", path, "-T", "fields", "-E", "occurrence=f", "-E", "separator=/t"]
    for pref in _PREFERENCES:
        cmd += ["-o", pref]
    for name in FIELDS:
        cmd += ["-e", name]
    return cmd


def _int(text: str, default: int = 0) -> int:
    """A decimal or ``0x`` field; ValueError for anything else (signs, digits of other
    scripts, underscores: tshark never writes them)."""
    if not text:
        return default
    if text.startswith("0x"):
        digits, base = text[2:], 16
    else:
        digits, base = text, 10
    if not digits.isascii() or not digits.isalnum():
        raise ValueError(f"not a number: {text!r}")
    return int(digits, base)


@lru_cache(maxsize=4096)
def _is_address(text: str, version: int) -> bool:
    """Whether ``text`` is an IP address of ``version`` (cached: flows repeat addresses)."""
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


def _classify(protocols: str) -> tuple[int, int] | str:
    """From ``frame.protocols``: (IP version, transport proto) or a skip reason."""
    layers = protocols.split(":")
    for i, layer in enumerate(layers):
        if layer == "ip" or layer == "ipv6":
            version = 4 if layer == "ip" else 6
            j = i + 1
            while j < len(layers) and layers[j] in _V6_EXTENSION_LAYERS:
                j += 1
            nxt = layers[j] if j < len(layers) else ""
            if nxt == "tcp":
                return version, TCP
            if nxt == "udp":
                return version, UDP
            if nxt in ("icmp", "icmpv6"):
                return "icmp"
            return "other-l4" if nxt != "data" else "ip-data"
        if layer == "arp":
            return "arp"
    return "non-ip"


def parse_line(line: str, notes: dict[str, int], last_ts: float) -> Packet | str:
    """One tshark output line -> Packet or skip reason; never raises.

    ``last_ts`` stands in for a missing timestamp (pcapng simple packet blocks). A line
    with a value tshark would not write (not a number, a negative length, a port past
    65535, a non-finite time, an address that is not one) is ``"bad-packet"``, like a
    header the built-in decoder cannot make sense of.
    """
    v = line.rstrip("\n").split("\t")
    if len(v) < len(FIELDS):
        return "bad-packet"
    try:
        found = _fields_to_packet(v, notes, last_ts)
    except ValueError:
        return "bad-packet"
    if isinstance(found, str):
        return found
    if not (
        math.isfinite(found.ts)
        and _is_address(found.src, found.version)
        and _is_address(found.dst, found.version)
        and 0 <= found.sport <= 0xFFFF
        and 0 <= found.dport <= 0xFFFF
        and found.seq <= 0xFFFFFFFF
        and found.wire_len >= 0
        and found.ip_len >= 0
        and found.payload_len >= 0
    ):
        return "bad-packet"
    return found


def _fields_to_packet(v: list[str], notes: dict[str, int], last_ts: float) -> Packet | str:
    """The body of :func:`parse_line`; may raise ValueError for values tshark would not
    write."""
    ts = float(v[0]) if v[0] else last_ts
    kind = _classify(v[2])
    if kind == "ip-data":
        fragmented = _int(v[7]) or _int(v[12])
        return "ip-fragment" if fragmented else "other-l4"
    if isinstance(kind, str):
        return kind
    version, proto = kind
    if version == 4:
        if _int(v[7]):
            return "ip-fragment"
        src, dst = v[3], v[4]
        hdr = _int(v[6])
        ip_len = _int(v[5])
        first_fragment = v[8] in _TRUE
    else:
        if _int(v[12]):
            return "ip-fragment"
        src, dst = v[9], v[10]
        hdr = 40
        plen = _int(v[11])
        ip_len = plen + 40 if plen else 0
        first_fragment = v[13] in _TRUE
    if proto == TCP:
        if not v[14]:
            return "bad-packet"
        payload_len = _int(v[18])
        if ip_len == 0:
            ip_len = hdr + _int(v[19]) + payload_len
            notes["ip-len-from-wire"] = notes.get("ip-len-from-wire", 0) + 1
        ports, flags, seq, hexload = (v[14], v[15]), _int(v[16]) & 0x1FF, _int(v[17]), v[20]
    else:
        if not v[21]:
            return "bad-packet"
        udp_len = _int(v[23])
        if ip_len == 0:
            ip_len = hdr + udp_len
            notes["ip-len-from-wire"] = notes.get("ip-len-from-wire", 0) + 1
        payload_len = ip_len - hdr - 8 if version == 4 else udp_len - 8
        ports, flags, seq, hexload = (v[21], v[22]), 0, 0, v[24]
    packet = Packet(
        ts,
        _int(v[1]),
        ip_len,
        version,
        src,
        dst,
        proto,
        _int(ports[0]),
        _int(ports[1]),
        flags,
        seq,
        payload_len,
        bytes.fromhex(hexload.replace(":", ""))[: max(payload_len, 0)],
    )
    if first_fragment:
        notes["ip-fragment-first"] = notes.get("ip-fragment-first", 0) + 1
    return packet


def iter_tshark(path: str, stats: ReadStats, binary: str = "tshark") -> Iterator[Packet]:
    """Yield the TCP/UDP packets of ``path`` as decoded by tshark.

    Raises CaptureError when tshark is not installed or cannot read the file (its own
    message is passed on). A file cut short is read up to the cut with a warning, as tshark
    does; ``stats.truncated_at`` stays None because tshark does not say where.
    """
    exe = shutil.which(binary)
    if exe is None:
        raise CaptureError(path, f"{binary} not found; install tshark or use backend='builtin'")
    errfile = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        tshark_command(path, exe),
        stdout=subprocess.PIPE,
        stderr=errfile,
        text=True,
        encoding="utf-8",
        errors="replace",
    )
    assert proc.stdout is not None
    skipped = stats.skipped
    notes = stats.noted
    finished = False
    last_ts = 0.0
    try:
        for line in proc.stdout:
            stats.records += 1
            found = parse_line(line, notes, last_ts)
            if isinstance(found, str):
                skipped[found] = skipped.get(found, 0) + 1
            else:
                stats.packets += 1
                last_ts = found.ts
                yield found
        code = proc.wait()
        finished = True
        errfile.seek(0)
        err = errfile.read().decode("utf-8", "replace")
    finally:
        if not finished:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        errfile.close()
    lines = [x for x in err.splitlines() if x.strip() and "Running as user" not in x]
    message = " ".join(lines)
    if "cut short" in message:
        logger.warning("%s: %s", path, message)
    elif code != 0:
        detail = message or f"exit status {code}"
        raise CaptureError(
            path,
            f"tshark stopped after {stats.records} frame{'' if stats.records == 1 else 's'}: "
            f"{detail} "
            "(damaged or not a capture; try backend='builtin' with skip_bad=True)",
        )

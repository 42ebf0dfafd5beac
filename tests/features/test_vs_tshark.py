"""On the real shared captures, shortflow's flows agree with tshark's conversations.

tshark's conversation table (`-z conv,tcp -z conv,udp`) rounds bytes ("162 kB"), so the
test asks tshark for the same statistics exactly: per packet the frame length and the
tcp/udp stream index (the conversation), summed per conversation. Flows are compared as a
multiset of (proto, endpoints, packets, bytes). Timeouts are set out of reach, as tshark has
none; TCP port reuse after a close starts a new conversation in both.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from classifier.features.featurize import FeaturizeConfig, featurize
from classifier.flows import FlowConfig
from tests.shared_data import SHARED

CAPTURES = sorted(p for d in ("ndpi", "nfstream", "requet") for p in (SHARED / d).glob("*.pcap*"))
NO_TIMEOUTS = FeaturizeConfig(
    flow=FlowConfig(idle_timeout=1e12, active_timeout=1e12, close_linger=1e12), snapshots=()
)
# Differences that are understood, by capture name.
EXPLAINED = {
    "rtmp.pcap": "GTP-U tunnel (UDP 2152): tshark counts the inner TCP conversations, "
    "shortflow the outer UDP flow (no tunnel decapsulation)",
    "rtsp.pcap": "a SYN resent with the same ISN after an RST: tshark keeps one "
    "conversation, shortflow starts a new flow at a SYN after a close",
}

pytestmark = pytest.mark.skipif(
    shutil.which("tshark") is None or not CAPTURES,
    reason=f"needs tshark and the shared captures ({SHARED}; see tests/shared_data.py)",
)


def _tshark_conversations(path: Path) -> Counter[tuple]:
    fields = [
        "frame.len",
        "ip.src",
        "ip.dst",
        "ipv6.src",
        "ipv6.dst",
        "tcp.srcport",
        "tcp.dstport",
        "udp.srcport",
        "udp.dstport",
        "tcp.stream",
        "udp.stream",
    ]
    cmd = [
        "tshark",
        "-r",
        str(path),
        "-n",
        "-o",
        "ip.defragment:FALSE",
        "-o",
        "ipv6.defragment:FALSE",
        "-Y",
        "(tcp or udp) and not icmp and not icmpv6",
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-E",
        "occurrence=f",
    ]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300).stdout
    convs: dict[tuple, list] = {}
    for line in out.splitlines():
        flen, s4, d4, s6, d6, tsp, tdp, usp, udp_, tstream, ustream = line.split("|")
        proto = 6 if tstream else 17
        src, dst = (s4, d4) if s4 else (s6, d6)
        sp, dp = (tsp, tdp) if proto == 6 else (usp, udp_)
        ends = tuple(sorted([(src, int(sp)), (dst, int(dp))]))
        key = (proto, tstream or ustream)
        entry = convs.setdefault(key, [proto, ends, 0, 0])
        entry[2] += 1
        entry[3] += int(flen)
    return Counter(tuple(v) for v in convs.values())


def _shortflow_conversations(path: Path) -> Counter[tuple]:
    table = featurize(path, NO_TIMEOUTS)
    return Counter(
        (
            int(r.proto),
            tuple(sorted([(r.client, int(r.client_port)), (r.server, int(r.server_port))])),
            int(r.packets),
            int(r.wire_bytes),
        )
        for r in table.itertuples()
    )


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_flows_match_tshark_conversations(capture: Path) -> None:
    if capture.name in EXPLAINED:
        pytest.skip(EXPLAINED[capture.name])
    ours = _shortflow_conversations(capture)
    theirs = _tshark_conversations(capture)
    assert ours == theirs, (
        f"only shortflow: {list((ours - theirs).items())[:5]}; "
        f"only tshark: {list((theirs - ours).items())[:5]}"
    )

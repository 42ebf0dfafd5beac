"""Live packet sources against the real kernel, inside namespaces the test creates."""

from __future__ import annotations

import sys
import textwrap

import pytest

from tests.netns import requires_netns, run_in, scratch_netns

pytestmark = [requires_netns, pytest.mark.netns]

# Runs inside the namespace: sends 200 UDP datagrams of 500 B to 127.0.0.1:9999 and prints
# what the source under test decoded.
_PROBE = textwrap.dedent("""
    import json, socket, sys, time
    sys.path.insert(0, {root!r})
    from classifier.capture.live import AfPacketSource, NflogSource
    src = {source}
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(200):
        s.sendto(bytes(500), ("127.0.0.1", 9999))
    got, t0 = [], time.time()
    while time.time() - t0 < 5:  # until all arrived and a read comes back empty
        new = src.read(0.2)
        got += new
        if not new and len([p for p in got if p.dport == 9999]) >= 200:
            break
    mine = [p for p in got if p.dport == 9999]
    print(json.dumps({{"n": len(mine), "ip_len": sorted({{p.ip_len for p in mine}}),
                      "payload_len": sorted({{p.payload_len for p in mine}}),
                      "captured": sorted({{len(p.payload) for p in mine}}),
                      "dropped": src.stats.dropped}}))
""")


def _probe(ns: str, source: str) -> dict:
    import json
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    out = run_in(
        ns, [sys.executable, "-c", _PROBE.format(root=root, source=source)], timeout=60
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_nflog_source_gets_headers_with_true_lengths(engine: str) -> None:
    with scratch_netns("sf-nflog") as ns:
        run_in(ns, ["nft", "add", "table", "inet", "t"])
        run_in(
            ns, ["nft", "add", "chain", "inet", "t", "c", "{ type filter hook output priority 0; }"]
        )
        run_in(
            ns,
            [
                "nft",
                "add",
                "rule",
                "inet",
                "t",
                "c",
                "udp",
                "dport",
                "9999",
                "log",
                "group",
                "5",
                "snaplen",
                "60",
            ],
        )
        res = _probe(ns, f"NflogSource(5, engine={engine!r})")
    assert res["n"] == 200 and res["dropped"] == 0
    assert res["ip_len"] == [528] and res["payload_len"] == [500]
    assert max(res["captured"]) <= 60 - 28  # the copy was cut, the lengths were not


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_afpacket_source_sees_loopback_traffic(engine: str) -> None:
    with scratch_netns("sf-afp") as ns:
        res = _probe(ns, f"AfPacketSource(['lo'], engine={engine!r})")
    # on lo every datagram is seen twice (outgoing and incoming)
    assert res["n"] == 400 and res["ip_len"] == [528] and res["captured"] == [500]


# Runs inside the namespace: a tun interface (no link header, as wg0), 50 IPv4/UDP packets
# written into it arrive on it; prints what the source decoded.
_TUN_PROBE = textwrap.dedent("""
    import fcntl, json, os, struct, subprocess, sys, time
    sys.path.insert(0, {root!r})
    from classifier.capture.live import AfPacketSource
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", b"sftun0", 0x0001 | 0x1000))  # TUN, NO_PI
    subprocess.run(["ip", "link", "set", "sftun0", "up"], check=True)
    src = AfPacketSource(["sftun0"], engine={engine!r})
    udp = struct.pack(">HHHH", 40000, 9999, 8 + 100, 0) + bytes(100)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                     bytes([10, 77, 9, 2]), bytes([10, 77, 9, 1])) + udp
    for _ in range(50):
        os.write(fd, ip)
    got, t0 = [], time.time()
    while time.time() - t0 < 5 and len(got) < 50:
        got += [p for p in src.read(0.2) if p.dport == 9999]
    print(json.dumps({{"n": len(got), "src": sorted({{p.src for p in got}}),
                      "ip_len": sorted({{p.ip_len for p in got}})}}))
""")


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_afpacket_source_reads_interfaces_without_link_header(engine: str) -> None:
    import json
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    with scratch_netns("sf-tun") as ns:
        out = run_in(
            ns, [sys.executable, "-c", _TUN_PROBE.format(root=root, engine=engine)], timeout=60
        ).stdout
    res = json.loads(out.strip().splitlines()[-1])
    assert res == {"n": 50, "src": ["10.77.9.2"], "ip_len": [128]}

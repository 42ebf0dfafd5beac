"""`shortflow record`: real tcpdump (UDP echo) in namespaces the test creates; error lines."""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

import dpkt
import pytest

from classifier.errors import CaptureError, DatasetError
from tests.netns import Topology, netns_available
from training.dataset_cli import register_record
from training.manifest import load_manifest
from training.record import record

_UDP_ECHO = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 9999))
s.settimeout(0.2)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        data, peer = s.recvfrom(2048)
    except TimeoutError:
        continue
    s.sendto(data, peer)
"""

_UDP_SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.monotonic() + float(sys.argv[2])
n = 0
while time.monotonic() < end and n < 200:
    s.sendto(b"x" * 100, (sys.argv[1], 9999))
    n += 1
    time.sleep(0.05)
"""


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    register_record(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


def _packets(path: Path) -> list[tuple[str, str, int]]:
    """(src, dst, IP protocol) of every IPv4 packet in a pcap."""
    out = []
    with open(path, "rb") as fh:
        for _, frame in dpkt.pcap.Reader(fh):
            eth = dpkt.ethernet.Ethernet(frame)
            if isinstance(eth.data, dpkt.ip.IP):
                ip = eth.data
                out.append((dpkt.utils.inet_to_str(ip.src), dpkt.utils.inet_to_str(ip.dst), ip.p))
    return out


@pytest.mark.netns
@pytest.mark.skipif(
    not netns_available() or shutil.which("tcpdump") is None,
    reason="needs root, iproute2 and tcpdump",
)
def test_record_in_netns_keeps_client_traffic(tmp_path: Path) -> None:
    manifest = tmp_path / "sets" / "rec.csv"
    with Topology("sf-record") as topo:
        client, server = topo.addr["client"], topo.addr["server"]
        topo.popen(topo.server_ns, [sys.executable, "-c", _UDP_ECHO, server, "8"])
        topo.wait_listening(topo.server_ns, 9999, proto="udp")
        topo.popen(topo.client_ns, [sys.executable, "-c", _UDP_SENDER, server, "4"])
        # traffic the client filter must drop: the router talking to the server itself
        topo.popen(topo.router_ns, [sys.executable, "-c", _UDP_SENDER, server, "4"])
        code = _cli(
            [
                "record",
                "--iface",
                topo.iface["router.server"],
                "--client",
                client,
                "--label",
                "other",
                "--app",
                "udp-echo",
                "--duration",
                "2",
                "--manifest",
                str(manifest),
                "--out",
                str(tmp_path / "caps"),
                "--netns",
                topo.router_ns,
                "--device",
                "netns test",
            ]
        )
    assert code == 0
    (row,) = load_manifest(manifest)
    assert row.label == "other" and row.app == "udp-echo" and row.device == "netns test"
    assert row.path.parent == tmp_path / "caps" and row.path.suffix == ".pcap"
    assert row.sha256 == hashlib.sha256(row.path.read_bytes()).hexdigest()
    assert f"host {client}" in row.recorded
    packets = _packets(row.path)
    udp = [(src, dst) for src, dst, proto in packets if proto == dpkt.ip.IP_PROTO_UDP]
    up = udp.count((client, server))
    down = udp.count((server, client))
    assert up >= 20 and down >= 20  # ~2 s of 20 datagrams per second, each echoed
    assert up + down == len(udp) == len(packets)  # the router's own datagrams are filtered

    from classifier.features.featurize import featurize

    flows = featurize(row.path)
    flow = flows[(flows["proto"] == 17) & (flows["server_port"] == 9999)]
    assert len(flow) == 1
    assert (flow["pkts_up"].iloc[0], flow["pkts_down"].iloc[0]) == (up, down)
    assert flow["client"].iloc[0] == client


def test_missing_interface_is_one_line(tmp_path: Path) -> None:
    if shutil.which("tcpdump") is None:
        pytest.skip("tcpdump not installed")
    with pytest.raises(CaptureError, match=r"^sf-no-such0: no such network interface$"):
        record("sf-no-such0", "web", "x", 1, tmp_path / "m.csv", tmp_path)
    with pytest.raises(CaptureError, match=r"network namespace 'sf-none-x' does not exist"):
        record("lo", "web", "x", 1, tmp_path / "m.csv", tmp_path, netns="sf-none-x")
    assert not (tmp_path / "m.csv").exists()


def test_missing_tcpdump(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without tcpdump
    with pytest.raises(CaptureError, match=r"^tcpdump: not installed"):
        record("lo", "web", "x", 1, tmp_path / "m.csv", tmp_path)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown label"):
        record("lo", "reels", "x", 1, tmp_path / "m.csv", tmp_path)
    with pytest.raises(DatasetError, match="duration"):
        record("lo", "web", "x", 0, tmp_path / "m.csv", tmp_path)
    with pytest.raises(DatasetError, match="not an IP address"):
        record("lo", "web", "x", 1, tmp_path / "m.csv", tmp_path, client="10.77.1")
    with pytest.raises(SystemExit):
        _cli(
            [
                "record",
                "--iface",
                "lo",
                "--label",
                "web",
                "--app",
                "x",
                "--duration",
                "-1",
                "--manifest",
                "m.csv",
                "--out",
                "o",
            ]
        )

"""Live mode's MAC lookup for the policy's client rules: the kernel's neighbour table, read
with the real ``ip neigh`` in a namespace the test creates (static entries, no traffic),
and the enforcer's and the DNS sinkhole's decisions that depend on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dnslib
import pytest

from classifier.enforce.audit import AuditLog
from classifier.enforce.dns_sinkhole import DnsSinkhole
from classifier.enforce.enforcer import Enforcer
from classifier.enforce.policy import PolicyHolder, parse_policy
from classifier.live.neighbours import Neighbours, parse_neighbours
from tests.netns import requires_netns, run_in, scratch_netns

KID, GUEST, STRANGER = "10.77.5.9", "10.77.5.8", "10.77.5.77"  # STRANGER: no entry
KID_MAC, GUEST_MAC = "02:77:00:00:05:09", "02:77:00:00:05:08"
KID6 = "fd77:5::9"


def test_parse_reads_ip_neigh_lines_and_skips_unusable_ones() -> None:
    text = (
        "10.77.5.9 dev br-lan lladdr 02:77:00:00:05:09 REACHABLE\n"
        "fd77:5::0009 dev br-lan lladdr 02:77:00:00:05:0A router STALE\n"
        "fe80::1%br-lan dev br-lan lladdr 02:77:00:00:05:0b DELAY\n"
        "10.77.5.20 dev br-lan  FAILED\n"
        "10.77.5.21 dev br-lan lladdr 02:77:00:00:05:15 INCOMPLETE\n"
        "10.77.5.22 dev wg0 lladdr  PERMANENT\n"
        "not-an-address dev x lladdr 02:77:00:00:05:16 STALE\n"
        "10.77.5.23 dev tun0 lladdr 0a:0b PERMANENT\n"
        "\n"
    )
    assert parse_neighbours(text) == {
        KID: KID_MAC,
        KID6: "02:77:00:00:05:0a",
        "fe80::1": "02:77:00:00:05:0b",
    }


@pytest.fixture(scope="module")
def lan() -> Iterator[str]:
    """A namespace with a LAN-side veth whose neighbour table holds the kid's and the
    guest's devices (IPv4 and IPv6 for the kid)."""
    with scratch_netns("sf-neigh") as ns:
        run_in(ns, ["ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan1"])
        for dev in ("lan0", "lan1"):
            run_in(ns, ["ip", "link", "set", dev, "up"])
        run_in(ns, ["ip", "addr", "add", "10.77.5.1/24", "dev", "lan0"])
        _static(ns, KID, KID_MAC)
        _static(ns, GUEST, GUEST_MAC)
        run_in(ns, ["sysctl", "-qw", "net.ipv6.conf.lan0.disable_ipv6=0"])
        _static(ns, KID6, KID_MAC)
        yield ns


def _static(ns: str, ip: str, mac: str) -> None:
    run_in(ns, ["ip", "neigh", "replace", ip, "lladdr", mac, "dev", "lan0", "nud", "permanent"])


@requires_netns
@pytest.mark.netns
def test_lookup_reads_the_kernel_neighbour_table(lan: str) -> None:
    table = Neighbours(netns=lan, refresh_s=3600)
    assert table.lookup(KID) == KID_MAC and table.lookup(GUEST) == GUEST_MAC
    assert table.lookup("fd77:5:0:0::9") == KID_MAC  # any spelling of the address
    assert table.lookup(STRANGER) is None and table.lookup("not an ip") is None
    # read at most once per refresh_s: a device that appears later is seen after it
    _static(lan, "10.77.5.10", "02:77:00:00:05:10")
    assert table.lookup("10.77.5.10") is None
    assert Neighbours(netns=lan, refresh_s=0).lookup("10.77.5.10") == "02:77:00:00:05:10"
    # a table that cannot be read matches no MAC rule, and live mode goes on
    assert Neighbours(netns="sf-no-such-namespace").lookup(KID) is None


def _enforcer(tmp: Path, lan: str, clients: dict[str, list[str]]) -> Enforcer:
    policy = parse_policy({"mode": "dry-run", "clients": clients}, "test")
    return Enforcer(
        "dry-run",
        None,
        AuditLog(tmp / f"audit-{len(clients)}-{sorted(clients)[0]}.jsonl"),
        PolicyHolder(initial=policy),
        mac_lookup=Neighbours(netns=lan).lookup,
    )


def _blocked(enforcer: Enforcer, client: str) -> bool:
    rec = enforcer.block(client, "10.77.2.2", label="shorts", probability=0.95, name="youtube")
    return rec is not None


@requires_netns
@pytest.mark.netns
def test_mac_rules_match_clients_by_their_neighbour_entry(lan: str, tmp_path: Path) -> None:
    only = _enforcer(tmp_path, lan, {"only": [KID_MAC.upper()]})
    assert _blocked(only, KID) and _blocked(only, KID6)
    assert not _blocked(only, GUEST) and not _blocked(only, STRANGER)
    never = _enforcer(tmp_path, lan, {"never": [KID_MAC]})
    assert not _blocked(never, KID) and not _blocked(never, KID6)
    assert _blocked(never, GUEST)
    # a client of unknown MAC may be the one the never list spares: not blocked
    assert not _blocked(never, STRANGER)
    by_ip = _enforcer(tmp_path, lan, {"never": [GUEST]})
    assert _blocked(by_ip, STRANGER)  # no MAC rule: the table is not needed


@requires_netns
@pytest.mark.netns
def test_the_dns_sinkhole_applies_mac_rules_too(lan: str, tmp_path: Path) -> None:
    policy = parse_policy({"mode": "nft", "clients": {"only": [KID_MAC]}}, "test")
    sinkhole = DnsSinkhole(
        ("127.0.0.1", 0),
        ("127.0.0.1", 9),
        policy=PolicyHolder(initial=policy),
        audit=AuditLog(tmp_path / "dns.jsonl"),
        mac_lookup=Neighbours(netns=lan).lookup,
    )
    query = dnslib.DNSRecord.question("v16m.tiktokcdn.com").pack()
    assert sinkhole.decide(query, KID).action == "sinkhole"
    assert sinkhole.decide(query, GUEST).action == "forward"

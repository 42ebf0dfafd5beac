"""`shortflow dnsmasq-files`: the files a DNS-only router loads, checked by nft and
dnsmasq themselves (nft in a scratch network namespace)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.netns import Topology, requires_netns, run_in, scratch_netns

POLICY = """
block_seconds = 600
[sinkhole]
names = ["tiktok.com", "shorts-only.example"]
"""


def _export(tmp_path: Path) -> Path:
    (tmp_path / "policy.toml").write_text(POLICY)
    out = tmp_path / "files"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "classifier.cli",
            "dnsmasq-files",
            "--policy",
            str(tmp_path / "policy.toml"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "nft -f shortflow.nft" in run.stdout and "2 names" in run.stdout
    return out


@requires_netns
def test_nft_loads_the_table(tmp_path: Path) -> None:
    out = _export(tmp_path)
    with scratch_netns("sf-export") as ns:
        run_in(ns, ["nft", "-f", str(out / "shortflow.nft")])
        run_in(ns, ["nft", "-f", str(out / "shortflow.nft")])  # again: rebuilt, no error
        listing = run_in(ns, ["nft", "list", "table", "inet", "shortflow"]).stdout
    assert "set dns4" in listing and "timeout 1h" in listing
    assert "timeout 10m" in listing  # the policy's block_seconds for flows and pairs


@pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="dnsmasq not installed")
def test_dnsmasq_accepts_the_snippet(tmp_path: Path) -> None:
    conf = _export(tmp_path) / "shortflow-dnsmasq.conf"
    assert "nftset=/shorts-only.example/tiktok.com/4#inet#shortflow#dns4" in conf.read_text()
    check = subprocess.run(
        ["dnsmasq", "--test", "-C", str(conf)], capture_output=True, text=True, timeout=20
    )
    assert check.returncode == 0 and "syntax check OK" in check.stdout + check.stderr


def test_a_bad_policy_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "p.toml").write_text("[sinkhole]\nnames = ['a b']\n")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "classifier.cli",
            "dnsmasq-files",
            "--policy",
            str(tmp_path / "p.toml"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_it_names_the_policy_settings_a_dns_only_router_leaves_out(tmp_path: Path) -> None:
    """The files block once loaded, and dnsmasq adds every name under a sinkhole name: a
    policy in dry-run or allowing such a name is told so, one line each, and the files are
    still written; its clients and hours are in the files, so they draw no warning."""
    (tmp_path / "p.toml").write_text(
        'mode = "dry-run"\nschedules = ["21:00-07:00"]\n'
        '[clients]\nnever = ["aa:bb:cc:dd:ee:ff"]\n'
        '[allow]\nnames = ["ads.tiktok.com", "classroom.example.org"]\n'
    )
    argv = [sys.executable, "-m", "classifier.cli", "dnsmasq-files", "--policy"]
    run = subprocess.run(
        [*argv, str(tmp_path / "p.toml"), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 2 and all("(DNS-only setup)" in x for x in lines), lines
    for what in ("mode is 'dry-run'", "[allow] names"):
        assert any(what in x for x in lines), (what, lines)
    assert (tmp_path / "o" / "shortflow.nft").exists()
    (tmp_path / "q.toml").write_text('mode = "nft"\n[allow]\nnames = ["classroom.example.org"]\n')
    quiet = subprocess.run(
        [*argv, str(tmp_path / "q.toml"), "--out", str(tmp_path / "o2")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert quiet.returncode == 0 and quiet.stderr.strip() == "", quiet.stderr


def _table_for(tmp_path: Path, policy: str) -> Path:
    """Run ``dnsmasq-files`` for the policy text; the path of the nft file it wrote."""
    (tmp_path / "p.toml").write_text(policy)
    run = subprocess.run(
        [sys.executable, "-m", "classifier.cli", "dnsmasq-files", "--policy"]
        + [str(tmp_path / "p.toml"), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    return tmp_path / "o" / "shortflow.nft"


@requires_netns
def test_nft_loads_every_kind_of_client_and_hour_rule(tmp_path: Path) -> None:
    """Addresses of both families, MACs on both lists and windows that end at midnight,
    cross it or fill the day: nft takes the file, and the rules say what the policy says."""
    table = _table_for(
        tmp_path,
        'mode = "nft"\nschedules = ["21:30-07:15", "12:00-13:00", "18:00-24:00"]\n'
        '[clients]\nonly = ["10.77.1.0/24", "fd77::/64", "02:00:00:00:00:01"]\n'
        'never = ["10.77.1.9", "fd77::9", "02:00:00:00:00:02"]\n',
    )
    with scratch_netns("sf-export-rules") as ns:
        run_in(ns, ["nft", "-f", str(table)])
        chain = run_in(ns, ["nft", "list", "chain", "inet", "shortflow", "forward"]).stdout
    rules = [ln.strip() for ln in chain.splitlines() if "@dns" in ln]
    assert len(rules) == 4, rules  # per family: by address, by MAC; no replies (never MAC)
    hours = 'meta hour { "00:00"-"07:14:59", "12:00"-"12:59:59", "18:00"-"23:59:59" }'
    assert all(hours in r and "ether saddr != 02:00:00:00:00:02" in r for r in rules), rules
    assert any("ip saddr 10.77.1.0/24" in r and "ip saddr != 10.77.1.9" in r for r in rules)
    assert any("ip6 saddr fd77::/64" in r and "ip6 saddr != fd77::9" in r for r in rules)
    assert sum("ether saddr 02:00:00:00:00:01" in r for r in rules) == 2
    assert not any("saddr @dns" in r for r in rules)


def _window(start_h: float, end_h: float) -> str:
    """A schedule from ``start_h`` to ``end_h`` hours from now, local time."""
    now = datetime.now()
    a, b = now + timedelta(hours=start_h), now + timedelta(hours=end_h)
    return f"{a:%H:%M}-{b:%H:%M}"


@requires_netns
def test_the_dns_only_table_blocks_the_policys_clients_at_its_hours(tmp_path: Path) -> None:
    """Real traffic through a router namespace that loaded the files: the server's address
    is in dns4 (as dnsmasq puts it there), and a client address, the client's MAC or the
    hour decides whether a connection to it gets through."""
    with Topology("sf-dnsonly") as topo:
        client, server = topo.client_ns, topo.addr["server"]
        topo.run(client, ["ip", "addr", "add", "10.77.1.3/24", "dev", topo.iface["client"]])
        mac = topo.run(client, ["cat", f"/sys/class/net/{topo.iface['client']}/address"])
        mac_text = mac.stdout.strip()
        topo.popen(topo.server_ns, [sys.executable, "-m", "http.server", "--bind", server, "8080"])
        topo.wait_listening(topo.server_ns, 8080)

        def reached(policy: str, source: str) -> bool:
            table = _table_for(tmp_path, 'mode = "nft"\n' + policy)
            topo.run(topo.router_ns, ["nft", "-f", str(table)])
            topo.run(
                topo.router_ns,
                ["nft", "add", "element", "inet", "shortflow", "dns4"] + [f"{{ {server} }}"],
            )
            curl = ["curl", "-sS", "-o", "/dev/null", "-m", "3", "--interface", source]
            got = topo.run(client, [*curl, f"http://{server}:8080/"], check=False, timeout=10)
            return got.returncode == 0

        assert not reached("", "10.77.1.2") and not reached("", "10.77.1.3")
        only_first = '[clients]\nonly = ["10.77.1.2"]\n'
        assert not reached(only_first, "10.77.1.2") and reached(only_first, "10.77.1.3")
        never_first = '[clients]\nnever = ["10.77.1.2"]\n'
        assert reached(never_first, "10.77.1.2") and not reached(never_first, "10.77.1.3")
        assert not reached(f'[clients]\nonly = ["{mac_text}"]\n', "10.77.1.3")
        assert reached(f'[clients]\nnever = ["{mac_text}"]\n', "10.77.1.3")
        assert reached('[clients]\nonly = ["02:00:00:00:00:99"]\n', "10.77.1.2")
        assert not reached(f'schedules = ["{_window(-1, 1)}"]\n', "10.77.1.2")
        assert reached(f'schedules = ["{_window(1, 2)}"]\n', "10.77.1.2")

"""`shortflow dnsmasq-files`: the files a DNS-only router loads, checked by nft and
dnsmasq themselves (nft in a scratch network namespace)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.netns import requires_netns, run_in, scratch_netns

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
    """The files block the sinkhole names' addresses for everyone, always: a policy that
    spares clients, keeps hours, allows a name under a sinkhole name or is in dry-run is
    told so, one line each, and the files are still written."""
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
    assert len(lines) == 4 and all("(DNS-only setup)" in x for x in lines), lines
    for what in ("mode is 'dry-run'", "[clients]", "schedules", "[allow] names"):
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

"""The dnsmasq nftset snippet: content, dnsmasq --test accepts it, bad names refused."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from classifier.enforce.dnsmasq import render_dnsmasq_conf, write_dnsmasq_conf
from classifier.enforce.nft import NftTable
from classifier.enforce.policy import DEFAULT_SINKHOLE_NAMES
from classifier.errors import EnforcementError
from tests.enforce.dnsutil import LAB_ADDRESS, dnsmasq_upstream
from tests.netns import requires_netns, run_in, scratch_netns


def test_render_lines() -> None:
    text = render_dnsmasq_conf(["TikTok.com.", "*.tiktokcdn.com", "tiktok.com"])
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
    assert lines == ["nftset=/tiktok.com/tiktokcdn.com/4#inet#shortflow#dns4,6#inet#shortflow#dns6"]


def test_long_lists_are_split() -> None:
    names = [f"n{i}.lab.test" for i in range(45)]
    lines = [ln for ln in render_dnsmasq_conf(names).splitlines() if ln.startswith("nftset=")]
    assert len(lines) == 3
    assert sum(ln.count(".lab.test") for ln in lines) == 45


@pytest.mark.parametrize("bad", ["a/b.com", "x.com\nserver=1.2.3.4", "", "a b.com", "#.com"])
def test_bad_names_refused(bad: str) -> None:
    with pytest.raises(EnforcementError):
        render_dnsmasq_conf([bad])


def test_bad_set_name_refused() -> None:
    with pytest.raises(EnforcementError, match="not a valid nftables"):
        render_dnsmasq_conf(["a.com"], set4="x#y")


@pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="dnsmasq not installed")
def test_dnsmasq_accepts_file(tmp_path: Path) -> None:
    path = write_dnsmasq_conf(tmp_path / "conf.d" / "shortflow.conf", DEFAULT_SINKHOLE_NAMES)
    assert path.exists() and not list(path.parent.glob(".shortflow-*"))
    proc = subprocess.run(
        ["dnsmasq", "--test", "-C", str(path)], capture_output=True, text=True, timeout=20
    )
    assert proc.returncode == 0, proc.stderr
    assert "syntax check OK" in (proc.stderr + proc.stdout)
    # and a broken line is really caught by the same check (the test can fail)
    broken = tmp_path / "broken.conf"
    broken.write_text("nftsets=/a.com/4#inet#shortflow#dns4\n")
    proc = subprocess.run(
        ["dnsmasq", "--test", "-C", str(broken)], capture_output=True, text=True, timeout=20
    )
    assert proc.returncode != 0


@requires_netns
@pytest.mark.netns
@pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="dnsmasq not installed")
def test_dnsmasq_fills_our_set(tmp_path: Path) -> None:
    """End to end in a scratch namespace: dnsmasq with the snippet forwards to an upstream
    dnsmasq, and the resolved address lands in inet shortflow dns4 (and nowhere else)."""
    conf = write_dnsmasq_conf(tmp_path / "shortflow.conf", ["tiktok.com"])
    with scratch_netns("sf-dnsmasq") as ns:
        table = NftTable(ns)
        try:
            table.create()
            extra = {"tiktok.com": "10.77.0.10"}
            with dnsmasq_upstream("127.0.0.2", netns=ns, extra=extra) as up:
                fwd = subprocess.Popen(
                    [
                        "ip",
                        "netns",
                        "exec",
                        ns,
                        "dnsmasq",
                        "--keep-in-foreground",
                        "--no-resolv",
                        "--no-hosts",
                        f"--conf-file={conf}",
                        f"--server={up[0]}#{up[1]}",
                        "--port=5354",
                        "--listen-address=127.0.0.3",
                        "--bind-interfaces",
                        "--pid-file=",
                        "--user=root",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                try:
                    code = (
                        "import sys; from tests.enforce.dnsutil import query\n"
                        "for n in sys.argv[1:]:\n"
                        "    print(query(n, ('127.0.0.3', 5354), timeout=1).rr[0].rdata)\n"
                    )
                    deadline = time.monotonic() + 5
                    while True:
                        proc = run_in(
                            ns,
                            [sys.executable, "-c", code, "www.tiktok.com", "other.lab.test"],
                            check=False,
                            timeout=10,
                        )
                        if proc.returncode == 0 or time.monotonic() > deadline:
                            break
                        time.sleep(0.2)
                    assert proc.stdout.split() == ["10.77.0.10", LAB_ADDRESS], proc.stderr
                finally:
                    fwd.terminate()
                    fwd.wait(5)
            # only the tiktok name's answer went into the set
            assert table.list_addresses() == ["10.77.0.10"]
        finally:
            table.close()

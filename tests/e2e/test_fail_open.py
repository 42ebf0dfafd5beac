"""Fail open, in network namespaces this test creates (nothing on the host is touched).

* A blocking ``classifier.enforce`` run leaves every other nftables table of the namespace
  exactly as it was, before, during and after (foreign tables in several families,
  including an ``ip shortflow`` table that only shares the name).
* ``shortflow live`` with a malformed policy refuses to start (exit 2, one line on stderr)
  and creates nothing in nftables, whatever the capture and enforcement mode.
* SIGHUP with a broken policy file: the running ``shortflow live`` keeps going with the
  old policy (read back through its API) and says so on stderr; a fixed file is then
  taken on the next SIGHUP.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from classifier.enforce.audit import AuditLog, read_audit
from classifier.enforce.enforcer import Enforcer
from classifier.enforce.nft import NftTable
from classifier.enforce.policy import PolicyHolder, parse_policy
from classifier.features.schema import FEATURE_COLUMNS
from classifier.model.artifact import save_model
from tests.netns import netns_available, run_in, scratch_netns

pytestmark = [pytest.mark.netns]

ROOT = Path(__file__).resolve().parents[2]
C, S = "10.77.1.2", "10.77.2.2"
TOKEN = "fail-open-test-token-0123456789"
API_PORT = 18731

FOREIGN = """
table ip keepme {
  set banned {
    type ipv4_addr
    elements = { 10.77.9.9, 10.77.9.10 }
  }
  chain forward_c {
    type filter hook forward priority 10; policy accept;
    ip saddr @banned counter drop
    tcp dport 22 accept
  }
}
table inet filter {
  chain input_c {
    type filter hook input priority 0; policy accept;
    iifname "lo" accept
    ct state established,related accept
  }
}
table ip shortflow {
  chain decoy_c {
    ip daddr 10.77.8.8 drop
  }
}
table ip6 keep6 {
  chain output_c {
    type filter hook output priority 0; policy accept;
  }
}
"""


def _ruleset(ns: str) -> str:
    return run_in(ns, ["nft", "list", "ruleset"]).stdout


def _foreign_part(ruleset: str) -> str:
    """The ruleset without shortflow's own ``table inet shortflow`` block."""
    out: list[str] = []
    skip = False
    for line in ruleset.splitlines():
        if line.startswith("table inet shortflow "):
            skip = True
            continue
        if skip:
            if line == "}":
                skip = False
            continue
        out.append(line)
    return "\n".join(out).strip()


@pytest.fixture
def ns() -> Iterator[str]:
    if not netns_available():
        pytest.skip("needs root and iproute2 to create network namespaces")
    with scratch_netns("sf-failopen") as name:
        run_in(name, ["nft", "-f", "-"], input=FOREIGN)
        # a quiet interface to capture on (a veth pair inside the namespace: no traffic)
        run_in(name, ["ip", "link", "add", "sf0", "type", "veth", "peer", "name", "sf1"])
        for dev in ("sf0", "sf1"):
            run_in(name, ["ip", "link", "set", dev, "up"])
        yield name


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real model (the shipped one may not be present in a fresh clone)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, len(FEATURE_COLUMNS)))
    y = np.array(["short-form", "long-form", "other"] * 10)
    directory = tmp_path_factory.mktemp("failopen") / "model"
    save_model(
        LogisticRegression(max_iter=100).fit(x, y),
        directory,
        name="fail-open",
        labels=["short-form", "long-form", "other"],
        decision_windows=[3.0],
    )
    return directory


def test_blocking_run_leaves_other_tables_untouched(ns: str, tmp_path: Path) -> None:
    before = _ruleset(ns)
    assert "table ip keepme" in before and "table ip shortflow" in before
    audit = tmp_path / "audit.jsonl"
    policy = parse_policy({"mode": "nft", "block_seconds": 60}, "test")
    table = NftTable(ns)
    enforcer = Enforcer("nft", table, AuditLog(audit), PolicyHolder(initial=policy))
    try:
        flow = enforcer.block(
            C, S, 443, "udp", label="shorts", probability=0.97, name="rr1.googlevideo.com"
        )
        pair = enforcer.block(C, "10.77.2.3", label="reels", probability=0.95)
        assert flow is not None and pair is not None and not flow.dry_run
        during = _ruleset(ns)
        # the blocks are really there (so the comparison below means something) ...
        assert "table inet shortflow" in during and S in during and "10.77.2.3" in during
        assert {b.kind for b in table.list_blocks()} == {"flow", "pair"}
        # ... and everything else is as it was, byte for byte
        assert _foreign_part(during) == _foreign_part(before)
        assert enforcer.unblock(flow.id)
        assert _foreign_part(_ruleset(ns)) == _foreign_part(before)
    finally:
        enforcer.close()
    assert _ruleset(ns) == before
    assert [e["action"] for e in read_audit(audit)] == ["block", "block", "unblock", "unblock"]


BAD_POLICIES = {  # every start costs seconds of imports: a few kinds of damage only
    "not-toml": "mode = \n[[[",
    "bad-cidr": '[clients]\nonly = ["10.77.1.0/33"]\n',
    "binary": "\udcff\udcfe",
}


def _live_argv(policy: Path, model: Path, tmp: Path, capture: str, enforce: str) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "classifier.cli",
        "live",
        "--capture",
        capture,
        "--enforce",
        enforce,
        "--policy",
        str(policy),
        "--model",
        str(model),
        "--audit-log",
        str(tmp / "audit.jsonl"),
    ]
    if capture == "afpacket":
        argv += ["--iface", "sf0"]
    return argv


# Both start paths that would create nftables state: nft enforcement, and NFLOG capture.
@pytest.mark.parametrize(
    "case,capture,enforce",
    [
        *[(case, "afpacket", "nft") for case in sorted(BAD_POLICIES)],
        ("not-toml", "nflog", "dry-run"),
    ],
)
def test_malformed_policy_refused_at_start(
    ns: str, tmp_path: Path, model_dir: Path, case: str, capture: str, enforce: str
) -> None:
    before = _ruleset(ns)
    policy = tmp_path / "bad.toml"
    policy.write_bytes(BAD_POLICIES[case].encode("utf-8", "surrogateescape"))
    proc = run_in(
        ns, _live_argv(policy, model_dir, tmp_path, capture, enforce), check=False, timeout=120
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "bad.toml" in lines[0]
    assert _ruleset(ns) == before  # no table, no chain, no set created
    assert not (tmp_path / "audit.jsonl").exists() or (tmp_path / "audit.jsonl").read_text() == ""


def _get_policy(ns: str) -> dict[str, object]:
    import json

    out = run_in(
        ns,
        [
            "curl",
            "-sS",
            "--max-time",
            "5",
            "-H",
            f"Authorization: Bearer {TOKEN}",
            f"http://127.0.0.1:{API_PORT}/v1/policy",
        ],
        timeout=15,
    ).stdout
    doc: dict[str, object] = json.loads(out)
    return doc


def _wait_for(
    path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float, count: int = 1
) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text(errors="replace") if path.exists() else ""
        if content.count(text) >= count:
            return content
        if proc.poll() is not None:
            raise AssertionError(f"live exited with {proc.returncode}: {content}")
        time.sleep(0.1)
    raise AssertionError(f"no {text!r} after {timeout} s: {path.read_text(errors='replace')}")


def _wait_api(ns: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        res = run_in(
            ns,
            [
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "--max-time",
                "2",
                f"http://127.0.0.1:{API_PORT}/v1/health",
            ],
            check=False,
            timeout=10,
        )
        if res.returncode == 0:
            return
        assert proc.poll() is None, "live exited"
        time.sleep(0.2)
    raise AssertionError("API did not come up")


def test_sighup_with_broken_policy_keeps_the_old_one(
    ns: str, tmp_path: Path, model_dir: Path
) -> None:
    before = _ruleset(ns)
    policy = tmp_path / "p.toml"
    policy.write_text('mode = "dry-run"\nblock_seconds = 111\n')
    log = tmp_path / "live.log"
    argv = [
        *_live_argv(policy, model_dir, tmp_path, "afpacket", "dry-run"),
        "--api",
        f"127.0.0.1:{API_PORT}",
    ]
    env = dict(os.environ, SHORTFLOW_API_TOKEN=TOKEN, PYTHONPATH=str(ROOT))
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdout=fh,
            stderr=fh,
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
    try:
        _wait_for(log, "live on", proc, 60)
        _wait_api(ns, proc)
        assert _get_policy(ns)["block_seconds"] == 111

        policy.write_text('mode = "dry-run"\nblock_seconds = "soon"\n')  # broken
        proc.send_signal(signal.SIGHUP)
        text = _wait_for(log, "policy not reloaded", proc, 20)
        line = next(x for x in text.splitlines() if "policy not reloaded" in x)
        assert "p.toml" in line and "block_seconds" in line
        time.sleep(0.5)
        assert proc.poll() is None, "live died on a bad reload"
        assert _get_policy(ns)["block_seconds"] == 111  # the old policy is in force

        policy.write_text("mode = \n[[[")  # not even TOML
        seen = text.count("policy not reloaded")
        proc.send_signal(signal.SIGHUP)
        text = _wait_for(log, "policy not reloaded", proc, 20, count=seen + 1)
        assert "not valid TOML" in text
        assert proc.poll() is None
        assert _get_policy(ns)["block_seconds"] == 111

        policy.write_text('mode = "dry-run"\nblock_seconds = 222\n')  # fixed
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while _get_policy(ns)["block_seconds"] != 222:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        seen = log.read_text().count("policy not reloaded")
        time.sleep(0.5)
        assert log.read_text().count("policy not reloaded") == seen  # no complaint

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert "Traceback" not in log.read_text()
    assert _ruleset(ns) == before  # dry-run with afpacket changes no firewall state

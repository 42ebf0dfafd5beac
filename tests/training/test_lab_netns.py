"""The traffic lab end to end: real namespaces, real servers, real captures (root only).

One lab (wifi profile) records one short session of every scenario; the tests then read
the pcaps with plain dpkt (and tshark for QUIC SNI) and check what makes each behaviour
what it is.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dpkt
import pytest

from training.lab.conditions import PROFILES
from training.lab.generate import MANIFEST_COLUMNS, Lab, generate, session_seed
from training.lab.scenarios import SessionPlan, plan_session
from training.lab.topology import CLIENT_IP, MTU, NS_PREFIX, cleanup_stale

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump"),
]

_CLIENT = bytes(int(x) for x in CLIENT_IP.split("."))
_ETH_HDR = 14


@dataclass
class Pkt:
    ts: float
    wire: int
    down: bool
    proto: int
    sport: int
    dport: int
    payload: bytes
    flags: int = 0


def _read(path: Path) -> list[Pkt]:
    out: list[Pkt] = []
    with path.open("rb") as fh:
        for ts, buf in dpkt.pcap.Reader(fh):
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            if not isinstance(ip, dpkt.ip.IP):
                out.append(Pkt(ts, len(buf), False, 0, 0, 0, b"", 0))
                continue
            l4 = ip.data
            sport = getattr(l4, "sport", 0)
            dport = getattr(l4, "dport", 0)
            data = bytes(getattr(l4, "data", b""))
            flags = int(l4.flags) if isinstance(l4, dpkt.tcp.TCP) else 0
            out.append(Pkt(ts, len(buf), ip.dst == _CLIENT, ip.p, sport, dport, data, flags))
    return out


def _bursts(pkts: list[Pkt], gap: float = 0.5, min_bytes: int = 50_000) -> list[tuple[float, int]]:
    """Downstream bursts (start time, bytes) separated by idle gaps > ``gap`` seconds."""
    bursts: list[list[float]] = []
    last = -1e9
    for p in pkts:
        if not p.down or p.proto not in (6, 17) or p.sport == 53:
            continue
        if p.ts - last > gap:
            bursts.append([p.ts, 0.0])
        bursts[-1][1] += p.wire
        last = p.ts
    return [(b[0], int(b[1])) for b in bursts if b[1] >= min_bytes]


def _seed_where(scenario: str, duration: float, pred: Callable[[SessionPlan], bool]) -> int:
    for seed in range(2000):
        if pred(plan_session(scenario, session_seed(seed, scenario, 0), duration)):
            return seed
    raise AssertionError(f"no seed for {scenario}")


def _swipes_within(n: int, limit: float) -> Callable[[SessionPlan], bool]:
    """Plans whose first ``n`` clips are each watched 2.5-7 s and all within ``limit`` s."""

    def pred(plan: SessionPlan) -> bool:
        dwell = [c["dwell_s"] for c in plan.params["clips"]]
        return (
            sum(dwell[:n]) < limit
            and all(2.5 <= d <= 7.0 for d in dwell[:n])
            and plan.params["lookahead_s"] <= 12
        )

    return pred


# scenario -> (duration, predicate on the plan)
_CASES: dict[str, tuple[float, Callable[[SessionPlan], bool]]] = {
    "shorts": (
        15.0,
        lambda p: (
            p.protocol == "h3"
            and _swipes_within(3, 13.0)(p)
            and any(c["new_conn"] for c in p.params["clips"][1:3])
        ),
    ),
    "reels": (14.0, lambda p: p.protocol == "h2" and _swipes_within(3, 13.0)(p)),
    "tiktok": (14.0, lambda p: p.protocol == "h1" and _swipes_within(3, 13.0)(p)),
    "longform": (
        35.0,
        lambda p: (
            p.params["mode"] == "segment"
            and p.params["segment_s"] <= 9.0
            and p.params["fill_target_s"] <= 45.0
            and p.params["rung"] >= 2
            and not p.params["seeks"]
            and p.protocol == "h2"
        ),
    ),
    "feed": (10.0, lambda p: p.protocol == "h3"),
    "web": (10.0, lambda p: p.protocol == "h2"),
    "call": (10.0, lambda p: True),
    "mixed": (16.0, lambda p: p.app == "youtube"),
}


@dataclass
class Recorded:
    out: Path
    rows: dict[str, dict[str, str]]
    seeds: dict[str, int]
    lab_tag: str
    namespaces: tuple[str, str, str]
    nft_ruleset: str
    seconds: float


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    out = tmp_path_factory.mktemp("lab")
    rows: dict[str, dict[str, str]] = {}
    seeds: dict[str, int] = {}
    t0 = time.monotonic()
    with Lab("wifi") as lab:
        nft = lab.topo.run(lab.topo.router_ns, ["nft", "list", "ruleset"]).stdout
        for scenario, (duration, pred) in _CASES.items():
            seeds[scenario] = _seed_where(scenario, duration, pred)
            (row,) = generate(scenario, 1, seeds[scenario], out, "wifi", duration, lab=lab)
            rows[scenario] = row
        tag, namespaces = lab.topo.tag, lab.topo.namespaces
    yield Recorded(out, rows, seeds, tag, namespaces, nft, time.monotonic() - t0)


def _pcap(rec: Recorded, scenario: str) -> list[Pkt]:
    return _read(rec.out / rec.rows[scenario]["path"])


def test_lab_namespaces_are_gone_afterwards(recorded: Recorded) -> None:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert recorded.lab_tag not in listing
    for ns in recorded.namespaces:
        assert ns not in listing


def test_manifest_rows_and_hashes(recorded: Recorded) -> None:
    with (recorded.out / "manifest.csv").open(newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == MANIFEST_COLUMNS
        rows = list(reader)
    assert len(rows) == len(_CASES)
    labels = {r["path"].split("-")[0]: r["label"] for r in rows}
    assert labels == {
        "shorts": "short-form",
        "reels": "short-form",
        "tiktok": "short-form",
        "longform": "long-form",
        "feed": "other-video",
        "web": "web",
        "call": "call",
        "mixed": "mixed",
    }
    for r in rows:
        data = (recorded.out / r["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == r["sha256"]
        assert (r["recorded"], r["device"], r["license"]) == ("lab", "lab-emulator", "generated")
        assert "profile=wifi" in r["notes"] and "session_seed=" in r["notes"]
        assert len(r["date"]) == 10 and r["date"][4] == "-"


def test_every_capture_has_dns_and_frames_no_larger_than_mtu(recorded: Recorded) -> None:
    for scenario in _CASES:
        pkts = _pcap(recorded, scenario)
        assert len(pkts) > 100, scenario
        assert max(p.wire for p in pkts) <= MTU + _ETH_HDR, scenario
        queries = [p for p in pkts if p.proto == 17 and p.dport == 53 and not p.down]
        answers = [p for p in pkts if p.proto == 17 and p.sport == 53 and p.down]
        assert queries and answers, scenario
        names = {dpkt.dns.DNS(p.payload).qd[0].name for p in queries}
        assert any(n.endswith((".com", ".test")) for n in names), names


def _quic_sni(path: Path) -> set[str]:
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(path),
            "-Y",
            "quic",
            "-T",
            "fields",
            "-e",
            "tls.handshake.extensions_server_name",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return {line.strip() for line in out.splitlines() if line.strip()}


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")
def test_shorts_over_quic_has_googlevideo_sni(recorded: Recorded) -> None:
    path = recorded.out / recorded.rows["shorts"]["path"]
    pkts = _read(path)
    udp443 = [p for p in pkts if p.proto == 17 and 443 in (p.sport, p.dport)]
    assert sum(p.wire for p in udp443) > 0.8 * sum(p.wire for p in pkts if p.proto in (6, 17))
    snis = _quic_sni(path)
    assert any(s.endswith("---sn-lab.googlevideo.com") for s in snis), snis
    # a clip among the first three asks for a new connection: two QUIC connections or more
    # carry media (the real Shorts session opened a new one every ~20 s)
    media: dict[int, int] = {}
    for p in udp443:
        if p.down:
            media[p.dport] = media.get(p.dport, 0) + p.wire
    assert sum(n >= 300_000 for n in media.values()) >= 2, media


def test_swipe_sessions_have_many_downstream_bursts(recorded: Recorded) -> None:
    for scenario in ("shorts", "reels", "tiktok"):
        pkts = _pcap(recorded, scenario)
        span = pkts[-1].ts - pkts[0].ts
        bursts = _bursts(pkts)
        per_minute = len(bursts) / span * 60
        assert len(bursts) >= 3 and per_minute >= 12, (scenario, bursts)
        notes = recorded.rows[scenario]["notes"]
        requests = int(notes.split("requests=")[1].split()[0])
        assert requests >= 5, notes


def test_tiktok_over_http1_uses_several_connections(recorded: Recorded) -> None:
    pkts = _pcap(recorded, "tiktok")
    syns = {(p.sport, p.dport) for p in pkts if p.proto == 6 and p.dport == 443 and not p.down}
    assert len(syns) >= 2


def test_longform_is_a_big_fill_then_periodic_bursts(recorded: Recorded) -> None:
    bursts = _bursts(_pcap(recorded, "longform"), gap=0.8, min_bytes=100_000)
    assert len(bursts) >= 3, bursts
    fill, later = bursts[0][1], [b for _, b in bursts[1:]]
    assert fill > 3 * statistics.median(later), bursts
    duration = _CASES["longform"][0]
    plan = plan_session(
        "longform", session_seed(recorded.seeds["longform"], "longform", 0), duration
    )
    seg = plan.params["segment_s"]
    gaps = [b[0] - a[0] for a, b in zip(bursts[1:], bursts[2:], strict=False)]
    assert all(0.6 * seg <= g <= 1.5 * seg for g in gaps), (seg, gaps)


def test_call_is_steady_udp_both_ways(recorded: Recorded) -> None:
    pkts = [p for p in _pcap(recorded, "call") if p.proto == 17 and p.sport != 53 and p.dport != 53]
    span = pkts[-1].ts - pkts[0].ts
    up = sum(not p.down for p in pkts) / span
    down = sum(p.down for p in pkts) / span
    assert 25 <= up <= 55 and 25 <= down <= 55, (up, down)
    assert {p.dport for p in pkts if not p.down} == {3478}


def test_web_has_tls_to_the_web_names(recorded: Recorded) -> None:
    pkts = _pcap(recorded, "web")
    hellos = [
        p.payload
        for p in pkts
        if p.proto == 6
        and p.dport == 443
        and p.payload[:1] == b"\x16"
        and p.payload[5:6] == b"\x01"
    ]
    assert len(hellos) >= 2
    assert any(b"www.lab-web.test" in h for h in hellos)


def test_mixed_has_a_ground_truth_timeline(recorded: Recorded) -> None:
    path = recorded.out / recorded.rows["mixed"]["path"]
    timeline = json.loads(path.with_suffix(".timeline.json").read_text())
    ivs = timeline["intervals"]
    assert len(ivs) >= 2 and "short-form" in {iv["label"] for iv in ivs}
    for a, b in zip(ivs, ivs[1:], strict=False):
        assert b["start"] >= a["end"] - 0.01 and b["start"] - a["end"] < 1.0
    pkts = _read(path)
    assert pkts[0].ts <= ivs[0]["start"] + 1.0 and pkts[-1].ts >= ivs[-1]["end"] - 1.0


def test_router_applies_drop_delay_and_rate(recorded: Recorded) -> None:
    profile = PROFILES["wifi"]
    assert f"numgen random mod 1000 < {profile.loss_per_mille} drop" in recorded.nft_ruleset
    pkts = _pcap(recorded, "web")
    syn_t = {
        p.sport: p.ts
        for p in pkts
        if p.proto == 6 and p.dport == 443 and not p.down and p.flags & 0x12 == 0x02
    }
    rtts = []
    for p in pkts:
        if p.proto == 6 and p.sport == 443 and p.flags & 0x12 == 0x12 and p.dport in syn_t:
            rtts.append(p.ts - syn_t.pop(p.dport))
    assert rtts
    # capture is on the client side of the delay line: a handshake takes ~2x one-way delay
    assert min(rtts) >= (2 * (profile.delay_ms - profile.jitter_ms) - 1) / 1000, rtts
    # downstream never beats the shaped rate by much over 200 ms windows
    down = [p for p in _pcap(recorded, "longform") if p.down]
    start = down[0].ts
    bins: dict[int, int] = {}
    for p in down:
        k = int((p.ts - start) / 0.2)
        bins[k] = bins.get(k, 0) + p.wire
    peak_mbit = max(bins.values()) * 8 / 0.2 / 1e6
    assert peak_mbit <= profile.down_mbit * 1.25, peak_mbit


def test_sigterm_mid_session_removes_everything(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from training.lab.generate import generate;"
        "generate('call', 1, 0, Path(sys.argv[1]), duration_s=30)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    prefix = f"{NS_PREFIX}{proc.pid}-"
    try:
        deadline = time.monotonic() + 30
        while not list(tmp_path.glob("*.pcap")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert list(tmp_path.glob("*.pcap")), "session did not start"
        running = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        assert prefix in running.stdout
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
    assert proc.returncode != 0
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert prefix not in listing
    assert not (tmp_path / "manifest.csv").exists()
    assert not list(tmp_path.glob("*.pcap")), "a half-made capture was left behind"


def test_cleanup_stale_removes_only_dead_labs() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"{NS_PREFIX}{dead.pid}-abcdef-c"
    alive = f"{NS_PREFIX}{os.getpid()}-abcdef-c"
    try:
        for ns in (stale, alive):
            subprocess.run(["ip", "netns", "add", ns], check=True)
        removed = cleanup_stale()
        listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert stale in removed and stale not in listing
        assert alive in listing and alive not in removed
    finally:
        for ns in (stale, alive):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_lab_captures_pass_through_the_featurizer(recorded: Recorded) -> None:
    classifier = pytest.importorskip("classifier")
    featurize = getattr(classifier, "featurize", None)
    if featurize is None:
        pytest.skip("classifier.featurize is not there yet")
    table = featurize(recorded.out / recorded.rows["shorts"]["path"])
    assert len(table) >= 2
    text = table.astype(str)
    assert text.apply(lambda col: col.str.contains("googlevideo.com")).any().any()

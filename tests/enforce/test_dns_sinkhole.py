"""The DNS forwarder/sinkhole against a real dnsmasq upstream on loopback."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from classifier.enforce.audit import AuditLog, read_audit
from classifier.enforce.dns_sinkhole import DnsSinkhole
from classifier.enforce.policy import Policy, PolicyHolder, parse_policy
from classifier.errors import EnforcementError
from tests.enforce.dnsutil import LAB_ADDRESS, dnsmasq_upstream, free_udp_port, query

pytestmark = pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="needs dnsmasq")

UPSTREAM_HOST = "127.0.0.2"
LISTEN_HOST = "127.0.0.3"


def _policy(mode: str = "nft", answer: str = "zero", **extra: object) -> Policy:
    doc: dict[str, object] = {
        "mode": mode,
        "sinkhole": {"names": ["tiktok.com", "bytecdn.lab.test"], "answer": answer},
        "allow": {"names": ["ok.bytecdn.lab.test"]},
    }
    doc.update(extra)
    return parse_policy(doc, "test")


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, int]]:
    with dnsmasq_upstream(UPSTREAM_HOST) as addr:
        yield addr


class _Answers:
    def __init__(self) -> None:
        self.items: list[tuple[bytes, float]] = []
        self.lock = threading.Lock()

    def __call__(self, payload: bytes, ts: float) -> None:
        with self.lock:
            self.items.append((payload, ts))


def _start(
    upstream: tuple[str, int], tmp_path: Path, policy: Policy | PolicyHolder, **kw: object
) -> tuple[DnsSinkhole, _Answers, Path]:
    answers = _Answers()
    audit_path = tmp_path / "audit.jsonl"
    sink = DnsSinkhole(
        (LISTEN_HOST, 0),
        upstream,
        policy=policy,
        audit=AuditLog(audit_path),
        on_answer=answers,
        **kw,  # type: ignore[arg-type]
    )
    sink.start()
    return sink, answers, audit_path


def test_forwards_and_reports_answers(upstream: tuple[str, int], tmp_path: Path) -> None:
    sink, answers, audit = _start(upstream, tmp_path, _policy())
    try:
        before = time.time()
        ans = query("www.lab.test", sink.address)
        assert ans.header.rcode == RCODE.NOERROR
        assert [str(r.rdata) for r in ans.rr] == [LAB_ADDRESS]
        deadline = time.monotonic() + 2
        while not answers.items and time.monotonic() < deadline:
            time.sleep(0.01)
        payload, ts = answers.items[0]
        seen = DNSRecord.parse(payload)
        assert seen.header.id == ans.header.id  # the client's ID, as the client got it
        assert str(seen.q.qname) == "www.lab.test." and str(seen.rr[0].rdata) == LAB_ADDRESS
        assert before <= ts <= time.time()
        assert sink.stats["forwarded"] == 1 and sink.stats["answered"] == 1
        assert list(read_audit(audit)) == []
    finally:
        sink.stop()


def test_sinkholes_with_zero_answers(upstream: tuple[str, int], tmp_path: Path) -> None:
    sink, answers, audit = _start(upstream, tmp_path, _policy())
    try:
        a = query("v16.TikTok.com", sink.address)
        assert a.header.rcode == RCODE.NOERROR and [str(r.rdata) for r in a.rr] == ["0.0.0.0"]
        aaaa = query("x.bytecdn.lab.test", sink.address, "AAAA")
        assert [str(r.rdata) for r in aaaa.rr] == ["::"]
        assert aaaa.rr[0].rtype == QTYPE.AAAA
        https = query("tiktok.com", sink.address, "HTTPS")
        assert https.header.rcode == RCODE.NOERROR and https.rr == []
        allowed = query("ok.bytecdn.lab.test", sink.address)  # allowlist wins
        assert [str(r.rdata) for r in allowed.rr] == [LAB_ADDRESS]
        assert sink.stats["sinkholed"] == 3
        events = list(read_audit(audit))
        assert [e["action"] for e in events] == ["sinkhole"] * 3
        assert events[0]["name"] == "v16.tiktok.com" and events[0]["client"] == "127.0.0.1"
        assert "tiktok.com" in events[0]["rule"] and events[1]["qtype"] == "AAAA"
        time.sleep(0.1)
        assert len(answers.items) == 1  # only the forwarded (allowlisted) name
    finally:
        sink.stop()


def test_sinkhole_nxdomain(upstream: tuple[str, int], tmp_path: Path) -> None:
    sink, _, _ = _start(upstream, tmp_path, _policy(answer="nxdomain"))
    try:
        ans = query("www.tiktok.com", sink.address)
        assert ans.header.rcode == RCODE.NXDOMAIN and ans.rr == []
    finally:
        sink.stop()


def test_dry_run_forwards_and_logs(upstream: tuple[str, int], tmp_path: Path) -> None:
    sink, _, audit = _start(upstream, tmp_path, _policy(mode="dry-run"))
    try:
        ans = query("a.bytecdn.lab.test", sink.address)
        assert [str(r.rdata) for r in ans.rr] == [LAB_ADDRESS]
        assert [e["action"] for e in read_audit(audit)] == ["dry-run-sinkhole"]
    finally:
        sink.stop()


def test_client_rules_and_reload(upstream: tuple[str, int], tmp_path: Path) -> None:
    holder = PolicyHolder(initial=_policy(clients={"only": ["10.77.1.0/24"]}))
    sink, _, _ = _start(upstream, tmp_path, holder)
    try:  # our client (127.0.0.1) is not covered: forwarded, upstream's answer comes back
        assert str(query("x.bytecdn.lab.test", sink.address).rr[0].rdata) == LAB_ADDRESS
        holder.set(_policy())
        assert str(query("x.bytecdn.lab.test", sink.address).rr[0].rdata) == "0.0.0.0"
        holder.set(_policy(mode="off"))
        assert str(query("x.bytecdn.lab.test", sink.address).rr[0].rdata) == LAB_ADDRESS
    finally:
        sink.stop()


def test_upstream_timeout_gives_servfail(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((UPSTREAM_HOST, 0))  # receives, never answers
        sink, answers, _ = _start(silent.getsockname(), tmp_path, _policy(), timeout_s=0.3)
        try:
            t0 = time.monotonic()
            ans = query("www.lab.test", sink.address, timeout=3)
            took = time.monotonic() - t0
            assert ans.header.rcode == RCODE.SERVFAIL
            assert str(ans.q.qname) == "www.lab.test."
            assert 0.25 <= took < 1.5, took
            assert answers.items == [] and sink.stats["servfail"] == 1
        finally:
            sink.stop()


def test_garbage_does_not_stop_the_loop(upstream: tuple[str, int], tmp_path: Path) -> None:
    sink, _, _ = _start(upstream, tmp_path, _policy())
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(1)
            s.sendto(b"\x12\x34", sink.address)  # too short: ignored
            s.sendto(b"\xab\xcd" + b"\x01\x00\x00\x01" + b"\x00" * 6 + b"\x3f", sink.address)
            data, _ = s.recvfrom(512)  # truncated question: FORMERR
            assert data[:2] == b"\xab\xcd" and data[3] & 0x0F == 1
        assert str(query("www.lab.test", sink.address).rr[0].rdata) == LAB_ADDRESS
        assert sink.stats["malformed"] == 2
    finally:
        sink.stop()


def test_burst_keeps_ids_straight(upstream: tuple[str, int], tmp_path: Path) -> None:
    """300 queries with up to 50 in flight: every answer reaches its query (ID and name)."""
    sink, answers, _ = _start(upstream, tmp_path, _policy())
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.settimeout(3)
            sent: dict[int, str] = {}
            got: dict[int, str] = {}
            for i in range(300):
                q = DNSRecord.question(f"h{i}.lab.test", "A")
                q.header.id = 1000 + i  # unique client IDs (random ones may collide)
                sent[q.header.id] = f"h{i}.lab.test."
                s.sendto(q.pack(), sink.address)
                while len(sent) - len(got) >= 50:
                    rec = DNSRecord.parse(s.recvfrom(65535)[0])
                    got[rec.header.id] = str(rec.q.qname)
            while len(got) < len(sent):
                rec = DNSRecord.parse(s.recvfrom(65535)[0])
                got[rec.header.id] = str(rec.q.qname)
        assert got == sent
        # the forwarder replies first and counts (and hands the answer on) after: the last
        # reply can reach us before its bookkeeping is done
        deadline = time.monotonic() + 2.0
        while (len(answers.items) < 300 or sink.stats["answered"] < 300) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.01)
        assert len(answers.items) == 300 and sink.stats["answered"] == 300
    finally:
        sink.stop()


def test_bind_conflict_and_bad_addresses(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((LISTEN_HOST, 0))
        sink = DnsSinkhole(taken.getsockname(), (UPSTREAM_HOST, free_udp_port(UPSTREAM_HOST)))
        with pytest.raises(EnforcementError, match="cannot listen for DNS"):
            sink.start()
    with pytest.raises(EnforcementError, match="not an IP address"):
        DnsSinkhole(("localhost", 53), (UPSTREAM_HOST, 53))
    with pytest.raises(EnforcementError, match="timeout"):
        DnsSinkhole((LISTEN_HOST, 0), (UPSTREAM_HOST, 53), timeout_s=0)
    sink = DnsSinkhole((LISTEN_HOST, 0), (UPSTREAM_HOST, 53))
    sink.stop()  # stop before start is harmless
    with pytest.raises(EnforcementError, match="not started"):
        _ = sink.address

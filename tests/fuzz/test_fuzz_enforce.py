"""Fuzz what enforcement reads from the network or a policy file: the DNS sinkhole's
request path (directly, and one real server on loopback under a garbage burst) and the
dnsmasq snippet writer against hostile names (bounded run; benchmarks/fuzz.py runs the
same harnesses longer)."""

from __future__ import annotations

import logging
import random
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord
from hypothesis import given
from hypothesis import strategies as st

from classifier.enforce.dns_sinkhole import DnsSinkhole
from classifier.enforce.dnsmasq import write_dnsmasq_conf
from classifier.enforce.policy import parse_policy
from tests.enforce.dnsutil import LAB_ADDRESS, dnsmasq_upstream, query
from tests.fuzz.harness import (
    OPS,
    SINK_CLIENTS,
    SINK_NAMES,
    check_dns_query,
    check_dnsmasq_names,
    check_policy_names,
    dns_sinks,
    fuzz_settings,
    mutate,
    seeds,
)

_SINKS = dns_sinks()
_CLIENTS = list(SINK_CLIENTS)


def _made_queries() -> list[bytes]:
    """Queries for listed, allowlisted and other names, several types, with and without
    EDNS, upper case: the seeds that reach the sinkhole answer and the allowlist."""
    out = []
    for i, (name, qtype) in enumerate(
        [
            ("v16.TikTok.com", "A"),
            ("x.bytecdn.lab.test", "AAAA"),
            ("tiktok.com", "HTTPS"),
            ("ok.bytecdn.lab.test", "A"),
            ("www.lab.test", "A"),
            ("p16-sign.tiktokcdn.com", "A"),
            ("TIKTOKV.com", "AAAA"),
            ("tiktok.com", "TXT"),
        ]
    ):
        q = DNSRecord.question(name, qtype)
        q.header.id = 0x1000 + i
        if i % 2:
            q.add_ar(EDNS0(udp_len=1232))
        out.append(q.pack())
    return out


_QUERIES = seeds("dns_query") + _made_queries()
_ANSWERS = seeds("dns")


@fuzz_settings(1500)
@given(
    seed=st.integers(0, len(_QUERIES) + len(_ANSWERS) - 1),
    ops=OPS,
    sink=st.integers(0, len(_SINKS) - 1),
    client=st.sampled_from(_CLIENTS),
)
def test_sinkhole_decides_on_mutated_queries(
    seed: int, ops: list[tuple[int, int, int]], sink: int, client: str
) -> None:
    base = (_QUERIES + _ANSWERS)[seed]
    check_dns_query(mutate(base, ops), _SINKS[sink], client)


_HEADER = st.builds(
    lambda qid, flags, counts: qid.to_bytes(2, "big") + flags.to_bytes(2, "big") + counts,
    st.integers(0, 0xFFFF),
    st.sampled_from([0x0100, 0x0000, 0x8180, 0x7F00, 0x010F]),
    st.sampled_from(
        [
            b"\x00\x01\x00\x00\x00\x00\x00\x00",
            b"\x00\x01\x00\x00\x00\x00\x00\x01",
            b"\x00\x02\x00\x00\x00\x00\x00\x00",
            b"\xff\xff\xff\xff\xff\xff\xff\xff",
        ]
    ),
)


_FLAGS_SWAPPED = st.builds(
    lambda q, flags: q[:2] + flags.to_bytes(2, "big") + q[4:],
    st.sampled_from(_made_queries()),
    st.integers(0, 0xFFFF),
)


@fuzz_settings(1000)
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.tuples(_HEADER, st.binary(max_size=300)).map(b"".join),
        _FLAGS_SWAPPED,
    ),
    sink=st.integers(0, len(_SINKS) - 1),
    client=st.sampled_from(_CLIENTS),
)
def test_sinkhole_decides_on_random_datagrams(data: bytes, sink: int, client: str) -> None:
    check_dns_query(data, _SINKS[sink], client)


@fuzz_settings(300)
@given(
    labels=st.lists(st.binary(min_size=1, max_size=63), min_size=1, max_size=5),
    suffix=st.sampled_from([b"", b"\x06tiktok\x03com", b"\x03lab\x04test"]),
    qtype=st.sampled_from([1, 28, 65, 255, 0]),
)
def test_sinkhole_audits_odd_names(labels: list[bytes], suffix: bytes, qtype: int) -> None:
    """Any bytes in a label (dots, NUL, newlines, non-ASCII) under a listed suffix: a
    sinkhole answer with the same raw question, and one audit line that reads back."""
    name = b"".join(bytes([len(lb)]) + lb for lb in labels) + suffix + b"\x00"
    data = b"\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + name + qtype.to_bytes(2, "big")
    data += b"\x00\x01"
    out = check_dns_query(data, _SINKS[0], "10.77.1.5", audit=True)
    if len(name) <= 255 and suffix.startswith(b"\x06"):
        assert out.action == "sinkhole"


# -- one real server on loopback under a garbage burst -----------------------------------------


def _garbage(rng: random.Random, n: int) -> list[bytes]:
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            out.append(
                mutate(
                    rng.choice(_QUERIES),
                    [
                        (rng.randrange(8), rng.randrange(1 << 16), rng.randrange(1 << 16))
                        for _ in range(rng.randrange(1, 6))
                    ],
                )
            )
        elif kind == 1:
            out.append(rng.randbytes(rng.randrange(0, 600)))
        elif kind == 2:  # a query header, then noise: reaches the question reader
            out.append(
                rng.randbytes(2)
                + b"\x01\x00\x00\x01"
                + b"\x00" * 6
                + rng.randbytes(rng.randrange(0, 80))
            )
        else:  # answers sent to the server as if they were queries
            out.append(mutate(rng.choice(_ANSWERS), [(rng.randrange(8), rng.randrange(999), 7)]))
    return out


@pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="needs dnsmasq")
def test_real_sinkhole_survives_a_garbage_burst(caplog: pytest.LogCaptureFixture) -> None:
    """400 garbage / mutated datagrams at a running sinkhole (upstream: a real dnsmasq on
    loopback), then valid queries: still answered right, no crash logged, every reply a
    DNS answer to something sent, and no thread left behind after stop."""
    caplog.set_level(logging.ERROR)
    threads_before = set(threading.enumerate())
    policy = parse_policy({"mode": "nft", "sinkhole": {"names": list(SINK_NAMES)}}, "fuzz")
    burst = _garbage(random.Random(7), 400)
    with dnsmasq_upstream("127.0.0.1") as upstream:
        sink = DnsSinkhole(("127.0.0.1", 0), upstream, policy=policy, timeout_s=0.5)
        sink.start()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
                for data in burst:
                    s.sendto(data, sink.address)
                deadline = time.monotonic() + 10
                while sink.stats["queries"] < len(burst) and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert sink.stats["queries"] == len(burst)
                time.sleep(0.8)  # upstream answers arrive, unanswered ones time out
                s.setblocking(False)
                replies = []
                while True:
                    try:
                        replies.append(s.recv(65535))
                    except BlockingIOError:
                        break
            sent_ids = {d[:2] for d in burst if len(d) >= 12}
            assert 0 < len(replies) <= len(burst)
            for r in replies:
                assert r[:2] in sent_ids and r[2] & 0x80, r[:4]
            st_ = sink.stats
            assert st_["malformed"] + st_["forwarded"] + st_["sinkholed"] == len(burst), st_
            assert st_["malformed"] >= 100  # the random bytes and answers, at least
            a = query("www.lab.test", sink.address)
            assert a.header.rcode == RCODE.NOERROR
            assert [str(r.rdata) for r in a.rr] == [LAB_ADDRESS]
            b = query("v16.TikTok.com", sink.address)
            assert [str(r.rdata) for r in b.rr] == ["0.0.0.0"]
            c = query("x.bytecdn.lab.test", sink.address, "AAAA")
            assert [(r.rtype, str(r.rdata)) for r in c.rr] == [(QTYPE.AAAA, "::")]
            assert any(t.name == "dns-sinkhole" and t.is_alive() for t in threading.enumerate())
        finally:
            sink.stop()
    assert not [r for r in caplog.records if "crashed" in r.getMessage()]
    assert set(threading.enumerate()) - threads_before == set()


# -- the dnsmasq snippet against hostile names -------------------------------------------------

_BASES = ["tiktok.com", "a.b.c.example", "x_y.lab.test", "*.tiktokcdn.com", "q.", "1.2"]
_HOSTILE = [
    "\n",
    "\r",
    "\n.",
    "\r\n",
    "\nserver=1.2.3.4",
    "\nconf-file=/etc/shadow",
    "/",
    "/#",
    "#",
    " ",
    "\t",
    "\x00",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x85",
    "\u2028",
    "\u2029",
    "é",
    "İ",
    "\u212a",
    "ß",
    "\uff0e",
    "..",
    "*",
    "*.",
    "a" * 64,
    "=",
    ",",
    "\\",
    "-",
    "'",
    '"',
    "$",
    "%",
    ":",
    "\ufeff",
    ".\n",
]
_HOSTILE_NAME = st.builds(
    lambda base, bad, at: base[: at % (len(base) + 1)] + bad + base[at % (len(base) + 1) :],
    st.sampled_from(_BASES),
    st.sampled_from(_HOSTILE),
    st.integers(0, 40),
)
_NAMES = st.lists(
    st.one_of(
        _HOSTILE_NAME,
        st.text(max_size=30),
        st.sampled_from(_BASES),
        st.builds(lambda n: ".".join(["a" * 63] * n), st.integers(1, 5)),
    ),
    min_size=1,
    max_size=6,
)


@fuzz_settings(1000)
@given(_NAMES)
def test_dnsmasq_snippet_refuses_or_writes_safe_lines(names: list[str]) -> None:
    check_dnsmasq_names(names)


@fuzz_settings(600)
@given(_NAMES)
def test_policy_names_are_safe_for_dnsmasq(names: list[str]) -> None:
    check_policy_names(names)


@pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="dnsmasq not installed")
def test_dnsmasq_accepts_the_oddest_names_we_write(tmp_path: Path) -> None:
    odd = [
        "_dmarc.x_y.example",
        "0.1.2.3.example",
        "a" * 63 + ".example",
        ".".join(["b" * 63] * 3) + "." + "c" * 61,
        "*.WILD.Example.",
        "xn--bcher-kva.example",
        "a-b--c.example",
        "\u212aelvin.example",
    ]
    assert check_dnsmasq_names(odd) is not None
    path = write_dnsmasq_conf(tmp_path / "odd.conf", odd)
    proc = subprocess.run(
        ["dnsmasq", "--test", "-C", str(path)], capture_output=True, text=True, timeout=20
    )
    assert proc.returncode == 0, proc.stderr
    assert "kelvin.example" in path.read_text()

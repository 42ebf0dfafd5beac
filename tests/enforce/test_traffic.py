"""Blocking real traffic: client -> router (nftables) -> server namespaces.

TCP: a paced stream stops once its tuple is in the set (the server is reset on its next
segment, the client on its next packet), new connections are refused, and it works again
after the entry expires; a pair block refuses curl -> http.server at once. UDP: a 2 ms echo
stream stops at once and resumes when the 2 s entry expires. Printed: block_flow() return ->
last packet through.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from classifier.enforce.nft import NftTable
from tests.netns import Topology, requires_netns, topology  # noqa: F401  (fixture)

pytestmark = [pytest.mark.netns, requires_netns]

HTTP_PORT = 8080
TCP_PORT = 8443
UDP_PORT = 4433

UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    data, addr = s.recvfrom(2048)
    s.sendto(data, addr)
"""

UDP_CLIENT = """
import json, socket, struct, sys, time
dst, duration, interval = (sys.argv[1], int(sys.argv[2])), float(sys.argv[3]), 0.002
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(dst)
s.setblocking(False)
sent, got = {}, {}
print("ready", flush=True)
t_end = time.monotonic() + duration
next_t = time.monotonic()
seq = 0
while time.monotonic() < t_end:
    now = time.monotonic()
    if now >= next_t:
        try:
            s.send(struct.pack("!Id", seq, now))
        except OSError:
            pass
        sent[seq] = now
        seq += 1
        next_t += interval
    try:
        q, _ = struct.unpack("!Id", s.recv(64))
        got[q] = time.monotonic()
    except (BlockingIOError, ConnectionRefusedError):
        time.sleep(0.0005)
print(json.dumps({"sent": sent, "got": got}), flush=True)
"""


@pytest.fixture
def router_table(topology: Topology) -> Iterator[NftTable]:  # noqa: F811
    t = NftTable(topology.router_ns)
    t.create()
    try:
        yield t
    finally:
        t.delete()
        t.close()


TCP_STREAM_SERVER = """
import socket, sys, threading, time
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(8)
def stream(conn):
    chunk = bytes(16384)
    try:
        while True:  # about 3 MB/s, paced, so almost nothing waits in buffers
            conn.sendall(chunk)
            time.sleep(0.005)
    except OSError:
        conn.close()
while True:
    conn, _ = srv.accept()
    threading.Thread(target=stream, args=(conn,), daemon=True).start()
"""

TCP_STREAM_CLIENT = """
import json, socket, sys, time
dst, duration = (sys.argv[1], int(sys.argv[2])), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
s.settimeout(2.0)
marks, total, end = [], 0, "timeout"
try:
    s.connect(dst)
    print("ready", flush=True)
    s.settimeout(0.25)
    t_end = time.monotonic() + duration
    next_ping = time.monotonic()
    while time.monotonic() < t_end:
        if time.monotonic() >= next_ping:  # like an HTTP/2 PING or WINDOW_UPDATE
            s.send(b"p")
            next_ping += 0.25
        try:
            data = s.recv(65536)
        except socket.timeout:
            continue
        if not data:
            end = "eof"
            break
        total += len(data)
        marks.append((time.monotonic(), total))
except ConnectionRefusedError:
    end = "refused"
except ConnectionResetError:
    end = "reset"
except socket.timeout:
    end = "connect-timeout"
print(json.dumps({"end": end, "t_end": time.monotonic(), "bytes": total, "marks": marks}),
      flush=True)
"""


def _stream(topo: Topology, duration: float) -> subprocess.Popen[str]:
    return topo.popen(
        topo.client_ns,
        [
            sys.executable,
            "-c",
            TCP_STREAM_CLIENT,
            topo.addr["server"],
            str(TCP_PORT),
            str(duration),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def _result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=20)
    result: dict[str, Any] = json.loads(out.splitlines()[-1])
    return result


def test_tcp_stream_is_reset_then_flows_after_expiry(
    topology: Topology,  # noqa: F811
    router_table: NftTable,
) -> None:
    topo = topology
    topo.popen(
        topo.server_ns,
        [sys.executable, "-c", TCP_STREAM_SERVER, topo.addr["server"], str(TCP_PORT)],
    )
    topo.wait_listening(topo.server_ns, TCP_PORT)
    client = _stream(topo, 8.0)
    assert client.stdout is not None and client.stdout.readline().strip() == "ready"
    time.sleep(1.0)
    router_table.block_flow(topo.addr["client"], topo.addr["server"], TCP_PORT, "tcp", 2)
    t_block = time.monotonic()
    res = _result(client)
    before = [b for t, b in res["marks"] if t < t_block]
    late = [b for t, b in res["marks"] if t > t_block + 0.05]
    bytes_late = (late[-1] - before[-1]) if late else 0
    print(
        f"\nTCP: stream ended '{res['end']}' {(res['t_end'] - t_block) * 1000:.0f} ms after "
        f"block_flow() returned; {before[-1]} bytes before, {bytes_late} bytes after +50 ms"
    )
    assert before and before[-1] > 1_000_000  # it really was streaming
    assert res["end"] == "reset"  # the client's next packet drew a RST
    assert res["t_end"] - t_block < 1.0
    assert bytes_late <= 65536  # at most what was in flight
    assert router_table.counters()["reset"] >= 1
    # a new connection to the same server port is refused while the entry lives ...
    assert _result(_stream(topo, 0.5))["end"] == "refused"
    # ... and streams again once the 2 s entry has expired
    deadline = time.monotonic() + 5
    while router_table.list_blocks() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert router_table.list_blocks() == []
    again = _result(_stream(topo, 1.0))
    assert again["end"] == "timeout" and again["bytes"] > 500_000


def test_udp_flow_dropped_then_expires(
    topology: Topology,  # noqa: F811
    router_table: NftTable,
) -> None:
    topo = topology
    topo.popen(topo.server_ns, [sys.executable, "-c", UDP_ECHO, topo.addr["server"], str(UDP_PORT)])
    topo.wait_listening(topo.server_ns, UDP_PORT, proto="udp")
    client = topo.popen(
        topo.client_ns,
        [sys.executable, "-c", UDP_CLIENT, topo.addr["server"], str(UDP_PORT), "5.0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert client.stdout is not None
    assert client.stdout.readline().strip() == "ready"
    time.sleep(1.0)
    router_table.block_flow(topo.addr["client"], topo.addr["server"], UDP_PORT, "udp", 2)
    t_block = time.monotonic()
    out, _ = client.communicate(timeout=15)
    data = json.loads(out)
    sent = {int(k): v for k, v in data["sent"].items()}
    got = {int(k) for k in data["got"]}
    rel = {seq: ts - t_block for seq, ts in sent.items()}
    before = [s for s, r in rel.items() if r < -0.1]
    blocked = [s for s, r in rel.items() if 0.005 < r < 1.5]
    after = [s for s, r in rel.items() if r > 3.0]
    through = [rel[s] for s in got if rel[s] < 1.0]
    resumed = min(rel[s] for s in got if rel[s] > 0.5)
    print(
        f"\nUDP: last packet through was sent {max(through) * 1000:+.1f} ms after "
        f"block_flow() returned; traffic resumed {resumed:.2f} s later (timeout 2 s); "
        f"{len(sent)} sent, {len(got)} echoed"
    )
    assert len(before) > 200 and sum(s in got for s in before) >= 0.95 * len(before)
    assert blocked and not any(s in got for s in blocked)
    assert after and sum(s in got for s in after) >= 0.9 * len(after)
    assert max(through) < 0.005
    assert 1.5 <= resumed <= 3.0
    assert router_table.counters()["drop"] > 100


def test_pair_block_refuses_new_connections(
    topology: Topology,  # noqa: F811
    router_table: NftTable,
) -> None:
    topo = topology
    topo.popen(
        topo.server_ns,
        [sys.executable, "-m", "http.server", "--bind", topo.addr["server"], str(HTTP_PORT)],
    )
    topo.wait_listening(topo.server_ns, HTTP_PORT)
    url = f"http://{topo.addr['server']}:{HTTP_PORT}/"
    assert topo.run(topo.client_ns, ["curl", "-sS", "-o", "/dev/null", "--max-time", "5", url])
    router_table.block_pair(topo.addr["client"], topo.addr["server"], 30)
    t0 = time.monotonic()
    res = topo.run(
        topo.client_ns, ["curl", "-sS", "-o", "/dev/null", "--max-time", "5", url], check=False
    )
    assert res.returncode == 7 and time.monotonic() - t0 < 2  # reset at once, no timeout
    assert router_table.unblock(topo.addr["client"], topo.addr["server"])
    assert topo.run(topo.client_ns, ["curl", "-sS", "-o", "/dev/null", "--max-time", "5", url])

"""Build the captures the featurize benchmarks run on.

``many-flows``: written directly (no network) by ``tests/synthetic_captures.py``: ``--flows`` short
TLS-over-TCP conversations (handshake, a real ClientHello with SNI, a few server data
packets, FIN both ways), about 11 packets each, starting 0.5 ms apart so a few hundred
overlap; every 10th flow is preceded by a DNS query and answer (UDP) for its name.
Addresses are in 10.77.0.0/16; timestamps start at 2024-01-01.

``bulk-tls``: real traffic between two network namespaces this script creates
(``sf-bench-<pid>-c`` / ``-s``, joined by a veth pair created inside the client namespace,
10.77.60.1 <-> 10.77.60.2, no route anywhere else, segmentation/checksum offloads off so
the capture shows MTU-sized packets). A Python TLS server in the server namespace serves
``--parallel`` concurrent curl downloads; tcpdump captures them in the client namespace.
``--packets`` sets the target packet count (the download size follows from it). Both
namespaces are deleted afterwards, also on failure. Needs root, iproute2, ethtool,
openssl, curl and tcpdump.

Usage::

    python benchmarks/gen_captures.py many-flows OUT.pcap [--flows 120000]
    python benchmarks/gen_captures.py bulk-tls OUT.pcap [--packets 1200000] [--parallel 4]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.synthetic_captures import write_many_flows  # noqa: E402 (after the path setup)

__all__ = ["write_many_flows", "capture_bulk_tls"]

log = logging.getLogger("gen_captures")


# ---------------------------------------------------------------------------------------
# bulk-tls: real TLS downloads between two namespaces

_SERVER = r"""
import ssl, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse
BLOCK = bytes(range(256)) * 256
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        n = int(parse_qs(urlparse(self.path).query).get("n", ["0"])[0])
        self.send_response(200)
        self.send_header("Content-Length", str(n))
        self.end_headers()
        while n > 0:
            part = BLOCK[: min(n, len(BLOCK))]
            self.wfile.write(part)
            n -= len(part)
    def log_message(self, *args):
        pass
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
srv = ThreadingHTTPServer((sys.argv[1], 4433), H)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"""


def _run(argv: list[str], ns: str | None = None, timeout: float = 30.0) -> None:
    if ns is not None:
        argv = ["ip", "netns", "exec", ns, *argv]
    subprocess.run(argv, check=True, timeout=timeout, capture_output=True)


@contextmanager
def _namespaces() -> Iterator[tuple[str, str]]:
    base = f"sf-bench-{os.getpid()}"
    client, server = f"{base}-c", f"{base}-s"
    made: list[str] = []
    try:
        for ns in (client, server):
            _run(["ip", "netns", "add", ns])
            made.append(ns)
            _run(["ip", "link", "set", "lo", "up"], ns)
            for key in ("all", "default"):
                _run(["sysctl", "-q", "-w", f"net.ipv6.conf.{key}.disable_ipv6=1"], ns)
        # the pair is created inside the client namespace; one end moves to the server's
        _run(
            [
                "ip",
                "link",
                "add",
                "veth0",
                "type",
                "veth",
                "peer",
                "name",
                "veth1",
                "netns",
                server,
            ],
            client,
        )
        for ns, dev, addr in (
            (client, "veth0", "10.77.60.1/24"),
            (server, "veth1", "10.77.60.2/24"),
        ):
            _run(["ip", "addr", "add", addr, "dev", dev], ns)
            _run(["ip", "link", "set", dev, "up"], ns)
            _run(
                [
                    "ethtool",
                    "-K",
                    dev,
                    "tso",
                    "off",
                    "gso",
                    "off",
                    "gro",
                    "off",
                    "tx",
                    "off",
                    "rx",
                    "off",
                    "sg",
                    "off",
                ],
                ns,
            )
        yield client, server
    finally:
        for ns in made:
            pids = subprocess.run(
                ["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10
            ).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def capture_bulk_tls(
    path: Path,
    packets: int = 1_200_000,
    parallel: int = 4,
    snaplen: int = 262144,
    max_seconds: float = 240.0,
) -> None:
    """Capture ``parallel`` concurrent TLS downloads totalling about ``packets`` packets."""
    for tool in ("ip", "ethtool", "openssl", "curl", "tcpdump"):
        if shutil.which(tool) is None:
            sys.exit(f"bulk-tls needs {tool}")
    if os.geteuid() != 0:
        sys.exit("bulk-tls needs root (network namespaces)")
    per_download = int(packets * 1250 / parallel)  # data segments plus their ACKs
    with tempfile.TemporaryDirectory(prefix="sf-bench-") as tmp, _namespaces() as (cns, sns):
        cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        _run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=bench.shortflow.test",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ]
        )
        server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                sns,
                sys.executable,
                "-c",
                _SERVER,
                "10.77.60.2",
                str(cert),
                str(key),
            ]
        )
        dump = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                cns,
                "tcpdump",
                "-i",
                "veth0",
                "-n",
                "-s",
                str(snaplen),
                "-B",
                "262144",
                "-w",
                str(path),
            ],
            stderr=subprocess.PIPE,
        )
        try:
            time.sleep(1.5)  # let the server bind and tcpdump open the interface
            url = f"https://bench.shortflow.test:4433/blob?n={per_download}"
            curls = [
                subprocess.Popen(
                    [
                        "ip",
                        "netns",
                        "exec",
                        cns,
                        "curl",
                        "-sk",
                        "--max-time",
                        str(int(max_seconds)),
                        "--resolve",
                        "bench.shortflow.test:4433:10.77.60.2",
                        "-o",
                        os.devnull,
                        url,
                    ]
                )
                for _ in range(parallel)
            ]
            deadline = time.monotonic() + max_seconds + 10
            for c in curls:
                c.wait(timeout=max(1.0, deadline - time.monotonic()))
            time.sleep(0.5)
        finally:
            dump.send_signal(signal.SIGINT)
            try:
                _, err = dump.communicate(timeout=30)
                log.info("tcpdump: %s", err.decode(errors="replace").strip())
            except subprocess.TimeoutExpired:
                dump.kill()
            server.kill()
            server.wait(timeout=10)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="kind", required=True)
    p = sub.add_parser("many-flows")
    p.add_argument("out", type=Path)
    p.add_argument("--flows", type=int, default=120_000)
    p = sub.add_parser("bulk-tls")
    p.add_argument("out", type=Path)
    p.add_argument("--packets", type=int, default=1_200_000)
    p.add_argument("--parallel", type=int, default=4)
    p.add_argument("--snaplen", type=int, default=262144)
    args = parser.parse_args()
    started = time.perf_counter()
    if args.kind == "many-flows":
        n = write_many_flows(args.out, args.flows)
        print(
            f"wrote {args.out}: {n} packets, {args.flows} flows "
            f"({time.perf_counter() - started:.1f} s)"
        )
    else:
        capture_bulk_tls(args.out, args.packets, args.parallel, args.snaplen)
        print(
            f"wrote {args.out}: {args.out.stat().st_size} bytes "
            f"({time.perf_counter() - started:.1f} s)"
        )


if __name__ == "__main__":
    main()

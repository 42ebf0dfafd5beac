"""Network conditions on the lab router: rate, random drop, delay and jitter.

* Rate: a ``tbf`` qdisc on each router veth (towards the client: downstream rate; towards
  the server: upstream rate), with a queue limit of ``queue_ms``.
* Random drop: an nftables rule ``numgen random mod 1000 < N drop`` in the router
  namespace's own ``inet sflab`` table (forward hook, applied once per direction).
* Delay and jitter: this kernel has neither ``netem`` nor NFQUEUE, so forwarded packets are
  policy-routed through a TUN device (``sfd0``) in the router namespace; a small userspace
  *delay line* (:func:`run_delay_line`) reads each packet, holds it for the one-way delay
  plus a slowly varying jitter, and writes it back into the TUN, from where the kernel
  routes it on. Packets of one direction keep their order (FIFO), as on a real path.

The capture point is the router's client-facing veth, so the capture sees the client's
packets as they arrive and the server's packets after delay, drop and shaping.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import random
import select
import signal
import struct
import sys
import time
from collections import deque
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path

from training.lab.topology import (
    CLIENT_NET,
    MTU,
    ROUTER_CLIENT_IF,
    ROUTER_SERVER_IF,
    LabError,
    LabTopology,
    child_env,
    repo_root,
    wait_for_marker,
)

__all__ = [
    "Profile",
    "PROFILES",
    "get_profile",
    "install_delay_path",
    "apply_profile",
    "run_delay_line",
    "DELAY_DEV",
]

_log = logging.getLogger(__name__)

DELAY_DEV = "sfd0"
_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000
_TABLE = 100


@dataclass(frozen=True, slots=True)
class Profile:
    """Access-link conditions: rates (Mbit/s), one-way delay and jitter (ms), drop (1/1000)."""

    name: str
    down_mbit: float
    up_mbit: float
    delay_ms: float
    jitter_ms: float
    loss_per_mille: int
    queue_ms: int

    def describe(self) -> str:
        """One line for logs and manifest notes."""
        return (
            f"{self.name}: {self.down_mbit:g}/{self.up_mbit:g} Mbit/s, "
            f"+{2 * self.delay_ms:g}±{self.jitter_ms:g} ms RTT, "
            f"drop {self.loss_per_mille / 10:g}%"
        )


#: Named profiles. Rates are scaled to a lab that must stay light on 2 cores; delays and
#: losses are typical of each access type (see datasets/lab/README.md).
PROFILES: dict[str, Profile] = {
    "wifi": Profile("wifi", 40.0, 20.0, 8.0, 4.0, 1, 60),
    "lte": Profile("lte", 15.0, 6.0, 25.0, 8.0, 2, 120),
    "fibre": Profile("fibre", 50.0, 25.0, 3.0, 0.5, 0, 20),
}


def get_profile(name: str) -> Profile:
    """The profile called ``name``.

    Raises:
        LabError: unknown name.
    """
    try:
        return PROFILES[name]
    except KeyError:
        raise LabError(
            f"unknown network profile {name!r}; choose one of {', '.join(PROFILES)}"
        ) from None


def install_delay_path(topo: LabTopology) -> None:
    """Create the TUN device and the policy routes that send forwarded packets through it.

    Raises:
        LabError: a command failed.
    """
    r = topo.router_ns
    topo.run(r, ["ip", "tuntap", "add", "dev", DELAY_DEV, "mode", "tun"])
    topo.run(r, ["ip", "link", "set", DELAY_DEV, "mtu", str(MTU), "up"])
    topo.run(r, ["ethtool", "-K", DELAY_DEV, "tso", "off", "gso", "off", "gro", "off"], check=False)
    for key in ("all", "default", DELAY_DEV, ROUTER_CLIENT_IF, ROUTER_SERVER_IF):
        topo.run(r, ["sysctl", "-q", "-w", f"net.ipv4.conf.{key}.rp_filter=0"])
    topo.run(
        r, ["ip", "rule", "add", "iif", ROUTER_CLIENT_IF, "lookup", str(_TABLE), "pref", "100"]
    )
    topo.run(
        r, ["ip", "rule", "add", "iif", ROUTER_SERVER_IF, "lookup", str(_TABLE), "pref", "101"]
    )
    topo.run(r, ["ip", "route", "add", "default", "dev", DELAY_DEV, "table", str(_TABLE)])


def _tbf(topo: LabTopology, dev: str, mbit: float, queue_ms: int) -> None:
    burst = max(15_000, int(mbit * 1e6 / 8 * 0.004))
    topo.run(
        topo.router_ns,
        [
            "tc",
            "qdisc",
            "replace",
            "dev",
            dev,
            "root",
            "tbf",
            "rate",
            f"{mbit}mbit",
            "burst",
            str(burst),
            "latency",
            f"{queue_ms}ms",
        ],
    )


def apply_profile(topo: LabTopology, profile: Profile, work_dir: Path, seed: int = 0) -> object:
    """Set shaping and drop for ``profile`` and (re)start the delay line.

    Returns the delay-line process (stopped by the topology on close).

    Raises:
        LabError: a command failed or the delay line did not start.
    """
    _tbf(topo, ROUTER_CLIENT_IF, profile.down_mbit, profile.queue_ms)
    _tbf(topo, ROUTER_SERVER_IF, profile.up_mbit, profile.queue_ms)
    rules = (
        f'iifname "{DELAY_DEV}" numgen random mod 1000 < {profile.loss_per_mille} drop'
        if profile.loss_per_mille > 0
        else ""
    )
    script = (
        "add table inet sflab\n"
        "delete table inet sflab\n"
        "table inet sflab {\n"
        "  chain labdrop {\n"
        "    type filter hook forward priority 0; policy accept;\n"
        f"    {rules}\n"
        "  }\n"
        "}\n"
    )
    nft_file = work_dir / "sflab.nft"
    nft_file.write_text(script)
    topo.run(topo.router_ns, ["nft", "-f", str(nft_file)])
    log = work_dir / f"delayline-{profile.name}-{seed}.log"
    proc = topo.popen(
        topo.router_ns,
        [
            sys.executable,
            "-m",
            "training.lab.conditions",
            "delay-line",
            "--dev",
            DELAY_DEV,
            "--delay-ms",
            str(profile.delay_ms),
            "--jitter-ms",
            str(profile.jitter_ms),
            "--seed",
            str(seed),
        ],
        log=log,
        env=child_env(),
        cwd=repo_root(),
    )
    wait_for_marker(proc, log, "READY", 15.0)
    _log.info("network profile %s", profile.describe())
    return proc


def _open_tun(dev: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", dev.encode(), _IFF_TUN | _IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def run_delay_line(
    dev: str,
    delay_ms: float,
    jitter_ms: float,
    seed: int,
    client_net: str = CLIENT_NET,
    max_queue: int = 20_000,
    stop_after_s: float | None = None,
) -> int:
    """Forward IPv4 packets read from TUN ``dev`` back into it after delay + jitter.

    Packets towards ``client_net`` and packets from it are two FIFO queues; each packet is
    due at ``arrival + delay + jitter(t)``, where jitter is redrawn uniformly in
    ``±jitter_ms`` every 20 ms, and never before the packet ahead of it. Returns the number
    of packets forwarded when stopped (SIGTERM/SIGINT or ``stop_after_s``).

    Raises:
        OSError: the TUN device cannot be opened (not in the router namespace).
    """
    fd = _open_tun(dev)
    net = IPv4Network(client_net)
    net_int, mask = int(net.network_address), int(net.netmask)
    rng = random.Random(seed)
    base = delay_ms / 1000.0
    jit = jitter_ms / 1000.0
    queues: dict[bool, deque[tuple[float, bytes]]] = {True: deque(), False: deque()}
    last_due = {True: 0.0, False: 0.0}
    offset = {True: 0.0, False: 0.0}
    next_jitter = 0.0
    stop = False
    forwarded = 0

    def _stop(_sig: int, _frm: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    end = time.monotonic() + stop_after_s if stop_after_s is not None else float("inf")
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    try:
        while not stop and time.monotonic() < end:
            now = time.monotonic()
            heads = [q[0][0] for q in queues.values() if q]
            timeout = max(0.0, min(heads) - now) if heads else 0.2
            try:
                readable, _, _ = select.select([fd], [], [], timeout)
            except InterruptedError:
                continue
            now = time.monotonic()
            if now >= next_jitter:
                offset = {True: rng.uniform(-jit, jit), False: rng.uniform(-jit, jit)}
                next_jitter = now + 0.02
            if readable:
                for _ in range(512):
                    try:
                        pkt = os.read(fd, 65536)
                    except BlockingIOError:
                        break
                    if len(pkt) < 20 or pkt[0] >> 4 != 4:
                        continue
                    down = int.from_bytes(pkt[16:20], "big") & mask == net_int
                    q = queues[down]
                    if len(q) >= max_queue:
                        continue
                    due = max(now + max(0.0, base + offset[down]), last_due[down])
                    last_due[down] = due
                    q.append((due, pkt))
            for q in queues.values():
                while q and q[0][0] <= now:
                    try:
                        os.write(fd, q.popleft()[1])
                        forwarded += 1
                    except OSError:
                        pass
    finally:
        os.close(fd)
    return forwarded


def main(argv: list[str] | None = None) -> int:
    """``python -m training.lab.conditions delay-line ...`` (inside the router namespace)."""
    ap = argparse.ArgumentParser(prog="python -m training.lab.conditions")
    sub = ap.add_subparsers(dest="cmd", required=True)
    dl = sub.add_parser("delay-line", help="run the TUN delay line")
    dl.add_argument("--dev", default=DELAY_DEV)
    dl.add_argument("--delay-ms", type=float, required=True)
    dl.add_argument("--jitter-ms", type=float, default=0.0)
    dl.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=os.environ.get("SHORTFLOW_LAB_LOG", "WARNING"))
    n = run_delay_line(args.dev, args.delay_ms, args.jitter_ms, args.seed)
    sys.stdout.write(f"forwarded {n}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

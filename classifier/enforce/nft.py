"""The one nftables table shortflow owns: ``inet shortflow``, with timed sets.

Blocking works by adding elements to sets whose members carry timeouts; a forward-hook
chain drops UDP (QUIC) and resets TCP for packets that match a set, in either direction.
Because every element expires by itself, the router fails open: if shortflow dies, its
blocks run out and traffic flows again (the chains stay, but with empty sets they pass
everything).

Sets (``4``/``6`` suffix = IPv4/IPv6 variant):

* ``flows4``/``flows6``: ``client . server . server port . l4proto`` of blocked flows;
* ``pairs4``/``pairs6``: ``client . server`` pairs, every flow between the two is blocked;
* ``dns4``/``dns6``: server addresses filled by dnsmasq ``nftset=`` lines (see
  :mod:`classifier.enforce.dnsmasq`); traffic to and from them is blocked.

Two ways to talk to the kernel, same JSON commands:

* ``"lib"``: ``libnftables.so.1`` loaded with :mod:`ctypes`. A private worker thread enters
  the target network namespace once (``setns``), creates the nft context there and runs
  every command; the netlink socket therefore always lives in the right namespace while
  the rest of the process stays where it is. About a tenth of a millisecond per update.
* ``"cli"``: ``nft -j -f -`` (under ``ip netns exec NS`` when a namespace is given). Needs
  nothing but the ``nft`` binary; a few milliseconds per update (one process per call).

``backend="auto"`` takes ``"lib"`` when the library loads and falls back to ``"cli"``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import json
import logging
import os
import queue
import re
import shutil
import subprocess
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from classifier.errors import EnforcementError

__all__ = [
    "NftTable",
    "NftBlock",
    "Backend",
    "ruleset_text",
    "dns_rule",
    "TABLE",
    "FLOW_SETS",
    "PAIR_SETS",
    "DNS_SETS",
    "FORWARD_CHAIN",
    "VERDICT_CHAIN",
]

log = logging.getLogger(__name__)

Backend = Literal["auto", "lib", "cli"]

TABLE = "shortflow"
FLOW_SETS = ("flows4", "flows6")
PAIR_SETS = ("pairs4", "pairs6")
DNS_SETS = ("dns4", "dns6")
FORWARD_CHAIN = "forward"
VERDICT_CHAIN = "reset_or_drop"
CAPTURE_CHAIN = "capture"

_PROTOS = ("tcp", "udp")
_MAX_TIMEOUT_S = 7 * 24 * 3600
_CLONE_NEWNET = 0x40000000
_NFT_CTX_OUTPUT_JSON = 1 << 4
_NETNS_RE = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class NftBlock:
    """One live element of a shortflow set, as the kernel reports it.

    ``port`` and ``proto`` are ``None`` for pair blocks; ``kind`` is ``"flow"`` or ``"pair"``.
    ``timeout_s`` is the timeout it was added with and ``expires_s`` the seconds left (both
    whole seconds, as nftables JSON reports them).
    """

    kind: str
    client: str
    server: str
    port: int | None
    proto: str | None
    timeout_s: int | None
    expires_s: int | None


def dns_rule(version: str, server: Literal["daddr", "saddr"], match: str = "") -> str:
    """The forward chain's rule that sends traffic to (``daddr``) or from (``saddr``) a
    member of ``dns4``/``dns6`` (``version`` "4" or "6") to the verdict chain, for packets
    that also meet ``match`` (nft expressions, e.g. ``ip saddr { 10.0.0.2 } ``)."""
    fam = "ip" if version == "4" else "ip6"
    return f"    {match}{fam} {server} @dns{version} goto {VERDICT_CHAIN}"


def ruleset_text(
    table: str = TABLE,
    default_timeout_s: int = 300,
    dns_timeout_s: int = 3600,
    dns_rules: Sequence[str] | None = None,
) -> str:
    """Return the nft script that (re)builds the whole table in one transaction (what
    :meth:`NftTable.create` runs; ``nft -f`` takes it as it is). ``dns_rules`` replace the
    rules that block traffic to and from the ``dns4``/``dns6`` members for every client
    (:func:`dns_rule`)."""
    flow_t = "ipv{v}_addr . ipv{v}_addr . inet_service . inet_proto"
    lines = [
        f"add table inet {table}",
        f"delete table inet {table}",
        f"table inet {table} {{",
    ]
    for v in ("4", "6"):
        lines += [
            f"  set flows{v} {{ type {flow_t.format(v=v)}; flags timeout; "
            f"timeout {default_timeout_s}s; size 65536; }}",
            f"  set pairs{v} {{ type ipv{v}_addr . ipv{v}_addr; flags timeout; "
            f"timeout {default_timeout_s}s; size 65536; }}",
            f"  set dns{v} {{ type ipv{v}_addr; flags timeout; "
            f"timeout {dns_timeout_s}s; size 65536; }}",
        ]
    lines += [
        f"  chain {VERDICT_CHAIN} {{",
        "    meta l4proto tcp counter reject with tcp reset",
        "    counter drop",
        "  }",
        f"  chain {FORWARD_CHAIN} {{",
        "    type filter hook forward priority filter - 5; policy accept;",
    ]
    for v, fam in (("4", "ip"), ("6", "ip6")):
        lines += [
            f"    meta l4proto {{ tcp, udp }} {fam} saddr . {fam} daddr . th dport . "
            f"meta l4proto @flows{v} goto {VERDICT_CHAIN}",
            f"    meta l4proto {{ tcp, udp }} {fam} daddr . {fam} saddr . th sport . "
            f"meta l4proto @flows{v} goto {VERDICT_CHAIN}",
            f"    {fam} saddr . {fam} daddr @pairs{v} goto {VERDICT_CHAIN}",
            f"    {fam} daddr . {fam} saddr @pairs{v} goto {VERDICT_CHAIN}",
        ]
        if dns_rules is None:
            lines += [dns_rule(v, "daddr"), dns_rule(v, "saddr")]
    lines += [*(dns_rules or ()), "  }", "}"]
    return "\n".join(lines) + "\n"


def _enable_conntrack_accounting() -> None:
    """Turn on per-connection packet counters (``ct packets``) in this namespace."""
    path = Path("/proc/sys/net/netfilter/nf_conntrack_acct")
    try:
        path.write_text("1\n")
    except OSError as exc:
        log.warning("cannot enable conntrack accounting (%s): every packet is copied whole", exc)


def _first_error_line(text: str) -> str:
    """Pick the most telling line of an nft error buffer."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        if "Error:" in ln:
            return ln.split("Error:", 1)[1].strip()
    return lines[0] if lines else "unknown error"


class _CliBackend:
    """Runs nft commands through the ``nft`` binary, one process per call."""

    name = "cli"

    def __init__(self, netns: str | None) -> None:
        nft = shutil.which("nft")
        if nft is None:
            raise EnforcementError("the nft command is not installed (apt install nftables)")
        prefix: list[str] = []
        if netns is not None:
            ip = shutil.which("ip")
            if ip is None:
                raise EnforcementError("the ip command is not installed (apt install iproute2)")
            prefix = [ip, "netns", "exec", netns]
        self._prefix = prefix
        self._nft = nft

    def run(self, payload: str, *, json_io: bool) -> str:
        """Run one nft script; return its standard output or raise EnforcementError."""
        argv = [*self._prefix, self._nft, *(["-j"] if json_io else []), "-f", "-"]
        try:
            proc = subprocess.run(
                argv, input=payload, capture_output=True, text=True, timeout=30, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise EnforcementError("nft did not answer within 30 s") from exc
        if proc.returncode != 0:
            raise EnforcementError(_first_error_line(proc.stderr or proc.stdout))
        return proc.stdout

    def close(self) -> None:
        """Nothing to release."""


class _LibBackend:
    """Runs nft commands through libnftables in a worker thread inside the namespace."""

    name = "lib"

    def __init__(self, netns: str | None) -> None:
        libname = ctypes.util.find_library("nftables") or "libnftables.so.1"
        try:
            lib = ctypes.CDLL(libname, use_errno=True)
        except OSError as exc:
            raise EnforcementError(f"cannot load libnftables: {exc}") from exc
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self._lib = lib
        self._netns = netns
        self._jobs: queue.SimpleQueue[tuple[str, bool, Future[str]] | None] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._init_error: EnforcementError | None = None
        self._thread = threading.Thread(
            target=self._main, name=f"nft-{netns or 'host'}", daemon=True
        )
        self._thread.start()
        self._ready.wait(10)
        if self._init_error is not None:
            raise self._init_error
        if not self._ready.is_set():
            raise EnforcementError("libnftables worker did not start within 10 s")

    def _enter_netns(self) -> None:
        if self._netns is None:
            return
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            fd = os.open(f"/run/netns/{self._netns}", os.O_RDONLY)
        except OSError as exc:
            raise EnforcementError(
                f"network namespace {self._netns!r} cannot be opened: {exc.strerror}"
            ) from exc
        try:
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise EnforcementError(
                    f"cannot enter network namespace {self._netns!r}: {os.strerror(err)}"
                )
        finally:
            os.close(fd)

    def _main(self) -> None:
        lib = self._lib
        try:
            self._enter_netns()
            ctx = lib.nft_ctx_new(0)
            if not ctx:
                raise EnforcementError("nft_ctx_new failed")
        except EnforcementError as exc:
            self._init_error = exc
            self._ready.set()
            return
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        self._ready.set()
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                payload, json_io, fut = job
                if not fut.set_running_or_notify_cancel():
                    continue
                lib.nft_ctx_output_set_flags(ctx, _NFT_CTX_OUTPUT_JSON if json_io else 0)
                rc = lib.nft_run_cmd_from_buffer(ctx, payload.encode())
                out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
                err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
                if rc != 0:
                    fut.set_exception(EnforcementError(_first_error_line(err)))
                else:
                    fut.set_result(out)
        finally:
            lib.nft_ctx_free(ctx)

    def run(self, payload: str, *, json_io: bool) -> str:
        """Run one nft script in the namespace; return its output or raise EnforcementError."""
        if not self._thread.is_alive():
            raise EnforcementError("libnftables worker is closed")
        fut: Future[str] = Future()
        self._jobs.put((payload, json_io, fut))
        try:
            return fut.result(timeout=30)
        except TimeoutError as exc:
            raise EnforcementError("libnftables did not answer within 30 s") from exc

    def close(self) -> None:
        """Stop the worker thread and free the nft context."""
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join(5)


def _addr(value: str, what: str) -> Address:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise EnforcementError(f"{what} {value!r} is not an IP address") from None


def _pair(client: str, server: str) -> tuple[Address, Address, str]:
    c = _addr(client, "client")
    s = _addr(server, "server")
    if c.version != s.version:
        raise EnforcementError(f"client {client} and server {server} are not of one address family")
    return c, s, str(c.version)


def _check_port_proto(port: int, proto: str) -> str:
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise EnforcementError(f"port {port!r} is not in 1..65535")
    p = str(proto).lower()
    if p in ("6",):
        p = "tcp"
    elif p in ("17",):
        p = "udp"
    if p not in _PROTOS:
        raise EnforcementError(f"protocol {proto!r} is not tcp or udp")
    return p


def _check_timeout(timeout_s: float) -> int:
    try:
        t = float(timeout_s)
    except (TypeError, ValueError):
        raise EnforcementError(f"timeout {timeout_s!r} is not a number of seconds") from None
    if not 1 <= t <= _MAX_TIMEOUT_S:
        raise EnforcementError(f"timeout {timeout_s!r} s is not in 1..{_MAX_TIMEOUT_S}")
    return max(1, round(t))


class NftTable:
    """Owns the nftables table ``inet shortflow`` in one network namespace, and only it.

    ``netns`` names a namespace under ``/run/netns`` (``ip netns``); ``None`` means the
    namespace this process runs in. ``backend`` picks libnftables (``"lib"``), the ``nft``
    binary (``"cli"``) or the first that works (``"auto"``).

    Every method raises :class:`~classifier.errors.EnforcementError` with a one-line message
    when nftables refuses (missing CAP_NET_ADMIN, no such namespace, bad address, ...).
    """

    def __init__(
        self,
        netns: str | None = None,
        *,
        backend: Backend = "auto",
        table: str = TABLE,
        default_timeout_s: int = 300,
        dns_timeout_s: int = 3600,
    ) -> None:
        if netns is not None and not _NETNS_RE.match(netns):
            raise EnforcementError(f"network namespace name {netns!r} is not valid")
        if not re.match(r"^[A-Za-z][A-Za-z0-9_]{0,30}$", table):
            raise EnforcementError(f"table name {table!r} is not valid")
        self.netns = netns
        self.table = table
        self._default_timeout_s = _check_timeout(default_timeout_s)
        self._dns_timeout_s = _check_timeout(dns_timeout_s)
        self._lock = threading.RLock()
        self._backend: _LibBackend | _CliBackend
        if backend == "lib":
            self._backend = _LibBackend(netns)
        elif backend == "cli":
            self._backend = _CliBackend(netns)
        elif backend == "auto":
            try:
                self._backend = _LibBackend(netns)
            except EnforcementError as exc:
                log.info("libnftables unavailable (%s); using the nft command", exc)
                self._backend = _CliBackend(netns)
        else:
            raise EnforcementError(f"backend {backend!r} is not auto, lib or cli")

    @property
    def backend(self) -> str:
        """``"lib"`` or ``"cli"``: the way commands reach the kernel."""
        return self._backend.name

    def _where(self) -> str:
        return f"netns {self.netns}" if self.netns else "this namespace"

    def _run(self, what: str, payload: str, *, json_io: bool) -> str:
        with self._lock:
            try:
                return self._backend.run(payload, json_io=json_io)
            except EnforcementError as exc:
                raise EnforcementError(f"nft {what} failed in {self._where()}: {exc}") from None

    def _run_json(self, what: str, commands: list[dict[str, Any]]) -> str:
        return self._run(what, json.dumps({"nftables": commands}), json_io=True)

    # -- table ----------------------------------------------------------------------------

    def create(self) -> None:
        """Build (or rebuild, atomically and empty) the table with its sets and chains.

        Raises EnforcementError when nftables refuses, e.g. without CAP_NET_ADMIN.
        """
        text = ruleset_text(self.table, self._default_timeout_s, self._dns_timeout_s)
        self._run("create table", text, json_io=False)
        log.info("nft table inet %s created in %s", self.table, self._where())

    def add_capture(self, group: int, *, full_packets: int = 12, snaplen: int = 96) -> None:
        """Add the live capture chain: copy forwarded packets to NFLOG ``group`` (read by
        :class:`classifier.capture.live.NflogSource`), whole for DNS answers and for the first
        ``full_packets`` packets of each connection (ClientHello, QUIC Initial), only the
        first ``snaplen`` bytes (headers) after that. Logging never holds a packet back.

        ``ct packets`` needs conntrack accounting: it is switched on for this namespace when
        shortflow runs in it (without it every packet is copied whole, which still works).
        Raises EnforcementError when nftables refuses.
        """
        if not 0 <= group <= 65535 or full_packets < 1 or not 40 <= snaplen <= 65535:
            raise EnforcementError("capture: bad nflog group, packet count or snaplen")
        if self.netns is None:
            _enable_conntrack_accounting()
        text = (
            "\n".join(
                [
                    f"add chain inet {self.table} {CAPTURE_CHAIN} "
                    "{ type filter hook forward priority filter - 10; policy accept; }",
                    f"add rule inet {self.table} {CAPTURE_CHAIN} udp sport 53 "
                    f"log group {group} accept",
                    f"add rule inet {self.table} {CAPTURE_CHAIN} ct packets < {full_packets} "
                    f"log group {group} accept",
                    f"add rule inet {self.table} {CAPTURE_CHAIN} log group {group} "
                    f"snaplen {snaplen}",
                ]
            )
            + "\n"
        )
        self._run("add capture chain", text, json_io=False)
        log.info("nft capture chain -> nflog group %d in %s", group, self._where())

    def exists(self) -> bool:
        """Whether the table is present. Raises EnforcementError if nft cannot be asked."""
        out = self._run_json("list tables", [{"list": {"tables": {"family": "inet"}}}])
        for item in _items(out):
            t = item.get("table")
            if isinstance(t, dict) and t.get("name") == self.table and t.get("family") == "inet":
                return True
        return False

    def delete(self) -> None:
        """Remove our table (nothing else); a missing table is not an error.

        Raises EnforcementError when nftables refuses.
        """
        self._run(
            "delete table",
            f"add table inet {self.table}\ndelete table inet {self.table}\n",
            json_io=False,
        )
        log.info("nft table inet %s deleted in %s", self.table, self._where())

    def close(self) -> None:
        """Release the backend (the table stays; call :meth:`delete` to remove it)."""
        self._backend.close()

    # -- elements -------------------------------------------------------------------------

    def _elem_cmds(self, set_name: str, key: Any, timeout: int) -> list[dict[str, Any]]:
        """add + delete + add in one transaction: creates the element or renews its timeout."""
        base = {"family": "inet", "table": self.table, "name": set_name}
        add = {"add": {"element": {**base, "elem": [{"elem": {"val": key, "timeout": timeout}}]}}}
        delete = {"delete": {"element": {**base, "elem": [key]}}}
        return [add, delete, add]

    def block_flow(self, client: str, server: str, port: int, proto: str, timeout_s: float) -> None:
        """Block one flow (both directions) for ``timeout_s`` seconds; renews if present.

        TCP gets a reset, UDP is dropped. Raises EnforcementError on a bad address, port,
        protocol or timeout, or when nftables refuses.
        """
        c, s, v = _pair(client, server)
        p = _check_port_proto(port, proto)
        t = _check_timeout(timeout_s)
        key = {"concat": [str(c), str(s), port, p]}
        self._run_json("add element", self._elem_cmds(f"flows{v}", key, t))

    def block_pair(self, client: str, server: str, timeout_s: float) -> None:
        """Block all traffic between ``client`` and ``server`` for ``timeout_s`` seconds.

        Raises EnforcementError on bad input or when nftables refuses.
        """
        c, s, v = _pair(client, server)
        t = _check_timeout(timeout_s)
        key = {"concat": [str(c), str(s)]}
        self._run_json("add element", self._elem_cmds(f"pairs{v}", key, t))

    def block_addresses(self, servers: Sequence[str], timeout_s: float) -> None:
        """Put server addresses into the ``dns4``/``dns6`` sets (as dnsmasq would).

        Raises EnforcementError on bad input or when nftables refuses.
        """
        t = _check_timeout(timeout_s)
        cmds: list[dict[str, Any]] = []
        for server in servers:
            a = _addr(server, "server")
            cmds += self._elem_cmds(f"dns{a.version}", str(a), t)
        if cmds:
            self._run_json("add element", cmds)

    def unblock(
        self, client: str, server: str, port: int | None = None, proto: str | None = None
    ) -> bool:
        """Remove a flow block (with ``port`` and ``proto``) or a pair block (without).

        Returns False when no such element exists (for instance it has expired already).
        Raises EnforcementError on bad input or when nftables refuses for another reason.
        """
        c, s, v = _pair(client, server)
        key: dict[str, list[str | int]]
        if port is None and proto is None:
            set_name, key = f"pairs{v}", {"concat": [str(c), str(s)]}
        elif port is not None and proto is not None:
            p = _check_port_proto(port, proto)
            set_name, key = f"flows{v}", {"concat": [str(c), str(s), port, p]}
        else:
            raise EnforcementError("unblock needs both port and proto, or neither")
        base = {"family": "inet", "table": self.table, "name": set_name}
        try:
            self._run_json("delete element", [{"delete": {"element": {**base, "elem": [key]}}}])
        except EnforcementError as exc:
            if "No such file or directory" in str(exc):
                return False
            raise
        return True

    def _table_items(self) -> list[dict[str, Any]]:
        cmd = {"list": {"table": {"family": "inet", "name": self.table}}}
        try:
            return _items(self._run_json("list table", [cmd]))
        except EnforcementError as exc:
            if "No such file or directory" in str(exc):
                raise EnforcementError(
                    f"table inet {self.table} does not exist in {self._where()}; create() it first"
                ) from None
            raise

    def list_blocks(self) -> list[NftBlock]:
        """Return the live flow and pair elements of the table (expired ones are gone).

        Raises EnforcementError when the table is missing or nftables refuses.
        """
        blocks: list[NftBlock] = []
        for item in self._table_items():
            st = item.get("set")
            if not isinstance(st, dict) or st.get("name") not in (*FLOW_SETS, *PAIR_SETS):
                continue
            kind = "flow" if str(st["name"]).startswith("flows") else "pair"
            for raw in st.get("elem", []) or []:
                b = _parse_elem(kind, raw)
                if b is not None:
                    blocks.append(b)
        return blocks

    def list_addresses(self) -> list[str]:
        """Return the addresses in the ``dns4``/``dns6`` sets.

        Raises EnforcementError when the table is missing or nftables refuses.
        """
        result: list[str] = []
        for item in self._table_items():
            st = item.get("set")
            if not isinstance(st, dict) or st.get("name") not in DNS_SETS:
                continue
            for raw in st.get("elem", []) or []:
                val = raw.get("elem", {}).get("val") if isinstance(raw, dict) else raw
                if isinstance(val, str):
                    result.append(val)
        return result

    def counters(self) -> dict[str, int]:
        """Packets sent to the verdict chain so far: ``{"reset": n, "drop": m}``.

        Raises EnforcementError when the table is missing or nftables refuses.
        """
        result = {"reset": 0, "drop": 0}
        for item in self._table_items():
            rule = item.get("rule")
            if not isinstance(rule, dict) or rule.get("chain") != VERDICT_CHAIN:
                continue
            exprs = [e for e in rule.get("expr", []) if isinstance(e, dict)]
            packets = next((int(e["counter"]["packets"]) for e in exprs if "counter" in e), 0)
            if any("reject" in e for e in exprs):
                result["reset"] += packets
            elif any("drop" in e for e in exprs):
                result["drop"] += packets
        return result

    def __enter__(self) -> NftTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _items(out: str) -> list[dict[str, Any]]:
    """The objects of an nft JSON answer (empty for an empty answer)."""
    if not out.strip():
        return []
    try:
        doc = json.loads(out)
    except json.JSONDecodeError as exc:
        raise EnforcementError(f"nft answered with invalid JSON: {exc}") from None
    items = doc.get("nftables", []) if isinstance(doc, dict) else []
    return [i for i in items if isinstance(i, dict)]


def _parse_elem(kind: str, raw: Any) -> NftBlock | None:
    timeout = expires = None
    val = raw
    if isinstance(raw, dict) and "elem" in raw:
        inner = raw["elem"]
        val = inner.get("val")
        timeout = inner.get("timeout")
        expires = inner.get("expires")
    if not isinstance(val, dict) or "concat" not in val:
        return None
    parts = val["concat"]
    if kind == "flow" and len(parts) == 4:
        return NftBlock(
            "flow", str(parts[0]), str(parts[1]), int(parts[2]), str(parts[3]), timeout, expires
        )
    if kind == "pair" and len(parts) == 2:
        return NftBlock("pair", str(parts[0]), str(parts[1]), None, None, timeout, expires)
    return None

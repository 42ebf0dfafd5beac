"""An embedded DNS forwarder that sinkholes short-form names and reports every answer.

One thread, one ``selectors`` loop, two UDP sockets: queries arrive on the listening socket,
are sent upstream with a fresh transaction ID on a socket connected to the upstream
server, and the answer goes back to the client with its own ID. Every upstream answer is
also handed to ``on_answer(payload, ts)`` (the live mode feeds its name cache with it).
Names under a sinkhole suffix of the policy are answered locally: ``0.0.0.0`` / ``::``
(``zero``; other query types get an empty NOERROR) or NXDOMAIN, and each is written to the
audit log. In ``dry-run`` mode a sinkhole is only logged (``dry-run-sinkhole``) and the
query is forwarded. An upstream that does not answer within ``timeout_s`` yields SERVFAIL.

The hot path reads the question with a small bounds-checked reader and rewrites the two
ID bytes only; dnslib builds the sinkhole answers. UDP only (a client that gets a
truncated answer and retries over TCP is not served).
"""

from __future__ import annotations

import ipaddress
import logging
import random
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dnslib import AAAA, QTYPE, RCODE, RR, A, DNSError, DNSRecord

from classifier.enforce.audit import AuditLog
from classifier.enforce.policy import Policy, PolicyHolder
from classifier.errors import EnforcementError, ShortflowError

__all__ = ["DnsSinkhole", "OnAnswer", "QueryOutcome", "SINKHOLE_TTL"]

log = logging.getLogger(__name__)

OnAnswer = Callable[[bytes, float], None]
SINKHOLE_TTL = 60

_QTYPE_A = 1
_QTYPE_AAAA = 28
_MAX_UDP = 65535
_BATCH = 256


@dataclass(slots=True, frozen=True)
class QueryOutcome:
    """What :meth:`DnsSinkhole.decide` makes of one client datagram."""

    action: str  # "malformed" | "sinkhole" | "forward"
    reply: bytes | None  # to send back at once (FORMERR, sinkhole answer), or None
    qend: int  # end offset of the question section (0 when malformed)
    event: dict[str, Any] | None  # audit event (sinkhole / dry-run-sinkhole), or None


@dataclass(slots=True)
class _Pending:
    client_id: bytes
    client: tuple[Any, ...]
    deadline: float
    question: bytes  # question section, lower-cased, to match the answer against
    query: bytes  # the client's query up to the question (for SERVFAIL; not its tail,
    # so a pending query holds at most ~270 bytes however big the datagram was)


def _question(data: bytes) -> tuple[str, int, int]:
    """Return (name, qtype, end offset) of the single question of a DNS query.

    Raises ValueError when the message is not a well-formed one-question query.
    """
    if len(data) < 17:
        raise ValueError("short message")
    flags, qdcount = struct.unpack_from("!HH", data, 2)
    if flags & 0x8000 or qdcount != 1:
        raise ValueError("not a one-question query")
    pos = 12
    labels: list[str] = []
    total = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated name")
        n = data[pos]
        pos += 1
        if n == 0:
            break
        if n > 63:
            raise ValueError("compressed or bad label in question")
        total += n + 1
        if total > 255 or pos + n > len(data):
            raise ValueError("name too long or truncated")
        labels.append(data[pos : pos + n].decode("ascii", "replace").lower())
        pos += n
    if pos + 4 > len(data):
        raise ValueError("truncated question")
    qtype = struct.unpack_from("!H", data, pos)[0]
    return ".".join(labels), qtype, pos + 4


def _error_reply(query: bytes, qend: int, rcode: int) -> bytes:
    """A minimal answer (same ID and question, no records) with ``rcode``."""
    flags = struct.unpack_from("!H", query, 2)[0]
    out_flags = 0x8000 | (flags & 0x7900) | 0x0080 | (rcode & 0xF)  # QR, opcode+RD, RA
    return query[:2] + struct.pack("!HHHHH", out_flags, 1, 0, 0, 0) + query[12:qend]


def _formerr(query: bytes) -> bytes | None:
    if len(query) < 12:
        return None
    flags = struct.unpack_from("!H", query, 2)[0]
    if flags & 0x8000:
        return None  # never answer an answer
    return query[:2] + struct.pack("!HHHHH", 0x8000 | (flags & 0x7900) | 0x0080 | 1, 0, 0, 0, 0)


def _family(host: str) -> socket.AddressFamily:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        raise EnforcementError(f"DNS address {host!r} is not an IP address") from None


class DnsSinkhole:
    """DNS forwarder on ``listen`` to ``upstream`` that sinkholes names of the policy.

    ``policy`` is a :class:`PolicyHolder` (reloads take effect at once) or a fixed
    :class:`Policy`; ``None`` means :meth:`Policy.default`. ``mac_lookup`` maps a client IP to
    its MAC for MAC-based client rules (the router's neighbour table); without it only IP
    rules match. ``on_answer`` exceptions are logged and never stop the loop.

    :meth:`start` raises EnforcementError when an address is bad or cannot be bound.
    """

    def __init__(
        self,
        listen: tuple[str, int],
        upstream: tuple[str, int],
        *,
        policy: PolicyHolder | Policy | None = None,
        audit: AuditLog | None = None,
        on_answer: OnAnswer | None = None,
        timeout_s: float = 2.0,
        mac_lookup: Callable[[str], str | None] | None = None,
    ) -> None:
        if not 0.05 <= timeout_s <= 30:
            raise EnforcementError(f"DNS upstream timeout {timeout_s!r} s is not in 0.05..30")
        self._listen_addr = listen
        self._upstream_addr = upstream
        self._listen_family = _family(listen[0])
        self._upstream_family = _family(upstream[0])
        if isinstance(policy, PolicyHolder):
            holder = policy
            self._policy: Callable[[], Policy] = lambda: holder.current
        else:
            fixed = policy or Policy.default()
            self._policy = lambda: fixed
        self._audit = audit
        self._on_answer = on_answer
        self._timeout_s = timeout_s
        self._mac_lookup = mac_lookup
        self._pending: dict[int, _Pending] = {}
        self._next_id = random.randrange(65536)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._up: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self.stats: dict[str, int] = {
            "queries": 0,
            "forwarded": 0,
            "answered": 0,
            "sinkholed": 0,
            "dry_run_sinkholed": 0,
            "servfail": 0,
            "malformed": 0,
            "late": 0,
        }

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) actually listened on (useful with port 0)."""
        if self._sock is None:
            raise EnforcementError("DNS sinkhole is not started")
        name = self._sock.getsockname()
        return (str(name[0]), int(name[1]))

    def start(self) -> None:
        """Bind the sockets and start the loop thread.

        Raises EnforcementError when an address cannot be bound or reached.
        """
        if self._thread is not None:
            raise EnforcementError("DNS sinkhole is already started")
        try:
            sock = socket.socket(self._listen_family, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.bind(self._listen_addr)
            sock.setblocking(False)
        except OSError as exc:
            raise EnforcementError(
                f"cannot listen for DNS on {self._listen_addr[0]}:{self._listen_addr[1]}: "
                f"{exc.strerror}"
            ) from None
        try:
            up = socket.socket(self._upstream_family, socket.SOCK_DGRAM)
            up.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            up.connect(self._upstream_addr)
            up.setblocking(False)
        except OSError as exc:
            sock.close()
            raise EnforcementError(
                f"cannot reach DNS upstream {self._upstream_addr[0]}:{self._upstream_addr[1]}: "
                f"{exc.strerror}"
            ) from None
        self._sock, self._up = sock, up
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="dns-sinkhole", daemon=True)
        self._thread.start()
        log.info(
            "DNS sinkhole on %s:%d -> %s:%d",
            *self.address,
            self._upstream_addr[0],
            self._upstream_addr[1],
        )

    def stop(self) -> None:
        """Stop the loop and close the sockets. Idempotent."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        if self._wake_w is not None:
            try:
                self._wake_w.send(b"x")
            except OSError:
                pass
        thread.join(5)
        if thread.is_alive():
            log.warning("DNS sinkhole thread did not stop within 5 s")
        for s in (self._sock, self._up, self._wake_r, self._wake_w):
            if s is not None:
                s.close()
        self._sock = self._up = self._wake_r = self._wake_w = None
        self._pending.clear()
        self._thread = None

    def __enter__(self) -> DnsSinkhole:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- loop -----------------------------------------------------------------------------

    def _loop(self) -> None:
        assert self._sock and self._up and self._wake_r
        sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ, self._on_client)
        sel.register(self._up, selectors.EVENT_READ, self._on_upstream)
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            while not self._stop.is_set():
                wait = 0.5
                if self._pending:
                    first = next(iter(self._pending.values()))
                    wait = min(wait, max(0.0, first.deadline - time.monotonic()))
                for key, _ in sel.select(wait):
                    if key.data is not None:
                        key.data()
                self._expire()
        except Exception:  # the loop must never die silently
            log.exception("DNS sinkhole loop crashed")
        finally:
            sel.close()

    def _on_client(self) -> None:
        sock = self._sock
        assert sock is not None
        for _ in range(_BATCH):
            try:
                data, addr = sock.recvfrom(_MAX_UDP)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("DNS recv from client failed: %s", exc)
                return
            self.stats["queries"] += 1
            try:
                self._handle_query(data, addr)
            except ShortflowError as exc:
                log.error("DNS sinkhole: %s", exc)

    def _reply(self, data: bytes, addr: tuple[Any, ...]) -> None:
        assert self._sock is not None
        try:
            self._sock.sendto(data, addr)
        except OSError as exc:
            log.debug("DNS send to %s failed: %s", addr, exc)

    def decide(self, data: bytes, client_ip: str) -> QueryOutcome:
        """What to do with one datagram from ``client_ip``, without sending anything.

        Never raises for any ``data`` (the loop thread depends on it): a datagram that is
        not a one-question query is ``malformed`` (with a FORMERR reply unless it is too
        short or is itself an answer); a sinkholed name gets its local answer and an audit
        event; everything else is ``forward`` (with a ``dry-run-sinkhole`` event in dry-run).
        """
        try:
            name, qtype, qend = _question(data)
        except ValueError:
            return QueryOutcome("malformed", _formerr(data), 0, None)
        policy = self._policy()
        rule = policy.sinkhole_rule(name) if policy.sinkhole_names else None
        if rule is None:
            return QueryOutcome("forward", None, qend, None)
        mac = self._mac_lookup(client_ip) if self._mac_lookup and policy.names_macs else None
        why = policy.match(client_ip, mac, datetime.now())
        if why is None:
            return QueryOutcome("forward", None, qend, None)
        event = {
            "client": client_ip,
            "name": name,
            "label": "tiktok",
            "rule": f"sinkhole {rule} ({why})",
            "qtype": QTYPE.get(qtype, qtype),
        }
        if policy.mode == "nft":
            reply = self._sinkhole_answer(data, qend, qtype, policy)
            return QueryOutcome(
                "sinkhole",
                reply,
                qend,
                {"action": "sinkhole", "answer": policy.sinkhole_answer, **event},
            )
        return QueryOutcome("forward", None, qend, {"action": "dry-run-sinkhole", **event})

    def _handle_query(self, data: bytes, addr: tuple[Any, ...]) -> None:
        out = self.decide(data, str(addr[0]))
        if out.action == "malformed":
            self.stats["malformed"] += 1
        elif out.action == "sinkhole":
            self.stats["sinkholed"] += 1
        elif out.event is not None:
            self.stats["dry_run_sinkholed"] += 1
        if out.reply is not None:
            self._reply(out.reply, addr)
        if out.event is not None:
            self._log(out.event)
        if out.action == "forward":
            self._forward(data, out.qend, addr)

    def _log(self, event: dict[str, Any]) -> None:
        log.info("DNS %s %s for %s", event["action"], event["name"], event["client"])
        if self._audit is not None:
            self._audit.write(event)

    @staticmethod
    def _sinkhole_answer(data: bytes, qend: int, qtype: int, policy: Policy) -> bytes:
        try:
            record = DNSRecord.parse(data)
        except (DNSError, ValueError, IndexError, struct.error):
            return _error_reply(data, qend, RCODE.NXDOMAIN)
        reply = record.reply()
        # reply() copies the query's flag word, RCODE bits included: a query with junk
        # there got 0.0.0.0 under SERVFAIL/REFUSED/15. The answer's status is ours.
        reply.header.rcode = RCODE.NOERROR
        if policy.sinkhole_answer == "nxdomain":
            reply.header.rcode = RCODE.NXDOMAIN
        elif qtype == _QTYPE_A:
            reply.add_answer(RR(record.q.qname, QTYPE.A, rdata=A("0.0.0.0"), ttl=SINKHOLE_TTL))
        elif qtype == _QTYPE_AAAA:
            reply.add_answer(RR(record.q.qname, QTYPE.AAAA, rdata=AAAA("::"), ttl=SINKHOLE_TTL))
        # other types: NOERROR without records (NODATA)
        return bytes(reply.pack())

    def _new_id(self) -> int | None:
        if len(self._pending) >= 65536:
            return None
        qid = self._next_id
        while qid in self._pending:
            qid = (qid + 1) & 0xFFFF
        self._next_id = random.randrange(65536)
        return qid

    def _forward(self, data: bytes, qend: int, addr: tuple[Any, ...]) -> None:
        qid = self._new_id()
        if qid is None:
            self.stats["servfail"] += 1
            self._reply(_error_reply(data, qend, RCODE.SERVFAIL), addr)
            return
        assert self._up is not None
        try:
            self._up.send(struct.pack("!H", qid) + data[2:])
        except OSError as exc:
            log.debug("DNS send upstream failed: %s", exc)
            self.stats["servfail"] += 1
            self._reply(_error_reply(data, qend, RCODE.SERVFAIL), addr)
            return
        self.stats["forwarded"] += 1
        self._pending[qid] = _Pending(
            data[:2],
            addr,
            time.monotonic() + self._timeout_s,
            data[12:qend].lower(),
            data[:qend],
        )

    def _on_upstream(self) -> None:
        up = self._up
        assert up is not None
        for _ in range(_BATCH):
            try:
                data = up.recv(_MAX_UDP)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP port unreachable: timeouts answer SERVFAIL
                log.debug("DNS recv from upstream failed: %s", exc)
                return
            ts = time.time()
            if len(data) < 12:
                continue
            qid = struct.unpack_from("!H", data, 0)[0]
            pending = self._pending.get(qid)
            if pending is None:
                self.stats["late"] += 1
                continue
            qlen = len(pending.question)
            if data[12 : 12 + qlen].lower() != pending.question:
                self.stats["late"] += 1  # ID reused or spoofed: not this question
                continue
            del self._pending[qid]
            answer = pending.client_id + data[2:]
            self._reply(answer, pending.client)
            self.stats["answered"] += 1
            if self._on_answer is not None:
                try:
                    self._on_answer(answer, ts)
                except Exception:
                    log.exception("DNS on_answer callback failed")

    def _expire(self) -> None:
        if not self._pending:
            return
        now = time.monotonic()
        while self._pending:
            qid, first = next(iter(self._pending.items()))
            if first.deadline > now:
                return
            del self._pending[qid]
            self.stats["servfail"] += 1
            qend = 12 + len(first.question)
            self._reply(_error_reply(first.query, qend, RCODE.SERVFAIL), first.client)

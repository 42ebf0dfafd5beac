"""Turns verdicts into blocks: policy checks, nftables (or dry-run), audit log, clean shutdown.

The effective mode is the more cautious of the mode the enforcer was started with and the
mode of the running policy (``off`` < ``dry-run`` < ``nft``): a policy reload can turn
blocking down to dry-run or off, but never escalate past what the operator started.

* ``off``: nothing happens, nothing is logged.
* ``dry-run``: a ``dry-run-block`` line goes to the audit log and a record is kept (so the
  same flow is not logged again while the would-be block lasts); the firewall is untouched.
* ``nft``: the flow (or the client+server pair, when no port is given) goes into the timed
  sets of :class:`~classifier.enforce.nft.NftTable` and a ``block`` line is logged.

:meth:`Enforcer.close` deletes the table (all blocks go at once) and is safe to call from a
signal handler (:meth:`Enforcer.install_signal_handlers`) and from ``atexit``.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from types import FrameType
from typing import Any

from classifier.enforce.audit import AuditLog
from classifier.enforce.nft import NftTable
from classifier.enforce.policy import MODES, PolicyHolder
from classifier.errors import EnforcementError

__all__ = ["Enforcer", "BlockRecord"]

log = logging.getLogger(__name__)

_RANK = {m: i for i, m in enumerate(MODES)}  # off < dry-run < nft


@dataclass(frozen=True, slots=True)
class BlockRecord:
    """One block (or would-be block in dry-run). Times are epoch seconds.

    ``port``/``proto`` are None for a client+server pair block.
    """

    id: str
    client: str
    server: str
    port: int | None
    proto: str | None
    name: str | None
    label: str
    probability: float
    created: float
    expires: float
    rule: str
    dry_run: bool

    def as_event(self) -> dict[str, Any]:
        """The audit-log fields of this record."""
        return {
            "client": self.client,
            "server": self.server,
            "port": self.port,
            "proto": self.proto,
            "name": self.name,
            "label": self.label,
            "probability": round(self.probability, 4),
            "rule": self.rule,
            "expiry": self.expires,
            "block_id": self.id,
        }


_Key = tuple[str, str, int | None, str | None]


class Enforcer:
    """Applies blocks for verdicts according to the running policy.

    ``mode`` is ``off``, ``dry-run`` or ``nft``; ``nft`` needs ``table`` and creates (or
    rebuilds, empty) its nftables table at once. Thread-safe.

    ``mac_lookup`` gives a client IP's MAC address (live mode: the router's neighbour
    table) for the policy's MAC rules; it is asked only while the policy names MACs and no
    MAC was given.

    Raises EnforcementError for a bad mode, ``nft`` without a table, or when nftables
    refuses (constructor, :meth:`block`, :meth:`unblock`).
    """

    def __init__(
        self,
        mode: str,
        table: NftTable | None,
        audit: AuditLog,
        policy_holder: PolicyHolder,
        *,
        clock: Callable[[], float] = time.time,
        mac_lookup: Callable[[str], str | None] | None = None,
    ) -> None:
        if mode not in _RANK:
            raise EnforcementError(f"enforcement mode {mode!r} is not one of {', '.join(MODES)}")
        if mode == "nft" and table is None:
            raise EnforcementError("enforcement mode nft needs an nftables table")
        self.mode = mode
        self._table = table
        self._audit = audit
        self._policy = policy_holder
        self._clock = clock
        self._mac_lookup = mac_lookup
        self._lock = threading.RLock()
        self._records: dict[str, BlockRecord] = {}
        self._by_key: dict[_Key, str] = {}
        self._ids = itertools.count(1)
        self._votes: dict[tuple[str, str, str], deque[float]] = {}
        self._closed = False
        self._table_created = False
        if mode == "nft" and table is not None:
            table.create()
            self._table_created = True

    @property
    def effective_mode(self) -> str:
        """The more cautious of the start mode and the running policy's mode."""
        policy_mode = self._policy.current.mode
        return policy_mode if _RANK[policy_mode] < _RANK[self.mode] else self.mode

    # -- verdicts -------------------------------------------------------------------------

    def observe(
        self,
        client: str,
        server: str,
        port: int | None,
        proto: str | None,
        *,
        label: str,
        probability: float,
        name: str | None = None,
        host: str | None = None,
        client_mac: str | None = None,
        now: datetime | None = None,
    ) -> BlockRecord | None:
        """Record one verdict for (client, service, label); block when ``k`` of the last
        ``n`` verdicts reach the policy threshold. The service is ``name`` if known, else
        ``server``; ``host`` as for :meth:`block`. Returns the block made (or renewed),
        else None.
        Raises EnforcementError when nftables refuses.
        """
        policy = self._policy.current
        key = (client, name or server, label)
        with self._lock:
            votes = self._votes.get(key)
            if votes is None or votes.maxlen != policy.agreement_n:
                votes = deque(votes or (), maxlen=policy.agreement_n)
                self._votes[key] = votes
            votes.append(probability)
            if len(self._votes) > 100_000:  # bounded memory: forget the oldest keys
                for old in list(self._votes)[:10_000]:
                    del self._votes[old]
            if not policy.agrees(votes):
                return None
        return self.block(
            client,
            server,
            port,
            proto,
            label=label,
            probability=probability,
            name=name,
            host=host,
            client_mac=client_mac,
            now=now,
        )

    def block(
        self,
        client: str,
        server: str,
        port: int | None = None,
        proto: str | None = None,
        *,
        label: str,
        probability: float,
        name: str | None = None,
        host: str | None = None,
        client_mac: str | None = None,
        now: datetime | None = None,
    ) -> BlockRecord | None:
        """Block a flow (``port`` and ``proto`` given) or a client+server pair (neither).
        ``name``: the server name or the service blocked; ``host``: the flow's server
        name (SNI / DNS) when ``name`` is its service, for the allowlist.

        Returns None when nothing is done: mode off, category not blocked, client not
        covered now, server name/address allowlisted, or the enforcer is closed. A block
        that is still active is renewed (new expiry). Raises EnforcementError when
        nftables refuses or the arguments are bad.
        """
        if (port is None) != (proto is None):
            raise EnforcementError("block needs both port and proto, or neither")
        policy = self._policy.current
        mode = self.effective_mode
        if self._closed or mode == "off" or not policy.should_block(label):
            return None
        if client_mac is None and self._mac_lookup is not None and policy.names_macs:
            client_mac = self._mac_lookup(client)
        why = policy.match(client, client_mac, now)
        if why is None:
            return None
        if policy.allowed(name, server) or (host is not None and policy.allowed(host)):
            log.debug("not blocking %s -> %s (%s): allowlisted", client, server, host or name)
            return None
        agree = f"{policy.agreement_k}/{policy.agreement_n}"
        rule = f"{label} p>={policy.threshold:g} {agree}; {why}"
        return self._put(
            client,
            server,
            port,
            proto,
            name,
            label,
            probability,
            policy.block_seconds,
            rule,
            dry=mode == "dry-run",
        )

    def block_manual(
        self,
        client: str,
        server: str,
        port: int | None = None,
        proto: str | None = None,
        *,
        duration_s: int,
        reason: str,
    ) -> BlockRecord | None:
        """Block by hand for ``duration_s`` seconds: ignores the policy's categories, client
        lists and schedules, but not its mode (off: nothing; dry-run: only logged) nor its
        allowlist. Returns None when nothing is done. Raises EnforcementError when nftables
        refuses or the arguments are bad."""
        if (port is None) != (proto is None):
            raise EnforcementError("block needs both port and proto, or neither")
        mode = self.effective_mode
        if self._closed or mode == "off" or self._policy.current.allowed(None, server):
            return None
        return self._put(
            client,
            server,
            port,
            proto,
            None,
            "manual",
            1.0,
            int(duration_s),
            f"manual: {reason}",
            dry=mode == "dry-run",
        )

    def _put(
        self,
        client: str,
        server: str,
        port: int | None,
        proto: str | None,
        name: str | None,
        label: str,
        probability: float,
        seconds: int,
        rule: str,
        *,
        dry: bool,
    ) -> BlockRecord | None:
        """Create or renew the block record for this key, apply it unless ``dry``, log it."""
        proto_n = proto.lower() if proto is not None else None
        key: _Key = (client, server, port, proto_n)
        with self._lock:
            if self._closed:
                return None
            nowt = self._clock()
            self._prune(nowt)
            expires = nowt + seconds
            old_id = self._by_key.get(key)
            old = self._records.get(old_id) if old_id else None
            if old is not None and old.dry_run == dry:
                rec = replace(old, expires=expires, probability=probability)
                if not dry:
                    self._apply(rec, seconds)
                    self._audit.write({"action": "block", "renewed": True, **rec.as_event()})
                self._records[rec.id] = rec
                return rec
            rec = BlockRecord(
                id=f"b{next(self._ids)}",
                client=client,
                server=server,
                port=port,
                proto=proto_n,
                name=name,
                label=label,
                probability=float(probability),
                created=nowt,
                expires=expires,
                rule=rule,
                dry_run=dry,
            )
            if not dry:
                self._apply(rec, seconds)
            if old is not None:
                self._records.pop(old.id, None)
            self._records[rec.id] = rec
            self._by_key[key] = rec.id
            self._audit.write({"action": "dry-run-block" if dry else "block", **rec.as_event()})
            log.debug(  # live mode's verdict lines say it for an operator
                "%s %s -> %s:%s/%s (%s, p=%.2f) for %d s",
                "dry-run-block" if dry else "block",
                client,
                server,
                port,
                proto_n,
                label,
                probability,
                seconds,
            )
            return rec

    def _apply(self, rec: BlockRecord, seconds: int) -> None:
        table = self._table
        if table is None:
            raise EnforcementError("enforcement mode nft needs an nftables table")
        if rec.port is not None and rec.proto is not None:
            table.block_flow(rec.client, rec.server, rec.port, rec.proto, seconds)
        else:
            table.block_pair(rec.client, rec.server, seconds)

    def unblock(self, block_id: str, *, reason: str = "manual") -> bool:
        """Lift a block by id; False when the id is unknown or already expired.

        Raises EnforcementError when nftables refuses.
        """
        with self._lock:
            self._prune(self._clock())
            rec = self._records.pop(block_id, None)
            if rec is None:
                return False
            self._by_key.pop((rec.client, rec.server, rec.port, rec.proto), None)
            if not rec.dry_run and self._table is not None and not self._closed:
                self._table.unblock(rec.client, rec.server, rec.port, rec.proto)
            self._audit.write({"action": "unblock", **rec.as_event(), "rule": reason})
            return True

    def active_blocks(self) -> list[BlockRecord]:
        """The blocks (and dry-run would-be blocks) that have not expired, oldest first."""
        with self._lock:
            self._prune(self._clock())
            return sorted(self._records.values(), key=lambda r: r.created)

    def _prune(self, nowt: float) -> None:
        for rec in [r for r in self._records.values() if r.expires <= nowt]:
            del self._records[rec.id]
            self._by_key.pop((rec.client, rec.server, rec.port, rec.proto), None)

    # -- shutdown -------------------------------------------------------------------------

    def close(self) -> None:
        """Delete the nftables table (every block goes), log the lifted blocks, release
        the backend. Idempotent; never raises (errors are logged: the sets expire anyway).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            active = [r for r in self._records.values() if r.expires > self._clock()]
            self._records.clear()
            self._by_key.clear()
            if self._table is not None:
                try:
                    if self._table_created:
                        self._table.delete()
                except Exception as exc:  # fail open: elements expire by themselves
                    log.error("could not delete nftables table on close: %s", exc)
                finally:
                    self._table.close()
            for rec in active:
                if rec.dry_run:
                    continue
                try:
                    self._audit.write({"action": "unblock", **rec.as_event(), "rule": "shutdown"})
                except Exception as exc:
                    log.error("could not write audit log on close: %s", exc)
            log.info("enforcer closed (%d active blocks lifted)", len(active))

    def install_signal_handlers(
        self, signums: Iterable[int] = (signal.SIGTERM, signal.SIGINT)
    ) -> Callable[[], None]:
        """Close on these signals (and at interpreter exit), then behave as before:
        call the previous handler, or exit with status 128+signal if it was the default.

        Must be called from the main thread. Returns a function that restores the previous
        handlers.
        """
        previous: dict[int, Any] = {}

        def _handler(signum: int, frame: FrameType | None) -> None:
            self.close()
            prev = previous.get(signum)
            if callable(prev):
                prev(signum, frame)
            elif prev != signal.SIG_IGN:
                raise SystemExit(128 + signum)

        for s in signums:
            previous[s] = signal.signal(s, _handler)
        atexit.register(self.close)

        def _restore() -> None:
            for s, prev in previous.items():
                signal.signal(s, prev if prev is not None else signal.SIG_DFL)
            atexit.unregister(self.close)

        return _restore

    def __enter__(self) -> Enforcer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

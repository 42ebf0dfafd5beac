"""The state a live router process keeps, that the HTTP API reads and changes.

:class:`LiveState` holds the active flows with their latest verdict, a few counters
(``packets``, ``drops``, ``blocks``, ``verdicts``), and reaches the blocks and the policy
through the :class:`~classifier.enforce.Enforcer` and
:class:`~classifier.enforce.PolicyHolder` it was given. Every method is thread-safe: the
capture loop writes from its thread while the API reads from its own.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
import tomllib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from classifier.enforce.enforcer import BlockRecord, Enforcer
from classifier.enforce.policy import Policy, PolicyHolder, enforcement_status, parse_policy
from classifier.errors import PolicyError

__all__ = ["LiveState", "policy_doc", "COUNTERS"]

log = logging.getLogger(__name__)

COUNTERS = ("packets", "drops", "blocks", "verdicts")
_KEY_FIELDS = ("proto", "client", "client_port", "server", "server_port")

FlowId = tuple[Any, ...]


def _plain(value: Any) -> Any:
    """A JSON-friendly copy: numpy scalars to Python, NaN/inf to None, containers copied."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        try:
            value = value.item()
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _flow_id(key: Mapping[str, Any] | tuple[Any, ...]) -> FlowId:
    """A hashable identity for a flow key given as a mapping or a (named) tuple."""
    if isinstance(key, tuple) and hasattr(key, "_asdict"):
        key = key._asdict()
    if isinstance(key, Mapping):
        if all(f in key for f in _KEY_FIELDS):
            return tuple(_plain(key[f]) for f in _KEY_FIELDS)
        return tuple(sorted((str(k), str(_plain(v))) for k, v in key.items()))
    return tuple(_plain(v) for v in key)


def _key_dict(key: Mapping[str, Any] | tuple[Any, ...]) -> dict[str, Any]:
    if isinstance(key, tuple) and hasattr(key, "_asdict"):
        key = key._asdict()
    if isinstance(key, Mapping):
        return {str(k): _plain(v) for k, v in key.items()}
    return {f: _plain(v) for f, v in zip(_KEY_FIELDS, key, strict=False)}


def _nets(nets: tuple[Any, ...]) -> list[str]:
    return [str(n) for n in nets]


def policy_doc(policy: Policy) -> dict[str, Any]:
    """``policy`` in the shape of the TOML file (JSON-friendly; parse_policy takes it back,
    apart from ``source``)."""
    return {
        "mode": policy.mode,
        "categories": sorted(policy.categories),
        "block_seconds": policy.block_seconds,
        "schedules": [s.text for s in policy.schedules],
        "agreement": {"k": policy.agreement_k, "n": policy.agreement_n,
                      "threshold": policy.threshold},
        "clients": {"only": _nets(policy.only_ips) + sorted(policy.only_macs),
                    "never": _nets(policy.never_ips) + sorted(policy.never_macs)},
        "allow": {"names": sorted(policy.allow_names), "ips": _nets(policy.allow_ips)},
        "sinkhole": {"names": sorted(policy.sinkhole_names), "answer": policy.sinkhole_answer},
        "source": policy.source,
    }


class LiveState:
    """Flows, verdicts, counters, blocks and policy of a running live router.

    ``max_flows`` bounds memory: beyond it the flow updated longest ago is forgotten.
    """

    def __init__(self, enforcer: Enforcer, policy_holder: PolicyHolder, *,
                 max_flows: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        if max_flows < 1:
            raise ValueError("max_flows must be at least 1")
        self.enforcer = enforcer
        self.policy_holder = policy_holder
        self.max_flows = max_flows
        self._clock = clock
        self._lock = threading.RLock()
        self._flows: OrderedDict[FlowId, dict[str, Any]] = OrderedDict()
        self._sessions: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self._reasons: dict[str, str] = {}
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    # -- counters -------------------------------------------------------------------------

    def incr(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name`` (created at 0 when new)."""
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + n

    def counters_snapshot(self) -> dict[str, int]:
        """A copy of the counters."""
        with self._lock:
            return dict(self.counters)

    # -- flows ----------------------------------------------------------------------------

    def update_flow(self, flow_key: Mapping[str, Any] | tuple[Any, ...],
                    verdict: Mapping[str, Any]) -> None:
        """Record the latest verdict (label, probability, ...) of a flow."""
        fid = _flow_id(flow_key)
        now = self._clock()
        clean = _plain(verdict)
        with self._lock:
            entry = self._flows.pop(fid, None)
            if entry is None:
                entry = {"key": _key_dict(flow_key), "verdicts": 0, "first_verdict": clean}
            entry["verdict"] = clean
            entry["verdicts"] += 1
            entry["updated"] = now
            self._flows[fid] = entry  # most recent last
            self.counters["verdicts"] = self.counters.get("verdicts", 0) + 1
            while len(self._flows) > self.max_flows:
                self._flows.popitem(last=False)

    def remove_flow(self, key: Mapping[str, Any] | tuple[Any, ...]) -> bool:
        """Forget an ended flow; False when it was not known."""
        with self._lock:
            return self._flows.pop(_flow_id(key), None) is not None

    def flows(self) -> list[dict[str, Any]]:
        """Active flows with their latest verdict, most recently updated first."""
        with self._lock:
            return [{"key": dict(e["key"]), "verdict": dict(e["verdict"]),
                     "first_verdict": dict(e["first_verdict"]),
                     "verdicts": e["verdicts"], "updated": e["updated"]}
                    for e in reversed(self._flows.values())]

    def flow_count(self) -> int:
        with self._lock:
            return len(self._flows)

    # -- sessions -------------------------------------------------------------------------

    def update_session(self, client: str, group: str, verdict: Mapping[str, Any]) -> None:
        """Record the latest session-model verdict of (client, group)."""
        now = self._clock()
        with self._lock:
            key = (client, group)
            self._sessions.pop(key, None)
            self._sessions[key] = {"client": client, "group": group,
                                   "verdict": _plain(verdict), "updated": now}
            while len(self._sessions) > self.max_flows:
                self._sessions.popitem(last=False)

    def sessions(self, max_age: float = 120.0) -> list[dict[str, Any]]:
        """(client, group) sessions judged in the last ``max_age`` seconds, most recent
        first."""
        now = self._clock()
        with self._lock:
            return [dict(e, verdict=dict(e["verdict"])) for e in reversed(self._sessions.values())
                    if now - e["updated"] <= max_age]

    # -- blocks ---------------------------------------------------------------------------

    def _record(self, rec: BlockRecord) -> dict[str, Any]:
        out = dataclasses.asdict(rec)
        out["reason"] = self._reasons.get(rec.id)
        return out

    def blocks(self) -> list[dict[str, Any]]:
        """Blocks (and dry-run would-be blocks) in force, oldest first."""
        records = self.enforcer.active_blocks()
        with self._lock:
            live_ids = {r.id for r in records}
            for gone in [i for i in self._reasons if i not in live_ids]:
                del self._reasons[gone]
            return [self._record(r) for r in records]

    def block_count(self) -> int:
        return len(self.enforcer.active_blocks())

    def block(self, client: str, server: str, port: int | None, proto: str | None,
              duration_s: int, reason: str) -> dict[str, Any]:
        """Block ``client`` -> ``server`` (one ``port``/``proto``, or the whole pair when
        both are None) for ``duration_s`` seconds, by hand.

        A manual block ignores the policy's categories, client lists and schedules, but
        not its mode (off does nothing; dry-run only logs) nor its allowlist.

        Raises PolicyError (nothing was blocked, and why) and EnforcementError (nftables
        refused or bad arguments).
        """
        if not 1 <= duration_s <= 86400:
            raise PolicyError(f"block duration must be 1..86400 seconds, got {duration_s}")
        with self._lock:
            running = self.policy_holder.current
            if running.mode == "off" or self.enforcer.effective_mode == "off":
                raise PolicyError("not blocked: enforcement mode is off")
            if running.allowed(None, server):
                raise PolicyError(f"not blocked: server {server} is on the policy allowlist")
            rec = self.enforcer.block_manual(client, server, port, proto,
                                             duration_s=int(duration_s), reason=reason)
            if rec is None:
                raise PolicyError("not blocked: the enforcer declined (closed, or policy "
                                  "mode off)")
            self._reasons[rec.id] = reason
            self.counters["blocks"] = self.counters.get("blocks", 0) + 1
            log.info("manual block %s: %s -> %s port %s/%s for %d s (%s)", rec.id, client,
                     server, port, proto, duration_s, reason)
            return self._record(rec)

    def unblock(self, block_id: str) -> bool:
        """Lift a block by id; False when the id is unknown or expired.

        Raises EnforcementError when nftables refuses.
        """
        done = self.enforcer.unblock(block_id, reason="manual unblock via API")
        with self._lock:
            self._reasons.pop(block_id, None)
        return done

    # -- policy ---------------------------------------------------------------------------

    def enforcement(self) -> dict[str, str | None]:
        """``--enforce`` (flag), the running policy's mode, the effective mode (the more
        cautious of the two) and a note when they disagree (see enforcement_status)."""
        return enforcement_status(self.enforcer.mode, self.policy_holder.current.mode)

    def policy(self) -> dict[str, Any]:
        """The running policy as a TOML-shaped dict (see :func:`policy_doc`)."""
        return policy_doc(self.policy_holder.current)

    def set_policy_doc(self, doc: Mapping[str, Any], source: str = "<api>") -> dict[str, Any]:
        """Validate a parsed policy document and put it in force; return it.

        Raises PolicyError (the running policy stays) when it is invalid.
        """
        body = {k: v for k, v in doc.items() if k != "source"}
        policy = parse_policy(body, source)
        with self._lock:
            self.policy_holder.set(policy)
        log.info("policy replaced via %s (mode %s)", source, policy.mode)
        return policy_doc(policy)

    def reload_policy(self) -> dict[str, Any]:
        """Re-read the policy file, as SIGHUP does, and return the policy in force.

        Raises PolicyError (the running policy stays) when live mode has no policy file or
        the file is invalid.
        """
        if self.policy_holder.path is None:
            raise PolicyError("live mode runs without --policy: there is no policy file to "
                              "reload")
        error = self.policy_holder.reload()
        if error is not None:
            raise error
        return self.policy()

    def set_policy_text(self, toml: str, source: str = "<api>") -> dict[str, Any]:
        """Parse TOML policy text and put it in force; return it.

        Raises PolicyError (the running policy stays) when it is not TOML or invalid.
        """
        try:
            doc = tomllib.loads(toml)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"{source}: not valid TOML: {exc}") from None
        return self.set_policy_doc(doc, source)

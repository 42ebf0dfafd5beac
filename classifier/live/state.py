"""The state a live router process keeps, that the HTTP API reads and changes.

:class:`LiveState` holds the active flows and (client, group) sessions with their latest
verdict, the ones that ended in the last ``keep_ended`` seconds (10 minutes; at most
``max_ended`` of each, the oldest dropped first), a few counters (``packets``,
``received``, ``drops``, ``blocks``, ``verdicts``, ``session_verdicts``) and the verdicts
counted by label, and reaches the blocks and the policy
through the :class:`~classifier.enforce.Enforcer` and
:class:`~classifier.enforce.PolicyHolder` it was given. Every method is thread-safe: the
capture loop writes from its thread while the API reads from its own.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import threading
import time
import tomllib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from classifier.enforce.enforcer import BlockRecord, Enforcer
from classifier.enforce.policy import Policy, PolicyHolder, enforcement_status, parse_policy
from classifier.errors import PolicyError, RecordingError

if TYPE_CHECKING:
    from classifier.capture.packet import Packet
    from classifier.live.recording import Recorder

if TYPE_CHECKING:
    from classifier.web.usage import UsageLog

__all__ = ["LiveState", "policy_doc", "COUNTERS"]

log = logging.getLogger(__name__)

COUNTERS = ("packets", "received", "drops", "blocks", "verdicts", "session_verdicts")
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


#: The fields of a live router's flow verdict (LiveRouter._act), in its order: such a
#: verdict is kept as a tuple of values, any other as a dict.
_VERDICT_FIELDS = (
    "label",
    "probability",
    "p_short_form",
    "service",
    "name",
    "window",
    "reason",
    "at",
    "flow_start",
)


class _Shared:
    """One shared copy of the values many flows' verdicts repeat: strings (label, service,
    name, window and the reason, whose figures are rounded coarsely) and the
    probabilities (rounded to 4 places). At most ``size`` of each type; when full it
    starts again empty, so what it keeps stays bounded and recent values are shared."""

    __slots__ = ("_strs", "_floats", "_size")

    def __init__(self, size: int = 4096) -> None:
        self._strs: dict[str, str] = {}
        self._floats: dict[float, float] = {}
        self._size = size

    def __call__(self, value: Any) -> Any:
        if type(value) is str:
            return self._one(self._strs, value)
        if type(value) is float and value != 0.0:  # 0.0 and -0.0 are equal keys
            return self._one(self._floats, value)
        return value

    def _one(self, cache: dict[Any, Any], value: Any) -> Any:
        if len(cache) >= self._size:
            cache.clear()
        return cache.setdefault(value, value)


_SHARE = _Shared()
_SHARED = ("label", "probability", "p_short_form", "service", "name", "window", "reason")


def _compact(
    verdict: dict[str, Any], previous: tuple[Any, ...] | dict[str, Any] | None = None
) -> tuple[Any, ...] | dict[str, Any]:
    """A stored flow verdict: its values as a tuple when it has exactly the live router's
    fields (in order), with the values many flows repeat shared (:class:`_Shared`) and
    the values equal to those of the ``previous`` stored verdict taken from it; else the
    dict itself."""
    if tuple(verdict) != _VERDICT_FIELDS:
        return verdict
    values = [
        _SHARE(v) if f in _SHARED else v
        for f, v in zip(_VERDICT_FIELDS, verdict.values(), strict=True)
    ]
    if isinstance(previous, tuple):
        values = [
            old if type(old) is type(new) and old == new else new
            for old, new in zip(previous, values, strict=True)
        ]
    return tuple(values)


def _verdict_dict(stored: tuple[Any, ...] | dict[str, Any]) -> dict[str, Any]:
    if isinstance(stored, tuple):
        return dict(zip(_VERDICT_FIELDS, stored, strict=True))
    return dict(stored)


def _compact_key(key: Mapping[str, Any] | tuple[Any, ...], fid: FlowId) -> FlowId | dict[str, Any]:
    """A stored flow key: the flow id itself when the key has exactly the five key fields
    (in order, or a plain 5-tuple), else its dict."""
    plain = _key_dict(key)
    return fid if tuple(plain) == _KEY_FIELDS else plain


class _FlowEntry:
    """One flow LiveState knows: its key, latest verdict, first verdict (None while it is
    the latest one), verdict count, last update and when it ended."""

    __slots__ = ("key", "verdict", "first", "verdicts", "updated", "ended", "ended_at")

    def __init__(self, key: FlowId | dict[str, Any]) -> None:
        self.key = key
        self.verdict: tuple[Any, ...] | dict[str, Any] = ()
        self.first: tuple[Any, ...] | dict[str, Any] | None = None
        self.verdicts = 0
        self.updated = 0.0
        self.ended = False
        self.ended_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The entry as ``LiveState.flows()`` returns it (new dicts, safe to change)."""
        verdict = _verdict_dict(self.verdict)
        return {
            "key": dict(zip(_KEY_FIELDS, self.key, strict=True))
            if isinstance(self.key, tuple)
            else dict(self.key),
            "verdict": verdict,
            "first_verdict": dict(verdict) if self.first is None else _verdict_dict(self.first),
            "verdicts": self.verdicts,
            "updated": self.updated,
            "ended": self.ended,
            "ended_at": self.ended_at,
        }


def _ended_at(entry: Any) -> Any:
    return entry.ended_at if isinstance(entry, _FlowEntry) else entry["ended_at"]


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
        "agreement": {
            "k": policy.agreement_k,
            "n": policy.agreement_n,
            "threshold": policy.threshold,
        },
        "clients": {
            "only": _nets(policy.only_ips) + sorted(policy.only_macs),
            "never": _nets(policy.never_ips) + sorted(policy.never_macs),
        },
        "allow": {"names": sorted(policy.allow_names), "ips": _nets(policy.allow_ips)},
        "sinkhole": {"names": sorted(policy.sinkhole_names), "answer": policy.sinkhole_answer},
        "source": policy.source,
    }


class LiveState:
    """Flows, sessions, verdicts, counters, blocks and policy of a running live router.

    ``max_flows`` bounds memory: beyond it the active flow (or session) updated longest ago
    is forgotten. An ended flow or session stays, marked ``ended``, for ``keep_ended``
    seconds; at most ``max_ended`` of each are kept (the earliest ended go first).
    """

    def __init__(
        self,
        enforcer: Enforcer,
        policy_holder: PolicyHolder,
        *,
        max_flows: int = 100_000,
        keep_ended: float = 600.0,
        max_ended: int = 10_000,
        clock: Callable[[], float] = time.time,
        recorder: Recorder | None = None,
    ) -> None:
        if max_flows < 1:
            raise ValueError("max_flows must be at least 1")
        if keep_ended < 0 or max_ended < 0:
            raise ValueError("keep_ended and max_ended must not be negative")
        self.enforcer = enforcer
        self.policy_holder = policy_holder
        self.max_flows = max_flows
        self.keep_ended = keep_ended
        self.max_ended = max_ended
        self._clock = clock
        self._lock = threading.RLock()
        self._flows: OrderedDict[FlowId, _FlowEntry] = OrderedDict()
        self._sessions: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        # ended flows and sessions, earliest ended first, under a sequence number (the same
        # flow key or session can end more than once)
        self._ended_flows: OrderedDict[int, _FlowEntry] = OrderedDict()
        self._ended_sessions: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._seq = itertools.count()
        self._reasons: dict[str, str] = {}
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._labels: dict[str, dict[str, int]] = {"flow": {}, "session": {}}
        # for the web pages (classifier.web), set by the live router: per-client usage fed
        # by the session verdicts, the audit log's path, a dnsmasq leases file
        self.usage: UsageLog | None = None
        self.audit_path: Path | None = None
        self.leases_path: Path | None = None
        # the live router's model switch (LiveRouter.use_model), for the Model page: takes
        # a loaded flow model and its session model (or None)
        self.use_model: Callable[[Any, Any], None] | None = None
        #: records clients' traffic (``shortflow live --data-dir``); None: recording is off
        self.recorder = recorder
        self.recording_off_reason = "live mode runs without a data directory (--data-dir)"

    # -- counters -------------------------------------------------------------------------

    def incr(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name`` (created at 0 when new)."""
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + n

    def counters_snapshot(self) -> dict[str, int]:
        """A copy of the counters."""
        with self._lock:
            return dict(self.counters)

    def label_counts(self) -> dict[str, dict[str, int]]:
        """Verdicts so far by label: ``{"flow": {label: n}, "session": {label: n}}``."""
        with self._lock:
            return {kind: dict(counts) for kind, counts in self._labels.items()}

    def _count_label(self, kind: str, verdict: Mapping[str, Any]) -> None:
        label = verdict.get("label")
        if isinstance(label, str):
            counts = self._labels[kind]
            counts[label] = counts.get(label, 0) + 1

    # -- ended flows and sessions ---------------------------------------------------------

    def _keep_ended(
        self, store: OrderedDict[int, Any], entry: _FlowEntry | dict[str, Any], now: float
    ) -> None:
        if isinstance(entry, _FlowEntry):
            entry.ended, entry.ended_at = True, now
        else:
            entry["ended"], entry["ended_at"] = True, now
        store[next(self._seq)] = entry
        self._prune(store, now)

    def _prune(self, store: OrderedDict[int, Any], now: float) -> None:
        while store and (
            len(store) > self.max_ended
            or now - _ended_at(next(iter(store.values()))) > self.keep_ended
        ):
            store.popitem(last=False)

    # -- flows ----------------------------------------------------------------------------

    def update_flow(
        self, flow_key: Mapping[str, Any] | tuple[Any, ...], verdict: Mapping[str, Any]
    ) -> None:
        """Record the latest verdict (label, probability, ...) of a flow."""
        fid = _flow_id(flow_key)
        now = self._clock()
        clean = _plain(verdict)
        with self._lock:
            entry = self._flows.get(fid)
            if entry is None:
                entry = _FlowEntry(_compact_key(flow_key, fid))
                stored = _compact(clean)
                # under the tuple the entry holds (one copy per flow)
                self._flows[entry.key if isinstance(entry.key, tuple) else fid] = entry
            else:
                stored = _compact(clean, entry.verdict)
                # most recent last, in place: a pop and insert per verdict would use up the
                # table's free slots and have it rebuilt (MBs) every few checks of all flows
                self._flows.move_to_end(fid)
            if entry.verdicts and entry.first is None and entry.verdict != stored:
                entry.first = entry.verdict  # the first verdict, kept once it differs
            entry.verdict = stored
            entry.verdicts += 1
            entry.updated = now
            self.counters["verdicts"] = self.counters.get("verdicts", 0) + 1
            self._count_label("flow", clean)
            while len(self._flows) > self.max_flows:
                self._flows.popitem(last=False)

    def remove_flow(self, key: Mapping[str, Any] | tuple[Any, ...]) -> bool:
        """A flow ended: it leaves the active flows and is kept, with its verdicts, among
        the ended ones. False when it was not active (unknown, or ended already)."""
        now = self._clock()
        with self._lock:
            entry = self._flows.pop(_flow_id(key), None)
            if entry is None:
                return False
            self._keep_ended(self._ended_flows, entry, now)
            return True

    def flows(self) -> list[dict[str, Any]]:
        """Active flows with their latest verdict, most recently updated first, then the
        flows that ended in the last ``keep_ended`` seconds, most recently ended first."""
        now = self._clock()
        with self._lock:
            self._prune(self._ended_flows, now)
            entries = [*reversed(self._flows.values()), *reversed(self._ended_flows.values())]
            return [e.as_dict() for e in entries]

    def flow_count(self) -> int:
        """Active flows (ended ones not counted)."""
        with self._lock:
            return len(self._flows)

    # -- sessions -------------------------------------------------------------------------

    def update_session(self, client: str, group: str, verdict: Mapping[str, Any]) -> None:
        """Record the latest session-model verdict of (client, group)."""
        now = self._clock()
        clean = _plain(verdict)
        with self._lock:
            key = (client, group)
            self._sessions.pop(key, None)
            self._sessions[key] = {
                "client": client,
                "group": group,
                "verdict": clean,
                "updated": now,
                "ended": False,
                "ended_at": None,
            }
            self._count_label("session", clean)
            while len(self._sessions) > self.max_flows:
                self._sessions.popitem(last=False)
        if self.usage is not None:
            self.usage.observe(client, group, clean, now)

    def end_sessions(self, keep: Iterable[tuple[str, str]] = ()) -> int:
        """End every active session not in ``keep`` (the (client, group) pairs judged just
        now): they are kept, with their last verdict, among the ended ones. Returns how
        many ended."""
        now = self._clock()
        stay = set(keep)
        with self._lock:
            gone = [k for k in self._sessions if k not in stay]
            for key in gone:
                self._keep_ended(self._ended_sessions, self._sessions.pop(key), now)
            return len(gone)

    def sessions(self) -> list[dict[str, Any]]:
        """Active (client, group) sessions, most recently judged first, then those that
        ended in the last ``keep_ended`` seconds, most recently ended first."""
        now = self._clock()
        with self._lock:
            self._prune(self._ended_sessions, now)
            entries = [*reversed(self._sessions.values()), *reversed(self._ended_sessions.values())]
            return [dict(e, verdict=dict(e["verdict"])) for e in entries]

    def session_count(self) -> int:
        """Active sessions (ended ones not counted)."""
        with self._lock:
            return len(self._sessions)

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

    def block(
        self,
        client: str,
        server: str,
        port: int | None,
        proto: str | None,
        duration_s: int,
        reason: str,
    ) -> dict[str, Any]:
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
            rec = self.enforcer.block_manual(
                client, server, port, proto, duration_s=int(duration_s), reason=reason
            )
            if rec is None:
                raise PolicyError("not blocked: the enforcer declined (closed, or policy mode off)")
            self._reasons[rec.id] = reason
            self.counters["blocks"] = self.counters.get("blocks", 0) + 1
            log.info(
                "manual block %s: %s -> %s port %s/%s for %d s (%s)",
                rec.id,
                client,
                server,
                port,
                proto,
                duration_s,
                reason,
            )
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
            raise PolicyError("live mode runs without --policy: there is no policy file to reload")
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

    # -- recordings -----------------------------------------------------------------------
    # (classifier.live.recording.Recorder does the work; errors are RecordingError, one line)

    def _recorder(self) -> Recorder:
        if self.recorder is None:
            raise RecordingError(f"recording is off: {self.recording_off_reason}")
        return self.recorder

    def record_packets(self, packets: Sequence[Packet]) -> None:
        """Hand a batch of captured packets to the recordings (never waits; packets the
        full queue cannot take count in the ``record_drops`` counter)."""
        if self.recorder is not None:
            lost = self.recorder.offer(packets)
            if lost:
                self.incr("record_drops", lost)

    def start_recording(
        self,
        client: str,
        minutes: float,
        label: str,
        app: str | None = None,
        alias: str | None = None,
    ) -> dict[str, Any]:
        """Record ``client``'s packets for ``minutes`` as ``label`` (shorts, reels,
        tiktok, long-form, other, or a dataset session label). Raises RecordingError."""
        return self._recorder().start(client, minutes, label, app=app, alias=alias)

    def stop_recording(self, rec_id: str) -> dict[str, Any]:
        """End a recording now; raises RecordingNotFound for an unknown id."""
        return self._recorder().stop(rec_id)

    def recordings(self) -> list[dict[str, Any]]:
        """Every recording (running and ended), the latest started first; [] when
        recording is off."""
        return [] if self.recorder is None else self.recorder.list()

    def relabel_recording(
        self, rec_id: str, label: str, intervals: list[Any] | None = None
    ) -> dict[str, Any]:
        """New label (and optionally labelled time intervals) for a recording."""
        return self._recorder().relabel(rec_id, label, intervals)

    def delete_recording(self, rec_id: str) -> bool:
        """Delete a recording and its files; False when the id is unknown."""
        return False if self.recorder is None else self.recorder.delete(rec_id)

    def recording_file(self, rec_id: str) -> Path:
        """The pcap of an ended recording (RecordingNotFound, or RecordingError while it
        runs)."""
        return self._recorder().file(rec_id)

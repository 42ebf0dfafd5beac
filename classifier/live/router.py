"""Live router mode: capture -> flows -> early verdicts -> enforcement, in one loop.

The same :class:`~classifier.features.featurize.Featurizer` (flow table, names, feature
groups) as offline builds the rows; the same model classifies them. When the model
directory holds a session model, every (client, service or server network) is judged every
10 s on its last 60 s (:mod:`classifier.live.sessions`) and those verdicts are what blocks
(services decided by name, TikTok, still block at once); per-flow verdicts are kept for
``/v1/live/flows``. Without a session model, each flow is judged at
its check points (1, 3, 5 and 10 s after it starts, then the last ``recheck`` seconds every
``recheck`` seconds, so a long HTTP/2 or HTTP/3 connection that turns to Shorts is seen);
the enforcer blocks a client+service only when enough recent verdicts agree (policy
``agreement``). Enforcement fails open: nftables entries carry timeouts, capture is a copy
(NFLOG / AF_PACKET never holds a packet), so if this process dies or falls behind, traffic
flows.

What it does goes to the log at INFO (:mod:`classifier.live.report`): a ``verdict`` line
when a (client, group)'s label or the action on it changes (block, would block in
dry-run, none), an ``unblock`` line when its blocks run out or are lifted, and a
``summary`` line every ``summary_every`` seconds and at exit.

After a large batch of flows ended or judged, and at least once a minute, the loop gives
the C heap's free memory back to the kernel (:class:`classifier.live.memory.Trimmer`;
glibc only), so a burst of flows does not leave the process's RSS a step higher.
"""

from __future__ import annotations

import dataclasses
import gc
import heapq
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from classifier.capture.live import (
    DECODER_ALIASES,
    ENGINES,
    AfPacketSource,
    LiveSource,
    NflogSource,
)
from classifier.capture.live_fast import Columns, PacketBuilder
from classifier.capture.packet import TCP, Packet
from classifier.enforce.audit import AuditLog
from classifier.enforce.dns_sinkhole import DnsSinkhole
from classifier.enforce.enforcer import Enforcer
from classifier.enforce.nft import NftTable
from classifier.enforce.policy import Policy, PolicyHolder, enforcement_status
from classifier.errors import ShortflowError
from classifier.features.featurize import FeaturizeConfig, Featurizer
from classifier.features.schema import FEATURE_COLUMNS, compute_features
from classifier.features.view import FlowView
from classifier.flows import Flow, FlowConfig
from classifier.live.lane import FastLane
from classifier.live.memory import Trimmer
from classifier.live.neighbours import Neighbours
from classifier.live.report import Report, VerdictLog, action_of, summary_text
from classifier.live.sessions import SessionTracker
from classifier.live.state import LiveState
from classifier.model.artifact import LoadedModel
from classifier.model.loading import load_flow_model, load_session
from classifier.model.predict import SHORT_FORM_SERVICE, verdict_arrays
from classifier.model.session_model import (
    SHORT,
    SessionModel,
    may_vote,
    pending_text,
    session_reason,
    window_probabilities,
)
from classifier.names.services import category_for

__all__ = ["LiveConfig", "LiveRouter", "POLICY_CATEGORY"]

log = logging.getLogger(__name__)

#: Which policy category a short-form verdict on a service falls under.
POLICY_CATEGORY = {
    "youtube": "shorts",
    "instagram": "reels",
    "facebook": "reels",
    "tiktok": "tiktok",
}


@dataclass(frozen=True)
class LiveConfig:
    """How ``shortflow live`` runs. ``capture``: ``afpacket`` (reads ``ifaces``; changes no
    firewall state) or ``nflog`` (shortflow's nftables table copies packets to
    ``nflog_group``: whole for a connection's first packets and DNS, headers after).
    ``engine``: ``fast`` (compiled, many packets per call) or ``reference`` (per packet;
    ``batch`` and ``python`` are older names of them). ``summary_every``: seconds between
    ``summary`` log lines (0: only the one at exit)."""

    ifaces: tuple[str, ...] = ()
    capture: str = "afpacket"
    nflog_group: int = 7
    engine: str = "fast"
    model: Path | None = None
    policy: Path | None = None
    enforce: str = "dry-run"
    audit_log: Path = Path("shortflow-audit.jsonl")
    data_dir: Path | None = None
    record_max_mb: float = 200.0
    record_dir_max_mb: float = 2000.0
    dns_listen: tuple[str, int] | None = None
    dns_upstream: tuple[str, int] | None = None
    checks: tuple[float, ...] = (1.0, 3.0, 5.0, 10.0)
    recheck: float = 10.0
    tick: float = 0.2
    summary_every: float = 300.0
    leases: Path | None = None
    flow: FlowConfig = field(
        default_factory=lambda: FlowConfig(idle_timeout=60.0, max_flows=200_000)
    )

    def __post_init__(self) -> None:
        if self.capture not in ("afpacket", "nflog"):
            raise ShortflowError(f"capture {self.capture!r}: use afpacket or nflog")
        if self.engine in DECODER_ALIASES:  # frozen: set the new name through object
            object.__setattr__(self, "engine", DECODER_ALIASES[self.engine])
        if self.engine not in ENGINES:
            raise ShortflowError(f"engine {self.engine!r}: use " + " or ".join(ENGINES))
        if self.capture == "afpacket" and not self.ifaces:
            raise ShortflowError("afpacket capture needs at least one --iface")
        if not self.checks or any(c <= 0 for c in self.checks) or self.recheck <= 0:
            raise ShortflowError("check points and recheck interval must be positive")
        if not self.summary_every >= 0:
            raise ShortflowError("the summary interval must be 0 (off) or positive")


class LiveRouter:
    """Owns the capture source, the featurizer, the model, the enforcer and the DNS server.

    Raises :class:`ShortflowError` subclasses at construction when a part cannot start
    (bad model, bad policy, no permission to capture, nftables refuses); on failure,
    everything already started is stopped again.
    """

    def __init__(self, config: LiveConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._stop = threading.Event()
        self._closers: list[Callable[[], None]] = []
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        cfg = self.config
        # the lean exports when current: no scikit-learn, scipy, lightgbm or pandas here
        self.model: LoadedModel = load_flow_model(cfg.model)
        self.session_model: SessionModel | None = load_session(cfg.model)
        if cfg.policy is not None:
            self.policy = PolicyHolder(cfg.policy)
        else:
            self.policy = PolicyHolder(
                initial=dataclasses.replace(Policy.default(), mode=cfg.enforce)
            )
        self.audit = AuditLog(cfg.audit_log)
        self._closers.append(self.audit.close)
        needs_table = cfg.enforce == "nft" or cfg.capture == "nflog"
        self.table = NftTable() if needs_table else None
        self.neighbours = Neighbours()
        self.enforcer = Enforcer(
            cfg.enforce, self.table, self.audit, self.policy, mac_lookup=self.neighbours.lookup
        )
        self._closers.append(self.enforcer.close)
        if self.table is not None and cfg.capture == "nflog":
            if cfg.enforce != "nft":
                self.table.create()
                self._closers.append(self.table.delete)
            self.table.add_capture(cfg.nflog_group)
        self.state = LiveState(self.enforcer, self.policy, clock=self._clock)
        self.state.use_model = self.use_model
        self._start_usage()
        self.reports = VerdictLog()
        self._started = self._clock()
        self._next_summary = self._started + (cfg.summary_every or float("inf"))
        self._next_expiry = self._started
        self.trimmer = Trimmer()
        self._start_recorder()
        note = enforcement_status(cfg.enforce, self.policy.current.mode)["note"]
        if note is not None:  # one line, at the default log level
            log.warning("%s", note)
        self._schedule = _CheckSchedule(cfg.checks, cfg.recheck)
        self.tracker: SessionTracker | None = None
        plugins: list[Any] = [self._schedule]
        if self.session_model is not None:
            self.tracker = SessionTracker(
                self.session_model.config, lambda flow: self.featurizer.flow_meta(flow)
            )
            plugins.append(self.tracker)
        self.featurizer = Featurizer(
            FeaturizeConfig(flow=cfg.flow, snapshots=()), capture="live", plugins=plugins
        )
        self.source: LiveSource = (
            NflogSource(cfg.nflog_group, engine=cfg.engine)
            if cfg.capture == "nflog"
            else AfPacketSource(cfg.ifaces, engine=cfg.engine)
        )
        self._closers.append(self.source.close)
        if cfg.engine == "fast":
            self.lane = FastLane(self.featurizer.table, PacketBuilder())
            self.source.sink = self._take
        self.dns: DnsSinkhole | None = None
        if cfg.dns_listen is not None:
            if cfg.dns_upstream is None:
                raise ShortflowError("--dns-listen needs --dns-upstream")
            self.dns = DnsSinkhole(
                cfg.dns_listen,
                cfg.dns_upstream,
                policy=self.policy,
                audit=self.audit,
                on_answer=self._on_dns_answer,
                mac_lookup=self.neighbours.lookup,
            )
            self.dns.start()
            self._closers.append(self.dns.stop)
        self._names_lock = threading.Lock()
        # what start-up loaded (model, pandas, numba) lives as long as the process: keep it
        # out of the collector's scans, which the packets of every batch set off
        gc.freeze()
        log.debug("live: capture %s, enforcement %s, %s", cfg.capture, cfg.enforce, self.decisions)

    def _start_recorder(self) -> None:
        """Recordings of clients' traffic in ``data_dir`` (off without one, or when the
        folder cannot be made: live mode runs on, and says why)."""
        cfg = self.config
        if cfg.data_dir is None:
            return
        from classifier.live.recording import Recorder

        try:
            recorder = Recorder(
                cfg.data_dir, max_mb=cfg.record_max_mb, dir_max_mb=cfg.record_dir_max_mb
            )
        except ShortflowError as exc:
            self.state.recording_off_reason = str(exc)
            log.warning("recording is off: %s", exc)
            return
        self.state.recorder = recorder
        self._closers.append(recorder.close)

    def _start_usage(self) -> None:
        """Per-client usage for the web pages, kept beside the audit log across restarts."""
        from classifier.web.usage import USAGE_FILE, UsageLog

        cfg = self.config
        path = cfg.audit_log.with_name(USAGE_FILE)
        usage = UsageLog.load(path)
        self.state.usage = usage
        self.state.audit_path = cfg.audit_log
        self.state.leases_path = cfg.leases

        def _save() -> None:
            try:
                usage.save(path)
            except OSError as exc:
                log.warning("usage not saved to %s: %s", path, exc.strerror)

        self._closers.append(_save)

    def use_model(self, model: LoadedModel, session_model: SessionModel | None) -> None:
        """Decide with ``model`` and ``session_model`` from the next judgement on (the
        Model page). Raises :class:`ShortflowError` when the session model would read
        another session view (window, step, grouping) than the running one, or when one
        of the two has a session model and the other not: that needs a restart with
        ``--model``."""
        old = self.session_model
        same = (
            old.config == session_model.config
            if old is not None and session_model is not None
            else old is session_model
        )
        if not same:
            raise ShortflowError(
                f"model {model.info.name} reads another session view than the running one; "
                "restart shortflow live with --model to use it"
            )
        with self._names_lock:  # session judgements read both under this lock
            self.model, self.session_model = model, session_model
        log.info("live: now %s", self.decisions)

    @property
    def decisions(self) -> str:
        """Which model and which of its verdicts decide, in words."""
        return f"model {self.model.info.name}, " + (
            "decisions from the session model"
            if self.session_model is not None
            else "decisions from per-flow verdicts (the model has no session model)"
        )

    def _on_dns_answer(self, payload: bytes, ts: float) -> None:
        with self._names_lock:
            self.featurizer.names.cache.feed_dns(payload, ts)

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        """Process packets until :meth:`stop` is called; then log the exit summary."""
        try:
            while not self._stop.is_set():
                self.step()
        finally:
            self.log_summary(final=True)

    def summary(self) -> str:
        """The running totals (see :func:`classifier.live.report.summary_text`)."""
        return summary_text(
            self.state.counters_snapshot(),
            self.state.label_counts(),
            uptime=self._clock() - self._started,
            flows_open=self.state.flow_count(),
            sessions_open=self.state.session_count(),
            blocks_active=self.state.block_count(),
            mode=self.enforcer.effective_mode,
        )

    def log_summary(self, *, final: bool = False) -> None:
        """Log the ``summary`` line (``exit summary`` when ``final``)."""
        log.info("%s: %s", "exit summary" if final else "summary", self.summary())

    def stop(self) -> None:
        self._stop.set()

    def step(self) -> None:
        """Read one batch of packets, update flows, and judge the flows that are due."""
        self.process(self.source.read(self.config.tick))

    def _take(self, arrays: Columns, k: int, view: memoryview) -> None:
        """A decoded batch of the fast engine into the flows (:class:`FastLane`); while a
        recording runs, as packets, which the recorder gets too."""
        recorder = self.state.recorder
        keep: list[Packet] | None = [] if recorder is not None and recorder.recording else None
        with self._names_lock:
            self.lane.take(arrays, k, view, keep)
        if keep:
            self.state.record_packets(keep)

    def process(self, packets: list[Packet]) -> None:
        """Add ``packets`` to the flows (the fast engine's batches came through
        :meth:`_take` already); judge the flows and sessions that are due at the clock's
        time; log what changed, and the summary when it is due."""
        table = self.featurizer.table
        with self._names_lock:
            for pkt in packets:
                table.add(pkt)
        self.state.record_packets(packets)
        # the packets are in their flows now: free them before judging, which can take
        # seconds (after a long judgement, one read can hold a packet of every flow)
        del packets
        now = self._clock()
        table.sweep(now)
        ended = table.pop_ended()
        for flow in ended:
            self.state.remove_flow(_key(flow))
        stats = self.source.stats
        self.state.counters["packets"] = stats.packets
        self.state.counters["received"] = stats.received
        self.state.counters["drops"] = stats.dropped
        judged = self._judge(now)
        if self.tracker is not None and self.tracker.due(now):
            with self._names_lock:
                self._judge_sessions(now)
        if now >= self._next_expiry:  # blocks that ran out, or were lifted by hand
            self.reports.expired(self.enforcer.active_blocks(), now)
            self._next_expiry = now + 1.0
        if now >= self._next_summary:
            self.log_summary()
            self._next_summary = now + self.config.summary_every
        # a burst's flows freed leave the C heap's pages resident: give them back
        self.trimmer.step(len(ended) + judged)

    def _judge_sessions(self, now: float) -> None:
        """Judge every (client, group) on the window that ends now (a session younger
        than the window on the seconds it has lived, as offline); a short-form
        probability is a vote for the group's policy category (``observe``: the policy's
        k-of-n agreement decides) where the window may vote (:func:`may_vote`: the
        session is old enough and the window fast enough), and a block covers the
        group's media flows."""
        assert self.tracker is not None and self.session_model is not None
        windows = self.tracker.windows(now)
        judged: list[tuple[str, str]] = []
        if not windows:
            self.state.end_sessions(judged)
            return
        policy = self.policy.current
        p_short, p_long = window_probabilities(self.session_model.estimator, windows)
        for row, ps, pl in zip(windows, p_short, p_long, strict=True):
            client, group = str(row["client"]), str(row["group"])
            judged.append((client, group))
            flows = self.tracker.media.get((client, group), [])
            reason = session_reason(row)
            by_name = category_for(group) == SHORT_FORM_SERVICE
            vote = may_vote(row["window_end"] - row["session_start"], row["down_mbps"])
            label, probability, pending, votes = self.reports.session_label(
                client, group, float(ps), float(pl), policy, vote=vote
            )
            if by_name:
                label, probability, pending = SHORT, 1.0, None
            log.debug("session %s %s: p_short %.2f p_long %.2f (%s)", client, group, ps, pl, reason)
            records = self._block_session(client, group, flows, float(ps) if vote else 0.0)
            action = action_of(records)
            if action == "none" and label == SHORT:
                if POLICY_CATEGORY.get(group) is None:
                    action = "none (no service name)"  # a nameless group: shown, not acted on
                elif not flows:
                    action = "none (no media flows)"
            self.state.update_session(
                client,
                group,
                {
                    "label": label,
                    "probability": round(probability, 4),
                    "p_short_form": round(float(ps), 4),
                    "p_long_form": round(float(pl), 4),
                    "pending": pending,
                    "short_form_votes": votes,
                    "short_form_needed": policy.agreement_k,
                    "window_end": row["window_end"],
                    "media_flows": len(flows),
                    "action": action,
                    "reason": reason,
                },
            )
            self.state.incr("session_verdicts")
            if by_name and not records:
                continue  # the name decides: its flows' verdicts report it (_act)
            name = self.featurizer.flow_meta(flows[0])["name"] if flows else None
            self._count(
                self.reports.report(
                    client,
                    group,
                    label=label,
                    probability=probability,
                    action=action,
                    name=name,
                    window=float(row["window_end"] - row["window_start"]),
                    records=records,
                    reason=reason,
                    media=bool(flows),
                    note=pending_text(votes, policy.agreement_k) if pending else None,
                )
            )
        self.state.end_sessions(judged)

    def _block_session(
        self, client: str, group: str, flows: list[Flow], p_short: float
    ) -> list[Any]:
        """A vote for the group's policy category (``observe``: the policy's k-of-n
        agreement decides); a block covers the group's media flows but those whose server
        name or address the policy allows (the vote goes with the first other one). The
        blocks made or renewed."""
        category = POLICY_CATEGORY.get(group)
        if category is None:
            return []
        policy = self.policy.current
        meta = self.featurizer.flow_meta
        named = [(f, meta(f)["name"] if policy.allow_names else None) for f in flows]
        named = [(f, host) for f, host in named if not policy.allowed(host, f.key.server)]
        records: list[Any] = []
        for i, (flow, host) in enumerate(named):
            key = flow.key
            act = self.enforcer.observe if i == 0 else self.enforcer.block
            record = act(
                client,
                key.server,
                key.server_port,
                _proto(key.proto),
                label=category,
                probability=p_short,
                name=group,
                host=host,
            )
            if record is None and i == 0:
                return []  # no agreement yet
            if record is not None:
                records.append(record)
        return records

    def _count(self, report: Report) -> None:
        if report.new_blocks:
            self.state.incr("blocks", report.new_blocks)

    def _judge(self, now: float) -> int:
        """Judge the flows due at ``now``; how many."""
        # in slices, each popped when judged: a burst of new flows (a scan, a flood, a
        # router started among busy clients), or a loop that fell behind with every flow's
        # next checks due at once, then holds one slice's checks and rows at a time
        judged = 0
        while due := self._schedule.pop_due(now, _JUDGE_SLICE):
            self._judge_flows(due)
            judged += len(due)
        return judged

    def _judge_flows(self, due: list[tuple[Flow, float]]) -> None:
        """Judge flows, each over its window ending at ``end``, and act on the verdicts.

        No DataFrame: the features go straight into a float matrix and the verdicts come
        from :func:`verdict_arrays`, with the values :func:`classify_table` gives."""
        numeric = np.empty((len(due), len(FEATURE_COLUMNS)), dtype=np.float64)
        services: list[str] = []
        categories: list[str] = []
        names: list[str | None] = []
        windows: list[str] = []
        for i, (flow, end) in enumerate(due):
            start = 0.0 if end <= self.config.checks[-1] else end - self.config.recheck
            meta = self.featurizer.flow_meta(flow)
            numeric[i] = compute_features(FlowView.of(flow, start, end))
            services.append(_text(meta["service"]))
            categories.append(_text(meta["category"]))
            names.append(meta["name"] or None)
            windows.append(f"{start:g}-{end:g} s")
        v = verdict_arrays(self.model, numeric, services, categories, names)
        labels = v.label.tolist()
        probability = np.round(v.probability, 4).tolist()
        p_short = np.round(v.p_short, 4).tolist()
        for i, (flow, _) in enumerate(due):
            self._act(
                flow,
                {
                    "label": labels[i],
                    "probability": probability[i],
                    "p_short_form": p_short[i],
                    "service": services[i],
                    "category": categories[i],
                    "name": names[i],
                    "decision_window": windows[i],
                    "reason": v.reason[i],
                },
            )

    def _act(self, flow: Flow, v: dict[str, Any]) -> None:
        key = flow.key
        proto = "tcp" if key.proto == TCP else "udp"
        self.state.update_flow(
            _key(flow),
            {
                "label": v["label"],
                "probability": v["probability"],
                "p_short_form": v["p_short_form"],
                "service": v["service"],
                "name": v["name"],
                "window": v["decision_window"],
                "reason": v["reason"],
                "at": round(self._clock() - flow.first_ts, 3),
                "flow_start": flow.first_ts,
            },
        )
        service = str(v["service"])
        category = POLICY_CATEGORY.get(service)
        if category is None:
            return  # a short-form verdict we cannot tie to a service is not acted on
        by_name = v["category"] == SHORT_FORM_SERVICE
        if self.session_model is not None and not by_name:
            return  # the session model decides; flow verdicts are shown only
        if by_name:
            record = self.enforcer.block(
                key.client, key.server, label=category, probability=1.0, name=v["name"]
            )
        else:
            record = self.enforcer.observe(
                key.client,
                key.server,
                key.server_port,
                proto,
                label=category,
                probability=float(v["p_short_form"]),
                name=v["name"],
            )
            if record is None:
                return  # without a session model, only what is done is reported
        label = SHORT if by_name else str(v["label"])
        probability = 1.0 if by_name else float(v["p_short_form"])
        window = v["decision_window"]
        self._count(
            self.reports.report(
                key.client,
                service,
                label=label,
                probability=probability,
                action=action_of([record] if record is not None else []),
                name=v["name"],
                window=float(window) if isinstance(window, int | float) else None,
                records=[record] if record is not None else [],
                reason="by name" if by_name else v["reason"],
            )
        )

    def close(self) -> None:
        """Stop the DNS server and capture, remove shortflow's nftables table. Idempotent."""
        self._stop.set()
        while self._closers:
            closer = self._closers.pop()
            try:
                closer()
            except Exception:  # closing must go on: the table must go even if DNS fails
                log.exception("live: error while stopping")


class _CheckSchedule:
    """When each flow is next judged: a heap of (time, flow), filled as flows start, so a
    tick costs the flows that are due, not all flows held."""

    def __init__(self, checks: tuple[float, ...], recheck: float) -> None:
        self._checks = checks
        self._recheck = recheck
        self._heap: list[tuple[float, int, Flow, int]] = []

    def _offset(self, done: int) -> float:
        """Seconds into a flow of its check number ``done`` (0-based)."""
        if done < len(self._checks):
            return self._checks[done]
        return self._checks[-1] + (done - len(self._checks) + 1) * self._recheck

    def on_init(self, flow: Flow, pkt: Packet) -> None:
        heapq.heappush(self._heap, (flow.first_ts + self._checks[0], flow.flow_id, flow, 0))

    def on_update(self, flow: Flow, pkt: Packet, direction: int) -> None:
        pass

    def steady(self, flow: Flow) -> bool:
        return True

    def on_extend(
        self, flow: Flow, ts: np.ndarray, size: np.ndarray, direction: np.ndarray
    ) -> None:
        pass

    def pop_due(self, now: float, limit: int | None = None) -> list[tuple[Flow, float]]:
        """Flows (still held) whose next check time has come, with the view end in seconds
        into the flow, the earliest first and at most ``limit`` of them; each is scheduled
        again for its following check (which may be due too)."""
        due: list[tuple[Flow, float]] = []
        while self._heap and self._heap[0][0] <= now and (limit is None or len(due) < limit):
            _, fid, flow, done = heapq.heappop(self._heap)
            if flow.end_reason:
                continue  # ended: forget it
            due.append((flow, self._offset(done)))
            heapq.heappush(
                self._heap, (flow.first_ts + self._offset(done + 1), fid, flow, done + 1)
            )
        return due


_JUDGE_SLICE = 1024
"""Flows judged per model call."""


def _text(value: Any) -> str:
    """A flow's service or category as a str: "unknown" for None/NaN (as
    :func:`classify_table` reads a missing service). LiveState keeps one shared copy of
    the strings it stores."""
    if isinstance(value, str):
        return value
    return "unknown" if value is None or value != value else str(value)


def _proto(proto: int) -> str:
    return "tcp" if proto == TCP else "udp"


def _key(flow: Flow) -> tuple[str, str, int, str, int]:
    """The flow's key for LiveState: (proto, client, client_port, server, server_port)."""
    k = flow.key
    return (_proto(k.proto), k.client, k.client_port, k.server, k.server_port)

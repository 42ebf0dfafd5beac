"""Request and response bodies of the HTTP API (the OpenAPI contract)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, IPvAnyAddress, WithJsonSchema, model_validator

__all__ = [
    "Health",
    "Ready",
    "FlowVerdict",
    "ClientSummary",
    "CaptureStats",
    "CaptureVerdicts",
    "FlowRows",
    "RowVerdict",
    "RowVerdicts",
    "ModelCard",
    "LiveFlow",
    "LiveFlows",
    "SessionVerdict",
    "LiveSession",
    "LiveSessions",
    "Enforcement",
    "Block",
    "Blocks",
    "BlockRequest",
    "PolicyAgreement",
    "PolicyClients",
    "PolicyAllow",
    "PolicySinkhole",
    "PolicyDoc",
    "Recording",
    "Recordings",
    "RecordingRequest",
    "RecordingInterval",
    "RelabelRequest",
]

Label = str
"""One of the model's labels: short-form, long-form, other."""

Pending = Annotated[
    Literal["short-form"] | None,
    Field(
        description="short-form when it is the likeliest label but the agreement (k of the "
        "last n windows at the threshold) does not hold (yet), so the label is long-form or "
        "other; null otherwise"
    ),
]
ShortFormNeeded = Annotated[
    int, Field(ge=1, description="windows short-form needs: the agreement's k (default 3)")
]

IpAddress = Annotated[
    IPvAnyAddress,
    WithJsonSchema(
        {"anyOf": [{"type": "string", "format": "ipv4"}, {"type": "string", "format": "ipv6"}]}
    ),
]
"""An IPv4 or IPv6 address (documented with the standard string formats)."""


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    status: Literal["ready"] = "ready"
    model: str = Field(description="name of the loaded model")
    live: bool = Field(description="whether a live router state is attached")


class FlowVerdict(BaseModel):
    """One flow (or one window of a flow) of an uploaded capture, with its verdict."""

    flow_id: int
    proto: int = Field(description="IP protocol number: 6 TCP, 17 UDP")
    client: str
    client_port: int
    server: str
    server_port: int
    first_ts: float = Field(description="first packet, epoch seconds")
    last_ts: float = Field(description="last packet, epoch seconds")
    end_reason: str
    duration: float
    bytes_up: float
    bytes_down: float
    pkts_up: float
    pkts_down: float
    sni: str | None = Field(description="TLS or QUIC server name, when seen")
    alpn: str | None
    dns_name: str | None = Field(description="name a DNS answer gave for the server")
    name: str | None = Field(description="the name used for the service rules")
    name_source: str | None
    service: str
    category: str
    window_start: float | None = Field(None, description="with windows: slice start, s")
    window_end: float | None = Field(None, description="with windows: slice end, s")
    label: Label
    probability: float = Field(ge=0.0, le=1.0, description="probability of the label")
    p_short_form: float = Field(ge=0.0, le=1.0)
    decision_window: str = Field(description="what the verdict saw, e.g. 'first 3 s'")
    reason: str
    decided_by: Literal["name", "session", "flow"] = Field(
        "flow",
        description="what decided the label: a name rule (a service that is "
        "short-form as a whole), the session model (the flow carried media through judged "
        "windows of its client's activity) or the flow model alone",
    )
    flow_label: Label | None = Field(None, description="the flow model's own label")
    flow_probability: float | None = Field(
        None, ge=0.0, le=1.0, description="the flow model's own probability"
    )


class ClientSummary(BaseModel):
    client: str
    flows: int
    short_form_flows: int
    long_form_flows: int
    short_form_share_of_video_bytes: float


class CaptureStats(BaseModel):
    bytes: int = Field(description="size of the upload")
    format: str
    records: int
    packets: int
    skipped: dict[str, int]
    truncated_at: int | None
    flows: int
    rows: int
    seconds: float = Field(description="time spent reading, featurizing and classifying")


class TimelineSpan(BaseModel):
    client: str
    group: str = Field(description="service, or server network when no name is known")
    start: float = Field(description="epoch seconds")
    end: float = Field(description="epoch seconds")
    label: str = Field(description="short-form, long-form or other (session model)")
    p_short: float = Field(description="highest short-form probability of a window in it")
    pending: Pending = None
    short_form_votes: int = Field(
        ge=0,
        description="the most short-form votes of a window in it: of that window's last n "
        "(default 5) windows, those whose short-form probability reached the threshold",
    )
    short_form_needed: ShortFormNeeded
    reason: str


class CaptureVerdicts(BaseModel):
    capture: str = Field(description="file name given with the upload, else 'upload'")
    model: str
    horizon: float | None
    window: float | None
    flows: list[FlowVerdict]
    clients: list[ClientSummary]
    timeline: list[TimelineSpan] = Field(
        default_factory=list,
        description="each client's activity over time from the session model (60 s "
        "windows every 10 s, consecutive windows with one verdict merged); "
        "empty when the model has no session model",
    )
    stats: CaptureStats


class FlowRows(BaseModel):
    """Feature rows: each row has the model's input columns (``GET /v1/model``
    ``feature_columns`` plus ``service``); other columns are ignored."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "rows": [{"duration": 12.5, "bytes_down": 4.2e6, "...": 0.0, "service": "youtube"}],
                "horizon": None,
            }
        }
    )

    rows: list[dict[str, float | str | None]] = Field(
        description="one object per flow: feature column -> number, 'service' -> text"
    )
    horizon: float | None = Field(
        None,
        gt=0,
        description="the rows describe the first HORIZON seconds of each flow "
        "(an early snapshot); only changes decision_window",
    )


class RowVerdict(BaseModel):
    index: int = Field(description="position of the row in the request")
    service: str
    label: Label
    probability: float = Field(ge=0.0, le=1.0)
    p_short_form: float = Field(ge=0.0, le=1.0)
    decision_window: str
    reason: str


class RowVerdicts(BaseModel):
    model: str
    horizon: float | None
    verdicts: list[RowVerdict]
    warnings: list[str] = Field(
        default_factory=list,
        description="e.g. the request's columns the model does not read (ignored)",
    )


class ModelCard(BaseModel):
    """The loaded model's ``model.json``."""

    name: str
    sha256: str
    schema_version: str
    feature_columns: list[str]
    labels: list[str]
    decision_windows: list[float | None]
    shortflow_version: str
    sklearn_version: str
    python_version: str
    created: str
    estimator: str
    training_manifest_sha256: str
    metrics: dict[str, Any]


class LiveFlow(BaseModel):
    key: dict[str, str | int | float | None] = Field(
        description="proto, client, client_port, server, server_port"
    )
    verdict: dict[str, Any] = Field(description="latest verdict: label, probability, ...")
    first_verdict: dict[str, Any] = Field(
        description="the flow's first verdict; its `at` is seconds from flow start to verdict"
    )
    verdicts: int = Field(description="verdicts seen for this flow")
    updated: float = Field(description="time of the latest verdict, epoch seconds")
    ended: bool = Field(False, description="the flow has ended (kept 10 minutes with its verdicts)")
    ended_at: float | None = Field(
        None, description="when the flow ended, epoch seconds; null while active"
    )


Mode = Literal["off", "dry-run", "nft"]


class Enforcement(BaseModel):
    """``shortflow live --enforce`` and the policy's ``mode``: the more cautious wins."""

    flag: Mode = Field(description="the --enforce flag live mode was started with")
    policy: Mode = Field(description="the running policy's mode")
    effective: Mode = Field(description="the mode in force: the more cautious of the two")
    note: str | None = Field(
        description="what to change to get the other, when they disagree; null when they agree"
    )


class LiveFlows(BaseModel):
    flows: list[LiveFlow]
    counters: dict[str, int]
    enforcement: Enforcement


class SessionVerdict(BaseModel):
    """A session-model verdict of live mode."""

    label: Label = Field(
        description="short-form when the policy's agreement holds, else long-form or other "
        "(whichever is likelier); short-form too for a service that is short-form by name"
    )
    probability: float = Field(description="probability of the label")
    p_short_form: float = Field(description="short-form probability of the latest window")
    p_long_form: float = Field(description="long-form probability of the latest window")
    pending: Pending = None
    short_form_votes: int = Field(
        ge=0,
        description="windows among the agreement's last n (default 5), this one included, "
        "whose short-form probability reached the threshold",
    )
    short_form_needed: ShortFormNeeded
    window_end: float = Field(description="end of the window judged, epoch seconds")
    media_flows: int = Field(ge=0, description="media connections of the session")
    action: str = Field(description="block, would block (dry-run), none ...")
    reason: str = Field(description="the session figures behind the probability")


class LiveSession(BaseModel):
    client: str
    group: str = Field(description="service, or server network when no name is known")
    verdict: SessionVerdict = Field(description="latest session-model verdict")
    updated: float = Field(description="time of the latest judgement, epoch seconds")
    ended: bool = Field(
        False,
        description="no traffic of this client to this group at "
        "the last judgement (kept 10 minutes with its last verdict)",
    )
    ended_at: float | None = Field(
        None, description="when the session ended, epoch seconds; null while active"
    )


class LiveSessions(BaseModel):
    sessions: list[LiveSession]


class Block(BaseModel):
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
    reason: str | None = None


class Blocks(BaseModel):
    blocks: list[Block]


class BlockRequest(BaseModel):
    """Block a client+server pair (no port) or one server port, for ``duration_s``."""

    model_config = ConfigDict(extra="forbid")

    client: IpAddress
    server: IpAddress
    port: int | None = Field(None, ge=1, le=65535)
    proto: Literal["tcp", "udp"] | None = None
    duration_s: int = Field(300, ge=1, le=86400)
    reason: str = Field("manual block via API", min_length=1, max_length=200)

    @model_validator(mode="after")
    def _port_and_proto(self) -> BlockRequest:
        if (self.port is None) != (self.proto is None):
            raise ValueError("give port and proto together, or neither for a pair block")
        if self.client.version != self.server.version:
            raise ValueError("client and server must both be IPv4 or both IPv6")
        return self


class PolicyAgreement(BaseModel):
    k: int
    n: int
    threshold: float


class PolicyClients(BaseModel):
    only: list[str]
    never: list[str]


class PolicyAllow(BaseModel):
    names: list[str]
    ips: list[str]


class PolicySinkhole(BaseModel):
    names: list[str]
    answer: str


class PolicyDoc(BaseModel):
    """The running policy, in the shape of the TOML file (``PUT`` takes it back)."""

    mode: str
    categories: list[str]
    block_seconds: int
    schedules: list[str]
    agreement: PolicyAgreement
    clients: PolicyClients
    allow: PolicyAllow
    sinkhole: PolicySinkhole
    source: str


RecordingLabel = Literal[
    "shorts",
    "reels",
    "tiktok",
    "long-form",
    "short-form",
    "other-video",
    "web",
    "call",
    "mixed",
    "other",
]
"""What a recording shows: shorts, reels, tiktok (short-form of that app), long-form, or
one of the dataset's session labels."""


class RecordingInterval(BaseModel):
    """A labelled part of a recording: ``start``/``end`` in unix seconds, or
    ``start_s``/``end_s`` in seconds from the recording's start."""

    model_config = ConfigDict(extra="forbid")

    label: RecordingLabel
    start: float | None = Field(None, ge=0, le=4e9)
    end: float | None = Field(None, ge=0, le=4e9)
    start_s: float | None = Field(None, ge=0, le=86400 * 2)
    end_s: float | None = Field(None, ge=0, le=86400 * 2)

    @model_validator(mode="after")
    def _one_pair(self) -> RecordingInterval:
        absolute = self.start is not None and self.end is not None
        relative = self.start_s is not None and self.end_s is not None
        if not (absolute or relative):
            raise ValueError("give start and end, or start_s and end_s")
        lo, hi = (self.start, self.end) if absolute else (self.start_s, self.end_s)
        if hi is None or lo is None or hi <= lo:
            raise ValueError("end must come after start")
        return self


class RecordingRequest(BaseModel):
    """Record one client's traffic for ``minutes`` as ``label``."""

    model_config = ConfigDict(extra="forbid")

    client: IpAddress
    minutes: float = Field(gt=0, le=1440, description="how long to record (at most a day)")
    label: RecordingLabel
    app: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$",
        description="the app shown (default: from the label: shorts youtube, reels "
        "instagram, tiktok tiktok, long-form youtube)",
    )
    alias: str | None = Field(
        None, max_length=64, description="the device's name, e.g. 'Anna's phone'"
    )


class RelabelRequest(BaseModel):
    """A new label for a recording, and optionally labelled time intervals (without them
    the whole recording takes the label)."""

    model_config = ConfigDict(extra="forbid")

    label: RecordingLabel
    intervals: list[RecordingInterval] | None = Field(None, max_length=1000)


class Recording(BaseModel):
    id: str
    client: str
    alias: str | None
    label: str = Field(description="as given: shorts, reels, tiktok, long-form, ...")
    session_label: str = Field(description="the dataset label of its manifest row")
    app: str
    start: float = Field(description="epoch seconds")
    end: float | None = Field(description="epoch seconds; null while running")
    planned_s: float = Field(description="the duration asked for, seconds")
    duration_s: float = Field(description="seconds recorded so far (or in all)")
    bytes: int = Field(description="size of its pcap file")
    packets: int
    dropped: int = Field(description="packets lost because the writer queue was full")
    state: Literal["running", "done", "stopped", "capped"]
    reason: str | None = Field(description="why it ended")
    path: str = Field(description="its pcap file on the router")
    sha256: str | None = Field(description="the pcap's sha256, once ended")
    intervals: list[dict[str, Any]] = Field(
        description="labelled time intervals (start, end, label, start_s, end_s)"
    )


class Recordings(BaseModel):
    recordings: list[Recording]

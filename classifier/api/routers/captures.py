"""``POST /v1/captures:classify``: a pcap/pcapng upload -> a verdict for every flow.

The body is streamed to a temporary file in chunks (never held whole in memory), counted
against ``SHORTFLOW_MAX_UPLOAD_BYTES`` (413) and removed afterwards. Featurizing and
classifying run in the threadpool.
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, TypeVar

import anyio.to_thread
from fastapi import APIRouter, Query, Request

from classifier.api.problems import ApiProblem, problem_responses
from classifier.api.routers import MetricsDep, ModelDep, SettingsDep, run_cpu
from classifier.api.schemas import (
    CaptureStats,
    CaptureVerdicts,
    ClientSummary,
    FlowVerdict,
    TimelineSpan,
)
from classifier.api.settings import Settings
from classifier.capture.reader import is_builtin
from classifier.errors import CaptureError
from classifier.model.artifact import LoadedModel
from classifier.model.session_model import SessionModel

if TYPE_CHECKING:
    import pandas as pd

    from classifier.features.featurize import FeaturizeConfig

try:
    from python_multipart.multipart import MultipartParser, parse_options_header
except ImportError:  # python-multipart < 0.0.13 names its module ``multipart``
    from multipart.multipart import (  # type: ignore[no-redef]
        MultipartParser,
        parse_options_header,
    )

__all__ = ["router", "RAW_MEDIA_TYPES", "as_records", "classify_file"]

log = logging.getLogger(__name__)

router = APIRouter(tags=["captures"])

RAW_MEDIA_TYPES = (
    "application/octet-stream",
    "application/vnd.tcpdump.pcap",
    "application/vnd.tcpdump.pcapng",
    "application/x-pcapng",
)
_FIELD = "file"
_DEFAULT_NAME = "upload"
_UNSAFE = re.compile(r"[^\w.\-+ ()\[\]]")

_BINARY = {"type": "string", "format": "binary"}
_REQUEST_BODY: dict[str, Any] = {
    "required": True,
    "description": "the capture: a multipart form with field 'file', or the raw bytes",
    "content": {
        "multipart/form-data": {
            "schema": {"type": "object", "required": [_FIELD], "properties": {_FIELD: _BINARY}},
        },
        **{media: {"schema": _BINARY} for media in RAW_MEDIA_TYPES},
    },
}


def _display_name(raw: bytes | None) -> str:
    """A safe, short file name from a multipart ``filename`` (never a path)."""
    if not raw:
        return _DEFAULT_NAME
    name = raw.decode("utf-8", "replace").replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("_", name).strip(" .")[:120]
    return name or _DEFAULT_NAME


class _Spool:
    """Buffers body bytes and writes them to the temp file in big chunks, off the loop."""

    def __init__(self, fh: IO[bytes], chunk: int) -> None:
        self.fh = fh
        self.chunk = chunk
        self.buffer = bytearray()
        self.size = 0

    def add(self, data: bytes | memoryview) -> None:
        self.buffer += data
        self.size += len(data)

    async def flush(self, force: bool = False) -> None:
        if self.buffer and (force or len(self.buffer) >= self.chunk):
            data = bytes(self.buffer)
            self.buffer.clear()
            await anyio.to_thread.run_sync(self.fh.write, data)


class _FilePart:
    """Streaming multipart parser state: routes the ``file`` field's bytes to a spool."""

    def __init__(self, spool: _Spool) -> None:
        self.spool = spool
        self.name = _DEFAULT_NAME
        self.found = False
        self.complete = False
        self._in_file = False
        self._field = bytearray()
        self._value = bytearray()
        self._headers: dict[str, bytes] = {}

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers = {}
        self._in_file = False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.decode("latin-1").strip().lower()] = bytes(self._value)
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        disposition, params = parse_options_header(self._headers.get("content-disposition"))
        if (
            disposition == b"form-data"
            and params.get(b"name") == _FIELD.encode()
            and not self.found
        ):
            self.found = True
            self._in_file = True
            self.name = _display_name(params.get(b"filename"))

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self.spool.add(data[start:end])

    def _part_end(self) -> None:
        if self._in_file:
            self.complete = True
            self._in_file = False


async def _receive_raw(request: Request, spool: _Spool, limit: int) -> None:
    async for chunk in request.stream():
        if not chunk:
            continue
        spool.add(chunk)
        _check_size(spool.size, limit)
        await spool.flush()
    await spool.flush(force=True)


async def _receive_multipart(request: Request, spool: _Spool, limit: int, boundary: bytes) -> str:
    part = _FilePart(spool)
    try:
        parser = MultipartParser(boundary, part.callbacks())  # type: ignore[arg-type]
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            _check_size(received, limit)
            parser.write(chunk)
            await spool.flush()
        parser.finalize()
    except ValueError as exc:  # python-multipart's parse errors derive from ValueError
        raise ApiProblem(422, f"malformed multipart body: {exc}") from None
    await spool.flush(force=True)
    if not part.found:
        raise ApiProblem(
            422,
            f"multipart body has no '{_FIELD}' field; send the capture as form field '{_FIELD}'",
        )
    if not part.complete:
        raise ApiProblem(422, "multipart body ended before the end of the file field")
    return part.name


def _check_size(size: int, limit: int) -> None:
    if size > limit:
        raise ApiProblem(
            413, f"upload exceeds the limit of {limit} bytes (SHORTFLOW_MAX_UPLOAD_BYTES)"
        )


def _value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _records(frame: pd.DataFrame, fields: list[str]) -> list[dict[str, Any]]:
    cols = [c for c in fields if c in frame.columns]
    sub = frame[cols].astype(object).where(frame[cols].notna(), None)
    return [{k: _value(v) for k, v in row.items()} for row in sub.to_dict(orient="records")]


_Record = TypeVar("_Record", FlowVerdict, ClientSummary, TimelineSpan)


def as_records(frame: pd.DataFrame, model: type[_Record]) -> list[_Record]:
    """The rows of ``frame`` (verdicts, client summary or timeline) as the API's records:
    the fields of ``model`` only, NaN as None. ``shortflow classify --json`` prints these
    too."""
    return [model.model_validate(r) for r in _records(frame, list(model.model_fields))]


def _with_sessions(
    verdicts: pd.DataFrame,
    path: Path,
    session_model: SessionModel | None,
    settings: Settings,
    config: FeaturizeConfig,
    horizon: float | None,
    skip_bad: bool,
) -> tuple[pd.DataFrame, list[TimelineSpan]]:
    """The session model's view of the upload: whole-flow verdicts decided by it where the
    flows carried media (:mod:`classifier.model.combine`), and the activity timeline."""
    if session_model is None or not is_builtin(settings.backend):
        return verdicts, []  # tshark's flows need not be the session model's flows
    from classifier.model.timeline import with_sessions

    verdicts, spans = with_sessions(
        session_model, path, verdicts, config, horizon, skip_bad=skip_bad
    )
    return verdicts, as_records(spans, TimelineSpan)


def classify_file(
    path: Path,
    display: str,
    size: int,
    settings: Settings,
    model: LoadedModel,
    horizon: float | None,
    window: float | None,
    skip_bad: bool,
    session_model: SessionModel | None = None,
) -> CaptureVerdicts:
    """Featurize and classify one spooled upload (runs in a worker thread).

    Raises CaptureError (naming the upload, not the temp file) and ModelError.
    """
    from classifier.features.engine import featurize
    from classifier.features.featurize import FeaturizeConfig, FeaturizeStats
    from classifier.model.predict import classify_table, client_summary

    started = time.perf_counter()
    stats = FeaturizeStats()
    config = FeaturizeConfig(snapshots=tuple(settings.snapshots), window=window)
    try:
        # the fast engine with the builtin backend, else the reference (choose_engine)
        table = featurize(path, config, backend=settings.backend, skip_bad=skip_bad, stats=stats)
    except CaptureError as exc:
        raise CaptureError(display, exc.reason, exc.offset) from None
    verdicts, spans = _with_sessions(
        classify_table(model, table, horizon=horizon),
        path,
        session_model,
        settings,
        config,
        horizon,
        skip_bad,
    )
    clients = client_summary(verdicts)
    read = stats.read
    return CaptureVerdicts(
        capture=display,
        model=model.info.name,
        horizon=horizon,
        window=window,
        flows=as_records(verdicts, FlowVerdict),
        clients=as_records(clients, ClientSummary),
        timeline=spans,
        stats=CaptureStats(
            bytes=size,
            format=read.format,
            records=read.records,
            packets=read.packets,
            skipped=dict(read.skipped),
            truncated_at=read.truncated_at,
            flows=stats.table.flows,
            rows=len(verdicts),
            seconds=round(time.perf_counter() - started, 4),
        ),
    )


def _media_type(request: Request) -> tuple[str, dict[bytes, bytes]]:
    raw = request.headers.get("content-type")
    if not raw:
        return "", {}
    mime, params = parse_options_header(raw)
    return mime.decode("latin-1").lower(), params


@router.post(
    "/v1/captures:classify",
    response_model=CaptureVerdicts,
    summary="Classify every flow of a pcap/pcapng capture",
    responses=problem_responses(400, 413, 415, 422, 503),
    openapi_extra={"requestBody": _REQUEST_BODY},
)
async def classify_capture(
    request: Request,
    settings: SettingsDep,
    model: ModelDep,
    metrics: MetricsDep,
    horizon: Annotated[
        float | None,
        Query(
            gt=0,
            description="decide on the early snapshot of the first HORIZON seconds "
            "(one of the server's snapshot horizons, default 3 or 10)",
        ),
    ] = None,
    window: Annotated[
        float | None,
        Query(
            gt=0,
            le=86400,
            description="one verdict per window of WINDOW seconds of each flow "
            "instead of one per flow",
        ),
    ] = None,
    skip_bad: Annotated[
        bool, Query(description="continue past damaged records instead of failing")
    ] = False,
) -> CaptureVerdicts:
    """Upload a capture (multipart field ``file``, or the raw bytes with
    ``Content-Type: application/octet-stream`` or ``application/vnd.tcpdump.pcap``) and
    get every flow with its label, probability, service, names, decision window and reason,
    a per-client summary, and each client's activity timeline from the session model. A
    file that is not a capture answers 422 with the same one-line reason the CLI gives."""
    if horizon is not None and window is not None:
        raise ApiProblem(422, "give horizon or window, not both")
    if horizon is not None and horizon not in settings.snapshots:
        shown = ", ".join(f"{h:g}" for h in settings.snapshots)
        raise ApiProblem(
            422, f"horizon {horizon:g} is not a snapshot horizon of this server; use one of {shown}"
        )
    mime, params = _media_type(request)
    if mime != "multipart/form-data" and mime not in RAW_MEDIA_TYPES:
        raise ApiProblem(
            415,
            "send the capture as multipart/form-data field 'file' or as application/octet-stream",
            headers={"Accept-Post": ", ".join(("multipart/form-data", *RAW_MEDIA_TYPES))},
        )
    limit = settings.max_upload_bytes
    directory = str(settings.upload_dir) if settings.upload_dir is not None else None
    fd, name = tempfile.mkstemp(prefix="shortflow-upload-", suffix=".cap", dir=directory)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            spool = _Spool(fh, settings.upload_chunk_bytes)
            if mime == "multipart/form-data":
                boundary = params.get(b"boundary")
                if not boundary:
                    raise ApiProblem(400, "multipart/form-data without a boundary parameter")
                display = await _receive_multipart(request, spool, limit, boundary)
            else:
                display = _DEFAULT_NAME
                await _receive_raw(request, spool, limit)
        metrics.upload_bytes.inc(spool.size)
        log.debug("upload %s: %d bytes spooled to %s", display, spool.size, path)
        result = await run_cpu(
            request,
            classify_file,
            path,
            display,
            spool.size,
            settings,
            model,
            horizon,
            window,
            skip_bad,
            getattr(request.app.state, "session_model", None),
        )
    finally:
        path.unlink(missing_ok=True)
    metrics.count_labels((f.label for f in result.flows), source="capture")
    return result

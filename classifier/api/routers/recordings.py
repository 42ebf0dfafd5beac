"""Recordings of a client's own traffic on the live router (token required): start, list,
download, relabel, stop, delete. The work is in :mod:`classifier.live.recording`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import FileResponse

from classifier.api.auth import TokenRequired
from classifier.api.problems import ApiProblem, problem_responses
from classifier.api.routers import LiveDep, run_cpu
from classifier.api.schemas import Recording, RecordingRequest, Recordings, RelabelRequest
from classifier.errors import RecordingError, RecordingNotFound

__all__ = ["router"]

router = APIRouter(
    prefix="/v1/live/recordings",
    tags=["recordings"],
    dependencies=[TokenRequired],
    responses=problem_responses(401, 403, 409),
)

RecId = Annotated[str, Path(min_length=1, max_length=64, description="the recording's id")]
PCAP_MEDIA_TYPE = "application/vnd.tcpdump.pcap"


def _problem(exc: RecordingError) -> ApiProblem:
    if isinstance(exc, RecordingNotFound):
        return ApiProblem(404, str(exc))
    return ApiProblem(409, str(exc), title="recording refused", kind="recording-refused")


@router.post(
    "",
    response_model=Recording,
    status_code=201,
    summary="Record a client's traffic for a while, labelled",
    responses=problem_responses(422),
)
async def start_recording(body: RecordingRequest, live: LiveDep, request: Request) -> Recording:
    """Write every packet of ``client`` (both directions) to a pcap for ``minutes``; when it
    ends, a row with ``label`` goes to the recordings manifest. 409 when refused (recording
    off, the client recorded already, too many at once, folder full)."""
    try:
        rec = await run_cpu(
            request,
            live.start_recording,
            str(body.client),
            body.minutes,
            body.label,
            body.app,
            body.alias,
        )
    except RecordingError as exc:
        raise _problem(exc) from None
    return Recording.model_validate(rec)


@router.get("", response_model=Recordings, summary="Recordings, running and ended")
async def list_recordings(live: LiveDep, request: Request) -> Recordings:
    """Every recording, the latest started first (empty when recording is off)."""
    return Recordings.model_validate({"recordings": await run_cpu(request, live.recordings)})


@router.get(
    "/{rec_id}/capture",
    response_class=FileResponse,
    summary="Download a recording's pcap",
    responses={
        200: {
            "description": "the capture (libpcap format, link type raw IP)",
            "content": {PCAP_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        },
        **problem_responses(404),
    },
)
async def download_recording(rec_id: RecId, live: LiveDep, request: Request) -> FileResponse:
    """The pcap of an ended recording; 409 while it is still running, 404 for an unknown
    id."""
    try:
        path = await run_cpu(request, live.recording_file, rec_id)
    except RecordingError as exc:
        raise _problem(exc) from None
    return FileResponse(path, media_type=PCAP_MEDIA_TYPE, filename=path.name)


@router.patch(
    "/{rec_id}",
    response_model=Recording,
    summary="Relabel a recording",
    responses=problem_responses(404, 422),
)
async def relabel_recording(
    rec_id: RecId, body: RelabelRequest, live: LiveDep, request: Request
) -> Recording:
    """A new label and, optionally, labelled time intervals; its manifest row and timeline
    are rewritten."""
    intervals = (
        None
        if body.intervals is None
        else [iv.model_dump(exclude_none=True) for iv in body.intervals]
    )
    try:
        rec = await run_cpu(request, live.relabel_recording, rec_id, body.label, intervals)
    except RecordingError as exc:
        raise _problem(exc) from None
    return Recording.model_validate(rec)


@router.post(
    "/{rec_id}:stop",
    response_model=Recording,
    summary="Stop a recording now",
    responses=problem_responses(404),
)
async def stop_recording(rec_id: RecId, live: LiveDep, request: Request) -> Recording:
    """Ends a running recording (``stopped``) and writes its manifest row; an ended one is
    returned unchanged."""
    try:
        rec = await run_cpu(request, live.stop_recording, rec_id)
    except RecordingError as exc:
        raise _problem(exc) from None
    return Recording.model_validate(rec)


@router.delete(
    "/{rec_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a recording and its files",
    responses=problem_responses(404),
)
async def delete_recording(rec_id: RecId, live: LiveDep, request: Request) -> Response:
    """204 when deleted (a running one is stopped first); 404 for an unknown id."""
    if not await run_cpu(request, live.delete_recording, rec_id):
        raise ApiProblem(404, f"no recording {rec_id!r}")
    return Response(status_code=204)

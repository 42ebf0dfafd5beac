"""Live router state: active flows, blocks, manual block and unblock (token required)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from classifier.api.auth import TokenRequired
from classifier.api.problems import ApiProblem, problem_responses
from classifier.api.routers import LiveDep, run_cpu
from classifier.api.schemas import Block, BlockRequest, Blocks, LiveFlows, LiveSessions
from classifier.errors import PolicyError

__all__ = ["router"]

router = APIRouter(
    prefix="/v1/live",
    tags=["live"],
    dependencies=[TokenRequired],
    responses=problem_responses(401, 403, 409),
)


@router.get(
    "/flows",
    response_model=LiveFlows,
    summary="Active and recently ended flows with their latest verdicts",
)
async def live_flows(live: LiveDep) -> LiveFlows:
    """Active flows with their latest verdict (most recent first), then the flows that
    ended in the last 10 minutes (``ended``: true, ``ended_at``; at most 10,000), the
    live counters, and how ``--enforce`` and the policy's ``mode`` combine
    (``enforcement``)."""
    return LiveFlows.model_validate(
        {
            "flows": live.flows(),
            "counters": live.counters_snapshot(),
            "enforcement": live.enforcement(),
        }
    )


@router.get(
    "/sessions",
    response_model=LiveSessions,
    summary="Clients' activity per service: the session model's latest verdicts",
)
async def live_sessions(live: LiveDep) -> LiveSessions:
    """Each (client, service or server network) judged at the latest judgement, with its
    label, the short-form probability of its last 60 s, the action and the reason, most
    recent first; then those that ended in the last 10 minutes (``ended``: true,
    ``ended_at``; at most 10,000)."""
    return LiveSessions.model_validate({"sessions": live.sessions()})


@router.get("/blocks", response_model=Blocks, summary="Blocks in force")
async def live_blocks(live: LiveDep) -> Blocks:
    """Blocks (and dry-run would-be blocks) that have not expired, oldest first."""
    return Blocks.model_validate({"blocks": live.blocks()})


@router.post(
    "/blocks",
    response_model=Block,
    status_code=201,
    summary="Block a client+server (+port) by hand",
    responses=problem_responses(422, 503),
)
async def add_block(body: BlockRequest, live: LiveDep, request: Request) -> Block:
    """Block ``client`` -> ``server`` (one port and proto, or the whole pair) for
    ``duration_s`` seconds. 409 when nothing was blocked (mode off, allowlisted server);
    in dry-run mode the block is only logged (``dry_run`` is true)."""
    try:
        record = await run_cpu(
            request,
            live.block,
            str(body.client),
            str(body.server),
            body.port,
            body.proto,
            body.duration_s,
            body.reason,
        )
    except PolicyError as exc:
        raise ApiProblem(409, str(exc), title="not blocked", kind="not-blocked") from None
    return Block.model_validate(record)


@router.delete(
    "/blocks/{block_id}",
    status_code=204,
    response_class=Response,
    summary="Lift a block",
    responses=problem_responses(404, 503),
)
async def remove_block(
    block_id: Annotated[str, Path(min_length=1, max_length=64)],
    live: LiveDep,
    request: Request,
) -> Response:
    """204 when lifted; 404 when no such block is in force (unknown or expired)."""
    if not await run_cpu(request, live.unblock, block_id):
        raise ApiProblem(404, f"no block {block_id!r} is in force")
    return Response(status_code=204)

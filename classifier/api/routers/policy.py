"""``GET/PUT /v1/policy``: read or replace the running blocking policy;
``POST /v1/policy:reload``: re-read the policy file (token required)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request

from classifier.api.auth import TokenRequired
from classifier.api.problems import ApiProblem, problem_responses
from classifier.api.routers import LiveDep
from classifier.api.schemas import PolicyDoc

__all__ = ["router"]

router = APIRouter(
    prefix="/v1/policy",
    tags=["policy"],
    dependencies=[TokenRequired],
    responses=problem_responses(401, 403, 409),
)

_TOML_TYPES = ("application/toml", "text/plain", "text/x-toml", "application/x-toml")
_REQUEST_BODY: dict[str, Any] = {
    "required": True,
    "description": "the policy as TOML text (same format as the policy file) or as a JSON "
    "object of the same shape",
    "content": {
        "application/toml": {"schema": {"type": "string"}},
        "text/plain": {"schema": {"type": "string"}},
        "application/json": {"schema": {"type": "object"}},
    },
}


@router.get("", response_model=PolicyDoc, summary="The running policy")
async def get_policy(live: LiveDep) -> PolicyDoc:
    return PolicyDoc.model_validate(live.policy())


@router.put(
    "",
    response_model=PolicyDoc,
    summary="Replace the running policy",
    responses=problem_responses(400, 413, 415, 422),
    openapi_extra={"requestBody": _REQUEST_BODY},
)
async def put_policy(request: Request, live: LiveDep) -> PolicyDoc:
    """Validate and put in force a new policy. A bad policy answers 422 naming the key and
    the running policy stays. The policy file on disk is not changed: a later reload from
    the file replaces what was set here."""
    mime = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiProblem(422, "policy body is not UTF-8 text") from None
    if mime == "application/json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ApiProblem(422, f"policy body is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise ApiProblem(
                422,
                'a JSON policy must be an object like {"mode": "dry-run", "block_seconds": 300}',
            )
        result = live.set_policy_doc(doc, source="PUT /v1/policy")
    elif mime in _TOML_TYPES:
        result = live.set_policy_text(text, source="PUT /v1/policy")
    else:
        raise ApiProblem(
            415, "send the policy as application/toml (or text/plain) or as application/json"
        )
    return PolicyDoc.model_validate(result)


@router.post(
    ":reload",
    response_model=PolicyDoc,
    summary="Re-read the policy file",
    responses=problem_responses(422),
)
async def reload_policy(live: LiveDep) -> PolicyDoc:
    """Re-read the file given to ``shortflow live --policy``, as SIGHUP does, and return
    the policy in force. A bad file, or live mode without one, answers 422 and the running
    policy stays."""
    return PolicyDoc.model_validate(live.reload_policy())

"""``GET /v1/model``: the loaded model's ``model.json`` (versions, schema, metrics)."""

from __future__ import annotations

from fastapi import APIRouter

from classifier.api.problems import problem_responses
from classifier.api.routers import ModelDep
from classifier.api.schemas import ModelCard

__all__ = ["router"]

router = APIRouter(tags=["model"])


@router.get(
    "/v1/model",
    response_model=ModelCard,
    summary="The loaded model's model.json",
    responses=problem_responses(503),
)
async def get_model_card(model: ModelDep) -> ModelCard:
    """Name, sha256, feature schema version and columns, labels, decision windows,
    library versions and the evaluation metrics stored with the model."""
    return ModelCard.model_validate(model.info.to_json())

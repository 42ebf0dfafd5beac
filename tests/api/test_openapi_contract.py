"""Schemathesis against the OpenAPI document served by a real uvicorn server: for every
operation, a bounded number of generated requests; no 5xx, responses match the schema."""

from __future__ import annotations

import pytest
import schemathesis
import schemathesis.checks
from hypothesis import HealthCheck, given, settings

from classifier.api import Settings, create_app
from tests.api.conftest import TOKEN, RunningServer

AUTH = {"Authorization": f"Bearer {TOKEN}"}
_METHODS = {"get", "put", "post", "delete", "patch"}
OPERATIONS = sorted(
    (method.upper(), path)
    for path, item in create_app(Settings()).openapi()["paths"].items()
    for method in item
    if method in _METHODS
)


@pytest.fixture(scope="module")
def api_schema(live_api: RunningServer) -> schemathesis.schemas.BaseSchema:
    return schemathesis.openapi.from_url(f"{live_api.url}/openapi.json")


def test_every_operation_is_covered(api_schema: schemathesis.schemas.BaseSchema) -> None:
    served = []
    for result in api_schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]
        served.append((operation.method.upper(), operation.path))
    served.sort()
    assert served == OPERATIONS and len(OPERATIONS) >= 11


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_operation_conforms(
    api_schema: schemathesis.schemas.BaseSchema, method: str, path: str
) -> None:
    operation = api_schema[path][method]
    statuses: list[int] = []

    @given(case=operation.as_strategy())
    @settings(
        max_examples=20,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
        ],
    )
    def run(case: schemathesis.Case) -> None:
        # every check but "schema-valid data is accepted": the schema cannot say which
        # bytes are a capture or which text is a valid policy, so those answer 422
        response = case.call_and_validate(
            headers=AUTH, timeout=30, excluded_checks=[schemathesis.checks.positive_data_acceptance]
        )
        statuses.append(response.status_code)

    run()
    assert statuses and max(statuses) < 500

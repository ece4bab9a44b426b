"""Schemathesis over the OpenAPI document: generated valid and invalid requests, as an admin, never
get a 5xx, and every answer matches the documented responses."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from infra.settings import Settings
from reconguard.api.app import create_app
from schemas import utcnow
from tests.integration.interfaces.support import people_with_data, served_api

pytestmark = pytest.mark.integration

# The document does not depend on a server: build it here so each operation is its own test.
_DOCUMENT = create_app(
    Settings(KAFKA_BOOTSTRAP_SERVERS="unused:9092", DATABASE_URL="postgresql://unused/x")
).openapi()
SCHEMA = schemathesis.openapi.from_dict(_DOCUMENT)
OPERATIONS = [
    (method.upper(), path, bool(spec.get("parameters") or spec.get("requestBody")))
    for path, methods in _DOCUMENT["paths"].items()
    for method, spec in methods.items()
]
# Invalid input needs something to make invalid: operations without parameters get valid input only.
CASES = [
    pytest.param(method, path, mode, id=f"{method} {path} ({label} input)")
    for method, path, has_input in OPERATIONS
    for mode, label in ((GenerationMode.POSITIVE, "valid"), (GenerationMode.NEGATIVE, "invalid"))
    if has_input or mode is GenerationMode.POSITIVE
]
EXAMPLES_PER_MODE = 25
VALID_INPUT_ANSWERS = {200, 202, 400, 404, 409, 429}  # 409: an unlock of an account that is not locked


@pytest.fixture(scope="module")
def people(database_url):
    return people_with_data(database_url, tag="fuzz", snapshots=10, at=utcnow() - timedelta(minutes=5))


@pytest.fixture(scope="module")
def base_url(settings, people):
    with served_api(settings) as url:
        yield url


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_generated_requests_never_get_a_server_error(base_url, people, method, path, mode):
    operation = SCHEMA[path][method]
    headers = people.headers("admin")
    answered: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis_settings(
        max_examples=EXAMPLES_PER_MODE, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def exercise(case):
        if mode is GenerationMode.POSITIVE and case.path_parameters and "user_id" in case.path_parameters:
            # Random ids are 404s; a real owner makes the filters and pages reach the database.
            case.path_parameters["user_id"] = people.owner
        response = case.call(base_url=base_url, headers=headers, timeout=15)
        answered.append(response.status_code)
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
        )
        if mode is GenerationMode.POSITIVE:
            # Schema-valid input is never a 422; a 400 is a cursor or time range that only the
            # server can judge (schemathesis's own acceptance check does not know 400 is meant).
            assert response.status_code in VALID_INPUT_ANSWERS, response.text[:500]
            case.validate_response(response, excluded_checks=[positive_data_acceptance])

    exercise()
    assert answered, "no request was generated: this test proved nothing"


def test_the_schema_is_served_and_documents_the_bearer_scheme(base_url):
    document = httpx.get(f"{base_url}/openapi.json", timeout=10).json()
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "/users/{user_id}/sync" in document["paths"]

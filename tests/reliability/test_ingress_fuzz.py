"""Schemathesis against the payment ingress's own OpenAPI: every request gets a clear 4xx or a defined outcome.

The app runs in-process (ASGI) on the in-memory router of tests/starter/test_ingress.py. Cases are
sent three ways: as generated (mostly refused at the door: 401), with a valid HMAC signature or
bearer key computed over the exact bytes sent (so the body reaches the parser and the router), and
with the checks that matter here: never a 5xx other than the documented 503, a status the schema
documents, and a body of the documented shape.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

pytest.importorskip(
    "schemathesis", reason="schemathesis is not in the dev extras yet (pip install schemathesis)"
)

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.core import NotSet
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance
from starlette.testclient import TestClient

from starter.ingress import SIGNATURE_HEADER, TIMESTAMP_HEADER, IngressSettings, create_app, sign_webhook
from tests.starter.test_ingress import FakePaymentRouter

SECRET = "webhook-secret-for-fuzzing-0123456789"
API_KEY = "statement-api-key-for-fuzzing-0123456789"
app = create_app(
    FakePaymentRouter(), IngressSettings.model_validate({"webhook_secret": SECRET, "api_key": API_KEY})
)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
client = TestClient(app, raise_server_exceptions=False)
DOCUMENTED = {200, 400, 401, 405, 413, 415, 422, 503}  # 405: a method the path lacks (probes)


def authenticated(case: Any) -> tuple[str, dict[str, str], bytes]:
    """The case as bytes with a valid signature (card) or API key (statement)."""
    kwargs = case.as_transport_kwargs()
    headers = {k: str(v) for k, v in (kwargs.get("headers") or {}).items()}
    if "json" in kwargs:
        body = json.dumps(kwargs["json"], ensure_ascii=False).encode()
        headers["Content-Type"] = "application/json"
    elif isinstance(kwargs.get("data"), str | bytes):
        data = kwargs["data"]
        body = data.encode() if isinstance(data, str) else data
    else:
        body = b"" if isinstance(case.body, NotSet) else str(case.body).encode()
    if case.path == "/payments/card":
        stamp = int(time.time())
        headers[TIMESTAMP_HEADER] = str(stamp)
        headers[SIGNATURE_HEADER] = sign_webhook(SECRET, stamp, body)
    elif case.path == "/payments/bank-statement":
        headers["Authorization"] = f"Bearer {API_KEY}"
    return case.path, headers, body


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_ingress_never_answers_500_and_keeps_its_documented_shape(case: Any) -> None:
    case.call_and_validate(
        checks=[status_code_conformance, response_schema_conformance],
        excluded_checks=[],
    )
    path, headers, body = authenticated(case)
    response = client.request(case.method, path, headers=headers, content=body)
    assert response.status_code in DOCUMENTED, (response.status_code, response.text[:500])
    assert response.status_code < 500 or response.status_code == 503
    if path.startswith("/payments/") and response.status_code != 405:  # FastAPI's own 405: {"detail"} only
        answer = response.json()
        assert set(answer) == {"results", "usage", "detail", "errors", "format"}  # IngressAnswer
        if response.status_code != 200:
            assert answer["detail"], response.text[:500]
        for result in answer["results"]:
            assert result["outcome"] in {"applied", "held", "returned", "duplicate", "queued", "rejected"}

"""`POST /usage-reports` over real HTTP: monitoring's bearer key, validation, one outcome per report.

The sink is an in-memory fake; `tests/starter/test_cli_offers.py` delivers through the real one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from starter.ingress import IngressSettings, create_app
from tests.http_server import running
from tests.starter.test_ingress import API_KEY, SECRET, FakePaymentRouter
from workflows.offers_models import UsageDelivery, UsageReport

MONITORING_KEY = "monitoring-api-key-for-tests-0123456789"


class FakeSink:
    def __init__(self) -> None:
        self.delivered: list[tuple[str, UsageReport]] = []
        self.failing: set[str] = set()

    async def __call__(self, service_id: str, report: UsageReport) -> UsageDelivery:
        if service_id in self.failing:
            raise ConnectionError("temporal unavailable")
        if service_id.startswith("gone-"):
            return "ended"
        if service_id.startswith("nobody-"):
            return "unknown service"
        self.delivered.append((service_id, report))
        return "delivered"


def settings(**overrides: Any) -> IngressSettings:
    values = {"webhook_secret": SECRET, "api_key": API_KEY, "monitoring_api_key": MONITORING_KEY}
    return IngressSettings.model_validate({**values, **overrides})


@pytest.fixture
def sink() -> FakeSink:
    return FakeSink()


@pytest.fixture
def client(sink: FakeSink) -> Iterator[httpx.Client]:
    with running(create_app(FakePaymentRouter(), settings(), usage=sink)) as client:
        yield client


def report(service_id: str = "vps-1", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "service_id": service_id,
        "measured_at": "2027-03-01T10:00:00+01:00",
        "managed": True,
        "shared_resources": True,
        "disk_bytes": 100 * 2**30,
        "free_disk_bytes": 2**29,
    }
    body.update(overrides)
    return body


def post(client: httpx.Client, body: Any, key: str | None = MONITORING_KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return client.post("/usage-reports", json=body, headers=headers)


def test_reports_reach_their_services_one_outcome_each(client: httpx.Client, sink: FakeSink) -> None:
    response = post(
        client, {"reports": [report(), report("gone-2"), report("nobody-3", cpu_full_minutes=40)]}
    )
    assert response.status_code == 200, response.text
    assert [(u["service_id"], u["result"]) for u in response.json()["usage"]] == [
        ("vps-1", "delivered"),
        ("gone-2", "ended"),
        ("nobody-3", "unknown service"),
    ]
    [(service_id, delivered)] = sink.delivered
    assert service_id == "vps-1" and delivered.free_disk_bytes == 2**29 and delivered.managed


@pytest.mark.parametrize(
    ("key", "detail"),
    [(None, "missing bearer API key"), (API_KEY, "bad API key"), ("x" * 40, "bad API key")],
)
def test_only_monitoring_s_key_is_accepted(
    client: httpx.Client, sink: FakeSink, key: str | None, detail: str
) -> None:
    response = post(client, {"reports": [report()]}, key=key)
    assert response.status_code == 401 and detail in response.json()["detail"]
    assert sink.delivered == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"reports": [report(measured_at="2027-03-01T10:00:00")]}, "measured_at"),
        ({"reports": [report(free_disk_bytes=-1)]}, "free_disk_bytes"),
        ({"reports": [report(color="red")]}, "color"),
        ({"reports": []}, "reports"),
        ([report()], ""),
    ],
)
def test_invalid_reports_are_refused_whole(
    client: httpx.Client, sink: FakeSink, body: Any, field: str
) -> None:
    response = post(client, body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == "invalid usage report"
    assert field in str(response.json()["errors"])
    assert sink.delivered == []


def test_not_json_and_an_unreachable_server(client: httpx.Client, sink: FakeSink) -> None:
    response = client.post(
        "/usage-reports", content=b"{nope", headers={"Authorization": f"Bearer {MONITORING_KEY}"}
    )
    assert response.status_code == 400 and "malformed JSON" in response.json()["detail"]
    sink.failing.add("vps-2")
    response = post(client, {"reports": [report(), report("vps-2"), report("vps-3")]})
    assert response.status_code == 503
    assert [u["service_id"] for u in response.json()["usage"]] == ["vps-1"]
    assert "could not deliver to vps-2" in response.json()["detail"]


def test_without_a_monitoring_key_the_endpoint_is_off(sink: FakeSink) -> None:
    with running(create_app(FakePaymentRouter(), settings(monitoring_api_key=None), usage=sink)) as client:
        response = post(client, {"reports": [report()]})
    assert response.status_code == 503 and "not configured" in response.json()["detail"]

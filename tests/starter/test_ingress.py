"""The payment ingress over real HTTP: uvicorn on a loopback port, httpx as the payment system.

The router is an in-memory fake of the `PaymentRouter` Protocol, configured per variable symbol,
so these tests check what the ingress hands on and what it answers, not how workflows react.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activities.billing import PaymentReceived
from policy.money import normalize_variable_symbol
from starter.ingress import IngressSettings, create_app, sign_webhook
from starter.payment_routing import PaymentOutcome, RejectedLine, RoutingResult
from tests.http_server import running

FIXTURES = Path(__file__).parent.parent / "fixtures" / "bank"
SECRET = "webhook-secret-for-tests-0123456789"
API_KEY = "statement-api-key-for-tests-0123456789"


# ---------------------------------------------------------------------------------------------
# the fake router


@dataclass
class FakeService:
    """What the fake knows about the service that issued one VS."""

    service_id: str
    amount: Decimal  # of the open invoice
    state: Literal["open", "stale", "closed", "deleted"] = "open"


@dataclass
class FakePaymentRouter:
    """In-memory `PaymentRouter`: decides by VS as the real one would, records every call."""

    services: dict[str, FakeService] = field(default_factory=dict)
    failing_payment_ids: set[str] = field(default_factory=set)
    routed: list[PaymentReceived] = field(default_factory=list)
    rejected: list[RejectedLine] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.services = {normalize_variable_symbol(vs): s for vs, s in self.services.items()}

    async def route(self, payment: PaymentReceived) -> RoutingResult:
        if payment.payment_id in self.failing_payment_ids:
            raise ConnectionError("temporal unavailable")
        self.routed.append(payment)

        def result(outcome: PaymentOutcome, reason: str, service: FakeService | None = None) -> RoutingResult:
            return RoutingResult(
                payment_id=payment.payment_id,
                outcome=outcome,
                reason=reason,
                service_id=service.service_id if service else None,
                variable_symbol=payment.variable_symbol,
            )

        if payment.payment_id in self._seen:
            return result(PaymentOutcome.DUPLICATE, "payment id seen before")
        self._seen.add(payment.payment_id)
        service = self.services.get(payment.variable_symbol)
        if service is None:
            return result(PaymentOutcome.QUEUED, "no service issued this variable symbol")
        if service.state == "closed":
            return result(PaymentOutcome.QUEUED, "workflow closed", service)
        if service.state == "deleted":
            return result(PaymentOutcome.RETURNED, "service deleted", service)
        if service.state == "stale":
            return result(PaymentOutcome.HELD, "variable symbol of a cancelled invoice", service)
        if payment.amount != service.amount:
            return result(PaymentOutcome.HELD, f"amount {payment.amount} != {service.amount}", service)
        return result(PaymentOutcome.APPLIED, "renewed", service)

    async def reject(self, raw: RejectedLine) -> RoutingResult:
        self.rejected.append(raw)
        duplicate = raw.line_id in self._seen
        self._seen.add(raw.line_id)
        return RoutingResult(
            payment_id=raw.line_id,
            outcome=PaymentOutcome.DUPLICATE if duplicate else PaymentOutcome.REJECTED,
            reason=raw.reason,
            variable_symbol=raw.variable_symbol,
        )


def services() -> dict[str, FakeService]:
    return {
        "2024000101": FakeService("svc-open", Decimal("1200.00")),
        "2024000077": FakeService("svc-stale", Decimal("1200.00"), state="stale"),
        "2024000103": FakeService("svc-wrong-amount", Decimal("1210.00")),
        "2024000200": FakeService("svc-closed", Decimal("1200.00"), state="closed"),
    }


# ---------------------------------------------------------------------------------------------
# a real server


def ingress_settings(**overrides: Any) -> IngressSettings:
    return IngressSettings.model_validate({"webhook_secret": SECRET, "api_key": API_KEY, **overrides})


@pytest.fixture
def router() -> FakePaymentRouter:
    return FakePaymentRouter(services())


@pytest.fixture
def client(router: FakePaymentRouter) -> Iterator[httpx.Client]:
    with running(create_app(router, ingress_settings())) as client:
        yield client


def card_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "payment_id": "card-1",
        "variable_symbol": "2024000101",
        "amount": "1200.00",
        "currency": "CZK",
        "received_at": "2024-05-03T10:00:00+02:00",
    }
    body.update(overrides)
    return body


def post_card(
    client: httpx.Client,
    body: bytes | dict[str, Any],
    *,
    timestamp: int | None = None,
    secret: str = SECRET,
    signature: str | None = None,
) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    ts = int(time.time()) if timestamp is None else timestamp
    headers = {
        "Content-Type": "application/json",
        "X-Hostlife-Timestamp": str(ts),
        "X-Hostlife-Signature": signature or sign_webhook(secret, ts, raw),
    }
    return client.post("/payments/card", content=raw, headers=headers)


def raw_headers(headers: dict[str, str | bytes]) -> list[tuple[bytes, bytes]]:
    """Headers as bytes, so a test can put non-ASCII bytes on the wire as a hostile caller would."""
    return [
        (name.encode(), value if isinstance(value, bytes) else value.encode())
        for name, value in headers.items()
    ]


def outcomes(response: httpx.Response) -> list[tuple[str, str | None]]:
    return [(r["outcome"], r["service_id"]) for r in response.json()["results"]]


# ---------------------------------------------------------------------------------------------
# card webhook


def test_health_and_openapi(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    spec = client.get("/openapi.json").json()
    assert {"/payments/card", "/payments/bank-statement", "/healthz"} <= set(spec["paths"])
    statement_body = spec["paths"]["/payments/bank-statement"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/xml", "text/plain"} <= set(statement_body)


def test_signed_webhook_is_routed(client: httpx.Client, router: FakePaymentRouter) -> None:
    response = post_card(client, card_body(variable_symbol="0002024000101"))

    assert response.status_code == 200
    assert response.json()["results"] == [
        {
            "payment_id": "card-1",
            "outcome": "applied",
            "reason": "renewed",
            "service_id": "svc-open",
            "variable_symbol": "2024000101",
        }
    ]
    [payment] = router.routed
    assert payment.variable_symbol == "2024000101"  # leading zeros normalised
    assert payment.amount == Decimal("1200.00")
    assert payment.source == "card"


@pytest.mark.parametrize(
    ("vs", "expected"),
    [
        ("9999999999", ("queued", None)),
        ("2024000200", ("queued", "svc-closed")),
        ("2024000077", ("held", "svc-stale")),
        ("2024000103", ("held", "svc-wrong-amount")),
    ],
)
def test_webhook_answer_says_what_the_router_decided(
    client: httpx.Client, vs: str, expected: tuple[str, str | None]
) -> None:
    response = post_card(client, card_body(variable_symbol=vs))
    assert response.status_code == 200
    assert outcomes(response) == [expected]


def test_duplicate_delivery_reaches_the_router_twice_and_is_answered_duplicate(
    client: httpx.Client, router: FakePaymentRouter
) -> None:
    first = post_card(client, card_body())
    second = post_card(client, card_body())

    assert outcomes(first) == [("applied", "svc-open")]
    assert second.status_code == 200
    assert outcomes(second) == [("duplicate", None)]
    assert [p.payment_id for p in router.routed] == ["card-1", "card-1"]


@pytest.mark.parametrize(
    "tamper",
    ["wrong-secret", "tampered-body", "garbage-header", "missing-signature", "missing-timestamp"],
)
def test_bad_signature_is_401_and_routes_nothing(
    client: httpx.Client, router: FakePaymentRouter, tamper: str
) -> None:
    raw = json.dumps(card_body()).encode()
    ts = int(time.time())
    headers: dict[str, str | bytes] = {
        "X-Hostlife-Timestamp": str(ts),
        "X-Hostlife-Signature": sign_webhook(SECRET, ts, raw),
    }
    if tamper == "wrong-secret":
        headers["X-Hostlife-Signature"] = sign_webhook("another-secret-0123456789", ts, raw)
    elif tamper == "tampered-body":
        raw = raw.replace(b"1200.00", b"9999.00")
    elif tamper == "garbage-header":
        headers["X-Hostlife-Signature"] = "sha256=Ω not hex".encode()  # non-ASCII bytes on the wire
    elif tamper == "missing-signature":
        del headers["X-Hostlife-Signature"]
    else:
        del headers["X-Hostlife-Timestamp"]

    response = client.post("/payments/card", content=raw, headers=raw_headers(headers))

    assert response.status_code == 401
    assert response.json()["detail"]
    assert router.routed == [] and router.rejected == []


def test_second_signature_in_rotation_is_accepted(client: httpx.Client) -> None:
    raw = json.dumps(card_body()).encode()
    ts = int(time.time())
    both = f"{sign_webhook('old-secret-0123456789', ts, raw)}, {sign_webhook(SECRET, ts, raw)}"
    assert post_card(client, raw, timestamp=ts, signature=both).status_code == 200


@pytest.mark.parametrize("age", [301, -301, 10**9])
def test_timestamp_outside_tolerance_is_401_even_when_signed(
    client: httpx.Client, router: FakePaymentRouter, age: int
) -> None:
    response = post_card(client, card_body(), timestamp=int(time.time()) - age)
    assert response.status_code == 401
    assert "tolerance" in response.json()["detail"]
    assert router.routed == []


def test_tolerance_comes_from_settings_and_the_injected_clock(router: FakePaymentRouter) -> None:
    app = create_app(router, ingress_settings(tolerance_seconds=10), clock=lambda: 1_700_000_000.0)
    with running(app) as client:
        assert post_card(client, card_body(), timestamp=1_700_000_000 - 10).status_code == 200
        assert post_card(client, card_body(), timestamp=1_700_000_000 - 11).status_code == 401


@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"amount": NaN}', b"\xff\xfe", b"[" * 100_000])
def test_malformed_json_is_400_with_a_message_and_reaches_billing(
    client: httpx.Client, router: FakePaymentRouter, raw: bytes
) -> None:
    response = post_card(client, raw)

    assert response.status_code == 400
    assert response.json()["detail"].startswith("malformed JSON")
    assert outcomes(response) == [("rejected", None)]
    assert router.routed == []
    assert router.rejected[0].source == "card"


@pytest.mark.parametrize(
    ("overrides", "field_name", "message"),
    [
        ({"amount": 1200.5}, "amount", "string"),  # float
        ({"amount": 1200}, "amount", "string"),  # even an integer: amounts are strings
        ({"amount": "1200.005"}, "amount", "more than 2 decimal places"),
        ({"amount": "0.1000000000000000055511151231257827"}, "amount", "more than 2 decimal places"),
        ({"amount": "-5.00"}, "amount", "positive"),
        ({"amount": "0"}, "amount", "positive"),
        ({"amount": "1e300"}, "amount", "exceeds the limit"),
        ({"amount": "-1e300"}, "amount", "too large"),
        ({"amount": "100000000.01"}, "amount", "exceeds the limit"),
        ({"amount": "Infinity"}, "amount", "finite"),
        ({"amount": "twelve"}, "amount", "not a decimal amount"),
        ({"variable_symbol": "20240001011"}, "variable_symbol", "at most 10 digits"),
        ({"variable_symbol": "12AB"}, "variable_symbol", "digits only"),
        ({"variable_symbol": 2024000101}, "variable_symbol", "string"),
        ({"currency": "czk"}, "currency", "pattern"),
        ({"received_at": "2024-05-03T10:00:00"}, "received_at", "timezone"),
        ({"payment_id": ""}, "payment_id", "at least 1"),
        ({"payment_id": None}, "payment_id", "string"),
    ],
)
def test_invalid_payment_is_422_with_a_clear_message(
    client: httpx.Client,
    router: FakePaymentRouter,
    overrides: dict[str, Any],
    field_name: str,
    message: str,
) -> None:
    response = post_card(client, card_body(**overrides))

    assert response.status_code == 422
    answer = response.json()
    assert [error["loc"] for error in answer["errors"]] == [[field_name]]
    assert message in answer["errors"][0]["msg"]
    assert field_name in answer["detail"]
    # authentic but invalid: not applied, but the billing department has it
    assert router.routed == []
    assert [line.source for line in router.rejected] == ["card"]
    assert answer["results"][0]["outcome"] == "rejected"


def test_json_that_is_not_an_object_is_422(client: httpx.Client) -> None:
    response = post_card(client, b"[1, 2, 3]")
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == []


def test_oversized_body_is_413(router: FakePaymentRouter) -> None:
    with running(create_app(router, ingress_settings(max_body_bytes=100))) as client:
        response = post_card(client, card_body(payer="x" * 200))
    assert response.status_code == 413
    assert router.routed == []


def test_router_failure_is_503_not_500(router: FakePaymentRouter, client: httpx.Client) -> None:
    router.failing_payment_ids.add("card-1")
    response = post_card(client, card_body())
    assert response.status_code == 503
    assert "re-sending is safe" in response.json()["detail"]


# ---------------------------------------------------------------------------------------------
# bank statements


def bearer(key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_camt_upload_gives_one_outcome_per_line(client: httpx.Client, router: FakePaymentRouter) -> None:
    data = (FIXTURES / "camt053_sample.xml").read_bytes()
    response = client.post(
        "/payments/bank-statement",
        files={"file": ("statement.xml", data, "application/xml")},
        headers=bearer(),
    )

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["format"] == "camt053"
    assert outcomes(response) == [
        ("applied", "svc-open"),
        ("held", "svc-stale"),
        ("queued", None),  # VS nobody issued
        ("held", "svc-wrong-amount"),
        ("rejected", None),  # 11-digit VS
    ]
    assert [r["payment_id"] for r in answer["results"]] == [f"2405030000{n}" for n in range(1, 6)]
    assert "at most 10 digits" in answer["results"][4]["reason"]
    assert [p.variable_symbol for p in router.routed] == ["2024000101", "2024000077", "555123", "2024000103"]
    assert [line.line_id for line in router.rejected] == ["24050300005"]


def test_reimported_statement_is_all_duplicates(client: httpx.Client) -> None:
    data = (FIXTURES / "camt053_sample.xml").read_bytes()
    headers = {**bearer(), "Content-Type": "application/xml"}
    client.post("/payments/bank-statement", content=data, headers=headers)
    again = client.post("/payments/bank-statement", content=data, headers=headers)
    assert [outcome for outcome, _ in outcomes(again)] == ["duplicate"] * 5


def test_gpc_upload_as_plain_text(client: httpx.Client, router: FakePaymentRouter) -> None:
    data = (FIXTURES / "gpc_sample.gpc").read_bytes()
    response = client.post(
        "/payments/bank-statement", content=data, headers={**bearer(), "Content-Type": "text/plain"}
    )

    assert response.status_code == 200, response.text
    assert response.json()["format"] == "gpc"
    assert outcomes(response) == [
        ("applied", "svc-open"),
        ("queued", None),
        ("rejected", None),  # no VS
        ("rejected", None),  # reversal
    ]
    assert router.routed[0].payer == "Novák Jan 19-2900000001/2010"


def test_gpc_upload_as_multipart_keeps_windows_1250_bytes(
    client: httpx.Client, router: FakePaymentRouter
) -> None:
    data = (FIXTURES / "gpc_sample.gpc").read_bytes()
    response = client.post(
        "/payments/bank-statement",
        files={"file": ("vypis.gpc", data, "application/octet-stream")},
        data={"note": "May"},
        headers=bearer(),
    )
    assert response.status_code == 200, response.text
    assert router.routed[0].payer == "Novák Jan 19-2900000001/2010"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("wrong-key-0123456789"),
        {"Authorization": f"Basic {API_KEY}"},
        {"Authorization": "Bearer Ω".encode()},
    ],
)
def test_statement_needs_the_api_key(
    client: httpx.Client, router: FakePaymentRouter, headers: dict[str, str | bytes]
) -> None:
    data = (FIXTURES / "camt053_sample.xml").read_bytes()
    response = client.post("/payments/bank-statement", content=data, headers=raw_headers(headers))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert router.routed == []


@pytest.mark.parametrize(
    ("content", "content_type", "status", "message"),
    [
        (b"date;amount\n", "text/plain", 422, "unrecognised statement format"),
        (b"<Document><oops></Document>", "application/xml", 422, "not well-formed XML"),
        (b"   ", "text/plain", 422, "empty statement"),
        (b"{}", "application/json", 415, "unsupported content type"),
        (b"--x\r\nbroken", "multipart/form-data; boundary=x", 422, "no 'file' field"),
    ],
)
def test_unreadable_statement_is_4xx_with_a_message(
    client: httpx.Client,
    router: FakePaymentRouter,
    content: bytes,
    content_type: str,
    status: int,
    message: str,
) -> None:
    response = client.post(
        "/payments/bank-statement", content=content, headers={**bearer(), "Content-Type": content_type}
    )
    assert response.status_code == status
    assert message in response.json()["detail"]
    assert router.routed == [] and router.rejected == []


def test_router_failure_mid_statement_is_503_and_a_resend_completes_it(
    client: httpx.Client, router: FakePaymentRouter
) -> None:
    data = (FIXTURES / "camt053_sample.xml").read_bytes()
    headers = {**bearer(), "Content-Type": "application/xml"}
    router.failing_payment_ids.add("24050300003")

    failed = client.post("/payments/bank-statement", content=data, headers=headers)
    assert failed.status_code == 503
    assert "2 of 5 done" in failed.json()["detail"]
    assert outcomes(failed) == [("applied", "svc-open"), ("held", "svc-stale")]

    router.failing_payment_ids.clear()
    resent = client.post("/payments/bank-statement", content=data, headers=headers)
    assert resent.status_code == 200
    assert [outcome for outcome, _ in outcomes(resent)] == [
        "duplicate",
        "duplicate",
        "queued",
        "held",
        "rejected",
    ]


# ---------------------------------------------------------------------------------------------
# settings


def test_settings_from_env_with_secret_files(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(SECRET + "\n")
    loaded = IngressSettings.from_env(
        {
            "HOSTLIFE_INGRESS_WEBHOOK_SECRET_FILE": str(tmp_path / "secret"),
            "HOSTLIFE_INGRESS_API_KEY": API_KEY,
            "HOSTLIFE_INGRESS_TOLERANCE_SECONDS": "60",
        }
    )
    assert loaded.webhook_secret.get_secret_value() == SECRET
    assert loaded.api_key.get_secret_value() == API_KEY
    assert (loaded.tolerance_seconds, loaded.host, loaded.port) == (60, "127.0.0.1", 8400)
    assert SECRET not in repr(loaded)


@pytest.mark.parametrize(
    "environ",
    [
        {"HOSTLIFE_INGRESS_API_KEY": API_KEY},  # no webhook secret
        {"HOSTLIFE_INGRESS_WEBHOOK_SECRET": "short", "HOSTLIFE_INGRESS_API_KEY": API_KEY},
        {
            "HOSTLIFE_INGRESS_WEBHOOK_SECRET": SECRET,
            "HOSTLIFE_INGRESS_WEBHOOK_SECRET_FILE": "/nonexistent",
            "HOSTLIFE_INGRESS_API_KEY": API_KEY,
        },
    ],
)
def test_settings_refuse_to_run_without_proper_secrets(environ: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        IngressSettings.from_env(environ)


# ---------------------------------------------------------------------------------------------
# property: no body gives a 500

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
payment_like = st.fixed_dictionaries(
    {},
    optional={
        "payment_id": json_values | st.text(),
        "variable_symbol": json_values | st.from_regex(r"\A[0-9 ]{0,14}\Z"),
        "amount": json_values
        | st.decimals(allow_nan=False).map(str)
        | st.from_regex(r"\A-?[0-9]{0,12}\.[0-9]{0,4}\Z"),
        "currency": json_values | st.sampled_from(["CZK", "EUR", "czk", ""]),
        "received_at": json_values | st.datetimes().map(lambda d: d.isoformat()),
        "payer": json_values,
    },
)


def test_random_signed_bodies_never_give_500() -> None:
    router = FakePaymentRouter(services())
    with running(create_app(router, ingress_settings())) as client:

        @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(body=json_values | payment_like | st.binary(max_size=64))
        def check(body: Any) -> None:
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            response = post_card(client, raw)
            assert response.status_code in (200, 400, 422), response.text
            answer = response.json()
            assert len(answer["results"]) == 1  # whatever it was, it got exactly one outcome

        check()


gpc_like = st.lists(
    st.sampled_from(["074", "075", "076", "078", "999", ""]).flatmap(
        lambda record: st.text(st.characters(codec="cp1250"), max_size=140).map(lambda rest: record + rest)
    ),
    max_size=6,
).map(lambda lines: "\r\n".join(lines).encode("cp1250"))
camt_like = st.lists(
    st.sampled_from(
        [
            "<Ntry>",
            "</Ntry>",
            '<Amt Ccy="CZK">',
            "</Amt>",
            "<CdtDbtInd>CRDT</CdtDbtInd>",
            "<Sts>BOOK</Sts>",
            "<Ustrd>VS:",
            "</Ustrd>",
            "<BookgDt><Dt>",
            "</Dt></BookgDt>",
        ]
    )
    | st.text(max_size=12),
    max_size=20,
).map(
    lambda parts: (
        '<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"><BkToCstmrStmt><Stmt>'
        + "".join(parts)
        + "</Stmt></BkToCstmrStmt></Document>"
    ).encode()
)


def test_random_statements_never_give_500() -> None:
    router = FakePaymentRouter(services())
    with running(create_app(router, ingress_settings())) as client:

        @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(data=gpc_like | camt_like | st.binary(max_size=200))
        def check(data: bytes) -> None:
            response = client.post("/payments/bank-statement", content=data, headers=bearer())
            assert response.status_code in (200, 422), response.text
            assert "detail" in response.json()

        check()

"""Payments end to end (issue 6): real HTTP → ingress → `TemporalPaymentRouter` → real workflows.

Uvicorn serves the ingress on a free loopback port on the test's own event loop (the router's
Temporal client lives there), httpx plays the bank and the card gateway, and the services are real
`SubscriptionWorkflow`s on the session's time-skipping server with the harness's recording adapters.
Every line must end where SPEC §3 says: applied (renewed), held or queued for the billing
department, returned to the payer, or acknowledged once as a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from policy.payments import InvoiceRecord
from policy.periods import add_period
from starter.ingress import IngressSettings, create_app, sign_webhook
from starter.payment_router import TemporalPaymentRouter
from tests.workflows.harness import Lab, lab
from workflows.models import BillingDetailsChanged, SuspendRequest
from workflows.subscription import SubscriptionWorkflow

SAMPLE = Path(__file__).parent.parent / "fixtures" / "bank" / "camt053_sample.xml"
SECRET = "webhook-secret-for-flow-tests-0123456789"
API_KEY = "statement-api-key-for-flow-tests-0123456789"
Handle = WorkflowHandle[SubscriptionWorkflow, Any]


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Uvicorn on a free loopback port, on this event loop; yields an HTTP client for it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline and not task.done(), "uvicorn did not start"
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


@contextlib.asynccontextmanager
async def stack(env: WorkflowEnvironment) -> AsyncIterator[tuple[Lab, httpx.AsyncClient]]:
    settings = IngressSettings.model_validate({"webhook_secret": SECRET, "api_key": API_KEY})
    async with lab(env) as l:
        router = TemporalPaymentRouter(env.client, l.billing)
        async with serving(create_app(router, settings)) as http:
            yield l, http


@contextlib.asynccontextmanager
async def services(l: Lab, count: int) -> AsyncIterator[list[Handle]]:
    """Hosting services 20 days before D: their renewal invoice is issued at once (D-30 is past)."""
    handles = [
        await l.start(service_id=f"flow-{uuid.uuid4().hex[:10]}", expires_in_days=20) for _ in range(count)
    ]
    try:
        yield handles
    finally:
        for handle in handles:  # no run may keep timers on the shared server without a worker
            with contextlib.suppress(RPCError):
                await handle.terminate(reason="test finished")


async def open_invoice(l: Lab, handle: Handle) -> InvoiceRecord:
    deadline = time.monotonic() + 20
    while (invoice := (await l.status(handle)).open_invoice) is None:
        assert time.monotonic() < deadline, "no invoice was issued"
        await asyncio.sleep(0.05)
    return invoice


def statement(lines: dict[str, tuple[str, str]], batch: str) -> bytes:
    """The sample CAMT.053 with the real variable symbols and amounts of this test put in.

    `lines` maps the sample's case (matching, stale, unknown, wrong_amount) to (VS, amount); the
    fifth, malformed line (an 11-digit VS) stays as it is. Bank references get a per-test prefix.
    """
    xml = SAMPLE.read_text(encoding="utf-8")
    swaps = {
        "matching": ("<Ref>2024000101</Ref>", "<Ref>{vs}</Ref>", "1"),
        "stale": ("/VS/2024000077/", "/VS/{vs}/", "2"),
        "unknown": ("VS:0000555123", "VS:{vs}", "3"),
        "wrong_amount": ("<Ref>VS2024000103</Ref>", "<Ref>VS{vs}</Ref>", "4"),
    }
    sample_amounts = {"1": "1200.00", "2": "1200.00", "3": "499.00", "4": "1000.00"}
    for case, (old, new, entry) in swaps.items():
        vs, amount = lines[case]
        assert xml.count(old) == 1
        xml = xml.replace(old, new.format(vs=vs))
        ref = f'<NtryRef>{entry}</NtryRef>\n        <Amt Ccy="CZK">{sample_amounts[entry]}</Amt>'
        assert xml.count(ref) == 1
        xml = xml.replace(ref, f'<NtryRef>{entry}</NtryRef>\n        <Amt Ccy="CZK">{amount}</Amt>')
    xml = xml.replace("<AcctSvcrRef>240503", f"<AcctSvcrRef>{batch}")
    return xml.encode()


async def post_statement(http: httpx.AsyncClient, body: bytes) -> httpx.Response:
    return await http.post(
        "/payments/bank-statement",
        content=body,
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/xml"},
    )


async def post_card(
    http: httpx.AsyncClient, payment_id: str, invoice: InvoiceRecord, secret: str = SECRET
) -> httpx.Response:
    body = json.dumps(
        {
            "payment_id": payment_id,
            "variable_symbol": invoice.variable_symbol,
            "amount": str(invoice.amount),
            "currency": "CZK",
            "received_at": datetime.now(UTC).isoformat(),
        }
    ).encode()
    ts = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "X-Hostlife-Timestamp": str(ts),
        "X-Hostlife-Signature": sign_webhook(secret, ts, body),
    }
    return await http.post("/payments/card", content=body, headers=headers)


def outcomes(response: httpx.Response) -> list[tuple[str, str | None]]:
    return [(r["outcome"], r["service_id"]) for r in response.json()["results"]]


async def payments_in_journal(l: Lab, handle: Handle) -> list[tuple[str, str]]:
    return [(e.data["payment_id"], e.data["result"]) for e in await l.journal(handle) if e.kind == "payment"]


# ---------------------------------------------------------------------------------------------


async def test_a_camt053_statement_ends_each_line_where_spec_says(env: WorkflowEnvironment) -> None:
    async with stack(env) as (l, http), services(l, 3) as (matching, stale, wrong):
        paid = await open_invoice(l, matching)
        cancelled = await open_invoice(l, stale)
        reissued = await stale.execute_update(
            SubscriptionWorkflow.billing_details_changed, BillingDetailsChanged()
        )
        wrong_invoice = await open_invoice(l, wrong)
        assert reissued.variable_symbol not in (None, cancelled.variable_symbol)
        d = (await l.status(matching)).expires_on
        batch = uuid.uuid4().hex[:8]
        body = statement(
            {
                "matching": (paid.variable_symbol, "1200.00"),
                "stale": (cancelled.variable_symbol, "1200.00"),
                "unknown": ("0000555123", "499.00"),
                "wrong_amount": (wrong_invoice.variable_symbol, "1000.00"),
            },
            batch,
        )

        response = await post_statement(http, body)

        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["format"] == "camt053"
        ids = {
            "matching": matching.id.removeprefix("service-"),
            "stale": stale.id.removeprefix("service-"),
            "wrong": wrong.id.removeprefix("service-"),
        }
        assert outcomes(response) == [
            ("applied", ids["matching"]),
            ("held", ids["stale"]),
            ("queued", None),
            ("held", ids["wrong"]),
            ("rejected", None),
        ]
        reasons = [r["reason"] for r in answer["results"]]
        assert reasons[1].startswith(f"stale variable symbol {cancelled.variable_symbol}: invoice cancelled")
        assert reasons[2] == "no service issued variable symbol 555123"
        assert reasons[3] == f"amount 1000.00 does not match invoice amount {wrong_invoice.amount}"

        # applied: renewed from D, the invoice paid
        renewed = await l.status(matching)
        assert (renewed.renewals, renewed.expires_on, renewed.state) == (1, add_period(d, "P1Y"), "active")
        assert l.billing.get_invoice(paid.variable_symbol).status == "paid"
        # held and queued: all three wait for the billing department, with the reason
        held = {h.payment.payment_id: h for h in l.billing.held_payments()}
        assert set(held) == {f"{batch}00002", f"{batch}00003", f"{batch}00004"}
        assert (held[f"{batch}00002"].service_id, held[f"{batch}00003"].service_id) == (ids["stale"], None)
        assert held[f"{batch}00004"].service_id == ids["wrong"]
        # the held services are not renewed; their open invoices are untouched
        for handle, invoice in ((stale, reissued), (wrong, wrong_invoice)):
            status = await l.status(handle)
            assert status.renewals == 0 and status.open_invoice is not None
            assert status.open_invoice.variable_symbol == invoice.variable_symbol
        # the malformed line is kept whole for a person
        [unreadable] = l.billing.unreadable_lines()
        assert unreadable.line_id == f"{batch}00005" and "20240001011" in unreadable.raw

        # The bank sends the same statement again: every line is acknowledged once, nothing moves.
        again = await post_statement(http, body)
        assert again.status_code == 200
        assert [o for o, _ in outcomes(again)] == ["duplicate"] * 5
        assert (await l.status(matching)).renewals == 1
        assert len(l.billing.held_payments()) == 3 and l.billing.refunds() == []


async def test_card_webhook_delivered_twice_renews_once_and_a_bad_signature_routes_nothing(
    env: WorkflowEnvironment,
) -> None:
    async with stack(env) as (l, http), services(l, 1) as (card,):
        invoice = await open_invoice(l, card)
        d = (await l.status(card)).expires_on
        payment_id = f"card-{uuid.uuid4().hex[:8]}"

        forged = await post_card(http, payment_id, invoice, secret="not-the-gateway-secret-0123456789")
        assert forged.status_code == 401
        assert forged.json()["detail"] == "bad signature" and forged.json()["results"] == []
        assert await payments_in_journal(l, card) == []
        assert (await l.status(card)).renewals == 0
        assert (
            l.billing.held_payments() == []
            and l.billing.refunds() == []
            and l.billing.unreadable_lines() == []
        )

        first = await post_card(http, payment_id, invoice)
        second = await post_card(http, payment_id, invoice)

        service_id = card.id.removeprefix("service-")
        assert (first.status_code, outcomes(first)) == (200, [("applied", service_id)])
        assert (second.status_code, outcomes(second)) == (200, [("duplicate", service_id)])
        status = await l.status(card)
        assert (status.renewals, status.expires_on) == (1, add_period(d, "P1Y"))
        assert await payments_in_journal(l, card) == [(payment_id, "applied"), (payment_id, "duplicate")]
        assert l.billing.held_payments() == [] and l.billing.refunds() == []


async def test_a_payment_for_a_service_whose_workflow_has_completed_is_returned(
    env: WorkflowEnvironment,
) -> None:
    async with stack(env) as (l, http), services(l, 1) as (gone,):
        invoice = await open_invoice(l, gone)
        # A severe violation deletes without a restorable backup: the service closes and its workflow ends.
        await gone.execute_update(
            SubscriptionWorkflow.suspend_for_abuse, SuspendRequest(reason="phishing", severe=True)
        )
        result = await gone.result()
        assert result.final_state == "closed"

        payment_id = f"card-{uuid.uuid4().hex[:8]}"
        response = await post_card(http, payment_id, invoice)

        service_id = gone.id.removeprefix("service-")
        assert (response.status_code, outcomes(response)) == (200, [("returned", service_id)])
        [refund] = l.billing.refunds()
        assert (refund.payment.payment_id, refund.payment.amount, refund.service_id) == (
            payment_id,
            invoice.amount,
            service_id,
        )
        assert refund.reason == "the service is closed: payment returned to the payer"
        # A redelivery is not refunded twice.
        again = await post_card(http, payment_id, invoice)
        assert again.status_code == 200
        assert len(l.billing.refunds()) == 1

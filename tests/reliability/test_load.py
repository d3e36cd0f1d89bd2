"""Load: N services and a burst of payments through the real ingress; the reconciliation balances.

The burst is 80 % correct payments, 10 % duplicate deliveries (the same payment id again, sent
concurrently with everything else), 5 % unknown variable symbols and 5 % wrong amounts, signed
card webhooks into the real ingress app → `TemporalPaymentRouter` → `SubscriptionWorkflow`s on a
dev server. Afterwards `starter.reconcile` must find every payment applied, held or returned, once,
and received = applied + held + returned + duplicates to the heller.

    HOSTLIFE_LOAD_SERVICES (default 300: ~50 s on 2 cores; 1000 takes ~3 min) and HOSTLIFE_LOAD_PAYMENTS (default services / 5)
    HOSTLIFE_LOAD_SERVICES=10000 HOSTLIFE_LOAD_PAYMENTS=2000 pytest tests/reliability/test_load.py -s
"""

from __future__ import annotations

import functools
import json
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx

from activities.billing import PaymentReceived
from policy.clock import Clock
from starter.ingress import IngressSettings, create_app, sign_webhook
from starter.payment_router import TemporalPaymentRouter
from starter.payment_routing import RoutingResult
from starter.reconcile import reconcile_ledger
from starter.services import start_service
from tests.reliability.crash_lab import wait_until
from tests.reliability.stack import env_int, gather_limited, stack
from workflows.models import Customer, ServiceSpec

SECRET = "webhook-secret-for-load-tests-0123456789"


def card_request(payment: PaymentReceived) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "payment_id": payment.payment_id,
            "variable_symbol": payment.variable_symbol,
            "amount": str(payment.amount),
            "currency": payment.currency,
            "received_at": payment.received_at.isoformat(),
        }
    ).encode()
    stamp = int(time.time())
    return body, {
        "Content-Type": "application/json",
        "X-Hostlife-Timestamp": str(stamp),
        "X-Hostlife-Signature": sign_webhook(SECRET, stamp, body),
    }


async def test_a_burst_of_payments_reconciles_to_the_heller(tmp_path: Path) -> None:
    services = env_int("HOSTLIFE_LOAD_SERVICES", 300)
    burst = env_int("HOSTLIFE_LOAD_PAYMENTS", max(20, services // 5))
    assert burst <= services, "each correct or wrong-amount payment needs its own service"
    rng = random.Random(11)
    timings: dict[str, float] = {}
    async with stack(tmp_path / "data") as s:
        began = time.monotonic()
        today = Clock().today(datetime.now(UTC))
        prices = [Decimal(rng.choice(["1200.00", "330.00", "99.90", "2450.50"])) for _ in range(services)]
        specs = [
            ServiceSpec(
                service_id=f"load-{i:05d}",
                customer=Customer(id=f"c-{i % 97}", email=f"c{i % 97}@example.cz"),
                product="hosting",
                price=prices[i],
                expires_on=today + timedelta(days=20),  # the renewal invoice is issued at once
            )
            for i in range(services)
        ]
        await gather_limited(
            [
                functools.partial(start_service, s.env.client, spec, task_queue=s.settings.task_queue)
                for spec in specs
            ],
            limit=64,
        )
        # An invoice notice is mailed after the workflow recorded its invoice: then payments can match.
        await wait_until(
            lambda: sum(1 for m in s.mailer.sent if m["X-Hostlife-Template"] == "invoice_issued") >= services,
            60 + services * 0.2,
            f"{services} invoices",
            interval=1,
        )
        timings["start_and_invoice_s"] = time.monotonic() - began
        invoices = {i.service_id: i for i in s.billing.invoices()}
        issued = {i.variable_symbol for i in invoices.values()}

        correct_n, dup_n = burst * 80 // 100, burst * 10 // 100
        unknown_n = burst * 5 // 100
        wrong_n = burst - correct_n - dup_n - unknown_n
        now = datetime.now(UTC)
        batch = uuid.uuid4().hex[:6]

        def paying(index: int, amount_delta: Decimal = Decimal("0.00")) -> PaymentReceived:
            invoice = invoices[f"load-{index:05d}"]
            return PaymentReceived(
                payment_id=f"{batch}-{index:05d}",
                variable_symbol=invoice.variable_symbol,
                amount=invoice.amount + amount_delta,
                received_at=now,
                source="card",
            )

        originals = [paying(i) for i in range(correct_n)]
        originals += [paying(correct_n + i, Decimal("0.01")) for i in range(wrong_n)]
        unknown_vs = (str(rng.randrange(8_000_000_000, 8_999_999_999)) for _ in iter(int, 1))
        for i in range(unknown_n):
            vs = next(v for v in unknown_vs if v not in issued)
            originals.append(
                PaymentReceived(
                    payment_id=f"{batch}-unknown-{i}",
                    variable_symbol=vs,
                    amount=Decimal("499.00"),
                    received_at=now,
                    source="card",
                )
            )
        deliveries = originals + [rng.choice(originals) for _ in range(dup_n)]
        rng.shuffle(deliveries)

        settings = IngressSettings.model_validate({"webhook_secret": SECRET, "api_key": "k" * 32})
        app = create_app(TemporalPaymentRouter(s.env.client, s.billing), settings)
        transport = httpx.ASGITransport(app=app)
        results: list[RoutingResult] = []
        statuses: list[int] = []
        began = time.monotonic()
        async with httpx.AsyncClient(transport=transport, base_url="http://ingress", timeout=120) as http:

            async def deliver(payment: PaymentReceived) -> None:
                body, headers = card_request(payment)
                response = await http.post("/payments/card", content=body, headers=headers)
                statuses.append(response.status_code)
                results.extend(RoutingResult.model_validate(r) for r in response.json()["results"])

            await gather_limited([functools.partial(deliver, p) for p in deliveries], limit=32)
        timings["burst_s"] = time.monotonic() - began

        report = reconcile_ledger(s.billing, deliveries, results)
        print(
            json.dumps(
                {
                    "services": services,
                    "deliveries": len(deliveries),
                    **{k: round(v, 1) for k, v in timings.items()},
                    "summary": report.summary(),
                    "warnings": [w.model_dump() for w in report.warnings][:10],
                },
                indent=2,
            )
        )

        assert statuses.count(200) == len(deliveries), sorted(set(statuses))
        assert report.balanced, report.discrepancies[:10]
        assert report.discrepancies == []
        assert report.received.count == len(deliveries) and report.duplicates.count == dup_n
        assert report.applied.count == correct_n
        assert report.held.count == wrong_n + unknown_n
        assert report.returned.count == 0 and report.missing.count == 0
        total = sum((p.amount for p in deliveries), Decimal("0.00"))
        assert report.received.amount("CZK") == total
        assert (
            report.applied.amount("CZK") + report.held.amount("CZK") + report.duplicates.amount("CZK")
            == total
        )
        paid = [i for i in s.billing.invoices() if i.status == "paid"]
        assert len(paid) == correct_n
        # The ledger's own view agrees: no payment is both held and refunded, nothing else moved.
        assert reconcile_ledger(s.billing).balanced

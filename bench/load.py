"""Load: N services, then a burst of payments through the real ingress; the reconciliation balances.

    python -m bench.load --services 10000 --payments 2000      # issue 11's size (see docs/RELIABILITY.md)
    python -m bench.load --services 1000 --payments 200        # a quick look

A dev server of its own (SQLite under --data-dir), the lifecycle worker on recording adapters
and the SQLite billing ledger. Every service is handed over with D 20 days away, so its renewal
invoice is issued at once; then the burst: 80 % correct payments, 10 % duplicate deliveries (the
same payment id again, concurrently), 5 % unknown variable symbols and 5 % wrong amounts, as
signed card webhooks into the real ingress app → `TemporalPaymentRouter` → the services'
workflows. Afterwards the bank's view (`payments.jsonl`) and the ingress's answers
(`answers.jsonl`) are written next to the ledger and `hostlife reconcile` is run on them, as ops
would: every payment must be applied, held or returned, once, and received = applied + held +
returned + duplicates to the heller. Exit status 0 only when every check holds.

tests/reliability/test_load.py runs the same code at 300 services.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from activities.billing import PaymentReceived
from bench.reliability_stack import gather_limited, stack, wait_until
from policy.clock import Clock
from starter.ingress import IngressSettings, create_app, sign_webhook
from starter.payment_router import TemporalPaymentRouter
from starter.payment_routing import RoutingResult
from starter.reconcile import ReconciliationReport, reconcile_ledger
from starter.services import start_service
from workflows.models import Customer, ServiceSpec

SECRET = "webhook-secret-for-load-tests-0123456789"
ROOT = Path(__file__).resolve().parent.parent


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


@dataclass
class LoadResult:
    services: int
    correct: int
    duplicates: int
    unknown: int
    wrong_amount: int
    deliveries: list[PaymentReceived]
    results: list[RoutingResult]
    statuses: list[int]
    report: ReconciliationReport
    ledger_report: ReconciliationReport
    paid_invoices: int
    timings: dict[str, float] = field(default_factory=dict)

    def problems(self) -> list[str]:
        """Every way the run broke the promise; empty when all is well."""
        report, found = self.report, []
        total = sum((p.amount for p in self.deliveries), Decimal("0.00"))
        checks = [
            (self.statuses.count(200) == len(self.deliveries), f"HTTP statuses {sorted(set(self.statuses))}"),
            (report.balanced, f"not balanced: {report.discrepancies[:5]}"),
            (report.discrepancies == [], f"discrepancies: {report.discrepancies[:5]}"),
            (report.received.count == len(self.deliveries), f"received {report.received.count}"),
            (report.duplicates.count == self.duplicates, f"duplicates {report.duplicates.count}"),
            (report.applied.count == self.correct, f"applied {report.applied.count} != {self.correct}"),
            (
                report.held.count == self.wrong_amount + self.unknown,
                f"held {report.held.count} != {self.wrong_amount + self.unknown}",
            ),
            (report.returned.count == 0 and report.missing.count == 0, "returned or missing payments"),
            (report.received.amount("CZK") == total, f"received {report.received.amount('CZK')} != {total}"),
            (
                report.applied.amount("CZK") + report.held.amount("CZK") + report.duplicates.amount("CZK")
                == total,
                "applied + held + duplicates != received",
            ),
            (
                self.paid_invoices == self.correct,
                f"{self.paid_invoices} invoices paid, {self.correct} expected",
            ),
            (self.ledger_report.balanced, "the ledger does not reconcile with itself"),
        ]
        for ok, problem in checks:
            if not ok:
                found.append(problem)
        return found


async def run_load(data_dir: Path, services: int, payments: int, seed: int = 11) -> LoadResult:
    """Start `services` services, wait for every invoice, deliver the burst, reconcile."""
    if payments > services:
        raise ValueError("each correct or wrong-amount payment needs its own service: payments <= services")
    rng = random.Random(seed)
    timings: dict[str, float] = {}
    async with stack(data_dir) as s:
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
        timings["start_s"] = time.monotonic() - began
        # An invoice notice is mailed after the workflow recorded its invoice: then payments can match.
        await wait_until(
            lambda: sum(1 for m in s.mailer.sent if m["X-Hostlife-Template"] == "invoice_issued") >= services,
            120 + services * 0.5,
            f"{services} invoices",
            interval=1,
        )
        timings["start_and_invoice_s"] = time.monotonic() - began
        invoices = {i.service_id: i for i in s.billing.invoices()}
        issued = {i.variable_symbol for i in invoices.values()}

        correct_n, dup_n = payments * 80 // 100, payments * 10 // 100
        unknown_n = payments * 5 // 100
        wrong_n = payments - correct_n - dup_n - unknown_n
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
        async with httpx.AsyncClient(transport=transport, base_url="http://ingress", timeout=300) as http:

            async def deliver(payment: PaymentReceived) -> None:
                body, headers = card_request(payment)
                response = await http.post("/payments/card", content=body, headers=headers)
                statuses.append(response.status_code)
                results.extend(RoutingResult.model_validate(r) for r in response.json()["results"])

            await gather_limited([functools.partial(deliver, p) for p in deliveries], limit=32)
        timings["burst_s"] = time.monotonic() - began

        report = reconcile_ledger(s.billing, deliveries, results)
        return LoadResult(
            services=services,
            correct=correct_n,
            duplicates=dup_n,
            unknown=unknown_n,
            wrong_amount=wrong_n,
            deliveries=deliveries,
            results=results,
            statuses=statuses,
            report=report,
            ledger_report=reconcile_ledger(s.billing),
            paid_invoices=sum(1 for i in s.billing.invoices() if i.status == "paid"),
            timings=timings,
        )


def write_exports(result: LoadResult, data_dir: Path) -> tuple[Path, Path]:
    """The bank's view and the ingress's answers, as files `hostlife reconcile` reads."""
    payments, answers = data_dir / "payments.jsonl", data_dir / "answers.jsonl"
    payments.write_text("".join(p.model_dump_json() + "\n" for p in result.deliveries), encoding="utf-8")
    answers.write_text("".join(r.model_dump_json() + "\n" for r in result.results), encoding="utf-8")
    return payments, answers


def reconcile_cli(data_dir: Path, payments: Path, answers: Path) -> subprocess.CompletedProcess[str]:
    """`hostlife reconcile --payments ... --results ...` against the run's ledger, as ops run it."""
    env = {**os.environ, "HOSTLIFE_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "starter.cli",
            "reconcile",
            "--payments",
            str(payments),
            "--results",
            str(answers),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--payments", type=int, default=2_000)
    parser.add_argument(
        "--data-dir", type=Path, help="where the dev server and ledger live (default: a temp dir)"
    )
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    from starter.logging import configure_logging

    configure_logging("WARNING")  # one line per payment would drown the summary
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="hostlife-load-"))
    began = time.monotonic()
    result = asyncio.run(run_load(data_dir / "data", args.services, args.payments, args.seed))
    payments, answers = write_exports(result, data_dir / "data")
    cli = reconcile_cli(data_dir / "data", payments, answers)
    problems = result.problems()
    if cli.returncode != 0:
        problems.append(f"hostlife reconcile exited {cli.returncode}: {cli.stderr[-500:]}")
    summary: dict[str, Any] = {
        "services": result.services,
        "deliveries": len(result.deliveries),
        "correct": result.correct,
        "duplicates": result.duplicates,
        "unknown_vs": result.unknown,
        "wrong_amount": result.wrong_amount,
        **{k: round(v, 1) for k, v in result.timings.items()},
        "total_s": round(time.monotonic() - began, 1),
        "summary": result.report.summary(),
        "warnings": [w.model_dump() for w in result.report.warnings][:10],
        "data_dir": str(data_dir / "data"),
        "problems": problems,
    }
    print(cli.stdout)
    print(json.dumps(summary, indent=2))
    return 0 if not problems else 1


__all__ = ["LoadResult", "main", "reconcile_cli", "run_load", "write_exports"]

if __name__ == "__main__":
    raise SystemExit(main())

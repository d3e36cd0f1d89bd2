"""The reconciliation itself (starter/reconcile.py) and `hostlife reconcile`, on a real SQLite ledger.

The load test (test_load.py) runs it over thousands of payments through the real stack; here each
way a payment can end, or go missing, is set up by hand so the report is checked line by line.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import typer
from typer.testing import CliRunner

from activities.billing import (
    HoldPaymentInput,
    IssueInvoiceInput,
    MarkInvoicePaidInput,
    PaymentReceived,
    ReturnPaymentInput,
    SqliteBilling,
    UnreadableLine,
)
from starter.cli_reconcile import register
from starter.payment_routing import PaymentOutcome, RoutingResult
from starter.reconcile import Outcome, reconcile_ledger

NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


def payment(payment_id: str, vs: str, amount: str) -> PaymentReceived:
    return PaymentReceived(payment_id=payment_id, variable_symbol=vs, amount=Decimal(amount), received_at=NOW)


def invoice(ledger: SqliteBilling, key: str, amount: str) -> str:
    issued = ledger.issue_invoice(
        IssueInvoiceInput(
            idempotency_key=key,
            service_id=f"svc-{key}",
            customer_id="c1",
            amount=Decimal(amount),
            issued_on=date(2026, 5, 1),
            due_on=date(2026, 6, 1),
            period="P1Y",
        )
    )
    return issued.variable_symbol


def ledger_with_every_outcome(path: Path) -> tuple[SqliteBilling, list[PaymentReceived]]:
    """Applied, held (wrong amount), queued (unknown VS), returned, plus a redelivery and a rejected line."""
    ledger = SqliteBilling(path)
    paid_vs = invoice(ledger, "a", "1200.00")
    open_vs = invoice(ledger, "b", "330.00")
    applied = payment("p-applied", paid_vs, "1200.00")
    wrong = payment("p-wrong", open_vs, "330.01")
    unknown = payment("p-unknown", "9999999999", "499.00")
    late = payment("p-late", open_vs, "330.00")
    ledger.mark_invoice_paid(
        MarkInvoicePaidInput(service_id="svc-a", variable_symbol=paid_vs, payment_id="p-applied")
    )
    ledger.hold_payment(HoldPaymentInput(payment=wrong, reason="amount does not match", service_id="svc-b"))
    ledger.hold_payment(HoldPaymentInput(payment=unknown, reason="no service issued it"))
    ledger.return_payment(ReturnPaymentInput(payment=late, reason="service deleted", service_id="svc-b"))
    ledger.keep_unreadable_line(
        UnreadableLine(line_id="l-1", source="gpc", raw="garbage", reason="unreadable")
    )
    return ledger, [applied, wrong, applied, unknown, late]


def test_every_payment_ends_once_and_the_totals_balance_to_the_heller(tmp_path: Path) -> None:
    ledger, received = ledger_with_every_outcome(tmp_path / "billing.sqlite")
    results = [
        RoutingResult(payment_id="p-applied", outcome=PaymentOutcome.APPLIED),
        RoutingResult(payment_id="p-wrong", outcome=PaymentOutcome.HELD),
        RoutingResult(payment_id="p-applied", outcome=PaymentOutcome.DUPLICATE),
        RoutingResult(payment_id="p-unknown", outcome=PaymentOutcome.QUEUED),
        RoutingResult(payment_id="p-late", outcome=PaymentOutcome.RETURNED),
        RoutingResult(payment_id="l-1", outcome=PaymentOutcome.REJECTED),
    ]

    report = reconcile_ledger(ledger, received, results)

    assert report.balanced, report.discrepancies
    assert report.discrepancies == [] and report.warnings == []
    assert (report.received.count, report.received.amount("CZK")) == (5, Decimal("3559.01"))
    assert (report.duplicates.count, report.duplicates.amount("CZK")) == (1, Decimal("1200.00"))
    assert (report.applied.count, report.applied.amount("CZK")) == (1, Decimal("1200.00"))
    assert (report.held.count, report.held.amount("CZK")) == (2, Decimal("829.01"))
    assert (report.returned.count, report.returned.amount("CZK")) == (1, Decimal("330.00"))
    assert report.missing.count == 0 and report.rejected_lines == 1
    assert {line.payment_id: line.outcome for line in report.lines} == {
        "p-applied": Outcome.APPLIED,
        "p-wrong": Outcome.HELD,
        "p-unknown": Outcome.HELD,
        "p-late": Outcome.RETURNED,
    }
    assert "received 3559.01 (5) = applied 1200.00 (1) + held 829.01 (2)" in report.summary()


def test_a_payment_nobody_recorded_is_missing_and_the_report_does_not_balance(tmp_path: Path) -> None:
    ledger, received = ledger_with_every_outcome(tmp_path / "billing.sqlite")
    open_vs = next(i.variable_symbol for i in ledger.invoices() if i.status == "open")
    lost = payment("p-lost", open_vs, "330.00")  # routed nowhere: the invoice is still open

    report = reconcile_ledger(ledger, [*received, lost])

    assert not report.balanced
    assert [(f.kind, f.payment_id) for f in report.discrepancies] == [("missing", "p-lost")]
    assert (report.missing.count, report.missing.amount("CZK")) == (1, Decimal("330.00"))
    assert "MISSING 330.00 (1)" in report.summary()


def test_a_redelivery_answered_twice_as_decisive_is_a_warning_not_a_money_error(tmp_path: Path) -> None:
    ledger, received = ledger_with_every_outcome(tmp_path / "billing.sqlite")
    unknown_twice = [*received, payment("p-unknown", "9999999999", "499.00")]
    results = [RoutingResult(payment_id="p-unknown", outcome=PaymentOutcome.QUEUED)] * 2

    report = reconcile_ledger(ledger, unknown_twice, results)

    assert report.balanced
    assert ("redelivery_not_flagged", "p-unknown") in [(w.kind, w.payment_id) for w in report.warnings]


def test_a_redelivery_with_another_amount_is_a_discrepancy(tmp_path: Path) -> None:
    ledger, received = ledger_with_every_outcome(tmp_path / "billing.sqlite")
    report = reconcile_ledger(ledger, [*received, payment("p-late", "1", "331.00")])
    assert not report.balanced
    assert report.discrepancies[0].kind == "conflicting_redelivery"


def test_hostlife_reconcile_reads_the_ledger_and_the_bank_export(tmp_path: Path) -> None:
    _, received = ledger_with_every_outcome(tmp_path / "billing.sqlite")
    export = tmp_path / "bank.jsonl"
    export.write_text("\n".join(p.model_dump_json() for p in received) + "\n", encoding="utf-8")
    app = typer.Typer()
    register(app)
    app.command("noop", hidden=True)(lambda: None)  # a group, so `reconcile` is a sub-command
    env = {"HOSTLIFE_DATA_DIR": str(tmp_path), "COLUMNS": "200"}
    runner = CliRunner()

    as_json = runner.invoke(app, ["reconcile", "--payments", str(export), "--json"], env=env)
    table = runner.invoke(app, ["reconcile", "--payments", str(export), "--lines"], env=env)
    ledger_only = runner.invoke(app, ["reconcile"], env=env)
    export.write_text(received[0].model_dump_json() + "\n" + payment("p-x", "5", "1.00").model_dump_json())
    unbalanced = runner.invoke(app, ["reconcile", "--payments", str(export)], env=env)

    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert data["balanced"] is True and data["applied"]["amounts"] == {"CZK": "1200.00"}
    assert table.exit_code == 0 and "balanced" in table.stdout and "p-unknown" in table.stdout
    assert ledger_only.exit_code == 0, ledger_only.output
    assert unbalanced.exit_code == 1 and "missing p-x" in unbalanced.stdout

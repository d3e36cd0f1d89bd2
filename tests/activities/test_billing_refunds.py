"""Refunds on request in the SQLite billing ledger: one per idempotency key, kept across reopening."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

from activities.billing import RefundCustomerInput, SqliteBilling


def request(key: str, amount: str = "600.00") -> RefundCustomerInput:
    return RefundCustomerInput(
        idempotency_key=key,
        service_id="web-1",
        customer_id="c-1",
        amount=Decimal(amount),
        reason="customer request: full refund within 30 days of activation",
        pay_by=date(2026, 12, 23),
    )


def test_a_retried_refund_is_the_same_refund(tmp_path: Path) -> None:
    ledger = SqliteBilling(tmp_path / "billing.sqlite")
    first = ledger.refund_customer(request("service-web-1:refund:2026-11-22"))
    again = ledger.refund_customer(request("service-web-1:refund:2026-11-22"))
    other = ledger.refund_customer(request("service-web-2:refund:2026-11-22", "12.34"))
    assert first == again and first.refund_id == "refund-000001"
    assert other.refund_id == "refund-000002" and other.amount == Decimal("12.34")
    reopened = SqliteBilling(tmp_path / "billing.sqlite")
    assert [r.refund_id for r in reopened.customer_refunds()] == ["refund-000001", "refund-000002"]
    assert reopened.customer_refunds()[0].pay_by == date(2026, 12, 23)

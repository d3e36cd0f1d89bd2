"""SPEC §3 as a pure decision: what happens to one incoming payment.

A payment renews only with the variable symbol of the currently open invoice and the exact
amount; anything else is held for the billing department with the reason, a payment for a
service that no longer exists is returned, and a payment id seen before is a duplicate.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from policy.money import Money, VariableSymbol


class InvoicePurpose(StrEnum):
    RENEWAL = "renewal"
    RESTORE = "restore"
    REDEMPTION = "redemption"
    UNBLOCK_FEE = "unblock_fee"
    UPGRADE = "upgrade"
    """The price difference of a plan upgrade; paying it switches the plan (SPEC §6)."""
    PLAN_CHANGE_FEE = "plan_change_fee"
    """Support-hour fee of a second plan change within the free window; pays for nothing else."""
    MAIL_RESTORE = "mail_restore"
    """500 CZK per mail domain restored from a deleted VPS's provider backup (SPEC §4)."""


PAYABLE_AFTER_DELETION = frozenset({InvoicePurpose.RESTORE, InvoicePurpose.REDEMPTION, InvoicePurpose.MAIL_RESTORE})
"""Invoices a deleted service still takes payment for: the restores it offers."""


class InvoiceState(StrEnum):
    OPEN = "open"
    PAID = "paid"
    CANCELLED = "cancelled"


class InvoiceRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    variable_symbol: VariableSymbol
    amount: Money
    issued_on: date
    due_on: date
    purpose: InvoicePurpose
    period: str
    status: InvoiceState = InvoiceState.OPEN
    cancel_reason: str | None = None
    currency: str | None = None
    """None: the service's price currency."""
    exchange_rate: Decimal | None = None
    """Invoice-currency units per price-currency unit (central bank rate + margin), when converted."""
    rate_source: str | None = None
    """The bank, its fixing date, its rate and the margin, e.g. "BNR 2026-11-20 0.1923 + 2 %"."""
    price_amount: Money | None = None
    """The amount in the price currency it was converted from."""


class PaymentResult(StrEnum):
    APPLIED = "applied"
    HELD = "held"
    RETURNED = "returned"
    DUPLICATE = "duplicate"


class PaymentDecision(BaseModel):
    model_config = ConfigDict(frozen=True)

    result: PaymentResult
    reason: str
    invoice: InvoiceRecord | None = None


def decide_payment(
    variable_symbol: str,
    amount: Decimal,
    invoices: list[InvoiceRecord],
    *,
    service_gone: bool,
    already_seen: PaymentResult | None = None,
    currency: str | None = None,
    price_currency: str = "CZK",
) -> PaymentDecision:
    """Decide one payment. `service_gone`: deleted, closed or released (restore invoices aside).

    `currency`: the payment's, when known; a payment in another currency than its invoice is held
    (1200 CZK sent for a 1200 RON invoice is not the same money). `price_currency`: the currency of
    an invoice that records none.
    """
    if already_seen is not None:
        return PaymentDecision(result=PaymentResult.DUPLICATE, reason=f"payment already {already_seen.value}")
    invoice = next((i for i in reversed(invoices) if i.variable_symbol == variable_symbol), None)
    restore_open = (
        invoice is not None
        and invoice.status is InvoiceState.OPEN
        and invoice.purpose in PAYABLE_AFTER_DELETION
    )
    if service_gone and not restore_open:
        return PaymentDecision(
            result=PaymentResult.RETURNED, reason="service deleted: payment returned to the payer"
        )
    if invoice is None:
        return PaymentDecision(
            result=PaymentResult.HELD, reason=f"unknown variable symbol {variable_symbol} for this service"
        )
    if invoice.status is InvoiceState.CANCELLED:
        return PaymentDecision(
            result=PaymentResult.HELD,
            reason=f"stale variable symbol {variable_symbol}: invoice cancelled ({invoice.cancel_reason or 'reissued'})",
            invoice=invoice,
        )
    if invoice.status is InvoiceState.PAID:
        return PaymentDecision(
            result=PaymentResult.HELD,
            reason=f"stale variable symbol {variable_symbol}: invoice already paid",
            invoice=invoice,
        )
    invoice_currency = invoice.currency or price_currency
    if currency is not None and currency != invoice_currency:
        return PaymentDecision(
            result=PaymentResult.HELD,
            reason=f"payment in {currency} for an invoice in {invoice_currency}",
            invoice=invoice,
        )
    if amount != invoice.amount:
        return PaymentDecision(
            result=PaymentResult.HELD,
            reason=f"amount {amount} does not match invoice amount {invoice.amount}",
            invoice=invoice,
        )
    return PaymentDecision(
        result=PaymentResult.APPLIED, reason=f"pays invoice {variable_symbol}", invoice=invoice
    )

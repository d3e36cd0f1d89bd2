"""Billing: invoices with variable symbols, and payments that cannot be applied.

    BillingError
     └── InvoiceNotFound   (not retried)

The billing ledger allocates variable symbols (`YYYYnnnnnn`, unique, at most 10 digits) and keeps
every invoice, every held payment (for the billing department) and every refund. Each write takes
an idempotency key, so a retried activity returns what the first attempt wrote.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel
from temporalio import activity

from policy.money import Money, VariableSymbol


class PaymentReceived(BaseModel):
    """What a payment system reports: one incoming payment."""

    payment_id: str
    variable_symbol: VariableSymbol
    amount: Money
    received_at: datetime
    currency: str = "CZK"
    source: str = "bank"
    payer: str | None = None


class InvoiceStatus(StrEnum):
    OPEN = "open"
    PAID = "paid"
    CANCELLED = "cancelled"


class IssueInvoiceInput(BaseModel):
    idempotency_key: str
    service_id: str
    customer_id: str
    amount: Money
    currency: str = "CZK"
    issued_on: date
    due_on: date
    period: str
    description: str = ""
    exchange_rate: Decimal | None = None
    """Invoice-currency units per price-currency unit, when the invoice is in another currency."""
    rate_source: str | None = None
    price_amount: Money | None = None
    """The amount in the price currency it was converted from."""


class Invoice(BaseModel):
    variable_symbol: VariableSymbol
    service_id: str
    customer_id: str
    amount: Money
    currency: str = "CZK"
    issued_on: date
    due_on: date
    period: str
    description: str = ""
    exchange_rate: Decimal | None = None
    """Invoice-currency units per price-currency unit, when the invoice is in another currency."""
    rate_source: str | None = None
    price_amount: Money | None = None
    """The amount in the price currency it was converted from."""
    status: InvoiceStatus = InvoiceStatus.OPEN


class CancelInvoiceInput(BaseModel):
    service_id: str
    variable_symbol: VariableSymbol
    reason: str


class MarkInvoicePaidInput(BaseModel):
    service_id: str
    variable_symbol: VariableSymbol
    payment_id: str


class HoldPaymentInput(BaseModel):
    """A payment the billing department must look at, with the reason it was not applied."""

    payment: PaymentReceived
    reason: str
    service_id: str | None = None
    customer_id: str | None = None


class ReturnPaymentInput(BaseModel):
    """A refund to the payer; the payment id is the idempotency key."""

    payment: PaymentReceived
    reason: str
    service_id: str | None = None


class HeldPayment(BaseModel):
    payment: PaymentReceived
    reason: str
    service_id: str | None = None
    customer_id: str | None = None
    resolved: bool = False
    resolution: str | None = None


class UnreadableLine(BaseModel):
    """A line a payment system sent that could not become a payment; kept whole for a person."""

    line_id: str
    source: str
    raw: str
    reason: str
    location: str | None = None
    resolved: bool = False
    resolution: str | None = None


class Refund(BaseModel):
    refund_id: str
    payment: PaymentReceived
    reason: str
    service_id: str | None = None


class RefundCustomerInput(BaseModel):
    """Money paid back to the customer on request (SPEC §6), not tied to one incoming payment."""

    idempotency_key: str
    service_id: str
    customer_id: str
    amount: Money
    currency: str = "CZK"
    reason: str = ""
    pay_by: date | None = None


class CustomerRefund(BaseModel):
    refund_id: str
    idempotency_key: str
    service_id: str
    customer_id: str
    amount: Money
    currency: str
    reason: str
    pay_by: date | None = None


class Billing(Protocol):
    def issue_invoice(self, request: IssueInvoiceInput) -> Invoice: ...
    def cancel_invoice(self, request: CancelInvoiceInput) -> Invoice: ...
    def mark_invoice_paid(self, request: MarkInvoicePaidInput) -> Invoice: ...
    def hold_payment(self, request: HoldPaymentInput) -> HeldPayment: ...
    def return_payment(self, request: ReturnPaymentInput) -> Refund: ...
    def refund_customer(self, request: RefundCustomerInput) -> CustomerRefund: ...


class BillingError(Exception):
    """Root of the billing adapter's errors."""


class InvoiceNotFound(BillingError):
    """No invoice carries that variable symbol."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS invoices (
    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    variable_symbol TEXT UNIQUE,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS held_payments (
    payment_id TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS refunds (
    payment_id TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS customer_refunds (
    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS unreadable_lines (
    line_id TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
"""


def variable_symbol_for(year: int, sequence: int) -> str:
    """`YYYYnnnnnn` while a year stays under a million invoices, then `9nnnnnnnnn`: unique, 10 digits."""
    if sequence < 1_000_000:
        return f"{year}{sequence:06d}"
    if sequence >= 1_000_000_000:
        raise BillingError("the variable symbol space is exhausted")
    return f"9{sequence:09d}"


class SqliteBilling:
    """The billing ledger in one SQLite file (`:memory:` for the simulator and tests).

    Variable symbols come from the table's own sequence, so they are unique for as long as the
    file lives, and an invoice issued twice under one idempotency key is the same invoice.
    """

    def __init__(self, path: str | Path = ":memory:") -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def issue_invoice(self, request: IssueInvoiceInput) -> Invoice:
        with self._lock:
            row = self._db.execute(
                "SELECT body FROM invoices WHERE idempotency_key = ?", (request.idempotency_key,)
            ).fetchone()
            if row:
                return Invoice.model_validate_json(row[0])
            self._db.execute("BEGIN IMMEDIATE")
            cursor = self._db.execute(
                "INSERT INTO invoices (idempotency_key, body) VALUES (?, '')", (request.idempotency_key,)
            )
            sequence = int(cursor.lastrowid or 0)
            invoice = Invoice(
                variable_symbol=variable_symbol_for(request.issued_on.year, sequence),
                **request.model_dump(exclude={"idempotency_key"}),
            )
            self._db.execute(
                "UPDATE invoices SET variable_symbol = ?, body = ? WHERE sequence = ?",
                (invoice.variable_symbol, invoice.model_dump_json(), sequence),
            )
            self._db.execute("COMMIT")
            return invoice

    def get_invoice(self, variable_symbol: str) -> Invoice:
        with self._lock:
            row = self._db.execute(
                "SELECT body FROM invoices WHERE variable_symbol = ?", (variable_symbol,)
            ).fetchone()
        if not row:
            raise InvoiceNotFound(variable_symbol)
        return Invoice.model_validate_json(row[0])

    def invoices(self) -> list[Invoice]:
        with self._lock:
            rows = self._db.execute("SELECT body FROM invoices ORDER BY sequence").fetchall()
        return [Invoice.model_validate_json(body) for (body,) in rows]

    def _set_status(self, variable_symbol: str, status: InvoiceStatus) -> Invoice:
        invoice = self.get_invoice(variable_symbol).model_copy(update={"status": status})
        with self._lock:
            self._db.execute(
                "UPDATE invoices SET body = ? WHERE variable_symbol = ?",
                (invoice.model_dump_json(), variable_symbol),
            )
        return invoice

    def cancel_invoice(self, request: CancelInvoiceInput) -> Invoice:
        return self._set_status(request.variable_symbol, InvoiceStatus.CANCELLED)

    def mark_invoice_paid(self, request: MarkInvoicePaidInput) -> Invoice:
        return self._set_status(request.variable_symbol, InvoiceStatus.PAID)

    def hold_payment(self, request: HoldPaymentInput) -> HeldPayment:
        held = HeldPayment(**request.model_dump())
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO held_payments (payment_id, body) VALUES (?, ?)",
                (request.payment.payment_id, held.model_dump_json()),
            )
            row = self._db.execute(
                "SELECT body FROM held_payments WHERE payment_id = ?", (request.payment.payment_id,)
            ).fetchone()
        return HeldPayment.model_validate_json(row[0])

    def held_payments(self, include_resolved: bool = False) -> list[HeldPayment]:
        with self._lock:
            rows = self._db.execute("SELECT body FROM held_payments ORDER BY rowid").fetchall()
        held = [HeldPayment.model_validate_json(body) for (body,) in rows]
        return held if include_resolved else [h for h in held if not h.resolved]

    def resolve_held_payment(self, payment_id: str, resolution: str) -> HeldPayment:
        with self._lock:
            row = self._db.execute(
                "SELECT body FROM held_payments WHERE payment_id = ?", (payment_id,)
            ).fetchone()
            if not row:
                raise BillingError(f"no held payment {payment_id}")
            held = HeldPayment.model_validate_json(row[0]).model_copy(
                update={"resolved": True, "resolution": resolution}
            )
            self._db.execute(
                "UPDATE held_payments SET body = ? WHERE payment_id = ?", (held.model_dump_json(), payment_id)
            )
        return held

    def is_held(self, payment_id: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM held_payments WHERE payment_id = ?", (payment_id,)
            ).fetchone()
        return row is not None

    def keep_unreadable_line(self, line: UnreadableLine) -> tuple[UnreadableLine, bool]:
        """Store a line for the billing department; False when the same line was kept before."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO unreadable_lines (line_id, body) VALUES (?, ?)",
                (line.line_id, line.model_dump_json()),
            )
            row = self._db.execute(
                "SELECT body FROM unreadable_lines WHERE line_id = ?", (line.line_id,)
            ).fetchone()
        return UnreadableLine.model_validate_json(row[0]), cursor.rowcount == 1

    def unreadable_lines(self, include_resolved: bool = False) -> list[UnreadableLine]:
        with self._lock:
            rows = self._db.execute("SELECT body FROM unreadable_lines ORDER BY rowid").fetchall()
        lines = [UnreadableLine.model_validate_json(body) for (body,) in rows]
        return lines if include_resolved else [line for line in lines if not line.resolved]

    def return_payment(self, request: ReturnPaymentInput) -> Refund:
        refund = Refund(refund_id=f"refund-{request.payment.payment_id}", **request.model_dump())
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO refunds (payment_id, body) VALUES (?, ?)",
                (request.payment.payment_id, refund.model_dump_json()),
            )
            row = self._db.execute(
                "SELECT body FROM refunds WHERE payment_id = ?", (request.payment.payment_id,)
            ).fetchone()
        return Refund.model_validate_json(row[0])

    def refunds(self) -> list[Refund]:
        with self._lock:
            rows = self._db.execute("SELECT body FROM refunds ORDER BY rowid").fetchall()
        return [Refund.model_validate_json(body) for (body,) in rows]

    def refund_customer(self, request: RefundCustomerInput) -> CustomerRefund:
        """Record a refund for the payments department to pay; one per idempotency key."""
        with self._lock:
            row = self._db.execute(
                "SELECT body FROM customer_refunds WHERE idempotency_key = ?", (request.idempotency_key,)
            ).fetchone()
            if row:
                return CustomerRefund.model_validate_json(row[0])
            self._db.execute("BEGIN IMMEDIATE")
            cursor = self._db.execute(
                "INSERT INTO customer_refunds (idempotency_key, body) VALUES (?, '')",
                (request.idempotency_key,),
            )
            refund = CustomerRefund(
                refund_id=f"refund-{int(cursor.lastrowid or 0):06d}", **request.model_dump()
            )
            self._db.execute(
                "UPDATE customer_refunds SET body = ? WHERE idempotency_key = ?",
                (refund.model_dump_json(), request.idempotency_key),
            )
            self._db.execute("COMMIT")
        return refund

    def customer_refunds(self) -> list[CustomerRefund]:
        with self._lock:
            rows = self._db.execute("SELECT body FROM customer_refunds ORDER BY sequence").fetchall()
        return [CustomerRefund.model_validate_json(body) for (body,) in rows]


class BillingActivities:
    """Sync activities: the ledger is local and quick, and sqlite3 blocks."""

    def __init__(self, billing: Billing) -> None:
        self.billing = billing

    @activity.defn
    def issue_invoice(self, request: IssueInvoiceInput) -> Invoice:
        return self.billing.issue_invoice(request)

    @activity.defn
    def cancel_invoice(self, request: CancelInvoiceInput) -> Invoice:
        return self.billing.cancel_invoice(request)

    @activity.defn
    def mark_invoice_paid(self, request: MarkInvoicePaidInput) -> Invoice:
        return self.billing.mark_invoice_paid(request)

    @activity.defn
    def hold_payment(self, request: HoldPaymentInput) -> HeldPayment:
        return self.billing.hold_payment(request)

    @activity.defn
    def return_payment(self, request: ReturnPaymentInput) -> Refund:
        return self.billing.return_payment(request)

    @activity.defn
    def refund_customer(self, request: RefundCustomerInput) -> CustomerRefund:
        return self.billing.refund_customer(request)

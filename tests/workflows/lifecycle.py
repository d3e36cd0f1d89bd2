"""Helpers for the whole-lifecycle tests: days relative to D, paying invoices, clean shutdown.

Every check is on the calendar day (profile time zone) of a journal line, written as an offset
from the expiry date D, so a table reads like SPEC §4: `("blocked", 1)` is "blocked on D+1".
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from temporalio.client import WorkflowHandle

from policy.payments import InvoicePurpose, InvoiceRecord
from policy.pricing import round_money
from tests.workflows.harness import Lab, finish
from workflows.models import JournalEntry, PaymentOutcome, PaymentRequest
from workflows.subscription import SubscriptionWorkflow

Handle = WorkflowHandle[SubscriptionWorkflow, Any]
T = TypeVar("T")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@contextlib.asynccontextmanager
async def service(l: Lab, **spec: Any) -> AsyncIterator[Handle]:
    """Start a service; terminate it on the way out if the test left it running.

    A run left behind would keep timers on the shared time-skipping server with no worker to serve it.
    """
    spec.setdefault("service_id", unique(str(spec.get("product", "hosting"))))
    handle = await l.start(**spec)
    try:
        yield handle
    finally:
        await finish(handle)


def offsets(
    journal: list[JournalEntry], l: Lab, d: date, kind: str = "state", key: str = "state"
) -> list[tuple[str, int]]:
    """(value of `key`, day relative to D) of each journal line of `kind`, in order."""
    return [(str(e.data[key]), (l.clock.today(e.at) - d).days) for e in journal if e.kind == kind]


def day_of(entry: JournalEntry, l: Lab) -> date:
    return l.clock.today(entry.at)


def entries(journal: list[JournalEntry], kind: str, **match: Any) -> list[JournalEntry]:
    return [e for e in journal if e.kind == kind and all(e.data.get(k) == v for k, v in match.items())]


def since(journal: list[JournalEntry], start: int) -> list[JournalEntry]:
    return [e for e in journal if e.sequence > start]


def czk(invoice: Any) -> Decimal:
    """The invoice's price in CZK; a Hostico invoice is issued in RON, so check its one rounding too.

    The rules (prices, upgrades, fees) are in the price currency; the RON amount must be exactly
    that price × the recorded rate (central bank + margin), rounded half up once.
    """
    if invoice.currency in (None, "CZK"):
        assert invoice.price_amount in (None, invoice.amount), invoice
        return Decimal(invoice.amount)
    assert invoice.exchange_rate is not None and invoice.price_amount is not None, invoice
    assert invoice.amount == round_money(invoice.price_amount * invoice.exchange_rate), invoice
    return Decimal(invoice.price_amount)


async def open_invoice(l: Lab, handle: Handle, purpose: InvoicePurpose | None = None) -> InvoiceRecord:
    status = await l.status(handle)
    invoice = status.open_invoice
    if purpose is not None:
        invoice = next(
            (i for i in reversed(status.invoices) if i.purpose is purpose and i.status == "open"), None
        )
    assert invoice is not None, f"no open invoice ({purpose}); status: {status.details}"
    return invoice


async def pay(
    handle: Handle,
    invoice: InvoiceRecord | None = None,
    *,
    variable_symbol: str | None = None,
    amount: Decimal | None = None,
    payment_id: str | None = None,
    currency: str | None = None,
) -> PaymentOutcome:
    """A bank payment through the update, exact VS and amount of `invoice` unless overridden."""
    vs = variable_symbol if variable_symbol is not None else invoice.variable_symbol if invoice else None
    value = amount if amount is not None else invoice.amount if invoice else None
    assert vs is not None and value is not None
    return await handle.execute_update(
        SubscriptionWorkflow.submit_payment,
        PaymentRequest(
            payment_id=payment_id or unique("pay"), variable_symbol=vs, amount=value, currency=currency
        ),
    )


async def at_day(l: Lab, d: date, offset: int, at: time = time(12, 0)) -> date:
    """Move the server clock to D+offset (noon, unless told) and return that day."""
    day = d + timedelta(days=offset)
    await l.sleep_until(day, at)
    now: datetime = await l.now()
    assert l.clock.today(now) == day, f"clock is at {now}, wanted {day}"
    return day


async def eventually(probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool], seconds: float = 10.0) -> T:
    """Query until `ok` holds (a signal is handled asynchronously), or give up and return the last value."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        value = await probe()
        if ok(value) or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.05)

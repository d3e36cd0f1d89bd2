"""Payment outcomes (SPEC §3): applied, held for the billing department, returned, duplicate.

Shared hosting, 1200.00 CZK a year, handed over 40 days before D; the invoice is issued on D-30.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from temporalio.testing import WorkflowEnvironment

from activities.billing import InvoiceStatus, PaymentReceived
from policy.payments import InvoicePurpose
from policy.periods import add_period
from tests.workflows.harness import lab
from tests.workflows.lifecycle import (
    at_day,
    entries,
    eventually,
    offsets,
    open_invoice,
    pay,
    service,
    since,
    unique,
)
from workflows.models import BillingDetailsChanged, ResolveRequest, SuspendRequest
from workflows.subscription import SubscriptionWorkflow


async def test_early_payment_renews_from_d_not_from_the_payment_date(env: WorkflowEnvironment) -> None:
    async with lab(env) as l, service(l) as handle:
        d = (await l.status(handle)).expires_on
        await at_day(l, d, -30)
        invoice = await open_invoice(l, handle)
        assert invoice.amount == Decimal("1200.00")
        assert invoice.issued_on == d - timedelta(days=30)
        paid_on = await at_day(l, d, -20)
        outcome = await pay(handle, invoice)
        assert (outcome.result, outcome.reason) == ("applied", f"pays invoice {invoice.variable_symbol}")

        status = await l.status(handle)
        new_d = add_period(d, "P1Y")
        assert (status.state, status.expires_on, status.renewals) == ("active", new_d, 1)
        journal = await l.journal(handle)
        renewed = entries(journal, "renewed")
        assert [(e.data["expires_on"], l.clock.today(e.at)) for e in renewed] == [
            (new_d.isoformat(), paid_on)
        ]
        assert l.billing.get_invoice(invoice.variable_symbol).status == InvoiceStatus.PAID
        # The next cycle: next invoice 30 days before the new D, nothing blocked on the old D+1.
        await at_day(l, d, 1)
        assert (await l.status(handle)).state == "active"
        assert offsets(await l.journal(handle), l, d) == [("active", -40)]
        assert (await l.status(handle)).upcoming[0].on == new_d - timedelta(days=30)
        assert "payment_received" in l.mails()


async def test_late_payment_while_blocked_unblocks_the_same_day(env: WorkflowEnvironment) -> None:
    async with lab(env) as l, service(l) as handle:
        d = (await l.status(handle)).expires_on
        await at_day(l, d, 10)
        assert (await l.status(handle)).state == "blocked"
        invoice = await open_invoice(l, handle)
        outcome = await pay(handle, invoice)
        assert outcome.result == "applied"

        status = await l.status(handle)
        assert (status.state, status.expires_on) == ("active", add_period(d, "P1Y"))
        journal = await l.journal(handle)
        assert offsets(journal, l, d) == [("active", -40), ("blocked", 1), ("active", 10)]
        assert offsets(journal, l, d, "platform", "action") == [("block", 1), ("unblock", 10)]
        assert l.platform.state[status.service_id] == "active"


async def test_wrong_amount_is_held_with_its_reason(env: WorkflowEnvironment) -> None:
    async with lab(env) as l, service(l) as handle:
        d = (await l.status(handle)).expires_on
        await at_day(l, d, -10)
        invoice = await open_invoice(l, handle)
        outcome = await pay(handle, invoice, amount=Decimal("1199.99"))
        assert outcome.result == "held"
        held = l.billing.held_payments()
        assert [(h.payment.payment_id, h.payment.amount) for h in held] == [
            (outcome.payment_id, Decimal("1199.99"))
        ]
        assert held[0].reason == "amount 1199.99 does not match invoice amount 1200.00"
        assert held[0].service_id == (await l.status(handle)).service_id
        status = await l.status(handle)
        assert (status.expires_on, status.renewals) == (d, 0)
        assert (
            status.open_invoice is not None and status.open_invoice.variable_symbol == invoice.variable_symbol
        )
        assert "payment_held" in l.mails()


async def test_stale_variable_symbol_after_billing_details_changed_is_held(env: WorkflowEnvironment) -> None:
    async with lab(env) as l, service(l) as handle:
        d = (await l.status(handle)).expires_on
        await at_day(l, d, -10)
        old = await open_invoice(l, handle)
        changed = await handle.execute_update(
            SubscriptionWorkflow.billing_details_changed, BillingDetailsChanged()
        )
        new = await open_invoice(l, handle)
        assert new.variable_symbol != old.variable_symbol
        assert changed.variable_symbol == new.variable_symbol
        assert new.amount == old.amount
        assert l.billing.get_invoice(old.variable_symbol).status == InvoiceStatus.CANCELLED

        stale = await pay(handle, old)
        assert stale.result == "held"
        held = l.billing.held_payments()
        assert [h.payment.payment_id for h in held] == [stale.payment_id]
        assert "stale variable symbol" in held[0].reason and "cancelled" in held[0].reason
        assert (await l.status(handle)).expires_on == d

        fresh = await pay(handle, new)
        assert fresh.result == "applied"
        assert (await l.status(handle)).expires_on == add_period(d, "P1Y")


async def test_unknown_variable_symbol_is_held(env: WorkflowEnvironment) -> None:
    async with lab(env) as l, service(l) as handle:
        d = (await l.status(handle)).expires_on
        await at_day(l, d, -10)
        invoice = await open_invoice(l, handle)
        outcome = await pay(handle, variable_symbol="9999999999", amount=invoice.amount)
        assert outcome.result == "held"
        held = l.billing.held_payments()
        assert [(h.payment.payment_id, h.reason) for h in held] == [
            (outcome.payment_id, "unknown variable symbol 9999999999 for this service")
        ]
        assert (await l.status(handle)).expires_on == d


async def test_a_paid_variable_symbol_paid_again_is_held(env: WorkflowEnvironment) -> None:
    async with lab(env) as l, service(l) as handle:
        d = (await l.status(handle)).expires_on
        await at_day(l, d, -10)
        invoice = await open_invoice(l, handle)
        assert (await pay(handle, invoice)).result == "applied"
        again = await pay(handle, invoice, payment_id=unique("second"))
        assert again.result == "held"
        held = l.billing.held_payments()
        assert [h.payment.payment_id for h in held] == [again.payment_id]
        assert "already paid" in held[0].reason
        status = await l.status(handle)
        assert (status.expires_on, status.renewals) == (add_period(d, "P1Y"), 1)


async def test_the_same_payment_delivered_twice_is_applied_once(env: WorkflowEnvironment) -> None:
    async with lab(env) as l, service(l) as handle:
        d = (await l.status(handle)).expires_on
        await at_day(l, d, -10)
        invoice = await open_invoice(l, handle)
        first = await pay(handle, invoice, payment_id="bank-42")
        second = await pay(handle, invoice, payment_id="bank-42")
        assert (first.result, second.result) == ("applied", "duplicate")
        status = await l.status(handle)
        assert (status.expires_on, status.renewals) == (add_period(d, "P1Y"), 1)
        journal = await l.journal(handle)
        payments = [(e.data["payment_id"], e.data["result"]) for e in entries(journal, "payment")]
        assert payments == [("bank-42", "applied"), ("bank-42", "duplicate")]
        assert len(entries(journal, "renewed")) == 1
        assert l.billing.held_payments() == [] and l.billing.refunds() == []


async def test_payment_after_deletion_is_returned(env: WorkflowEnvironment) -> None:
    async with lab(env) as l, service(l) as handle:
        d = (await l.status(handle)).expires_on
        await at_day(l, d, -10)
        invoice = await open_invoice(l, handle)
        await at_day(l, d, 62)
        assert (await l.status(handle)).state == "deleted"
        outcome = await pay(handle, invoice)
        assert outcome.result == "returned"
        refunds = l.billing.refunds()
        assert [(r.payment.payment_id, r.payment.amount, r.refund_id) for r in refunds] == [
            (outcome.payment_id, Decimal("1200.00"), f"refund-{outcome.payment_id}")
        ]
        assert l.billing.held_payments() == []
        status = await l.status(handle)
        assert (status.state, status.expires_on) == ("deleted", d)
        assert "payment_returned" in l.mails()


async def test_payment_by_signal_is_processed_the_same(env: WorkflowEnvironment) -> None:
    async with lab(env) as l, service(l) as handle:
        d = (await l.status(handle)).expires_on
        await at_day(l, d, 5)
        invoice = await open_invoice(l, handle)
        start = (await l.journal(handle))[-1].sequence
        payment_id = unique("signal")
        await handle.signal(
            SubscriptionWorkflow.payment_received,
            PaymentReceived(
                payment_id=payment_id,
                variable_symbol=f"00{invoice.variable_symbol}",  # banks pad the VS with zeros
                amount=invoice.amount,
                received_at=await l.now(),
            ),
        )
        status = await eventually(lambda: l.status(handle), lambda s: s.renewals == 1)
        assert (status.state, status.expires_on) == ("active", add_period(d, "P1Y"))
        journal = since(await l.journal(handle), start)
        assert [(e.data["payment_id"], e.data["result"]) for e in entries(journal, "payment")] == [
            (payment_id, "applied")
        ]
        assert offsets(journal, l, d) == [("active", 5)]
        assert offsets(journal, l, d, "platform", "action") == [("unblock", 5)]
        # A redelivered signal is a duplicate, as with the update.
        await handle.signal(
            SubscriptionWorkflow.payment_received,
            PaymentReceived(
                payment_id=payment_id,
                variable_symbol=invoice.variable_symbol,
                amount=invoice.amount,
                received_at=await l.now(),
            ),
        )
        journal = since(
            await eventually(
                lambda: l.journal(handle), lambda j: len(entries(since(j, start), "payment")) == 2
            ),
            start,
        )
        assert [e.data["result"] for e in entries(journal, "payment")] == ["applied", "duplicate"]
        assert (await l.status(handle)).renewals == 1


async def test_billing_details_changed_reissues_every_open_invoice(env: WorkflowEnvironment) -> None:
    async with lab(env) as l, service(l) as handle:
        d = (await l.status(handle)).expires_on
        await at_day(l, d, -35)
        await handle.execute_update(SubscriptionWorkflow.suspend_for_abuse, SuspendRequest(reason="spam"))
        await handle.execute_update(SubscriptionWorkflow.resolve_abuse, ResolveRequest())
        await at_day(l, d, -29)
        await handle.execute_update(
            SubscriptionWorkflow.suspend_for_abuse, SuspendRequest(reason="spam again")
        )
        await handle.execute_update(SubscriptionWorkflow.resolve_abuse, ResolveRequest())
        renewal = await open_invoice(l, handle, InvoicePurpose.RENEWAL)
        fee = await open_invoice(l, handle, InvoicePurpose.UNBLOCK_FEE)

        await handle.execute_update(SubscriptionWorkflow.billing_details_changed, BillingDetailsChanged())
        assert l.billing.get_invoice(fee.variable_symbol).status == InvoiceStatus.CANCELLED
        assert l.billing.get_invoice(renewal.variable_symbol).status == InvoiceStatus.CANCELLED
        new_renewal = await open_invoice(l, handle, InvoicePurpose.RENEWAL)
        assert new_renewal.variable_symbol != renewal.variable_symbol
        assert (await pay(handle, renewal)).result == "held"

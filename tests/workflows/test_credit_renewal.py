"""Automatic renewal from the credit account (SPEC §3.9) and domain renewal periods (§3.8), by calendar day."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from policy.catalog import default_catalog
from policy.payments import InvoicePurpose
from starter.accounts import balance, top_up
from tests.workflows.harness import lab
from tests.workflows.lifecycle import at_day, entries, offsets, open_invoice, pay, service, unique
from workflows.models import AutoRenewSetting, Customer, RenewFor
from workflows.subscription import SubscriptionWorkflow

HOSTING = default_catalog().profile("default").terms("hosting")


async def test_enough_credit_renews_on_the_invoice_lead_day_without_an_invoice(
    env: WorkflowEnvironment,
) -> None:
    async with lab(env) as l:
        customer = Customer(id=unique("cust"), email="jana@example.cz")
        await top_up(
            env.client, customer.id, Decimal("1500.00"), unique("top"), HOSTING, task_queue=l.task_queue
        )
        async with service(l, customer=customer, auto_renew=True, expires_in_days=40) as handle:
            d = (await l.status(handle)).expires_on
            await at_day(l, d, -29)
            status = await l.status(handle)
            assert status.expires_on == d.replace(year=d.year + 1)
            assert status.invoices == [], "renewal from credit issues no invoice"
            journal = await l.journal(handle)
            assert [
                (e.data["action"], e.data["amount"], e.data["balance"]) for e in entries(journal, "credit")
            ] == [("debit", "1200.00", "300.00")]
            assert offsets(journal, l, d, "credit", "action") == [("debit", -30)]
        found = await balance(env.client, customer.id)
        assert found is not None and found.balance == Decimal("300.00")


async def test_a_short_credit_is_retried_daily_and_a_top_up_before_d_renews(env: WorkflowEnvironment) -> None:
    async with lab(env) as l:
        customer = Customer(id=unique("cust"), email="jana@example.cz")
        await top_up(
            env.client, customer.id, Decimal("200.00"), unique("top"), HOSTING, task_queue=l.task_queue
        )
        async with service(l, customer=customer, auto_renew=True, expires_in_days=40) as handle:
            d = (await l.status(handle)).expires_on
            await at_day(l, d, -10)
            journal = await l.journal(handle)
            assert offsets(journal, l, d, "credit", "action") == [("debit_failed", -30)], (
                "noted once, not daily"
            )
            await top_up(
                env.client, customer.id, Decimal("1000.00"), unique("top"), HOSTING, task_queue=l.task_queue
            )
            await at_day(l, d, -8)
            journal = await l.journal(handle)
            assert offsets(journal, l, d, "credit", "action")[-1] == ("debit", -9), (
                "the next daily attempt takes it"
            )
            assert (await l.status(handle)).expires_on == d.replace(year=d.year + 1)
        found = await balance(env.client, customer.id)
        assert found is not None and found.balance == Decimal("0.00")


async def test_when_credit_never_covers_it_the_service_expires_like_an_unpaid_one(
    env: WorkflowEnvironment,
) -> None:
    async with lab(env) as l:
        customer = Customer(id=unique("cust"), email="jana@example.cz")
        async with service(l, customer=customer, auto_renew=True, expires_in_days=40) as handle:
            d = (await l.status(handle)).expires_on
            await at_day(l, d, 2)
            journal = await l.journal(handle)
            failed = offsets(journal, l, d, "credit", "action")
            assert failed == [("debit_failed", -30), ("debit_failed", 0)], (
                "first shortfall and the last attempt"
            )
            assert ("auto_renew_failed", 0) in offsets(journal, l, d, "mail", "template")
            assert offsets(journal, l, d)[-1] == ("blocked", 1)
            invoice = await open_invoice(l, handle, InvoicePurpose.RENEWAL)
            assert (invoice.issued_on, invoice.due_on) == (d + timedelta(days=1), d + timedelta(days=1))
            # The customer can still pay the invoice by bank: renewed from D.
            assert (await pay(handle, invoice)).result == "applied"
            assert (await l.status(handle)).expires_on == d.replace(year=d.year + 1)


async def test_switching_automatic_renewal_on_and_off(env: WorkflowEnvironment) -> None:
    async with lab(env) as l:
        customer = Customer(id=unique("cust"), email="jana@example.cz")
        await top_up(
            env.client, customer.id, Decimal("5000.00"), unique("top"), HOSTING, task_queue=l.task_queue
        )
        async with service(l, customer=customer, expires_in_days=20) as handle:
            d = (await l.status(handle)).expires_on
            invoice = await open_invoice(l, handle, InvoicePurpose.RENEWAL)  # overdue: issued at start
            await handle.execute_update(SubscriptionWorkflow.set_auto_renew, AutoRenewSetting(enabled=True))
            await at_day(l, d, -5)
            status = await l.status(handle)
            assert status.expires_on == d.replace(year=d.year + 1), "the next daily attempt paid from credit"
            cancelled = [i for i in status.invoices if i.variable_symbol == invoice.variable_symbol]
            assert cancelled[0].status == "cancelled", "the open invoice is not paid twice"
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await handle.execute_update(
                    SubscriptionWorkflow.set_auto_renew, AutoRenewSetting(enabled=True)
                )
            assert "already on" in str(refused.value.cause)


async def test_a_domain_can_be_renewed_for_up_to_ten_years_never_more_than_ten_ahead(
    env: WorkflowEnvironment,
) -> None:
    async with (
        lab(env) as l,
        service(
            l, product="domain", name=f"{unique('d')}.com", price=Decimal("300.00"), expires_in_days=20
        ) as handle,
    ):
        d = (await l.status(handle)).expires_on
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(SubscriptionWorkflow.renew_for, RenewFor(years=11))
        assert "1 to 10 years" in str(refused.value.cause)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(SubscriptionWorkflow.renew_for, RenewFor(years=10))
        assert "more than 10 years ahead" in str(refused.value.cause)
        answer = await handle.execute_update(SubscriptionWorkflow.renew_for, RenewFor(years=9))
        assert answer.amount == Decimal("2700.00")
        invoice = await open_invoice(l, handle, InvoicePurpose.RENEWAL)
        assert (invoice.period, invoice.amount) == ("P9Y", Decimal("2700.00"))
        assert (await pay(handle, invoice)).result == "applied"
        assert (await l.status(handle)).expires_on == d.replace(year=d.year + 9)
        assert [action for action, _ in l.registrar.calls] == ["renew"], (
            "extended at the registry once, after payment"
        )


async def test_renew_for_is_refused_for_a_hosting_service(env: WorkflowEnvironment) -> None:
    async with lab(env) as l, service(l, expires_in_days=20) as handle:
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(SubscriptionWorkflow.renew_for, RenewFor(years=2))
        assert "not a domain" in str(refused.value.cause)

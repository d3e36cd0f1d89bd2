"""Bulk renewal from credit (SPEC §3.10): all or nothing, and a retried request never twice."""

from __future__ import annotations

from decimal import Decimal

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from activities.exchange_rates import ExchangeRates, FixedRates
from policy.catalog import default_catalog
from starter.accounts import balance, statement, top_up
from starter.bulk_renewal import BulkRenewalRefused, renew_bulk
from tests.workflows.harness import Lab, lab
from tests.workflows.lifecycle import at_day, entries, service, unique
from workflows.models import CancelRequest, Customer
from workflows.money_models import PrepaidRenewal
from workflows.subscription import SubscriptionWorkflow

HOSTING = default_catalog().profile("default").terms("hosting")


async def credit(l: Lab, customer: Customer, amount: str) -> None:
    await top_up(l.env.client, customer.id, Decimal(amount), unique("top"), HOSTING, task_queue=l.task_queue)


async def test_bulk_renewal_debits_once_and_renews_every_service_from_d(env: WorkflowEnvironment) -> None:
    async with lab(env) as l:
        customer = Customer(id=unique("cust"), email="jana@example.cz")
        await credit(l, customer, "3000.00")
        async with (
            service(l, customer=customer, expires_in_days=40) as one,
            service(l, customer=customer, expires_in_days=60, price=Decimal("900.00")) as two,
        ):
            d1, d2 = (await l.status(one)).expires_on, (await l.status(two)).expires_on
            await at_day(l, d1, -30)  # one has an open invoice by now, two not yet
            assert (await l.status(one)).open_invoice is not None
            ids = [(await l.status(one)).service_id, (await l.status(two)).service_id]
            answer = await renew_bulk(env.client, customer.id, ids, request_id="req-1")
            assert answer.ok and not answer.repeated, answer.summary()
            assert (answer.total, answer.balance, answer.currency) == (
                Decimal("2100.00"),
                Decimal("900.00"),
                "CZK",
            )
            assert [s.renewed for s in answer.services] == [True, True]
            s1, s2 = await l.status(one), await l.status(two)
            assert s1.expires_on == d1.replace(year=d1.year + 1) and s2.expires_on == d2.replace(
                year=d2.year + 1
            )
            assert s1.open_invoice is None and s1.invoices[0].status == "cancelled", (
                "paid from credit instead"
            )
            assert [
                e.data["amount"] for e in entries(await l.journal(one), "credit", bulk="req-1")
            ] == ["1200.00"]
            # The same request again (a retry after a timeout): nothing debited, nothing renewed twice.
            again = await renew_bulk(env.client, customer.id, ids, request_id="req-1")
            assert again.ok and again.repeated
            assert all("already renewed" in s.message for s in again.services)
            assert (await l.status(one)).expires_on == d1.replace(year=d1.year + 1)
            assert (await l.status(two)).renewals == 1
        found = await balance(env.client, customer.id)
        assert found is not None and found.balance == Decimal("900.00")
        ledger = await statement(env.client, customer.id)
        assert ledger is not None
        assert [(e.kind, e.amount) for e in ledger.entries if e.kind == "debit"] == [
            ("debit", Decimal("1200.00")),
            ("debit", Decimal("900.00")),
        ]


async def test_a_balance_short_of_the_whole_moves_nothing_and_says_what_is_missing(
    env: WorkflowEnvironment,
) -> None:
    async with lab(env) as l:
        customer = Customer(id=unique("cust"), email="jana@example.cz")
        await credit(l, customer, "2000.00")
        async with service(l, customer=customer) as one, service(l, customer=customer) as two:
            ids = [(await l.status(h)).service_id for h in (one, two)]
            before = [(await l.status(h)).expires_on for h in (one, two)]
            answer = await renew_bulk(env.client, customer.id, ids, request_id="req-short")
            assert not answer.ok
            assert (answer.total, answer.balance, answer.missing) == (
                Decimal("2400.00"),
                Decimal("2000.00"),
                Decimal("400.00"),
            )
            assert "400.00 CZK is missing" in answer.summary()
            assert [(await l.status(h)).expires_on for h in (one, two)] == before
            # Topped up, the same request goes through (a short debit does not use up its key).
            await credit(l, customer, "400.00")
            assert (await renew_bulk(env.client, customer.id, ids, request_id="req-short")).ok
        found = await balance(env.client, customer.id)
        assert found is not None and found.balance == Decimal("0.00")


async def test_a_customer_without_an_account_is_short_by_the_whole(env: WorkflowEnvironment) -> None:
    async with lab(env) as l, service(l, customer=Customer(id=unique("cust"), email="a@example.cz")) as one:
        status = await l.status(one)
        answer = await renew_bulk(env.client, status.customer_id, [status.service_id])
        assert not answer.ok and answer.missing == Decimal("1200.00")


async def test_a_service_that_cannot_be_renewed_refuses_the_whole_request_before_any_debit(
    env: WorkflowEnvironment,
) -> None:
    async with lab(env) as l:
        customer = Customer(id=unique("cust"), email="jana@example.cz")
        other = Customer(id=unique("cust"), email="petr@example.cz")
        await credit(l, customer, "5000.00")
        async with (
            service(l, customer=customer, expires_in_days=400) as good,
            service(l, customer=customer, product="moje-stranky", expires_in_days=1) as closed,
            service(l, customer=customer, expires_in_days=400) as cancelled,
            service(l, customer=other, expires_in_days=400) as foreign,
        ):
            good_id = (await l.status(good)).service_id
            closed_id = (await l.status(closed)).service_id
            assert (await closed.result()).final_state == "closed"  # nobody paid: deleted and closed
            with pytest.raises(BulkRenewalRefused) as caught:
                await renew_bulk(env.client, customer.id, [good_id, closed_id])
            assert closed_id in str(caught.value) and "nothing debited" in str(caught.value)
            await cancelled.execute_update(SubscriptionWorkflow.cancel, CancelRequest())
            cancelled_id = (await l.status(cancelled)).service_id
            with pytest.raises(BulkRenewalRefused, match="cancelled"):
                await renew_bulk(env.client, customer.id, [good_id, cancelled_id])
            foreign_id = (await l.status(foreign)).service_id
            with pytest.raises(BulkRenewalRefused, match=f"belongs to customer {other.id}"):
                await renew_bulk(env.client, customer.id, [good_id, foreign_id])
            with pytest.raises(BulkRenewalRefused, match="no such service"):
                await renew_bulk(env.client, customer.id, [good_id, "never-was"])
            assert (await l.status(good)).renewals == 0
        found = await balance(env.client, customer.id)
        assert found is not None and found.balance == Decimal("5000.00")


async def test_services_of_different_types_are_refused(env: WorkflowEnvironment) -> None:
    async with lab(env) as l:
        customer = Customer(id=unique("cust"), email="jana@example.cz")
        async with (
            service(l, customer=customer) as hosting,
            service(l, customer=customer, product="vps", price=Decimal("3000.00")) as vps,
        ):
            ids = [(await l.status(h)).service_id for h in (hosting, vps)]
            with pytest.raises(BulkRenewalRefused, match="one type only"):
                await renew_bulk(env.client, customer.id, ids)


async def test_renew_prepaid_refuses_a_changed_price_and_answers_a_repeat(env: WorkflowEnvironment) -> None:
    async with lab(env) as l, service(l) as handle:
        request = PrepaidRenewal(
            debit_key="k1", amount=Decimal("1000.00"), currency="CZK", expected_amount=Decimal("1000.00")
        )
        with pytest.raises(WorkflowUpdateFailedError) as caught:
            await handle.execute_update(SubscriptionWorkflow.renew_prepaid, request)
        assert "now costs 1200.00" in str(caught.value.cause)
        request = request.model_copy(
            update={"amount": Decimal("1200.00"), "expected_amount": Decimal("1200.00")}
        )
        first = await handle.execute_update(SubscriptionWorkflow.renew_prepaid, request)
        again = await handle.execute_update(SubscriptionWorkflow.renew_prepaid, request)
        assert "renewed from credit" in first.message and "already renewed" in again.message
        assert (await l.status(handle)).renewals == 1


async def test_hostico_bulk_renewal_debits_the_eur_credit_at_the_day_s_rate(env: WorkflowEnvironment) -> None:
    hostico = default_catalog().profile("hostico").terms("hosting")
    rates: dict[str, ExchangeRates] = {"CZK": FixedRates("CZK", {"EUR": Decimal("25.000")})}
    async with lab(env) as l:
        customer = Customer(id=unique("cust"), email="ana@example.ro")
        await top_up(
            env.client, customer.id, Decimal("100.00"), unique("top"), hostico, task_queue=l.task_queue
        )
        async with (
            service(l, customer=customer, profile="hostico") as one,
            service(l, customer=customer, profile="hostico", price=Decimal("1000.00")) as two,
        ):
            ids = [(await l.status(h)).service_id for h in (one, two)]
            with pytest.raises(BulkRenewalRefused, match="no exchange-rate source"):
                await renew_bulk(env.client, customer.id, ids)
            answer = await renew_bulk(env.client, customer.id, ids, rates=rates)
            assert answer.ok, answer.summary()
            # 1200 / 25 = 48.00 EUR, 1000 / 25 = 40.00 EUR.
            assert [(s.amount, s.price) for s in answer.services] == [
                (Decimal("48.00"), Decimal("1200.00")),
                (Decimal("40.00"), Decimal("1000.00")),
            ]
            assert (answer.total, answer.currency, answer.balance) == (
                Decimal("88.00"),
                "EUR",
                Decimal("12.00"),
            )
            assert (await l.status(one)).renewals == 1 and (await l.status(two)).renewals == 1

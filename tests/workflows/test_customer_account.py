"""The customer's credit account (issue 6): movements, idempotency, limits, bulk renewal, history bound.

Each test opens an account for a fresh customer on a local worker that runs only the account
workflow and the account activities, on the session's time-skipping server.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

from activities.accounts import AccountActivities, DebitCreditInput
from policy.catalog import default_catalog
from workflows.account_models import (
    BulkDebitRequest,
    BulkItem,
    CreditLimits,
    CustomerAccountInput,
    DebitRequest,
    MovementKind,
    RefundRequest,
    TopUpRequest,
    account_workflow_id,
)
from workflows.customer_account import CustomerAccountWorkflow

Account = WorkflowHandle[CustomerAccountWorkflow, None]
HOSTICO = CreditLimits.from_terms(default_catalog().profile("hostico").terms("hosting"))


@dataclass
class Bench:
    env: WorkflowEnvironment
    task_queue: str
    activities: AccountActivities

    async def open(self, currency: str = "EUR", limits: CreditLimits | None = None, **extra: Any) -> Account:
        customer = f"c-{uuid.uuid4().hex[:10]}"
        return await self.env.client.start_workflow(
            CustomerAccountWorkflow.run,
            CustomerAccountInput(
                customer_id=customer, currency=currency, limits=limits or CreditLimits(), **extra
            ),
            id=account_workflow_id(customer),
            task_queue=self.task_queue,
        )


@contextlib.asynccontextmanager
async def bench(env: WorkflowEnvironment) -> AsyncIterator[Bench]:
    task_queue = f"acct-{uuid.uuid4()}"
    activities = AccountActivities(env.client, task_queue)
    async with Worker(
        env.client,
        task_queue=task_queue,
        workflows=[CustomerAccountWorkflow],
        activities=[activities.debit_credit],
    ):
        yield Bench(env, task_queue, activities)


def money(text: str) -> Decimal:
    return Decimal(text)


async def top_up(account: Account, amount: str, key: str | None = None) -> Any:
    return await account.execute_update(
        CustomerAccountWorkflow.top_up,
        TopUpRequest(idempotency_key=key or f"top-{uuid.uuid4().hex}", amount=money(amount)),
    )


async def debit(account: Account, amount: str, key: str, service_id: str = "svc-1") -> Any:
    return await account.execute_update(
        CustomerAccountWorkflow.debit,
        DebitRequest(idempotency_key=key, amount=money(amount), service_id=service_id),
    )


async def refused(call: Any) -> str:
    """The message of an update that a validator (or the handler) refused."""
    with pytest.raises(WorkflowUpdateFailedError) as caught:
        await call
    return str(getattr(caught.value.cause, "message", caught.value.cause))


# ------------------------------------------------------------------ movements


async def test_top_up_debit_refund_move_the_balance_and_write_the_ledger(env: WorkflowEnvironment) -> None:
    async with bench(env) as b:
        account = await b.open()
        first = await top_up(account, "100.00", "pay-1")
        taken = await debit(account, "30.50", "renew-1")
        back = await account.execute_update(
            CustomerAccountWorkflow.refund,
            RefundRequest(idempotency_key="refund-1", amount=money("10.00"), refund_of="renew-1"),
        )

        assert (first.ok, first.balance) == (True, money("100.00"))
        assert (taken.ok, taken.balance, taken.missing) == (True, money("69.50"), money("0"))
        assert (back.ok, back.balance) == (True, money("79.50"))
        balance = await account.query(CustomerAccountWorkflow.balance)
        assert (balance.balance, balance.currency, balance.movements) == (money("79.50"), "EUR", 3)
        statement = await account.query(CustomerAccountWorkflow.statement, 0)
        assert [(e.sequence, e.kind, e.amount, e.balance_after) for e in statement.entries] == [
            (1, MovementKind.TOP_UP, money("100.00"), money("100.00")),
            (2, MovementKind.DEBIT, money("30.50"), money("69.50")),
            (3, MovementKind.REFUND, money("10.00"), money("79.50")),
        ]
        assert statement.entries[1].service_id == "svc-1"
        assert statement.entries[2].refund_of == "renew-1"
        assert (statement.opening_balance, statement.closing_balance, statement.complete) == (
            money("0"),
            money("79.50"),
            True,
        )


async def test_statement_since_a_sequence_has_the_balance_before_it(env: WorkflowEnvironment) -> None:
    async with bench(env) as b:
        account = await b.open()
        await top_up(account, "50.00")
        await debit(account, "20.00", "d1")
        await top_up(account, "5.00")

        later = await account.query(CustomerAccountWorkflow.statement, 1)
        assert [e.sequence for e in later.entries] == [2, 3]
        assert (later.opening_balance, later.closing_balance) == (money("50.00"), money("35.00"))
        nothing_new = await account.query(CustomerAccountWorkflow.statement, 3)
        assert (nothing_new.entries, nothing_new.opening_balance) == ([], money("35.00"))


async def test_the_same_key_twice_moves_money_once(env: WorkflowEnvironment) -> None:
    async with bench(env) as b:
        account = await b.open()
        await top_up(account, "100.00", "pay-1")
        again = await top_up(account, "100.00", "pay-1")
        first = await debit(account, "40.00", "renew-1")
        second = await debit(account, "40.00", "renew-1")

        assert again.repeated and again.entry.sequence == 1
        assert (second.repeated, second.entry, second.balance) == (True, first.entry, first.balance)
        assert (await account.query(CustomerAccountWorkflow.balance)).balance == money("60.00")
        assert len((await account.query(CustomerAccountWorkflow.statement, 0)).entries) == 2


async def test_a_key_reused_for_a_different_request_is_refused(env: WorkflowEnvironment) -> None:
    async with bench(env) as b:
        account = await b.open()
        await top_up(account, "100.00", "pay-1")
        await debit(account, "40.00", "renew-1")

        message = await refused(debit(account, "41.00", "renew-1"))
        assert "idempotency key 'renew-1' was already used for a different request" in message
        assert (await account.query(CustomerAccountWorkflow.balance)).balance == money("60.00")


async def test_a_debit_the_balance_does_not_cover_says_what_is_missing_and_can_be_retried(
    env: WorkflowEnvironment,
) -> None:
    async with bench(env) as b:
        account = await b.open()
        await top_up(account, "25.00")
        short = await debit(account, "40.00", "auto-renew:2025-06-30")

        assert (short.ok, short.balance, short.missing, short.entry) == (
            False,
            money("25.00"),
            money("15.00"),
            None,
        )
        assert (await account.query(CustomerAccountWorkflow.balance)).balance == money("25.00")
        # The next day's retry under the same key succeeds once the customer topped up.
        await top_up(account, "20.00")
        retry = await debit(account, "40.00", "auto-renew:2025-06-30")
        assert (retry.ok, retry.repeated, retry.balance) == (True, False, money("5.00"))


@pytest.mark.parametrize("amount", ["0.00", "-5.00"])
async def test_non_positive_amounts_are_refused(env: WorkflowEnvironment, amount: str) -> None:
    async with bench(env) as b:
        account = await b.open()
        await top_up(account, "50.00")
        expected = f"amount must be positive, got {money(amount)}"
        assert await refused(top_up(account, amount)) == expected
        assert await refused(debit(account, amount, "d")) == expected
        refund = RefundRequest(idempotency_key="r", amount=money(amount))
        assert await refused(account.execute_update(CustomerAccountWorkflow.refund, refund)) == expected
        assert (
            await refused(
                account.execute_update(CustomerAccountWorkflow.bulk_debit, bulk("b", "1.00", amount))
            )
            == expected
        )
        assert (await account.query(CustomerAccountWorkflow.balance)).movements == 1


async def test_another_currency_is_refused(env: WorkflowEnvironment) -> None:
    async with bench(env) as b:
        account = await b.open(currency="EUR")
        request = TopUpRequest(idempotency_key="k", amount=money("20.00"), currency="CZK")
        message = await refused(account.execute_update(CustomerAccountWorkflow.top_up, request))
        assert (
            message
            == f"the account of customer {(await account.query(CustomerAccountWorkflow.balance)).customer_id} is in EUR, not CZK"
        )


# ------------------------------------------------------------------ hostico limits


async def test_hostico_limits_come_from_the_catalog() -> None:
    assert (
        CreditLimits(min_top_up=money("10.00"), max_top_up=money("1000.00"), max_balance=money("1000.00"))
        == HOSTICO
    )
    assert CreditLimits.from_terms(default_catalog().profile("default").terms("hosting")) == CreditLimits()


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        ("9.99", "a top-up is at least 10.00 EUR, got 9.99"),
        ("1000.01", "a top-up is at most 1000.00 EUR, got 1000.01"),
    ],
)
async def test_hostico_top_up_bounds(env: WorkflowEnvironment, amount: str, expected: str) -> None:
    async with bench(env) as b:
        account = await b.open(limits=HOSTICO)
        assert await refused(top_up(account, amount)) == expected
        assert (await top_up(account, "10.00")).ok
        assert (await top_up(account, "990.00")).balance == money("1000.00")


async def test_hostico_balance_never_above_1000(env: WorkflowEnvironment) -> None:
    async with bench(env) as b:
        account = await b.open(limits=HOSTICO)
        await top_up(account, "900.00", "pay-1")
        message = await refused(top_up(account, "100.01"))
        assert message == (
            "the top-up would make the balance 1000.01 EUR, above the limit of 1000.00; "
            "at most 100.00 can be added now"
        )
        # A retry of a top-up that was applied is answered from memory, even though the balance is now high.
        assert (await top_up(account, "900.00", "pay-1")).repeated
        assert (await top_up(account, "100.00")).balance == money("1000.00")
        # A refund may not push it over either.
        assert "above the limit of 1000.00" in await refused(
            account.execute_update(
                CustomerAccountWorkflow.refund, RefundRequest(idempotency_key="r", amount=money("0.01"))
            )
        )


async def test_racing_top_ups_cannot_push_the_balance_over_the_limit(env: WorkflowEnvironment) -> None:
    async with bench(env) as b:
        account = await b.open(limits=HOSTICO)
        outcomes = await asyncio.gather(
            *(top_up(account, "300.00", f"pay-{n}") for n in range(5)), return_exceptions=True
        )
        applied = [o for o in outcomes if not isinstance(o, BaseException)]
        assert all(isinstance(o, WorkflowUpdateFailedError) for o in outcomes if isinstance(o, BaseException))
        assert len(applied) == 3
        assert (await account.query(CustomerAccountWorkflow.balance)).balance == money("900.00")


async def test_a_refund_of_a_debit_never_exceeds_it(env: WorkflowEnvironment) -> None:
    async with bench(env) as b:
        account = await b.open()
        await top_up(account, "100.00")
        await debit(account, "30.00", "renew-1")

        def refund(key: str, amount: str, of: str = "renew-1") -> Any:
            return account.execute_update(
                CustomerAccountWorkflow.refund,
                RefundRequest(idempotency_key=key, amount=money(amount), refund_of=of),
            )

        assert (await refund("r1", "20.00")).ok
        assert (
            await refused(refund("r2", "10.01"))
            == "debit 'renew-1' was 30.00; at most 10.00 of it is left to refund"
        )
        assert (
            await refused(refund("r3", "1.00", of="nope")) == "no debit with idempotency key 'nope' to refund"
        )
        assert (await refund("r4", "10.00")).balance == money("100.00")


# ------------------------------------------------------------------ bulk renewal


def bulk(key: str, *amounts: str) -> BulkDebitRequest:
    return BulkDebitRequest(
        idempotency_key=key,
        product="hosting",
        items=[BulkItem(service_id=f"svc-{n}", amount=money(a)) for n, a in enumerate(amounts, 1)],
    )


async def test_bulk_renewal_is_all_or_nothing(env: WorkflowEnvironment) -> None:
    async with bench(env) as b:
        account = await b.open()
        await top_up(account, "100.00")

        short = await account.execute_update(
            CustomerAccountWorkflow.bulk_debit, bulk("bulk-1", "40.00", "40.00", "30.00")
        )
        assert (short.ok, short.total, short.missing, short.entries) == (
            False,
            money("110.00"),
            money("10.00"),
            [],
        )
        assert (await account.query(CustomerAccountWorkflow.balance)).balance == money("100.00")

        await top_up(account, "10.00")
        done = await account.execute_update(
            CustomerAccountWorkflow.bulk_debit, bulk("bulk-1", "40.00", "40.00", "30.00")
        )
        assert (done.ok, done.balance, done.missing) == (True, money("0.00"), money("0"))
        assert [(e.service_id, e.amount, e.batch_key) for e in done.entries] == [
            ("svc-1", money("40.00"), "bulk-1"),
            ("svc-2", money("40.00"), "bulk-1"),
            ("svc-3", money("30.00"), "bulk-1"),
        ]
        again = await account.execute_update(
            CustomerAccountWorkflow.bulk_debit, bulk("bulk-1", "40.00", "40.00", "30.00")
        )
        assert (again.repeated, again.entries) == (True, done.entries)
        statement = await account.query(CustomerAccountWorkflow.statement, 0)
        assert [e.kind for e in statement.entries] == [MovementKind.TOP_UP, MovementKind.TOP_UP] + [
            MovementKind.DEBIT
        ] * 3


async def test_bulk_lists_a_service_only_once() -> None:
    with pytest.raises(ValueError, match="service svc-1 is listed twice"):
        BulkDebitRequest(
            idempotency_key="b",
            items=[BulkItem(service_id="svc-1", amount=money("1.00"))] * 2,
        )


# ------------------------------------------------------------------ concurrency and history


async def test_fifty_racing_debits_never_overdraw(env: WorkflowEnvironment) -> None:
    async with bench(env) as b:
        account = await b.open()
        await top_up(account, "100.00")
        results = await asyncio.gather(*(debit(account, "7.00", f"race-{n}", f"svc-{n}") for n in range(50)))

        taken = [r for r in results if r.ok]
        assert len(taken) == 14  # 14 × 7.00 = 98.00; the 15th would overdraw
        assert all(r.missing > 0 for r in results if not r.ok)
        balance = (await account.query(CustomerAccountWorkflow.balance)).balance
        assert balance == money("100.00") - sum((r.entry.amount for r in taken), Decimal(0)) == money("2.00")
        statement = await account.query(CustomerAccountWorkflow.statement, 0)
        assert all(e.balance_after >= 0 for e in statement.entries)
        assert sorted(e.sequence for e in statement.entries) == list(range(1, 16))


async def test_continue_as_new_keeps_balance_ledger_and_keys(env: WorkflowEnvironment) -> None:
    async with bench(env) as b:
        account = await b.open(continue_after=3, ledger_limit=4)
        first_run = (await account.describe()).run_id
        await top_up(account, "100.00", "pay-1")
        for n in range(1, 8):
            await debit(account, "5.00", f"d-{n}")

        assert (await account.describe()).run_id != first_run
        balance = await account.query(CustomerAccountWorkflow.balance)
        assert (balance.balance, balance.movements) == (money("65.00"), 8)
        # A key from an earlier run is still remembered: its retry moves nothing.
        again = await top_up(account, "100.00", "pay-1")
        assert (again.repeated, again.entry.sequence) == (True, 1)
        assert (await debit(account, "5.00", "d-2")).repeated
        statement = await account.query(CustomerAccountWorkflow.statement, 0)
        # Older entries were summed into the opening balance; what is kept still adds up.
        assert not statement.complete
        kept = statement.entries
        assert len(kept) >= 4 and kept[-1].sequence == 8
        assert (
            statement.opening_balance - sum((e.amount for e in kept), Decimal(0)) == statement.closing_balance
        )
        recent = await account.query(CustomerAccountWorkflow.statement, 6)
        assert recent.complete and [e.sequence for e in recent.entries] == [7, 8]


async def test_racing_debits_across_continue_as_new_never_overdraw(env: WorkflowEnvironment) -> None:
    async with bench(env) as b:
        account = await b.open(continue_after=5)
        await top_up(account, "50.00")
        results = await asyncio.gather(*(debit(account, "3.00", f"race-{n}") for n in range(30)))

        assert sum(r.ok for r in results) == 16
        balance = await account.query(CustomerAccountWorkflow.balance)
        assert (balance.balance, balance.movements) == (money("2.00"), 17)


# ------------------------------------------------------------------ the activity


async def test_debit_credit_activity_opens_the_account_and_debits_once(env: WorkflowEnvironment) -> None:
    async with bench(env) as b:
        customer = f"c-{uuid.uuid4().hex[:10]}"
        request = DebitCreditInput(
            idempotency_key="service-x:credit:2025-06-30",
            customer_id=customer,
            amount=money("12.00"),
            service_id="svc-x",
            currency="EUR",
            limits=HOSTICO,
        )
        run = ActivityEnvironment().run
        nothing = await run(b.activities.debit_credit, request)
        assert (nothing.ok, nothing.balance, nothing.missing) == (False, money("0"), money("12.00"))

        account: Account = b.env.client.get_workflow_handle_for(
            CustomerAccountWorkflow.run, account_workflow_id(customer)
        )
        assert (await account.query(CustomerAccountWorkflow.balance)).limits == HOSTICO
        await top_up(account, "20.00")
        paid = await run(b.activities.debit_credit, request)
        again = await run(b.activities.debit_credit, request)
        assert (paid.ok, paid.balance, paid.sequence, paid.repeated) == (True, money("8.00"), 2, False)
        assert (again.ok, again.sequence, again.repeated) == (True, 2, True)
        assert (await account.query(CustomerAccountWorkflow.balance)).balance == money("8.00")

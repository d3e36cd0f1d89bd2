"""Bulk renewal (SPEC §3.10): several services of one type renewed from the credit account at once,
all or nothing.

1. Every service is asked for its `renewal_quote`; the whole request is refused, before any money
   moves, if one of them is unknown, ended, not renewable, of another customer or another product.
2. The account debits the sum in one `bulk_debit` under one idempotency key (the request id): every
   item or none. A balance that does not cover all moves nothing and the answer says what is missing.
3. Each service renews through `renew_prepaid`, keyed by the same request id, so a retried request
   (same id) neither debits nor renews twice. A service that refuses at this step (closed in the
   meantime) gets its amount refunded to the account under a key of its own.

The default request id is the customer, the sorted services and the provider's calendar day: a retry
the same day is recognised as the same request. Renewing the same services twice in one day on
purpose needs an explicit `request_id`.

Prices are in the price currency (CZK); a credit kept in another currency (Hostico: EUR) is debited
the converted amount at the day's central bank rate (`rates`, as the worker's exchange-rate sources).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from activities.exchange_rates import ConvertAmountInput, ExchangeRates, convert_with
from policy.clock import Clock
from policy.money import Money
from workflows import service_workflow_id
from workflows.account_models import (
    ZERO,
    BulkDebitRequest,
    BulkItem,
    RefundRequest,
    account_workflow_id,
)
from workflows.customer_account import CustomerAccountWorkflow
from workflows.money_models import PrepaidRenewal, RenewalQuote
from workflows.subscription import SubscriptionWorkflow


class BulkRenewalRefused(ValueError):
    """The request can never succeed as asked; nothing was debited. Every reason is in the message."""


class ServiceRenewal(BaseModel):
    service_id: str
    amount: Money
    """Debited from the credit, in the credit currency."""
    price: Money
    """The renewal price, in the price currency."""
    renewed: bool
    message: str
    refunded: bool = False


class BulkRenewalAnswer(BaseModel):
    ok: bool
    """All debited and renewed (or a repeat of a request that was)."""
    request_id: str
    customer_id: str
    product: str
    total: Money
    currency: str
    balance: Money
    missing: Money = ZERO
    repeated: bool = False
    services: list[ServiceRenewal] = []

    def summary(self) -> str:
        if not self.ok:
            return (
                f"nothing debited: the credit of customer {self.customer_id} is {self.balance} {self.currency}, "
                f"the renewal of {len(self.services)} services costs {self.total} {self.currency}; "
                f"{self.missing} {self.currency} is missing"
            )
        renewed = sum(1 for s in self.services if s.renewed)
        text = f"{renewed} of {len(self.services)} services renewed for {self.total} {self.currency}"
        text += f"; balance {self.balance} {self.currency}"
        if self.repeated:
            text += " (a repeat of request " + self.request_id + ": nothing debited again)"
        refunded = [s.service_id for s in self.services if s.refunded]
        if refunded:
            text += f"; refunded to the credit: {', '.join(refunded)}"
        return text


def default_request_id(customer_id: str, service_ids: Sequence[str], day: date) -> str:
    digest = hashlib.sha256("\n".join(sorted(service_ids)).encode()).hexdigest()[:16]
    return f"bulk:{customer_id}:{day.isoformat()}:{digest}"


async def _quote(client: Client, service_id: str) -> RenewalQuote | str:
    handle = client.get_workflow_handle_for(SubscriptionWorkflow.run, service_workflow_id(service_id))
    try:
        return await handle.query(SubscriptionWorkflow.renewal_quote)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return f"{service_id}: no such service"
        raise


async def renew_bulk(
    client: Client,
    customer_id: str,
    service_ids: Sequence[str],
    *,
    request_id: str | None = None,
    rates: Mapping[str, ExchangeRates] | None = None,
    now: datetime | None = None,
) -> BulkRenewalAnswer:
    """Renew `service_ids` from the credit of `customer_id`, all or nothing (see the module doc)."""
    if not service_ids:
        raise BulkRenewalRefused("name at least one service")
    if len(set(service_ids)) != len(service_ids):
        raise BulkRenewalRefused("a service is listed twice")
    quotes: list[RenewalQuote] = []
    problems: list[str] = []
    for service_id in service_ids:
        quote = await _quote(client, service_id)
        if isinstance(quote, str):
            problems.append(quote)
            continue
        quotes.append(quote)
        if quote.customer_id != customer_id:
            problems.append(f"{service_id}: belongs to customer {quote.customer_id}, not {customer_id}")
        if not quote.renewable:
            problems.append(f"{service_id}: {quote.reason}")
    products = sorted({q.product for q in quotes})
    if len(products) > 1:
        problems.append(f"services of one type only; these are {', '.join(products)}")
    currencies = {(q.currency, q.credit_currency) for q in quotes}
    if len(currencies) > 1:
        problems.append("the services are priced or credited in different currencies")
    if problems:
        raise BulkRenewalRefused("nothing debited: " + "; ".join(problems))
    first = quotes[0]
    day = Clock().today(now or datetime.now(UTC))
    request_id = request_id or default_request_id(customer_id, service_ids, day)
    amounts: list[Decimal] = []
    for quote in quotes:
        if quote.currency == quote.credit_currency:
            amounts.append(quote.amount)
            continue
        if rates is None:
            raise BulkRenewalRefused(
                f"nothing debited: prices are in {quote.currency}, the credit in {quote.credit_currency}, "
                "and no exchange-rate source was given"
            )
        converted = await convert_with(
            rates,
            ConvertAmountInput(
                amount=quote.amount, from_currency=quote.currency, to_currency=quote.credit_currency, day=day
            ),
        )
        amounts.append(converted.amount)
    account = client.get_workflow_handle_for(CustomerAccountWorkflow.run, account_workflow_id(customer_id))
    request = BulkDebitRequest(
        idempotency_key=request_id,
        product=first.product,
        items=[BulkItem(service_id=q.service_id, amount=a) for q, a in zip(quotes, amounts, strict=True)],
        currency=first.credit_currency,
        reason=f"bulk renewal of {len(quotes)} {first.product} services",
    )
    answer = BulkRenewalAnswer(
        ok=False,
        request_id=request_id,
        customer_id=customer_id,
        product=first.product,
        total=request.total,
        currency=first.credit_currency,
        balance=ZERO,
    )
    try:
        debit = await account.execute_update(CustomerAccountWorkflow.bulk_debit, request)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        # No account: nothing on it.
        answer.missing = request.total
        answer.services = _unpaid(quotes, amounts, "no credit account")
        return answer
    except WorkflowUpdateFailedError as exc:
        raise BulkRenewalRefused(
            f"the account refused the debit: {getattr(exc.cause, 'message', exc.cause)}"
        ) from exc
    answer.balance, answer.missing, answer.repeated = debit.balance, debit.missing, debit.repeated
    if not debit.ok:
        answer.services = _unpaid(quotes, amounts, "not debited")
        return answer
    answer.ok = True
    for quote, amount in zip(quotes, amounts, strict=True):
        answer.services.append(await _renew_one(client, account, request_id, quote, amount, debit.balance))
    if any(s.refunded for s in answer.services):
        answer.balance = (await account.query(CustomerAccountWorkflow.balance)).balance
    return answer


def _unpaid(quotes: list[RenewalQuote], amounts: list[Decimal], why: str) -> list[ServiceRenewal]:
    return [
        ServiceRenewal(service_id=q.service_id, amount=a, price=q.amount, renewed=False, message=why)
        for q, a in zip(quotes, amounts, strict=True)
    ]


async def _renew_one(
    client: Client,
    account: WorkflowHandle[Any, Any],
    request_id: str,
    quote: RenewalQuote,
    amount: Decimal,
    balance: Decimal,
) -> ServiceRenewal:
    handle = client.get_workflow_handle_for(SubscriptionWorkflow.run, service_workflow_id(quote.service_id))
    renewal = PrepaidRenewal(
        debit_key=request_id,
        amount=amount,
        currency=quote.credit_currency,
        expected_amount=quote.amount,
        balance=balance,
    )
    try:
        result = await handle.execute_update(SubscriptionWorkflow.renew_prepaid, renewal)
    except (WorkflowUpdateFailedError, RPCError) as exc:
        if isinstance(exc, RPCError) and exc.status != RPCStatusCode.NOT_FOUND:
            raise
        reason = str(getattr(getattr(exc, "cause", None), "message", None) or exc)
        refund = RefundRequest(
            idempotency_key=f"{request_id}:refund:{quote.service_id}",
            amount=amount,
            currency=quote.credit_currency,
            service_id=quote.service_id,
            reason=f"bulk renewal {request_id}: {quote.service_id} refused the renewal ({reason})",
        )
        await account.execute_update(CustomerAccountWorkflow.refund, refund)
        return ServiceRenewal(
            service_id=quote.service_id,
            amount=amount,
            price=quote.amount,
            renewed=False,
            refunded=True,
            message=f"refused after the debit ({reason}); {amount} refunded to the credit",
        )
    return ServiceRenewal(
        service_id=quote.service_id, amount=amount, price=quote.amount, renewed=True, message=result.message
    )

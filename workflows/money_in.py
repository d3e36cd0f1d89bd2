"""Money in without a bank transfer: a stored card charged on invoice, prepaid (bulk) renewals, and
amounts in another currency (SPEC §3.9–3.10, §6).

A mixin of `SubscriptionWorkflow` (Temporal collects handlers from base classes); the lifecycle calls
three hooks:

- `_charge_stored_card(invoice, at)` right after a renewal invoice is issued: the stored card is
  charged through the card gateway with a key made from the invoice's variable symbol, so a retried
  activity or a replayed workflow never charges twice. Paid: the invoice is paid exactly as an
  incoming payment pays it (journal, mail, renewal). Declined: the invoice stays open and the
  customer is told. Anything else (the gateway never decided, a charge that died mid-request) flags
  the service for ops; the invoice stays open either way.
- `_invoice_money(amount, at)` before an invoice is issued: a profile that invoices in another
  currency (Hostico: RON at the BNR rate + 2 %) gets the invoice day's rate from an activity; the
  amount is converted and rounded once, the rate and its source are written on the invoice.
- `_credit_amount(amount, at)` before a debit from the credit account: a price in CZK is taken from
  a EUR credit at the day's ČNB rate.

Every one of them sits behind a `workflow.patched` marker, so services already running replay.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from workflows.subscription_host import SubscriptionHost

with workflow.unsafe.imports_passed_through():
    from activities.billing import PaymentReceived
    from activities.card_gateway import CardActivities, ChargeCardInput
    from activities.exchange_rates import (
        ConvertAmountInput,
        ExchangeRateActivities,
        RateForInvoiceInput,
    )
    from activities.mailer import NoticeKind
    from policy.catalog import ProductKind
    from policy.commerce import convert_invoice
    from policy.domains import RenewalPath, max_renewal_years, renewal_path_on
    from policy.money import Money
    from policy.payments import InvoicePurpose, InvoiceRecord, InvoiceState
    from policy.periods import parse_period
    from workflows.models import (
        GONE,
        CommandResult,
        ServiceState,
    )
    from workflows.money_models import (
        CARD_KEY_MEMORY,
        PREPAID_KEY_MEMORY,
        PrepaidRenewal,
        RenewalQuote,
        StoredCardSetting,
    )

CARD_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(minutes=2),
    # A gateway that has not decided is asked again for about an hour, then ops look.
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=30),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(minutes=10),
        maximum_attempts=10,
        non_retryable_error_types=["ChargeUncertain"],
    ),
}
RATE_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(minutes=1),
    "retry_policy": RetryPolicy(
        maximum_interval=timedelta(minutes=30),
        non_retryable_error_types=["RateNotPublished", "RateFormatError"],
    ),
}


class InvoiceMoney(BaseModel):
    """What an invoice asks for, in which currency, and how it was converted (if it was)."""

    amount: Money
    currency: str
    exchange_rate: Decimal | None = None
    rate_source: str | None = None
    price_amount: Money | None = None

    def record_fields(self) -> dict[str, Any]:
        """The fields of `InvoiceRecord` that say how it was converted (none when it was not)."""
        if self.exchange_rate is None:
            return {}
        return {
            "currency": self.currency,
            "exchange_rate": self.exchange_rate,
            "rate_source": self.rate_source,
            "price_amount": self.price_amount,
        }


class MoneyInMixin(SubscriptionHost):
    """Stored-card charging, prepaid renewal and currency conversion for `SubscriptionWorkflow`."""

    # ---------------------------------------------------------------- stored card

    @workflow.update
    async def set_stored_card(self, request: StoredCardSetting) -> CommandResult:
        """Store (or remove) the card charged for each renewal invoice as soon as it is issued."""
        async with self.lock:
            at = workflow.now()
            card = request.card
            self.state.stored_card = card
            self._record(
                "card", {"action": "stored" if card else "removed", "label": card.label if card else ""}, at
            )
            # A new card pays the renewal invoice open now (e.g. one the old card could not pay).
            open_invoice = self._open_renewal_invoice()
            if card is not None and open_invoice is not None:
                await self._charge_stored_card(open_invoice, at)
            self._refresh()
        self._wake()
        if card is None:
            return CommandResult(message="stored card removed; renewal invoices are paid as usual")
        message = f"card {card.label or 'stored'} will be charged for each renewal invoice when it is issued"
        if open_invoice is not None:
            outcome = self.state.card_charges.get(self._card_key(open_invoice.variable_symbol, card.token))
            message += f"; open invoice VS {open_invoice.variable_symbol}: {outcome or 'not charged'}"
        return CommandResult(message=message)

    @set_stored_card.validator
    def _validate_stored_card(self, request: StoredCardSetting) -> None:
        if request is None:
            raise ValueError("the request is missing (got null)")
        if self.state.billing_state in GONE:
            raise ValueError(f"service {self.state.spec.service_id} is {self.state.billing_state.value}")
        if request.card is None and self.state.stored_card is None:
            raise ValueError("no card is stored")

    def _open_renewal_invoice(self) -> InvoiceRecord | None:
        return next(
            (
                i
                for i in reversed(self.state.invoices)
                if i.status is InvoiceState.OPEN and i.purpose is InvoicePurpose.RENEWAL
            ),
            None,
        )

    def _card_key(self, variable_symbol: str, token: str) -> str:
        """One charge per invoice and card: the same card is never charged twice for one invoice."""
        card = hashlib.sha256(token.encode()).hexdigest()[:12]
        return self._key("card", variable_symbol, card)

    async def _charge_stored_card(self, invoice: InvoiceRecord, at: datetime) -> None:
        """SPEC §6: a stored card is charged as soon as the invoice is issued, once per invoice and card."""
        state = self.state
        card = state.stored_card
        vs = invoice.variable_symbol
        if card is None:
            return
        key = self._card_key(vs, card.token)
        if key in state.card_charges or not workflow.patched("card-charge-on-invoice"):
            return
        currency = invoice.currency or state.terms.currency
        try:
            result = await workflow.execute_activity_method(
                CardActivities.charge_stored_card,
                ChargeCardInput(
                    idempotency_key=key,
                    token=card.token,
                    amount=invoice.amount,
                    currency=currency,
                    label=f"VS {vs}",
                    email=state.spec.customer.email,
                    service_id=state.spec.service_id,
                    variable_symbol=vs,
                ),
                summary=f"charge stored card {card.label or ''} {invoice.amount} {currency} for VS {vs}".replace(
                    "  ", " "
                ),
                **CARD_OPTIONS,
            )
        except ActivityError as exc:
            self._remember_charge(key, "failed")
            self._action_failed("card charge", exc, at)
            return
        line = {"vs": vs, "amount": str(invoice.amount), "currency": currency}
        if not result.paid:
            self._remember_charge(key, "declined")
            self._record("card", {"action": "declined", **line, "reason": result.message}, at)
            await self._notify(
                NoticeKind.CARD_DECLINED,
                f"card:{vs}:{key[-12:]}",
                at,
                self._invoice_facts(invoice).model_copy(update={"reason": result.message}),
            )
            return
        self._remember_charge(key, "paid")
        self._record("card", {"action": "charged", **line, "transaction": result.transaction_id}, at)
        # The same path as a bank payment: the invoice is paid, the journal and mail say so, it renews.
        await self._decide_and_apply(
            PaymentReceived(
                payment_id=f"card:{result.transaction_id}",
                variable_symbol=vs,
                amount=invoice.amount,
                received_at=workflow.now(),
                currency=currency,
                source="card",
            )
        )

    def _remember_charge(self, key: str, outcome: str) -> None:
        charges = {**self.state.card_charges, key: outcome}
        self.state.card_charges = dict(list(charges.items())[-CARD_KEY_MEMORY:])

    # ---------------------------------------------------------------- prepaid (bulk) renewal

    def _renewal_refusal(self) -> str | None:
        """Why one more period cannot be renewed from credit now (None: it can)."""
        state = self.state
        if state.billing_state in GONE:
            return f"the service is {state.billing_state.value}"
        if state.cancel_effective_on is not None:
            return f"the service is cancelled from {state.cancel_effective_on}"
        if state.pending_registry_renewal is not None:
            return "a paid renewal is still waiting for the registry"
        if state.terms.kind is ProductKind.DNS and state.spec.follows:
            return "DNS hosting follows its domain; renew the domain"
        if state.terms.kind is ProductKind.DOMAIN:
            if state.billing_state in (ServiceState.REDEMPTION, ServiceState.QUARANTINE):
                return f"the domain is in {state.billing_state.value}: only a paid restore renews it"
            if (
                state.tld is not None
                and renewal_path_on(state.tld, state.expires_on, self._today()) is RenewalPath.NONE
            ):
                return "the registry no longer renews this domain"
            years = max(1, parse_period(self._renewal_period()).years)
            if max_renewal_years(state.expires_on, self._today()) < years:
                return "the renewal would pay more than 10 years ahead"
        return None

    @workflow.query
    def renewal_quote(self) -> RenewalQuote:
        """What one more period costs now and whether it can be renewed (bulk renewal asks this first)."""
        state = self.state
        refusal = self._renewal_refusal()
        return RenewalQuote(
            service_id=state.spec.service_id,
            customer_id=state.spec.customer.id,
            product=state.spec.product,
            profile=state.spec.profile,
            state=self._shown_state().value,
            expires_on=state.expires_on,
            period=self._renewal_period(),
            amount=self._renewal_amount(),
            currency=state.terms.currency,
            credit_currency=state.terms.credit_currency,
            renewable=refusal is None,
            reason=refusal or "",
        )

    @workflow.update
    async def renew_prepaid(self, request: PrepaidRenewal) -> CommandResult:
        """Renew one period already paid from credit (SPEC §3.10); a debit key renews at most once."""
        async with self.lock:
            state = self.state
            if request.debit_key in state.prepaid_keys:
                return CommandResult(
                    message=f"already renewed by {request.debit_key}; paid until {state.expires_on}"
                )
            at = workflow.now()
            state.prepaid_keys = [*state.prepaid_keys, request.debit_key][-PREPAID_KEY_MEMORY:]
            self._record(
                "credit",
                {
                    "action": "debit",
                    "amount": str(request.amount),
                    "balance": "" if request.balance is None else str(request.balance),
                    "currency": request.currency,
                    "bulk": request.debit_key,
                },
                at,
            )
            await self._cancel_open_invoices("paid from credit", at, InvoicePurpose.RENEWAL)
            await self._renew(
                self._renewal_period(),
                at,
                f"prepaid:{request.debit_key}",
                reason="renewed from credit (bulk renewal)",
                amount=request.amount,
            )
            self._refresh()
        self._wake()
        if state.pending_registry_renewal is not None:
            return CommandResult(message="paid; the registry refused the renewal, ops will retry it")
        return CommandResult(message=f"renewed from credit until {state.expires_on}")

    @renew_prepaid.validator
    def _validate_renew_prepaid(self, request: PrepaidRenewal) -> None:
        if request is None:
            raise ValueError("the request is missing (got null)")
        if request.debit_key in self.state.prepaid_keys:
            return  # answered as a repeat
        if (refusal := self._renewal_refusal()) is not None:
            raise ValueError(f"service {self.state.spec.service_id} cannot be renewed: {refusal}")
        if request.currency != self.state.terms.credit_currency:
            raise ValueError(
                f"the credit of this service is in {self.state.terms.credit_currency}, not {request.currency}"
            )
        if request.expected_amount != self._renewal_amount():
            raise ValueError(
                f"the renewal now costs {self._renewal_amount()} {self.state.terms.currency}, "
                f"not {request.expected_amount}"
            )

    # ---------------------------------------------------------------- currency

    async def _invoice_money(self, amount: Decimal, at: datetime) -> InvoiceMoney:
        """The invoice's amount in the profile's invoice currency at the invoice day's rate + margin."""
        state = self.state
        price_currency = state.terms.currency
        target = state.invoice_currency
        if target is None or target.currency == price_currency or not workflow.patched("invoice-currency"):
            return InvoiceMoney(amount=amount, currency=price_currency)
        day = state.clock.today(at)
        rate = await workflow.execute_activity_method(
            ExchangeRateActivities.rate_for_invoice,
            RateForInvoiceInput(
                invoice_currency=target.currency,
                price_currency=price_currency,
                day=day,
                margin_percent=target.margin_percent,
            ),
            summary=f"{target.currency} per {price_currency} on {day} (+{target.margin_percent} %)",
            **RATE_OPTIONS,
        )
        converted, recorded = convert_invoice(amount, rate.central_bank_rate, rate.margin_percent)
        return InvoiceMoney(
            amount=converted,
            currency=target.currency,
            exchange_rate=recorded,
            rate_source=f"{rate.bank} {rate.fixing_date.isoformat()} {rate.central_bank_rate} + {rate.margin_percent} %",
            price_amount=amount,
        )

    async def _credit_amount(self, amount: Decimal, at: datetime) -> tuple[Decimal, str | None]:
        """A price taken from a credit kept in another currency, at the day's central bank rate.

        Returns the amount in the credit currency and, when converted, a note for the journal.
        """
        terms = self.state.terms
        if terms.credit_currency == terms.currency or not workflow.patched("credit-currency"):
            return amount, None
        day = self.state.clock.today(at)
        converted = await workflow.execute_activity_method(
            ExchangeRateActivities.convert_amount,
            ConvertAmountInput(
                amount=amount, from_currency=terms.currency, to_currency=terms.credit_currency, day=day
            ),
            summary=f"{amount} {terms.currency} in {terms.credit_currency} on {day}",
            **RATE_OPTIONS,
        )
        note = (
            f"{amount} {terms.currency} at {converted.bank} {converted.fixing_date.isoformat()} "
            f"({converted.rate:.6f} {converted.currency}/{terms.currency})"
        )
        return converted.amount, note

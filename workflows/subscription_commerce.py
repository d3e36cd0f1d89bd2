"""Plan changes, refunds on request and provider deletion (SPEC §6), as a mixin of SubscriptionWorkflow.

The rules are the pure decisions of `policy.commerce`; this module applies them to one service:

- `change_plan` (upgrade / downgrade within the product's tiers). An upgrade issues an invoice for
  the price difference over the rest of the prepaid period, to the day; the plan switches when it
  is paid, and an unpaid one is cancelled after the profile's void days by a durable timer. A
  downgrade switches at once and puts the whole remaining months' difference on the customer's
  credit account. Either way the expiry date stays and the next renewal is at the new plan's price.
- `request_refund`: the refund is recorded with the payment adapter (billing ledger) under an
  idempotency key and ends the service (deleted, not restorable, then closed).
- `schedule_provider_deletion` / `cancel_provider_deletion`: ops give notice; a durable timer
  deletes the service when the notice period is over unless ops cancel first.

The two timers run as workflow tasks beside the lifecycle loop; their state lives in
`SubscriptionState.changes`, so after continue-as-new `_commerce_start` starts them again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from workflows.subscription_host import SubscriptionHost

with workflow.unsafe.imports_passed_through():
    from activities.accounts import AccountActivities, CreditAccountInput
    from activities.billing import BillingActivities, RefundCustomerInput
    from activities.hypervisor import HypervisorActivities, VmActionInput, node_task_queue
    from activities.mailer import NoticeKind
    from activities.platform import PlatformActionInput, PlatformActivities
    from policy.catalog import ProductKind
    from policy.commerce import (
        CommerceRefusal,
        CommerceRules,
        PlanChangeKind,
        PlanChangeQuote,
        RefundQuote,
        downgrade_credit,
        provider_deletion_day,
        refund_quote,
        upgrade_quote,
    )
    from policy.payments import InvoicePurpose, InvoiceRecord, InvoiceState
    from policy.periods import add_months, parse_period
    from policy.plans import PlanTier
    from policy.pricing import price_for_period, round_money
    from workflows.account_models import CreditLimits
    from workflows.commerce_models import (
        ChangePlanRequest,
        PendingUpgrade,
        PlanChangeRecord,
        PlanQuoteView,
        ProviderDeletion,
        ProviderDeletionCancel,
        ProviderDeletionRequest,
        RefundOnRequest,
        ServiceChanges,
    )
    from workflows.models import GONE, CommandResult, ServiceState

COMMERCE_PURPOSES = frozenset({InvoicePurpose.UPGRADE, InvoicePurpose.PLAN_CHANGE_FEE})
"""Invoices whose payment this mixin handles (they renew nothing)."""

NOT_DEDUCTED = frozenset({InvoicePurpose.UPGRADE, InvoicePurpose.RENEWAL})
"""Open invoices a refund does not deduct: an unpaid upgrade was never delivered, and a renewal
invoice is for a period after the one the refund ends. Fees and restores are owed and deducted."""

FEE_DUE_DAYS = 14

ACTIVITY_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=5)),
}
HYPERVISOR_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(minutes=10),
    "retry_policy": RetryPolicy(
        maximum_interval=timedelta(minutes=10), non_retryable_error_types=["VmNotFound", "InvalidRequest"]
    ),
}
CREDIT_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(
        maximum_interval=timedelta(minutes=5), non_retryable_error_types=["CreditRefused"]
    ),
}


def _in_price_currency(invoice: InvoiceRecord) -> Decimal:
    """What an invoice charges in the price currency: a Hostico invoice is in RON and keeps its CZK
    price beside it. Rules (refund deductions, plan-change records, renewal prices) compare CZK."""
    return invoice.price_amount if invoice.price_amount is not None else invoice.amount


def _payable(invoice: InvoiceRecord, price_currency: str) -> str:
    """`48.96 RON (240.00 CZK)`: what to pay, in the invoice's currency, with its price beside it."""
    currency = invoice.currency or price_currency
    if currency == price_currency or invoice.price_amount is None:
        return f"{invoice.amount} {currency}"
    return f"{invoice.amount} {currency} ({invoice.price_amount} {price_currency})"


class CommerceMixin(SubscriptionHost):
    """Handlers and hooks for SPEC §6 plan changes, refunds and provider deletion."""

    # ---------------------------------------------------------------- hooks SubscriptionWorkflow calls

    def _commerce_start(self) -> None:
        """At the start of every run: remember the activation day once, restart pending timers."""
        changes = self.state.changes
        if self.new and changes.activated_on is None:
            changes.activated_on = self.state.spec.activated_on or self._today()
        if changes.pending_upgrade is not None:
            self._commerce_spawn(self._watch_upgrade(changes.pending_upgrade.request_number))
        if changes.provider_deletion is not None:
            self._commerce_spawn(self._watch_provider_deletion(changes.provider_deletion.sequence))

    def _commerce_idle(self) -> bool:
        """Continue-as-new waits for this: no handler running and no timer half-way through its work."""
        return workflow.all_handlers_finished() and not getattr(self, "_commerce_busy", 0)

    async def _commerce_invoice_paid(self, invoice: InvoiceRecord, at: datetime, payment_id: str) -> None:
        """A paid upgrade invoice switches the plan; a paid fee only closes the fee."""
        changes = self.state.changes
        pending = changes.pending_upgrade
        if invoice.purpose is InvoicePurpose.UPGRADE and pending is not None:
            changes.pending_upgrade = None
            await self._switch_plan(
                PlanChangeKind.UPGRADE,
                pending.plan,
                at,
                f"upgrade:{pending.request_number}",
                amount=_in_price_currency(invoice),
                fee=pending.quote.fee,
            )
            return
        self._record(
            "plan_change",
            {"action": "paid", "purpose": invoice.purpose.value, "vs": invoice.variable_symbol},
            at,
        )

    # ---------------------------------------------------------------- helpers

    def _commerce_spawn(self, coroutine: Any) -> None:
        tasks: list[asyncio.Task[None]] | None = getattr(self, "_commerce_tasks", None)
        if tasks is None:
            tasks = []
            self._commerce_tasks = tasks
        tasks.append(asyncio.create_task(coroutine))

    def _commerce_mark(self, delta: int) -> None:
        self._commerce_busy = getattr(self, "_commerce_busy", 0) + delta

    async def _wait_until_day(self, day: date, done: Callable[[], bool]) -> bool:
        """Sleep until local midnight of `day` (a durable timer); False when `done()` came true first."""
        delay = self.state.clock.instant(day) - workflow.now()
        if delay <= timedelta(0):
            return not done()
        try:
            await workflow.wait_condition(done, timeout=delay, timeout_summary=f"commerce deadline {day}")
        except TimeoutError:
            return not done()
        return False

    def _check_rules(self, rules: CommerceRules) -> None:
        profile = self.state.spec.profile
        if rules.profile != profile:
            raise ValueError(f"the rules sent are profile {rules.profile!r}; the service is on {profile!r}")

    def _current_plan(self, request: ChangePlanRequest | None = None) -> str | None:
        state = self.state
        return state.changes.plan or state.spec.plan or (request.current_plan if request else None)

    def _period_start(self) -> date:
        """First day of the prepaid period that ends on D (never after today)."""
        state = self.state
        start = add_months(state.expires_on, -parse_period(state.period).total_months) + timedelta(days=1)
        return min(start, self._today())

    def _price_of(self, plan: PlanTier) -> Decimal:
        """The new plan's price for the service's current period (monthly: yearly/12 + surcharge)."""
        return price_for_period(plan.price, self.state.period, self.state.terms.monthly_surcharge_percent)

    def _plan_quote(self, request: ChangePlanRequest) -> tuple[PlanTier, PlanChangeQuote]:
        """Check a plan change and price it; every refusal is a ValueError with the reason."""
        state = self.state
        self._check_rules(request.rules)
        if not request.rules.plan_changes_enabled:
            raise ValueError(f"plan changes are not offered in profile {state.spec.profile!r}")
        if request.product != state.spec.product:
            raise ValueError(
                f"the plans sent are {request.product}'s; the service is {state.spec.product}: "
                "a plan change stays within the product"
            )
        shown = self._shown_state()
        if shown is not ServiceState.ACTIVE:
            raise ValueError(f"only an active service changes plan; it is {shown.value}")
        if state.cancel_effective_on is not None:
            raise ValueError(f"the service is cancelled from {state.cancel_effective_on}")
        if state.changes.provider_deletion is not None:
            raise ValueError(f"the service is to be deleted on {state.changes.provider_deletion.delete_on}")
        pending = state.changes.pending_upgrade
        if pending is not None:
            open_upgrade = self._open_invoice(InvoicePurpose.UPGRADE)
            vs = open_upgrade.variable_symbol if open_upgrade else pending.variable_symbol
            raise ValueError(
                f"an upgrade to {pending.plan.name} waits for payment of VS {vs} until {pending.void_on}"
            )
        current_name = self._current_plan(request)
        if current_name is None:
            raise ValueError(
                "the service has no plan on record; say which plan it is on now (--current-plan)"
            )
        if request.current_plan is not None and request.current_plan != current_name:
            raise ValueError(f"the service is on plan {current_name}, not {request.current_plan}")
        by_name = {t.name: t for t in request.tiers}
        known = ", ".join(t.name for t in sorted(request.tiers, key=lambda t: t.tier))
        if request.plan not in by_name:
            raise ValueError(f"{request.plan} is not a plan of {state.spec.product}; its plans: {known}")
        if current_name not in by_name:
            raise ValueError(
                f"the current plan {current_name} is not among {state.spec.product}'s plans: {known}"
            )
        current, target = by_name[current_name], by_name[request.plan]
        if target.name == current.name:
            raise ValueError(f"the service is already on plan {current.name}")
        kind = PlanChangeKind.UPGRADE if target.tier > current.tier else PlanChangeKind.DOWNGRADE
        if kind is not request.kind:
            raise ValueError(
                f"{target.name} is a {'higher' if kind is PlanChangeKind.UPGRADE else 'lower'} tier than "
                f"{current.name}: that is {'an upgrade' if kind is PlanChangeKind.UPGRADE else 'a downgrade'}"
            )
        today = self._today()
        if today > state.expires_on:
            raise ValueError(f"the prepaid period ended on {state.expires_on}; renew first")
        old_price, new_price = state.price, self._price_of(target)
        if kind is PlanChangeKind.UPGRADE and new_price < old_price:
            raise ValueError(
                f"{target.name} costs {new_price} per {state.period}, less than the {old_price} paid now: "
                "ask support to re-price the service"
            )
        if kind is PlanChangeKind.DOWNGRADE and new_price > old_price:
            raise ValueError(
                f"{target.name} costs {new_price} per {state.period}, more than the {old_price} paid now: "
                "ask support to re-price the service"
            )
        try:
            if kind is PlanChangeKind.UPGRADE:
                quote = upgrade_quote(
                    old_price, new_price, self._period_start(), state.expires_on, today,
                    state.changes.last_plan_change_on, request.rules,
                )  # fmt: skip
            else:
                quote = downgrade_credit(
                    old_price, new_price, state.period, self._period_start(), state.expires_on, today,
                    state.changes.last_plan_change_on, request.rules,
                )  # fmt: skip
        except CommerceRefusal as exc:
            raise ValueError(str(exc)) from None
        return target, quote

    # ---------------------------------------------------------------- plan changes

    @workflow.update
    async def change_plan(self, request: ChangePlanRequest) -> CommandResult:
        """Upgrade (invoice for the difference, switch on payment) or downgrade (switch now, credit)."""
        async with self.lock:
            at = workflow.now()
            target, quote = self._plan_quote(request)
            changes = self.state.changes
            changes.plan_requests += 1
            number = changes.plan_requests
            if changes.plan is None:
                changes.plan = self._current_plan(request)
            self._record(
                "plan_change",
                {
                    "action": "requested",
                    "change": quote.kind.value,
                    "from": changes.plan,
                    "to": target.name,
                    "amount_due": str(quote.amount_due),
                    "credit": str(quote.credit),
                    "fee": str(quote.fee),
                    "free": quote.free_change,
                },
                at,
            )
            if quote.kind is PlanChangeKind.UPGRADE:
                result = await self._request_upgrade(target, quote, number, at)
            else:
                result = await self._downgrade(target, quote, number, at)
            self._refresh()
        self._wake()
        return result

    @change_plan.validator
    def _validate_change_plan(self, request: ChangePlanRequest) -> None:
        if request is None:
            raise ValueError("the request is missing (got null)")
        self._refuse_if_gone()
        self._plan_quote(request)

    async def _request_upgrade(
        self, target: PlanTier, quote: PlanChangeQuote, number: int, at: datetime
    ) -> CommandResult:
        changes = self.state.changes
        if quote.amount_due <= 0 or quote.invoice_void_on is None:
            await self._switch_plan(PlanChangeKind.UPGRADE, target, at, f"upgrade:{number}", Decimal("0.00"))
            return CommandResult(message=f"upgraded to {target.name}; nothing to pay")
        due_on = quote.invoice_void_on - timedelta(days=1)
        invoice = await self._issue_invoice(InvoicePurpose.UPGRADE, quote.amount_due, due_on, at)
        changes.pending_upgrade = PendingUpgrade(
            plan=target,
            variable_symbol=invoice.variable_symbol,
            amount=invoice.amount,
            requested_on=self._today(),
            void_on=quote.invoice_void_on,
            request_number=number,
            quote=quote,
        )
        self._commerce_spawn(self._watch_upgrade(number))
        price_currency = self.state.terms.currency
        fee = "" if quote.free_change else f" with the plan-change fee {quote.fee} {price_currency}"
        return CommandResult(
            message=(
                f"upgrade to {target.name}: pay {_payable(invoice, price_currency)}{fee} by {due_on} "
                f"(VS {invoice.variable_symbol}); "
                f"the plan switches on payment, expiry stays {self.state.expires_on}"
            ),
            variable_symbol=invoice.variable_symbol,
            amount=invoice.amount,
        )

    async def _downgrade(
        self, target: PlanTier, quote: PlanChangeQuote, number: int, at: datetime
    ) -> CommandResult:
        state = self.state
        await self._switch_plan(
            PlanChangeKind.DOWNGRADE, target, at, f"downgrade:{number}", quote.credit, fee=quote.fee
        )
        message = f"downgraded to {target.name} from today; expiry stays {state.expires_on}"
        if quote.credit > 0:
            message += await self._credit_remainder(quote, number, at)
        else:
            message += "; no whole prepaid month left, so no credit"
        if quote.fee > 0:
            fee_invoice = await self._issue_invoice(
                InvoicePurpose.PLAN_CHANGE_FEE, quote.fee, self._today() + timedelta(days=FEE_DUE_DAYS), at
            )
            message += (
                f"; plan-change fee {quote.fee} {state.terms.currency}: "
                f"pay {_payable(fee_invoice, state.terms.currency)} by VS {fee_invoice.variable_symbol}"
            )
            return CommandResult(
                message=message, variable_symbol=fee_invoice.variable_symbol, amount=fee_invoice.amount
            )
        return CommandResult(message=message, amount=quote.credit)

    async def _credit_remainder(self, quote: PlanChangeQuote, number: int, at: datetime) -> str:
        """Put the downgrade remainder on the customer's credit account, exactly once."""
        state = self.state
        customer = state.spec.customer.id
        # A credit kept in another currency (Hostico: EUR) gets the day's central bank value.
        amount, conversion = await self._credit_amount(quote.credit, at)
        try:
            result = await workflow.execute_activity_method(
                AccountActivities.credit_account,
                CreditAccountInput(
                    idempotency_key=self._key("plan-credit", number),
                    customer_id=customer,
                    amount=amount,
                    currency=state.terms.credit_currency,
                    service_id=state.spec.service_id,
                    reason=f"downgrade of {state.spec.service_id}: {quote.months_remaining} whole month(s) left",
                    limits=CreditLimits.from_terms(state.terms),
                ),
                summary=f"credit {quote.credit} to customer {customer} for the downgrade of {state.spec.service_id}",
                **CREDIT_OPTIONS,
            )
        except ActivityError as exc:
            state.changes.credit_pending = quote.credit
            self._action_failed("credit downgrade remainder", exc, at)
            return f"; the credit of {quote.credit} was refused by the account (ops will settle it)"
        self._record(
            "plan_change",
            {
                "action": "credited",
                "customer": customer,
                "amount": str(amount),
                "currency": state.terms.credit_currency,
                "balance": str(result.balance),
                **({"converted": conversion} if conversion else {}),
            },
            at,
        )
        credited = f"{amount} {state.terms.credit_currency}" + (f" ({conversion})" if conversion else "")
        return f"; {credited} credited for {quote.months_remaining} whole month(s)"

    async def _switch_plan(
        self,
        kind: PlanChangeKind,
        plan: PlanTier,
        at: datetime,
        key: str,
        amount: Decimal,
        fee: Decimal = Decimal("0.00"),
    ) -> None:
        """The plan takes effect: the platform switches it, the next renewal is at its price."""
        state = self.state
        changes = state.changes
        if state.terms.kind is not ProductKind.DOMAIN:
            try:
                await workflow.execute_activity_method(
                    PlatformActivities.change_plan,
                    PlatformActionInput(
                        idempotency_key=self._key("platform", "change_plan", key),
                        service_id=state.spec.service_id,
                        product=state.spec.product,
                        plan=plan.name,
                        resources=plan.resources,
                        reason=f"{kind.value} to {plan.name}",
                    ),
                    summary=f"switch {state.spec.service_id} to plan {plan.name}",
                    **ACTIVITY_OPTIONS,
                )
            except ActivityError as exc:
                self._action_failed("change plan", exc, at)
        if state.terms.on_hypervisor and {"vcpus", "memory_mb"} & plan.resources.keys():
            await self._resize_vm(plan, at, key)
        today = self.state.clock.today(at)
        previous = changes.plan
        state.yearly_price = plan.price
        state.price = self._price_of(plan)
        changes.plan = plan.name
        changes.plan_resources = dict(plan.resources)
        changes.last_plan_change_on = today
        changes.plan_changes = [
            *changes.plan_changes[-19:],
            PlanChangeRecord(
                kind=kind, from_plan=previous, to_plan=plan.name, on=today, amount=amount, fee=fee
            ),
        ]
        self._record(
            "plan_change",
            {
                "action": "switched",
                "change": kind.value,
                "from": previous,
                "to": plan.name,
                "price": str(state.price),
                "period": state.period,
            },
            at,
        )
        renewal = self._open_invoice(InvoicePurpose.RENEWAL)
        if renewal is not None and _in_price_currency(renewal) != self._renewal_amount():
            await self._cancel_invoice(renewal, f"plan changed to {plan.name}", at)
            await self._issue_invoice(
                InvoicePurpose.RENEWAL, self._renewal_amount(), renewal.due_on, at, period=renewal.period
            )
        await self._notify(
            NoticeKind.PLAN_CHANGED,
            f"plan:{key}",
            at,
            self._base_facts().model_copy(
                update={
                    "plan": plan.title or plan.name,
                    "effective_on": today,
                    "amount": amount if kind is PlanChangeKind.DOWNGRADE and amount > 0 else None,
                    "fee": fee if fee > 0 else None,
                }
            ),
        )

    async def _resize_vm(self, plan: PlanTier, at: datetime, key: str) -> None:
        """A VPS gets the plan's vCPUs and memory on its node (from its next start); the disk is the
        platform's `change_plan`. A failure is flagged for ops, the plan change stands."""
        state = self.state
        vcpus, memory_mb = plan.resources.get("vcpus"), plan.resources.get("memory_mb")
        try:
            await workflow.execute_activity_method(
                HypervisorActivities.resize_vm,
                VmActionInput(
                    idempotency_key=self._key("vm", "resize", key),
                    service_id=state.spec.service_id,
                    node=state.spec.node,
                    vm_name=state.spec.name or state.spec.service_id,
                    vcpus=vcpus,
                    memory_mb=memory_mb,
                ),
                task_queue=node_task_queue(state.spec.node),
                summary=f"resize VPS {state.spec.service_id} to {plan.name} on {state.spec.node}",
                **HYPERVISOR_OPTIONS,
            )
        except ActivityError as exc:
            self._action_failed("resize VM", exc, at)
            return
        self._record(
            "hypervisor",
            {"action": "resize", "node": state.spec.node, "vcpus": vcpus, "memory_mb": memory_mb},
            at,
        )

    async def _watch_upgrade(self, number: int) -> None:
        """The durable void timer of one upgrade invoice: unpaid on the void day, it is cancelled.

        A renewal paid meanwhile voids it at once: its price covered the period that has just ended,
        and the renewed period was paid at the old plan's price, so the customer asks again.
        """
        state = self.state
        changes = state.changes

        def settled() -> bool:
            pending = changes.pending_upgrade
            return pending is None or pending.request_number != number

        def renewed() -> bool:
            pending = changes.pending_upgrade
            return pending is not None and pending.quote.expires_on != state.expires_on

        pending = changes.pending_upgrade
        if pending is None:
            return
        await self._wait_until_day(pending.void_on, lambda: settled() or renewed())
        if settled():
            return
        self._commerce_mark(1)
        try:
            async with self.lock:
                pending = changes.pending_upgrade
                if pending is None or pending.request_number != number:
                    return
                at = workflow.now()
                reason = (
                    "the service renewed before the upgrade was paid"
                    if pending.quote.expires_on != state.expires_on
                    else "upgrade not paid in time"
                )
                changes.pending_upgrade = None
                invoice = self._open_invoice(InvoicePurpose.UPGRADE)
                if invoice is not None:
                    await self._cancel_invoice(invoice, reason, at)
                self._record(
                    "plan_change",
                    {
                        "action": "voided",
                        "reason": reason,
                        "to": pending.plan.name,
                        "vs": invoice.variable_symbol if invoice else None,
                    },
                    at,
                )
                await self._notify(
                    NoticeKind.UPGRADE_VOIDED,
                    f"upgrade-void:{number}",
                    at,
                    self._base_facts().model_copy(
                        update={
                            "plan": pending.plan.title or pending.plan.name,
                            "variable_symbol": invoice.variable_symbol
                            if invoice
                            else pending.variable_symbol,
                            "amount": pending.amount,
                            # pending.amount is the invoice's, in the invoice currency (Hostico: RON)
                            "currency": self._invoice_currency_of(
                                invoice.variable_symbol if invoice else pending.variable_symbol
                            ),
                        }
                    ),
                )
                self._refresh()
        finally:
            self._commerce_mark(-1)
        self._wake()

    # ---------------------------------------------------------------- refunds on request

    def _refund_quote(self, request: RefundOnRequest) -> RefundQuote:
        state = self.state
        self._check_rules(request.rules)
        deducted = [
            _in_price_currency(i)
            for i in state.invoices
            if i.status is InvoiceState.OPEN and i.purpose not in NOT_DEDUCTED
        ]
        activated = state.changes.activated_on or self._activation_fallback()
        try:
            return refund_quote(
                product=state.spec.product,
                product_kind=state.terms.kind,
                activated_on=activated,
                request_day=max(self._today(), activated),
                period_end=state.expires_on,
                period=state.period,
                price_per_period=state.price,
                rules=request.rules,
                support_hours_on_migration=request.support_hours_on_migration,
                unpaid_proformas=deducted,
                suspended_for_tos=state.suspension is not None,
            )
        except CommerceRefusal as exc:
            raise ValueError(str(exc)) from None

    def _activation_fallback(self) -> date:
        """A service started before activation days were recorded: its first journal line, else its period."""
        state = self.state
        first = next((e for e in state.journal if e.sequence == 1), None)
        if first is not None:
            return state.clock.today(first.at)
        return self._period_start()

    @workflow.update
    async def request_refund(self, request: RefundOnRequest) -> CommandResult:
        """Refund on request (SPEC §6): paid through the billing ledger, then the service ends."""
        async with self.lock:
            at = workflow.now()
            quote = self._refund_quote(request)
            if request.dry_run:
                return CommandResult(message=self._describe_refund(quote), amount=quote.amount)
            assert quote.granted and quote.pay_by is not None
            result = await self._pay_refund(quote, request, at)
            self._refresh()
        self._wake()
        return result

    @request_refund.validator
    def _validate_refund(self, request: RefundOnRequest) -> None:
        if request is None:
            raise ValueError("the request is missing (got null)")
        self._refuse_if_gone()
        if self._today() > self.state.expires_on:
            raise ValueError(f"no refund: the prepaid period ended on {self.state.expires_on}")
        quote = self._refund_quote(request)
        if not quote.granted and not request.dry_run:
            raise ValueError(f"no refund: {quote.reason}")

    @staticmethod
    def _describe_refund(quote: RefundQuote) -> str:
        if not quote.granted:
            return f"no refund: {quote.reason}"
        parts = [f"gross {round_money(quote.gross)}"]
        if quote.migration_deduction:
            parts.append(f"migration support -{round_money(quote.migration_deduction)}")
        if quote.unpaid_proformas_deduction:
            parts.append(f"unpaid proformas -{round_money(quote.unpaid_proformas_deduction)}")
        return f"refund {quote.amount} ({quote.reason}: {', '.join(parts)}), paid by {quote.pay_by}"

    async def _pay_refund(self, quote: RefundQuote, request: RefundOnRequest, at: datetime) -> CommandResult:
        state = self.state
        assert quote.pay_by is not None
        key = self._key("refund", state.changes.activated_on or "", state.expires_on)
        amount, currency = self._refund_money(quote.amount)
        refund = await workflow.execute_activity_method(
            BillingActivities.refund_customer,
            RefundCustomerInput(
                idempotency_key=key,
                service_id=state.spec.service_id,
                customer_id=state.spec.customer.id,
                amount=amount,
                currency=currency,
                reason=f"{request.reason}: {quote.reason}",
                pay_by=quote.pay_by,
            ),
            summary=f"refund {amount} {currency} to customer {state.spec.customer.id}",
            **ACTIVITY_OPTIONS,
        )
        state.changes.refund = quote
        state.changes.refund_id = refund.refund_id
        state.changes.pending_upgrade = None
        self._record(
            "refund",
            {
                "refund_id": refund.refund_id,
                "amount": str(quote.amount),
                **({"paid_out": f"{amount} {currency}"} if currency != state.terms.currency else {}),
                "full": quote.full_refund,
                "months": quote.months_refunded,
                "gross": str(round_money(quote.gross)),
                "migration": str(round_money(quote.migration_deduction)),
                "proformas": str(round_money(quote.unpaid_proformas_deduction)),
                "pay_by": quote.pay_by.isoformat(),
                "reason": request.reason,
            },
            at,
        )
        for invoice in list(state.invoices):
            if invoice.status is InvoiceState.OPEN:
                why = (
                    "deducted from the refund" if invoice.purpose not in NOT_DEDUCTED else "service refunded"
                )
                await self._cancel_invoice(invoice, why, at)
        await self._notify(
            NoticeKind.REFUND_GRANTED,
            f"refund:{refund.refund_id}",
            at,
            self._base_facts().model_copy(
                update={
                    "amount": amount,
                    "currency": currency,
                    "due_on": quote.pay_by,
                    "reason": quote.reason,
                    "payment_id": refund.refund_id,
                }
            ),
        )
        await self._delete(
            at, f"refund:{refund.refund_id}", "refunded at the customer's request", restorable=False
        )
        paid_out = f" ({amount} {currency}, at the rate the customer paid)" if currency != state.terms.currency else ""
        return CommandResult(
            message=f"{self._describe_refund(quote)}{paid_out}; refund {refund.refund_id}; the service is deleted",
            amount=quote.amount,
        )

    def _refund_money(self, amount: Decimal) -> tuple[Decimal, str]:
        """A refund in the currency the customer paid the period in, at that invoice's own rate.

        Hostico's invoices are in RON while prices are in CZK: the period's paid renewal invoice
        records the rate it was converted at, so a full refund returns exactly what was paid.
        """
        state = self.state
        paid = next(
            (
                i
                for i in reversed(state.invoices)
                if i.status is InvoiceState.PAID and i.purpose is InvoicePurpose.RENEWAL
            ),
            None,
        )
        if (
            paid is None
            or paid.currency in (None, state.terms.currency)
            or paid.exchange_rate is None
            or not workflow.patched("refund-in-paid-currency")
        ):
            return amount, state.terms.currency
        return round_money(amount * paid.exchange_rate), paid.currency

    # ---------------------------------------------------------------- provider-initiated deletion

    @workflow.update
    async def schedule_provider_deletion(self, request: ProviderDeletionRequest) -> CommandResult:
        """Ops give notice (hostico: 15 days); the service is deleted when it runs out."""
        async with self.lock:
            at = workflow.now()
            changes = self.state.changes
            today = self._today()
            delete_on = provider_deletion_day(today, request.rules)
            changes.provider_notices += 1
            changes.provider_deletion = ProviderDeletion(
                reason=request.reason,
                notified_on=today,
                delete_on=delete_on,
                sequence=changes.provider_notices,
            )
            self._record(
                "provider_deletion",
                {"action": "notice", "reason": request.reason, "delete_on": delete_on.isoformat()},
                at,
            )
            await self._notify(
                NoticeKind.PROVIDER_DELETION_NOTICE,
                f"provider-deletion:{changes.provider_notices}",
                at,
                self._base_facts().model_copy(update={"deletion_on": delete_on, "reason": request.reason}),
            )
            self._commerce_spawn(self._watch_provider_deletion(changes.provider_notices))
            self._refresh()
        self._wake()
        return CommandResult(message=f"notice sent; the service is deleted on {delete_on} unless cancelled")

    @schedule_provider_deletion.validator
    def _validate_provider_deletion(self, request: ProviderDeletionRequest) -> None:
        if request is None:
            raise ValueError("the request is missing (got null)")
        self._refuse_if_gone()
        self._check_rules(request.rules)
        if request.rules.provider_deletion_notice_days is None:
            raise ValueError(f"profile {request.rules.profile!r} does not delete accounts on notice")
        scheduled = self.state.changes.provider_deletion
        if scheduled is not None:
            raise ValueError(f"deletion already announced for {scheduled.delete_on}: {scheduled.reason}")

    @workflow.update
    async def cancel_provider_deletion(self, request: ProviderDeletionCancel) -> CommandResult:
        """Ops withdraw the notice before the day; the service goes on as before."""
        async with self.lock:
            at = workflow.now()
            changes = self.state.changes
            scheduled = changes.provider_deletion
            assert scheduled is not None
            changes.provider_deletion = None
            self._record(
                "provider_deletion",
                {"action": "cancelled", "note": request.note, "was_due": scheduled.delete_on.isoformat()},
                at,
            )
            await self._notify(
                NoticeKind.PROVIDER_DELETION_CANCELLED,
                f"provider-deletion-cancelled:{scheduled.sequence}",
                at,
                self._base_facts(),
            )
            self._refresh()
        self._wake()
        return CommandResult(message=f"deletion of {scheduled.delete_on} cancelled")

    @cancel_provider_deletion.validator
    def _validate_cancel_provider_deletion(self, request: ProviderDeletionCancel) -> None:
        if request is None:
            raise ValueError("the request is missing (got null)")
        self._refuse_if_gone()
        if self.state.changes.provider_deletion is None:
            raise ValueError("no deletion is announced for this service")

    async def _watch_provider_deletion(self, sequence: int) -> None:
        changes = self.state.changes

        def withdrawn() -> bool:
            scheduled = changes.provider_deletion
            return scheduled is None or scheduled.sequence != sequence or self.state.billing_state in GONE

        scheduled = changes.provider_deletion
        if scheduled is None or not await self._wait_until_day(scheduled.delete_on, withdrawn):
            return
        self._commerce_mark(1)
        try:
            async with self.lock:
                if withdrawn():
                    return
                at = workflow.now()
                changes.provider_deletion = None
                changes.pending_upgrade = None
                self._record("provider_deletion", {"action": "deleted", "reason": scheduled.reason}, at)
                await self._delete(
                    at,
                    f"provider-deletion:{sequence}",
                    f"deleted by the provider: {scheduled.reason}",
                    restorable=False,
                )
                self._refresh()
        finally:
            self._commerce_mark(-1)
        self._wake()

    # ---------------------------------------------------------------- query

    @workflow.query
    def commerce(self) -> PlanQuoteView:
        """The plan, a pending upgrade, plan-change history, an announced deletion, a refund."""
        changes: ServiceChanges = self.state.changes
        pending = changes.pending_upgrade
        invoice = self._open_invoice(InvoicePurpose.UPGRADE)
        if pending is not None and invoice is not None:  # re-issued after a billing-details change
            pending = pending.model_copy(
                update={"variable_symbol": invoice.variable_symbol, "amount": invoice.amount}
            )
        return PlanQuoteView(
            plan=self._current_plan(),
            pending_upgrade=pending,
            last_plan_change_on=changes.last_plan_change_on,
            changes=changes.plan_changes,
            provider_deletion=changes.provider_deletion,
            refund=changes.refund,
            activated_on=changes.activated_on,
            at=workflow.now(),
        )

"""Coupons, price changes and usage notices of a subscription (SPEC §6), as a mixin of its workflow.

`SubscriptionWorkflow` inherits these handlers; it calls back only where an amount or a renewal
must know about them (`_offers_renewal_amount`, `_offers_renewing`). Nothing here runs unless a
message of this module arrived first, so histories recorded before it replay unchanged.

- `apply_coupon` (update): the coupon's own workflow decides and counts the redemption; the
  service applies the discount to its first period's invoice (re-issued if already open).
  A refusal fails the update with the rule that refused it.
- `announce_price` (update): records a new price, mails the notice, and prices the first renewal
  invoice of a period starting on or after the day it applies; prepaid periods are untouched.
- `usage_report` (signal): monitoring's measurement of a VPS; notify first, suspend after the
  profile's number of ignored notices (lifted by `resolve_abuse`, as any suspension).

The profile's commerce rules are resolved once by a local activity and kept in the state.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.subscription_host import SubscriptionHost

with workflow.unsafe.imports_passed_through():
    from activities.mailer import NoticeKind
    from activities.offers import (
        OfferActivities,
        RedeemCouponInput,
        ResolveRulesInput,
        resolve_commerce_rules,
    )
    from policy.commerce import (
        CommerceRules,
        CouponPurpose,
        UsageStep,
        next_usage_step,
        price_change_effective,
        usage_breaches,
    )
    from policy.money import Money
    from policy.payments import InvoicePurpose, InvoiceRecord
    from policy.periods import parse_period
    from policy.pricing import price_for_period, yearly_price_from
    from workflows.models import GONE, CommandResult, Suspension
    from workflows.offers_models import (
        AppliedCoupon,
        ApplyCoupon,
        OffersState,
        OffersStatus,
        PriceAnnouncement,
        RedeemAnswer,
        RedeemRequest,
        ScheduledPrice,
        UsageReport,
    )

if TYPE_CHECKING:

    pass

COUPON_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(
        maximum_interval=timedelta(seconds=30),
        maximum_attempts=5,
        non_retryable_error_types=["CouponStoreRefused"],
    ),
}


class OffersMixin(SubscriptionHost):
    """Handlers of SPEC §6's coupons, price changes and usage notices for `SubscriptionWorkflow`."""

    # ---------------------------------------------------------------- shared

    def _offers(self) -> OffersState:
        if self.state.offers is None:
            self.state.offers = OffersState()
        return self.state.offers

    async def _commerce_rules(self) -> CommerceRules:
        """The profile's rules as of their first use, recorded in history by a local activity."""
        offers = self._offers()
        if offers.rules is None:
            offers.rules = await workflow.execute_local_activity(
                resolve_commerce_rules,
                ResolveRulesInput(profile=self.state.spec.profile),
                start_to_close_timeout=timedelta(seconds=10),
            )
        return offers.rules

    def _price_per(self, price: Decimal, price_period: str, period: str) -> Decimal:
        """`price` for `price_period` converted to `period` by the product's yearly/monthly rule."""
        surcharge = self.state.terms.monthly_surcharge_percent
        if price_period == period:
            return price
        return price_for_period(yearly_price_from(price, price_period, surcharge), period, surcharge)

    def _price_change_due(self) -> ScheduledPrice | None:
        """The announced price, when the next renewal period starts on or after the day it applies."""
        offers = self.state.offers
        if offers is None or offers.price_change is None or offers.price_change.applied:
            return None
        change = offers.price_change
        return change if self.state.expires_on + timedelta(days=1) >= change.applies_from else None

    def _first_period_open(self) -> bool:
        """A new order whose first period's invoice is not paid yet."""
        return self.state.spec.new_order and self.state.renewals == 0

    # ---------------------------------------------------------------- hooks of SubscriptionWorkflow

    def _offers_renewal_amount(self, base: Money) -> Money:
        """The next renewal invoice's amount: at an announced new price, less a first-period coupon."""
        state = self.state
        if state.offers is None:
            return base
        amount = base
        change = self._price_change_due()
        parked = state.parked and state.spec.parking_price is not None
        if change is not None and not parked:
            amount = self._price_per(change.price, change.period, self._renewal_period())
        coupon = state.offers.coupon
        if coupon is not None and not coupon.used and self._first_period_open():
            amount = max(Decimal("0.00"), amount - coupon.discount)
        return amount

    def _offers_renewing(self, period: str, at: datetime) -> None:
        """A paid renewal, before D moves: spend the coupon; adopt a new price from its period on."""
        state = self.state
        offers = state.offers
        if offers is None:
            return
        if offers.coupon is not None and not offers.coupon.used and self._first_period_open():
            offers.coupon = offers.coupon.model_copy(update={"used": True})
            self._record("coupon", {"action": "used", "code": offers.coupon.code}, at)
        change = self._price_change_due()
        if change is not None:
            surcharge = state.terms.monthly_surcharge_percent
            state.yearly_price = yearly_price_from(change.price, change.period, surcharge)
            state.price = price_for_period(state.yearly_price, period, surcharge)
            offers.price_change = change.model_copy(update={"applied": True})
            self._record(
                "price_changed",
                {"price": str(state.price), "period": period, "from": change.applies_from.isoformat()},
                at,
            )

    # ---------------------------------------------------------------- coupons

    @workflow.update
    async def apply_coupon(self, request: ApplyCoupon) -> CommandResult:
        """Redeem a coupon for this service's first period (at start, or while its invoice is open)."""
        async with self.lock:
            at = workflow.now()
            try:
                answer = await self._redeem(request.code)
            except ActivityError as exc:
                raise ApplicationError(
                    f"coupon {request.code} could not be checked: {exc.cause or exc}",
                    type="CouponUnavailable",
                ) from exc
            decision = answer.decision
            if not decision.accepted:
                rule = decision.rule_refused.value if decision.rule_refused else "unknown"
                self._record("coupon", {"action": "refused", "code": request.code, "rule": rule}, at)
                self._refresh()
                raise ApplicationError(
                    f"{decision.reason} (rule {rule})",
                    rule,
                    type="CouponRefused",
                    non_retryable=True,
                )
            result = await self._apply_discount(request.code, answer, at)
            self._refresh()
        self._wake()
        return result

    @apply_coupon.validator
    def _validate_apply_coupon(self, request: ApplyCoupon) -> None:
        if request is None:
            raise ValueError("the request is missing (got null)")
        self._refuse_if_gone()
        coupon = self.state.offers.coupon if self.state.offers else None
        if coupon is not None and coupon.code == request.code:
            raise ValueError(f"coupon {request.code} is already applied to this service")

    async def _redeem(self, code: str) -> RedeemAnswer:
        state = self.state
        rules = await self._commerce_rules()
        open_renewal = self._open_invoice(InvoicePurpose.RENEWAL)
        if self._first_period_open():
            purpose, paid = CouponPurpose.NEW, False
        elif state.spec.new_order and open_renewal is None:
            purpose, paid = CouponPurpose.NEW, True  # the first period is paid: too late
        else:
            purpose, paid = CouponPurpose.RENEWAL, False
        price = _price_of(open_renewal) if open_renewal is not None else self._renewal_amount()
        request = RedeemRequest(
            service_id=state.spec.service_id,
            customer_id=state.spec.customer.id,
            customer_is_new=state.spec.new_customer,
            is_first_period=self._first_period_open(),
            other_coupon_applied=state.offers is not None and state.offers.coupon is not None,
            order_paid=paid,
            purpose=purpose,
            product_kind=state.terms.kind,
            product=state.spec.product,
            period=self._renewal_period(),
            price=price,
            rules=rules,
        )
        return await workflow.execute_activity_method(
            OfferActivities.redeem_coupon,
            RedeemCouponInput(code=code, request=request),
            summary=f"redeem coupon {code} for {state.spec.service_id}",
            **COUPON_OPTIONS,
        )

    async def _apply_discount(self, code: str, answer: RedeemAnswer, at: datetime) -> CommandResult:
        state = self.state
        decision = answer.decision
        open_renewal = self._open_invoice(InvoicePurpose.RENEWAL)
        price = _price_of(open_renewal) if open_renewal is not None else self._renewal_amount()
        self._offers().coupon = AppliedCoupon(
            code=code, discount=decision.discount, price=price, applied_at=at
        )
        self._record(
            "coupon",
            {"action": "applied", "code": code, "discount": str(decision.discount), "uses": answer.uses},
            at,
        )
        currency = state.terms.currency
        message = f"coupon {code} applied: {decision.discount} {currency} off the first period"
        if open_renewal is None:
            return CommandResult(
                message=f"{message}; its invoice will be {self._renewal_amount()} {currency}"
            )
        await self._cancel_invoice(open_renewal, f"coupon {code} applied", at)
        # The amount the coupon's own workflow computed on this very invoice, not a recomputation.
        amount = decision.price_after if decision.price_after is not None else self._renewal_amount()
        new = await self._issue_invoice(
            InvoicePurpose.RENEWAL, amount, open_renewal.due_on, at, period=open_renewal.period
        )
        return CommandResult(
            message=f"{message}; invoice VS {open_renewal.variable_symbol} cancelled, re-issued as VS "
            f"{new.variable_symbol} for {new.amount} {new.currency or currency}",
            variable_symbol=new.variable_symbol,
            amount=new.amount,
        )

    # ---------------------------------------------------------------- price changes

    @workflow.update
    async def announce_price(self, request: PriceAnnouncement) -> CommandResult:
        """A new price from the first renewal on or after `effective_on`, announced now by mail."""
        async with self.lock:
            result = await self._announce_price(request)
            self._refresh()
        self._wake()
        return result

    @announce_price.validator
    def _validate_announce_price(self, request: PriceAnnouncement) -> None:
        if request is None:
            raise ValueError("the request is missing (got null)")
        self._refuse_if_gone()
        spec = self.state.spec
        if request.product != spec.product:
            raise ValueError(f"not affected: the service is {spec.product}, not {request.product}")
        plan = self.state.changes.plan or spec.plan  # after an upgrade or downgrade, the new plan
        if request.plan is not None and request.plan != plan:
            raise ValueError(
                f"not affected: the service's plan is {plan or '(none)'}, not {request.plan}"
            )
        parse_period(request.period)
        if request.price <= 0:
            raise ValueError(f"the price must be positive, got {request.price}")

    async def _announce_price(self, request: PriceAnnouncement) -> CommandResult:
        state = self.state
        rules = await self._commerce_rules()
        today = self._today()
        at = workflow.now()
        earliest = today + timedelta(days=rules.price_change_notice_days)
        if request.effective_on < earliest:
            raise ApplicationError(
                f"effective date {request.effective_on} is less than {rules.price_change_notice_days} days "
                f"ahead; the earliest is {earliest}",
                type="PriceChangeRefused",
                non_retryable=True,
            )
        offers = self._offers()
        earlier = offers.price_change
        if (
            earlier is not None
            and not earlier.applied
            and (earlier.price, earlier.period, earlier.effective_on)
            == (request.price, request.period, request.effective_on)
        ):
            return CommandResult(
                message=f"already announced: {earlier.price} per {earlier.period} from {earlier.applies_from}"
            )
        period = self._renewal_period()
        applies_from = price_change_effective(
            announced_on=today,
            new_price_from=request.effective_on,
            next_renewal=state.expires_on + timedelta(days=1),
            rules=rules,
            renewal_period=period,
        )
        offers.price_change = ScheduledPrice(
            price=request.price,
            period=request.period,
            effective_on=request.effective_on,
            applies_from=applies_from,
            announced_on=today,
            reference=request.reference,
        )
        new_amount = self._price_per(request.price, request.period, period)
        self._record(
            "price_announced",
            {
                "price": str(request.price),
                "period": request.period,
                "effective_on": request.effective_on.isoformat(),
                "applies_from": applies_from.isoformat(),
                "renewal_amount": str(new_amount),
                "reference": request.reference,
            },
            at,
        )
        await self._notify(
            NoticeKind.PRICE_CHANGE,
            f"price:{request.effective_on}:{request.price}:{request.period}",
            at,
            self._base_facts().model_copy(
                update={
                    "amount": new_amount,
                    "previous_amount": state.price,
                    "effective_on": applies_from,
                    "period": period,
                }
            ),
        )
        message = (
            f"new price {new_amount} {state.terms.currency} per {period} from {applies_from}; notice sent"
        )
        open_renewal = self._open_invoice(InvoicePurpose.RENEWAL)
        if open_renewal is not None and self._price_change_due() is not None:
            # The invoice is for a period the new price covers: it is re-issued at that price.
            await self._cancel_invoice(open_renewal, "price change", at)
            new = await self._issue_invoice(
                InvoicePurpose.RENEWAL,
                self._renewal_amount(),
                open_renewal.due_on,
                at,
                period=open_renewal.period,
            )
            message += f"; invoice VS {open_renewal.variable_symbol} re-issued as VS {new.variable_symbol}"
            return CommandResult(message=message, variable_symbol=new.variable_symbol, amount=new.amount)
        return CommandResult(message=message)

    # ---------------------------------------------------------------- usage notices

    @workflow.signal
    async def usage_report(self, report: UsageReport) -> None:
        """Monitoring's measurement of a VPS: notify first, suspend after ignored notices."""
        async with self.lock:
            await self._take_usage(report)
            self._refresh()
        self._wake()

    async def _take_usage(self, report: UsageReport) -> None:
        state = self.state
        at = workflow.now()
        measured = {"measured_at": report.measured_at.isoformat()}
        if state.billing_state in GONE or not state.terms.on_hypervisor:
            reason = "service gone" if state.billing_state in GONE else "not a server"
            self._record("usage_ignored", {**measured, "reason": reason}, at)
            return
        rules = await self._commerce_rules()
        offers = self._offers()
        if not rules.usage_rules_enabled:
            self._record(
                "usage_ignored", {**measured, "reason": f"profile {rules.profile} has no usage rules"}, at
            )
            return
        if offers.usage_last_measured_at is not None and report.measured_at <= offers.usage_last_measured_at:
            self._record("usage_ignored", {**measured, "reason": "older than the last measurement"}, at)
            return
        offers.usage_last_measured_at = report.measured_at
        breaches = usage_breaches(report, rules)
        if not breaches:
            if offers.usage_notices or offers.usage_breaches:
                self._record("usage_resolved", {**measured, "notices": offers.usage_notices}, at)
            offers.usage_notices = 0
            offers.usage_breaches = []
            offers.usage_last_notice_at = None
            offers.usage_episode += 1
            return
        offers.usage_breaches = breaches
        codes = [b.value for b in breaches]
        if state.suspension is not None:
            self._record("usage_breach", {**measured, "breaches": codes, "step": "already suspended"}, at)
            return
        step = next_usage_step(
            offers.usage_notices, rules, last_notice_at=offers.usage_last_notice_at, now=at
        )
        self._record("usage_breach", {**measured, "breaches": codes, "step": step.value}, at)
        key = f"usage:{offers.usage_episode}"
        if step is UsageStep.NOTIFY:
            offers.usage_notices += 1
            offers.usage_last_notice_at = at
            await self._notify(
                NoticeKind.USAGE_WARNING,
                f"{key}:{offers.usage_notices}",
                at,
                self._base_facts().model_copy(
                    update={
                        "reason": codes[0],
                        "notice_number": offers.usage_notices,
                        "notices_before_suspension": rules.usage_notices_before_suspension,
                    }
                ),
            )
        elif step is UsageStep.SUSPEND:
            today = self._today()
            state.suspension = Suspension(reason=f"usage: {', '.join(codes)}", since=today, repeat=False)
            self._note_state(f"usage notices ignored: {', '.join(codes)}", at)
            await self._sync_power(at, f"{key}:suspend")
            await self._notify(
                NoticeKind.SUSPENDED,
                f"{key}:suspend",
                at,
                self._base_facts().model_copy(update={"reason": codes[0]}),
            )
            offers.usage_notices = 0
            offers.usage_last_notice_at = None
            offers.usage_episode += 1

    # ---------------------------------------------------------------- query

    @workflow.query
    def offers(self) -> OffersStatus:
        offers = self.state.offers or OffersState()
        return OffersStatus(
            coupon=offers.coupon,
            price_change=offers.price_change,
            usage_notices=offers.usage_notices,
            usage_breaches=offers.usage_breaches,
            notices_before_suspension=offers.rules.usage_notices_before_suspension if offers.rules else None,
        )


def _price_of(invoice: InvoiceRecord) -> Decimal:
    """What the invoice charges in the price currency (an invoice in RON keeps its CZK price)."""
    return invoice.price_amount if invoice.price_amount is not None else invoice.amount

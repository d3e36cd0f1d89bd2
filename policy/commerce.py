"""Commerce rules of SPEC §6 (Hostico terms, seed 004) as pure decisions, switchable per profile.

Plan changes, refunds on request, coupons, price changes, the invoice currency and usage notices.
Nothing here reads a clock or the network: the workflow passes the facts in and applies the
answer, so a replay decides the same. Amounts are exact `Decimal`s until the one final
`round_money`; intermediate parts are kept unrounded (and shown as such) so a breakdown never
adds up to a different heller than the total.

A policy refusal (the profile does not offer it, a coupon rule) is an answer, not an error:
`CommerceRefusal` names the rule, so an update validator can reject the request with that text.
Inputs that cannot be true (a change day outside the prepaid period) are a plain `ValueError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from policy.catalog import DEFAULT_PROFILE, ProductKind
from policy.money import Money
from policy.periods import add_months, add_period, parse_period
from policy.pricing import round_money
from policy.toml_files import load_policy_toml

# ----------------------------------------------------------------------------- rules as data


def _exact(value: object) -> object:
    """Hours, percentages and rates are decimal strings: a TOML float would already be inexact."""
    if isinstance(value, float):
        raise ValueError('must not be a float; write a decimal string such as "1.5"')
    return value


ExactDecimal = Annotated[Decimal, BeforeValidator(_exact)]


class CommerceRulesError(ValueError):
    """The commerce rules file is not valid; the message names the field and the reason."""


class CommerceRefusal(ValueError):
    """The profile's rules refuse the request; `rule` says which one."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


class CommerceRules(BaseModel):
    """One profile's commerce rules. Every field is required once resolved, so none is forgotten."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: str
    description: str
    support_hour_rate: Money

    plan_changes_enabled: bool
    plan_change_free_window_days: int = Field(ge=0)
    plan_change_fee_hours: ExactDecimal = Field(ge=0)
    upgrade_invoice_void_days: int = Field(ge=1)

    refunds_enabled: bool
    refund_full_days: int = Field(ge=0)
    refund_excluded_kinds: list[ProductKind]
    refund_excluded_products: list[str]
    refund_payment_working_days: int = Field(ge=0)

    coupon_new_customers_only: bool
    coupon_first_period_only: bool
    coupon_combinable: bool
    coupon_retroactive: bool
    coupon_for_upgrades: bool
    coupon_for_domain_renewals: bool
    coupon_product_kinds: list[ProductKind]

    price_change_notice_days: int = Field(ge=0)
    price_change_from_next_renewal: bool

    invoice_currency: str = Field(pattern=r"^[A-Z]{3}$")
    invoice_rate_margin_percent: ExactDecimal = Field(ge=0, le=100)

    usage_rules_enabled: bool
    usage_disk_free_min_percent: ExactDecimal = Field(ge=0, le=100)
    usage_disk_free_min_bytes: int = Field(ge=0)
    usage_cpu_full_max_minutes: int = Field(ge=0)
    usage_notices_before_suspension: int = Field(ge=0)
    usage_renotify_hours: int = Field(ge=0)

    provider_deletion_notice_days: int | None = Field(default=None, ge=0)
    """None: the profile's provider does not delete accounts on notice alone."""

    @property
    def plan_change_fee(self) -> Decimal:
        """The support-hour fee for a second change within the free window, exact."""
        return self.plan_change_fee_hours * self.support_hour_rate


class CommerceCatalog(BaseModel):
    model_config = ConfigDict(frozen=True)

    profiles: dict[str, CommerceRules]

    def rules(self, profile: str) -> CommerceRules:
        try:
            return self.profiles[profile]
        except KeyError:
            known = ", ".join(sorted(self.profiles))
            raise CommerceRulesError(f"unknown profile {profile!r}; known: {known}") from None


_PROFILE_ONLY = {"extends"}


def _chain(raw: dict[str, Any], name: str) -> list[dict[str, Any]]:
    chain: list[dict[str, Any]] = []
    seen: set[str] = set()
    current: str | None = name
    while current is not None:
        if current in seen:
            raise CommerceRulesError(f"profiles.{name}: 'extends' forms a cycle through {current!r}")
        layer = raw.get(current)
        if not isinstance(layer, dict):
            raise CommerceRulesError(f"profiles.{name}: extends unknown profile {current!r}")
        seen.add(current)
        chain.append(layer)
        extends = layer.get("extends")
        if extends is not None and not isinstance(extends, str):
            raise CommerceRulesError(f"profiles.{current}.extends: must be a profile name")
        current = extends
    return chain


def parse_commerce_rules(raw: dict[str, Any]) -> CommerceCatalog:
    """Validate every profile; the first problem is reported with its dotted path."""
    profiles_raw = raw.get("profiles")
    if not isinstance(profiles_raw, dict) or not profiles_raw:
        raise CommerceRulesError("commerce rules: [profiles] table is missing or empty")
    profiles: dict[str, CommerceRules] = {}
    for name in profiles_raw:
        merged: dict[str, Any] = {}
        for layer in reversed(_chain(profiles_raw, name)):  # parent first: the child wins
            merged.update({k: v for k, v in layer.items() if k not in _PROFILE_ONLY})
        merged["profile"] = name
        merged.setdefault("description", name)
        try:
            profiles[name] = CommerceRules.model_validate(merged)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            where = f"profiles.{name}.{field}" if field else f"profiles.{name}"
            raise CommerceRulesError(f"{where}: {first['msg']}") from None
    return CommerceCatalog(profiles=profiles)


def load_commerce_rules(path: str | Path | None = None) -> CommerceCatalog:
    """Load the shipped rules, or ops' own file. Any error is a `CommerceRulesError`."""
    return load_policy_toml(path, "commerce.toml", "commerce rules", CommerceRulesError, parse_commerce_rules)


@cache
def default_commerce_rules() -> CommerceCatalog:
    return load_commerce_rules()


def commerce_rules(profile: str = DEFAULT_PROFILE) -> CommerceRules:
    """The shipped rules of one profile (the starter passes them in a workflow's input)."""
    return default_commerce_rules().rules(profile)


# ----------------------------------------------------------------------------- calendar helpers


def whole_months_remaining(from_day: date, last_paid_day: date) -> int:
    """Whole calendar months from `from_day` (counted as used from then on) through `last_paid_day`.

    Mar 15 to Dec 31 is 9 (Mar 15-Dec 14); the stub Dec 15-31 is not a whole month and counts 0.
    """
    if from_day > last_paid_day:
        return 0
    after = last_paid_day + timedelta(days=1)
    months = 0
    while add_months(from_day, months + 1) <= after:
        months += 1
    return months


def add_working_days(day: date, days: int) -> date:
    """`days` Monday-to-Friday days after `day`. Public holidays are not known here and not skipped."""
    current = day
    left = days
    while left > 0:
        current += timedelta(days=1)
        if current.weekday() < 5:
            left -= 1
    return current


def _require_offered(enabled: bool, what: str, rules: CommerceRules) -> None:
    if not enabled:
        raise CommerceRefusal("not_offered", f"{what} are not offered in profile {rules.profile!r}")


def _require_money(name: str, value: Decimal) -> None:
    if not value.is_finite() or value < 0:
        raise ValueError(f"{name} must be a non-negative amount, got {value}")


# ----------------------------------------------------------------------------- plan changes


class PlanChangeKind(StrEnum):
    UPGRADE = "upgrade"
    DOWNGRADE = "downgrade"


class PlanChangeQuote(BaseModel):
    """What a plan change costs or credits. The expiry date D does not move."""

    model_config = ConfigDict(frozen=True)

    kind: PlanChangeKind
    change_day: date
    expires_on: date
    old_price: Decimal
    new_price: Decimal
    days_remaining: int
    """Upgrade: calendar days from the change day through D, both included."""
    days_in_period: int
    months_remaining: int
    """Downgrade: whole months from the change day through D (the credit counts only these)."""
    difference: Decimal
    """Upgrade: exact, unrounded cost of the better plan for the remaining days."""
    credit: Money
    """Downgrade: credit for the customer's account, rounded once."""
    free_change: bool
    fee_hours: Decimal
    fee: Money
    """Support-hour fee for a change within the free window (exact already: hours x rate)."""
    amount_due: Money
    """Upgrade: difference + fee rounded once; downgrade: the fee, billed on its own."""
    exact_due: Decimal
    """The unrounded amount due: convert this, not `amount_due`, to another invoice currency."""
    invoice_void_on: date | None
    """An unpaid upgrade invoice is cancelled on this day and the plan stays as it was."""
    new_price_from: date
    """The renewal from which the new plan's price is invoiced (D + 1)."""


def _is_free_change(change_day: date, last_change_day: date | None, rules: CommerceRules) -> bool:
    """True when the change is free: the first one, or the last was the window or more days ago."""
    if last_change_day is None:
        return True
    if last_change_day > change_day:
        raise ValueError(f"last plan change {last_change_day} is after this change {change_day}")
    return (change_day - last_change_day).days >= rules.plan_change_free_window_days


def _check_period(period_start: date, period_end: date, change_day: date) -> None:
    if period_end < period_start:
        raise ValueError(f"period ends {period_end} before it starts {period_start}")
    if not period_start <= change_day <= period_end:
        raise ValueError(
            f"change day {change_day} is outside the prepaid period {period_start}..{period_end}"
        )


def upgrade_quote(
    old_price_per_period: Decimal,
    new_price_per_period: Decimal,
    period_start: date,
    period_end: date,
    change_day: date,
    last_change_day: date | None,
    rules: CommerceRules,
) -> PlanChangeQuote:
    """The customer pays the price difference for the rest of the prepaid period, to the day.

    Both prices are for the same period length. The change day itself is on the new plan, so it
    counts as remaining: a change on the period's first day pays the whole difference.
    """
    _require_offered(rules.plan_changes_enabled, "plan changes", rules)
    _require_money("old price", old_price_per_period)
    _require_money("new price", new_price_per_period)
    if new_price_per_period < old_price_per_period:
        raise ValueError("the new plan is cheaper: that is a downgrade (downgrade_credit)")
    _check_period(period_start, period_end, change_day)
    days_in_period = (period_end - period_start).days + 1
    days_remaining = (period_end - change_day).days + 1
    difference = (new_price_per_period - old_price_per_period) * days_remaining / days_in_period
    free = _is_free_change(change_day, last_change_day, rules)
    fee_hours = Decimal(0) if free else rules.plan_change_fee_hours
    fee = fee_hours * rules.support_hour_rate
    exact_due = difference + fee
    amount_due = round_money(exact_due)
    return PlanChangeQuote(
        kind=PlanChangeKind.UPGRADE,
        change_day=change_day,
        expires_on=period_end,
        old_price=old_price_per_period,
        new_price=new_price_per_period,
        days_remaining=days_remaining,
        days_in_period=days_in_period,
        months_remaining=whole_months_remaining(change_day, period_end),
        difference=difference,
        credit=Decimal("0.00"),
        free_change=free,
        fee_hours=fee_hours,
        fee=round_money(fee),
        amount_due=amount_due,
        exact_due=exact_due,
        invoice_void_on=(
            change_day + timedelta(days=rules.upgrade_invoice_void_days) if amount_due > 0 else None
        ),
        new_price_from=period_end + timedelta(days=1),
    )


def downgrade_credit(
    old_price_per_period: Decimal,
    new_price_per_period: Decimal,
    period: str,
    period_start: date,
    period_end: date,
    change_day: date,
    last_change_day: date | None,
    rules: CommerceRules,
) -> PlanChangeQuote:
    """The remainder becomes credit, counted in whole months only (the stub month is not credited).

    Credit = whole months left x (old - new) monthly price, where a monthly price is the period's
    price divided by its months; rounded once. A fee, if any, is billed apart, not netted.
    """
    _require_offered(rules.plan_changes_enabled, "plan changes", rules)
    _require_money("old price", old_price_per_period)
    _require_money("new price", new_price_per_period)
    if new_price_per_period > old_price_per_period:
        raise ValueError("the new plan is dearer: that is an upgrade (upgrade_quote)")
    _check_period(period_start, period_end, change_day)
    period_months = parse_period(period).total_months
    months = whole_months_remaining(change_day, period_end)
    credit = round_money(months * (old_price_per_period - new_price_per_period) / period_months)
    free = _is_free_change(change_day, last_change_day, rules)
    fee_hours = Decimal(0) if free else rules.plan_change_fee_hours
    fee = fee_hours * rules.support_hour_rate
    return PlanChangeQuote(
        kind=PlanChangeKind.DOWNGRADE,
        change_day=change_day,
        expires_on=period_end,
        old_price=old_price_per_period,
        new_price=new_price_per_period,
        days_remaining=(period_end - change_day).days + 1,
        days_in_period=(period_end - period_start).days + 1,
        months_remaining=months,
        difference=Decimal(0),
        credit=credit,
        free_change=free,
        fee_hours=fee_hours,
        fee=round_money(fee),
        amount_due=round_money(fee),
        exact_due=fee,
        invoice_void_on=None,
        new_price_from=period_end + timedelta(days=1),
    )


# ----------------------------------------------------------------------------- refunds


class RefundRule(StrEnum):
    NOT_OFFERED = "not_offered"
    EXCLUDED_PRODUCT = "excluded_product"
    TOS_SUSPENSION = "tos_suspension"
    NOTHING_PREPAID = "nothing_prepaid"
    DEBT_EXCEEDS_REFUND = "debt_exceeds_refund"


class RefundQuote(BaseModel):
    """A refund on request: granted with its amount and breakdown, or refused with the rule."""

    model_config = ConfigDict(frozen=True)

    granted: bool
    refused_by: RefundRule | None = None
    reason: str
    full_refund: bool = False
    """Within the full-refund window of activation."""
    months_refunded: int = 0
    gross: Decimal = Decimal(0)
    """Exact: the whole price paid, or the remaining whole months' share of it."""
    migration_deduction: Decimal = Decimal(0)
    free_items_deduction: Decimal = Decimal(0)
    unpaid_proformas_deduction: Decimal = Decimal(0)
    amount: Money = Decimal("0.00")
    """Paid back through the payment adapter; rounded once. Paying it ends the service."""
    pay_by: date | None = None


def refund_quote(
    *,
    product: str,
    product_kind: ProductKind,
    activated_on: date,
    request_day: date,
    period_end: date,
    period: str,
    price_per_period: Decimal,
    rules: CommerceRules,
    support_hours_on_migration: Decimal = Decimal(0),
    unpaid_proformas: Sequence[Decimal] = (),
    free_items_value: Decimal = Decimal(0),
    suspended_for_tos: bool = False,
) -> RefundQuote:
    """Hostico "Vračilo denarja": full within the window of activation, later the whole months left.

    The window counts the activation day as day 1: with 30 days a request on activation + 29 days
    is the last full refund. Deducted: support hours spent migrating data in (full refund only),
    the value of free items bundled with the offer, and every unpaid proforma. If the deductions
    exceed the refund nothing is paid and the proformas stay owed.
    """

    def refused(rule: RefundRule, reason: str) -> RefundQuote:
        return RefundQuote(granted=False, refused_by=rule, reason=reason)

    if not rules.refunds_enabled:
        return refused(
            RefundRule.NOT_OFFERED, f"refunds on request are not offered in profile {rules.profile!r}"
        )
    if product_kind in rules.refund_excluded_kinds or product in rules.refund_excluded_products:
        return refused(
            RefundRule.EXCLUDED_PRODUCT,
            f"{product} ({product_kind.value}) is bought from a supplier or is a restore: never refunded",
        )
    if suspended_for_tos:
        return refused(RefundRule.TOS_SUSPENSION, "service suspended for a breach of the terms: no refund")
    if request_day < activated_on:
        raise ValueError(f"refund requested {request_day} before activation {activated_on}")
    for name, value in [("price", price_per_period), ("free items value", free_items_value)]:
        _require_money(name, value)
    if support_hours_on_migration < 0:
        raise ValueError("support hours cannot be negative")
    for proforma in unpaid_proformas:
        _require_money("unpaid proforma", proforma)

    full = (request_day - activated_on).days < rules.refund_full_days
    months = 0
    if full:
        gross = price_per_period
        migration = support_hours_on_migration * rules.support_hour_rate
    else:
        months = whole_months_remaining(request_day, period_end)
        if months == 0:
            return refused(RefundRule.NOTHING_PREPAID, f"no whole prepaid month left before {period_end}")
        gross = months * price_per_period / parse_period(period).total_months
        migration = Decimal(0)
    proformas = sum(unpaid_proformas, Decimal(0))
    exact = gross - migration - free_items_value - proformas
    if exact <= 0:
        return RefundQuote(
            granted=False,
            refused_by=RefundRule.DEBT_EXCEEDS_REFUND,
            reason=f"deductions {migration + free_items_value + proformas} exceed the refund {round_money(gross)}",
            full_refund=full,
            months_refunded=months,
            gross=gross,
            migration_deduction=migration,
            free_items_deduction=free_items_value,
            unpaid_proformas_deduction=proformas,
        )
    return RefundQuote(
        granted=True,
        reason=(
            f"full refund within {rules.refund_full_days} days of activation"
            if full
            else f"{months} remaining whole prepaid month(s)"
        ),
        full_refund=full,
        months_refunded=months,
        gross=gross,
        migration_deduction=migration,
        free_items_deduction=free_items_value,
        unpaid_proformas_deduction=proformas,
        amount=round_money(exact),
        pay_by=add_working_days(request_day, rules.refund_payment_working_days),
    )


# ----------------------------------------------------------------------------- coupons


class CouponKind(StrEnum):
    WEEKLY = "weekly"
    """One package a week, Monday to Sunday; discount and minimum period change weekly."""
    FLASH = "flash"
    """24 hours only, a bigger discount."""
    MONTHLY = "monthly"
    """All hosting packages for a month; the billing period is what matters."""
    HOLIDAY = "holiday"
    """The whole range, around a holiday."""
    LIMITED = "limited"
    """Not bounded in time but in number of uses."""


_MAX_WINDOW = {
    CouponKind.WEEKLY: timedelta(days=7),
    CouponKind.FLASH: timedelta(hours=24),
    CouponKind.MONTHLY: timedelta(days=31),
}


class Coupon(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(min_length=1)
    kind: CouponKind
    percent_off: ExactDecimal | None = Field(default=None, gt=0, le=100)
    amount_off: Money | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    """Exclusive: an order at exactly this instant is too late."""
    max_uses: int | None = Field(default=None, ge=1)
    products: list[str] = []
    """Empty: every product the profile's coupon rules allow."""
    min_period_months: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> Coupon:
        if (self.percent_off is None) == (self.amount_off is None):
            raise ValueError("a coupon has exactly one of percent_off and amount_off")
        if self.amount_off is not None and self.amount_off <= 0:
            raise ValueError("amount_off must be positive")
        for moment in (self.valid_from, self.valid_until):
            if moment is not None and moment.utcoffset() is None:
                raise ValueError("validity times must carry a time zone")
        if self.kind is CouponKind.LIMITED:
            if self.max_uses is None:
                raise ValueError("a limited coupon needs max_uses")
            return self
        if self.valid_from is None or self.valid_until is None:
            raise ValueError(f"a {self.kind.value} coupon needs valid_from and valid_until")
        if self.valid_until <= self.valid_from:
            raise ValueError("valid_until must come after valid_from")
        longest = _MAX_WINDOW.get(self.kind)
        if longest is not None and self.valid_until - self.valid_from > longest:
            raise ValueError(f"a {self.kind.value} coupon is valid for at most {longest}")
        return self


class CouponPurpose(StrEnum):
    NEW = "new"
    RENEWAL = "renewal"
    UPGRADE = "upgrade"


class CouponRule(StrEnum):
    UNKNOWN = "unknown_coupon"
    """No coupon of that code was ever created (answered by the coupon store, not `check_coupon`)."""
    NOT_FOR_DOMAIN_RENEWALS = "not_for_domain_renewals"
    PRODUCT_KIND = "product_kind"
    NOT_FOR_UPGRADES = "not_for_upgrades"
    NOT_RETROACTIVE = "not_retroactive"
    NOT_COMBINABLE = "not_combinable"
    NEW_CUSTOMERS_ONLY = "new_customers_only"
    FIRST_PERIOD_ONLY = "first_period_only"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    USED_UP = "used_up"
    PRODUCT = "product"
    MIN_PERIOD = "min_period"


class CouponDecision(BaseModel):
    model_config = ConfigDict(frozen=True)

    accepted: bool
    rule_refused: CouponRule | None = None
    reason: str
    discount: Money = Decimal("0.00")
    price_after: Money | None = None


def check_coupon(
    coupon: Coupon,
    *,
    customer_is_new: bool,
    is_first_period: bool,
    other_coupon_applied: bool,
    purpose: CouponPurpose,
    product_kind: ProductKind,
    product: str,
    period: str,
    price: Decimal,
    order_time: datetime,
    uses_so_far: int,
    rules: CommerceRules,
    order_paid: bool = False,
) -> CouponDecision:
    """Accept a coupon with its discount, or refuse it naming the first rule that refuses it.

    The rules are checked from the most general (what the coupon may never touch) to the most
    specific (this coupon's window, uses and products), so the named rule is the one a customer
    can least argue with. `order_paid`: the order is already paid, so a coupon now is retroactive.
    """

    def refuse(rule: CouponRule, reason: str) -> CouponDecision:
        return CouponDecision(accepted=False, rule_refused=rule, reason=f"coupon {coupon.code}: {reason}")

    if order_time.utcoffset() is None:
        raise ValueError("order_time must carry a time zone")
    _require_money("price", price)
    if (
        product_kind is ProductKind.DOMAIN
        and purpose is CouponPurpose.RENEWAL
        and not rules.coupon_for_domain_renewals
    ):
        return refuse(CouponRule.NOT_FOR_DOMAIN_RENEWALS, "coupons never apply to domain renewals")
    if product_kind not in rules.coupon_product_kinds:
        return refuse(CouponRule.PRODUCT_KIND, f"coupons do not apply to {product_kind.value} products")
    if purpose is CouponPurpose.UPGRADE and not rules.coupon_for_upgrades:
        return refuse(CouponRule.NOT_FOR_UPGRADES, "coupons do not apply to upgrades")
    if order_paid and not rules.coupon_retroactive:
        return refuse(CouponRule.NOT_RETROACTIVE, "the order is already paid; coupons are not retroactive")
    if other_coupon_applied and not rules.coupon_combinable:
        return refuse(CouponRule.NOT_COMBINABLE, "another coupon or discount is already applied")
    if rules.coupon_new_customers_only and not customer_is_new:
        return refuse(CouponRule.NEW_CUSTOMERS_ONLY, "only for new customers")
    if rules.coupon_first_period_only and (not is_first_period or purpose is CouponPurpose.RENEWAL):
        return refuse(CouponRule.FIRST_PERIOD_ONLY, "only for the first period bought")
    if coupon.valid_from is not None and order_time < coupon.valid_from:
        return refuse(CouponRule.NOT_YET_VALID, f"valid from {coupon.valid_from.isoformat()}")
    if coupon.valid_until is not None and order_time >= coupon.valid_until:
        return refuse(CouponRule.EXPIRED, f"expired {coupon.valid_until.isoformat()}")
    if coupon.max_uses is not None and uses_so_far >= coupon.max_uses:
        return refuse(CouponRule.USED_UP, f"used {uses_so_far} of {coupon.max_uses} times")
    if coupon.products and product not in coupon.products:
        return refuse(CouponRule.PRODUCT, f"only for {', '.join(coupon.products)}")
    if parse_period(period).total_months < coupon.min_period_months:
        return refuse(CouponRule.MIN_PERIOD, f"only for periods of {coupon.min_period_months} months or more")
    if coupon.percent_off is not None:
        discount = round_money(price * coupon.percent_off / 100)
    else:
        assert coupon.amount_off is not None  # the model validator guarantees one of the two
        discount = min(coupon.amount_off, price)
    return CouponDecision(
        accepted=True,
        reason=f"coupon {coupon.code}: {coupon.kind.value} discount",
        discount=discount,
        price_after=price - discount,
    )


# ----------------------------------------------------------------------------- price changes


def price_change_effective(
    announced_on: date,
    new_price_from: date,
    next_renewal: date,
    rules: CommerceRules,
    renewal_period: str | None = None,
) -> date:
    """The first day a new price applies to an existing service.

    Never before `announced_on` + the notice days, never before the day the provider named, and
    (when the profile protects prepaid periods) never inside one: it is the start of the first
    renewal period (`next_renewal` = D + 1, then every `renewal_period` after) on or after that.
    """
    earliest = max(new_price_from, announced_on + timedelta(days=rules.price_change_notice_days))
    if not rules.price_change_from_next_renewal:
        return earliest
    if earliest <= next_renewal:
        return next_renewal
    if renewal_period is None:
        raise ValueError(f"the price applies after the next renewal {next_renewal}: renewal_period needed")
    expiry = next_renewal - timedelta(days=1)
    times = 1
    while (start := add_period(expiry, renewal_period, times) + timedelta(days=1)) < earliest:
        times += 1
    return start


# ----------------------------------------------------------------------------- invoice currency


def invoice_rate(rate: Decimal, margin_percent: Decimal) -> Decimal:
    """The rate written on the invoice: the central bank's rate plus the margin, exact."""
    if not rate.is_finite() or rate <= 0:
        raise ValueError(f"exchange rate must be positive, got {rate}")
    if not margin_percent.is_finite() or margin_percent < 0:
        raise ValueError(f"margin must be non-negative, got {margin_percent}")
    return rate * (1 + margin_percent / 100)


def convert_invoice(amount: Decimal, rate: Decimal, margin_percent: Decimal) -> tuple[Decimal, Decimal]:
    """An amount in the invoice currency, rounded once, and the exact rate to record on the invoice.

    `amount` should be the exact (unrounded) base amount; `rate` is invoice-currency units per one
    unit of the price currency, as the invoice currency's central bank publishes it.
    """
    if not amount.is_finite():
        raise ValueError(f"not a finite amount: {amount}")
    recorded = invoice_rate(rate, margin_percent)
    return round_money(amount * recorded), recorded


# ----------------------------------------------------------------------------- usage notices


class UsageReported(BaseModel):
    """A monitoring measurement of one service (the `usage_report` signal)."""

    model_config = ConfigDict(frozen=True)

    measured_at: datetime
    managed: bool
    """A VPS the provider manages (the disk rule)."""
    shared_resources: bool
    """A VPS on shared CPU (the CPU rule); dedicated ones may run flat out."""
    disk_bytes: int | None = Field(default=None, ge=0)
    free_disk_bytes: int | None = Field(default=None, ge=0)
    cpu_full_minutes: int | None = Field(default=None, ge=0)
    """Consecutive minutes at 100 % CPU up to `measured_at`."""


class UsageRule(StrEnum):
    DISK_LOW = "disk_low"
    CPU_SATURATED = "cpu_saturated"


def usage_breaches(report: UsageReported, rules: CommerceRules) -> list[UsageRule]:
    """Which usage rules this measurement breaks (none when the profile has no usage rules)."""
    if not rules.usage_rules_enabled:
        return []
    found: list[UsageRule] = []
    if report.managed and report.disk_bytes is not None and report.free_disk_bytes is not None:
        percent_low = report.free_disk_bytes * 100 < report.disk_bytes * rules.usage_disk_free_min_percent
        if percent_low or report.free_disk_bytes < rules.usage_disk_free_min_bytes:
            found.append(UsageRule.DISK_LOW)
    if (
        report.shared_resources
        and report.cpu_full_minutes is not None
        and report.cpu_full_minutes > rules.usage_cpu_full_max_minutes
    ):
        found.append(UsageRule.CPU_SATURATED)
    return found


def usage_breach(report: UsageReported, rules: CommerceRules) -> bool:
    return bool(usage_breaches(report, rules))


class UsageStep(StrEnum):
    NONE = "none"
    """The profile has no usage rules."""
    NOTIFY = "notify"
    WAIT = "wait"
    """A notice went out less than the re-notify interval ago: the customer still has time."""
    SUSPEND = "suspend"


def next_usage_step(
    ignored_notices: int,
    rules: CommerceRules,
    *,
    last_notice_at: datetime | None = None,
    now: datetime | None = None,
) -> UsageStep:
    """What to do about a breach that is still there: notify first, suspend once ignored enough.

    `ignored_notices` is the number of notices already sent for this breach (it persisted, so each
    was ignored); a measurement without a breach resets it to 0 in the workflow.
    """
    if not rules.usage_rules_enabled:
        return UsageStep.NONE
    if ignored_notices < 0:
        raise ValueError("ignored_notices cannot be negative")
    recent = timedelta(hours=rules.usage_renotify_hours)
    if last_notice_at is not None and now is not None and now - last_notice_at < recent:
        return UsageStep.WAIT
    if ignored_notices >= rules.usage_notices_before_suspension:
        return UsageStep.SUSPEND
    return UsageStep.NOTIFY


# ----------------------------------------------------------------------------- provider deletion


def provider_deletion_day(notified_on: date, rules: CommerceRules) -> date:
    """The first day the provider may delete an account it gave notice to."""
    if rules.provider_deletion_notice_days is None:
        raise CommerceRefusal(
            "not_offered", f"profile {rules.profile!r} does not delete accounts on notice alone"
        )
    return notified_on + timedelta(days=rules.provider_deletion_notice_days)

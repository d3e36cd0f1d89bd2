"""SPEC §6 commerce rules (Hostico, seed 004) as pure decisions, amounts checked to the heller.

Every expected amount is worked out by hand in the comment beside it; the hostico profile bills
a support hour at 600.00 and charges one hour for a second plan change within 60 days.
"""

from __future__ import annotations

import tomllib
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from policy.catalog import ProductKind
from policy.commerce import (
    CommerceRefusal,
    CommerceRules,
    CommerceRulesError,
    Coupon,
    CouponKind,
    CouponPurpose,
    CouponRule,
    PlanChangeKind,
    RefundRule,
    UsageReported,
    UsageRule,
    UsageStep,
    add_working_days,
    check_coupon,
    commerce_rules,
    convert_invoice,
    downgrade_credit,
    load_commerce_rules,
    next_usage_step,
    parse_commerce_rules,
    price_change_effective,
    provider_deletion_day,
    refund_quote,
    upgrade_quote,
    usage_breach,
    usage_breaches,
    whole_months_remaining,
)
from policy.periods import add_months, add_period
from policy.pricing import round_money

HOSTICO = commerce_rules("hostico")
DEFAULT = commerce_rules("default")
CET = timezone(timedelta(hours=1))
GIB = 1024**3


def d(text: str) -> Decimal:
    return Decimal(text)


def day(text: str) -> date:
    return date.fromisoformat(text)


# ----------------------------------------------------------------------------- the data file


def test_shipped_profiles_carry_spec_6() -> None:
    assert HOSTICO.plan_changes_enabled and HOSTICO.plan_change_free_window_days == 60
    assert HOSTICO.plan_change_fee == d("600.00")  # 1 h x 600.00
    assert HOSTICO.upgrade_invoice_void_days == 7
    assert HOSTICO.refunds_enabled and HOSTICO.refund_full_days == 30
    assert set(HOSTICO.refund_excluded_products) == {"domain", "licence", "ssl", "backup-restore"}
    assert HOSTICO.refund_payment_working_days == 15
    assert HOSTICO.price_change_notice_days == 30 and HOSTICO.price_change_from_next_renewal
    assert (HOSTICO.invoice_currency, HOSTICO.invoice_rate_margin_percent) == ("RON", d("2"))
    assert HOSTICO.usage_rules_enabled and HOSTICO.usage_cpu_full_max_minutes == 30
    assert HOSTICO.provider_deletion_notice_days == 15
    assert not HOSTICO.coupon_for_upgrades and not HOSTICO.coupon_combinable


def test_default_profile_switches_the_hostico_rules_off() -> None:
    assert not DEFAULT.plan_changes_enabled
    assert not DEFAULT.refunds_enabled
    assert not DEFAULT.usage_rules_enabled
    assert DEFAULT.provider_deletion_notice_days is None
    assert DEFAULT.invoice_currency == "CZK" and DEFAULT.invoice_rate_margin_percent == 0
    assert not DEFAULT.coupon_for_domain_renewals  # SPEC §3.11 holds everywhere


def shipped_raw() -> dict[str, Any]:
    return tomllib.loads(resources.files("policy").joinpath("commerce.toml").read_text(encoding="utf-8"))


def with_hostico(**changes: Any) -> dict[str, Any]:
    raw = shipped_raw()
    raw["profiles"]["hostico"].update(changes)
    return raw


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            with_hostico(plan_change_fee_hours=1.5),
            "profiles.hostico.plan_change_fee_hours: Value error, must not be a float",
        ),
        (
            with_hostico(refund_full_days=-1),
            "profiles.hostico.refund_full_days: Input should be greater than or equal to 0",
        ),
        (
            with_hostico(invoice_currency="lei"),
            "profiles.hostico.invoice_currency: String should match pattern",
        ),
        (
            with_hostico(refund_excluded_kinds=["hosting"]),
            "profiles.hostico.refund_excluded_kinds.0: Input should be",
        ),
        (with_hostico(refund_windows=30), "profiles.hostico.refund_windows: Extra inputs are not permitted"),
        (with_hostico(extends="nowhere"), "profiles.hostico: extends unknown profile 'nowhere'"),
        (
            with_hostico(support_hour_rate="600.001"),
            "profiles.hostico.support_hour_rate: Value error, amount 600.001",
        ),
        (
            {"profiles": {"bare": {"description": "no keys"}}},
            "profiles.bare.support_hour_rate: Field required",
        ),
        ({"profiles": {}}, "[profiles] table is missing or empty"),
    ],
)
def test_bad_rules_are_refused_naming_the_field(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(CommerceRulesError) as caught:
        parse_commerce_rules(raw)
    assert message in str(caught.value)


def test_extends_cycle_is_refused() -> None:
    raw = shipped_raw()
    raw["profiles"]["default"]["extends"] = "hostico"
    with pytest.raises(CommerceRulesError, match="cycle"):
        parse_commerce_rules(raw)


def test_a_file_that_is_not_toml_or_missing_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "commerce.toml"
    broken.write_text("[profiles.default\n", encoding="utf-8")
    with pytest.raises(CommerceRulesError, match="not valid TOML"):
        load_commerce_rules(broken)
    with pytest.raises(CommerceRulesError, match="cannot read"):
        load_commerce_rules(tmp_path / "missing.toml")
    with pytest.raises(CommerceRulesError, match="unknown profile 'wedos'"):
        load_commerce_rules().rules("wedos")


# ----------------------------------------------------------------------------- upgrades

YEAR_2025 = (day("2025-01-01"), day("2025-12-31"))  # 365 days


@pytest.mark.parametrize(
    ("old", "new", "period", "change", "last_change", "days_left", "free", "due"),
    [
        # Jul 1..Dec 31 = 31+31+30+31+30+31 = 184 of 365 days; 1200.00 x 184/365 = 604.9315… -> 604.93
        ("1200.00", "2400.00", YEAR_2025, "2025-07-01", None, 184, True, "604.93"),
        # last change May 15: 47 days ago (< 60): + 1 h x 600.00 -> 604.9315… + 600 = 1204.93
        ("1200.00", "2400.00", YEAR_2025, "2025-07-01", "2025-05-15", 184, False, "1204.93"),
        # May 3 -> Jul 1 is 59 days: still inside the window, fee due
        ("1200.00", "2400.00", YEAR_2025, "2025-07-01", "2025-05-03", 184, False, "1204.93"),
        # May 2 -> Jul 1 is exactly 60 days: free again
        ("1200.00", "2400.00", YEAR_2025, "2025-07-01", "2025-05-02", 184, True, "604.93"),
        # change on the first day: the whole difference, 1490.00 - 990.00 = 500.00
        ("990.00", "1490.00", YEAR_2025, "2025-01-01", None, 365, True, "500.00"),
        # last day of a leap year: 300.00 x 1/366 = 0.81967… -> 0.82
        ("1200.00", "1500.00", (day("2024-01-01"), day("2024-12-31")), "2024-12-31", None, 1, True, "0.82"),
        # monthly period of February (28 days), Feb 15..28 = 14 days: 132.00 x 14/28 = 66.00
        ("132.00", "264.00", (day("2025-02-01"), day("2025-02-28")), "2025-02-15", None, 14, True, "66.00"),
        # half up: 0.15 x 1/30 = 0.005 -> 0.01
        ("100.00", "100.15", (day("2025-04-01"), day("2025-04-30")), "2025-04-30", None, 1, True, "0.01"),
        # same price (a move to another offer): nothing to pay, no invoice, the fee still counts
        ("500.00", "500.00", YEAR_2025, "2025-03-01", "2025-02-01", 306, False, "600.00"),
    ],
)
def test_upgrade_pays_the_difference_for_the_remaining_days(
    old: str,
    new: str,
    period: tuple[date, date],
    change: str,
    last_change: str | None,
    days_left: int,
    free: bool,
    due: str,
) -> None:
    quote = upgrade_quote(
        d(old), d(new), period[0], period[1], day(change), day(last_change) if last_change else None, HOSTICO
    )
    assert quote.kind is PlanChangeKind.UPGRADE
    assert quote.days_remaining == days_left
    assert quote.free_change is free
    assert quote.fee == (d("0.00") if free else d("600.00"))
    assert quote.amount_due == d(due)
    assert quote.expires_on == period[1]  # D does not move
    assert quote.new_price_from == period[1] + timedelta(days=1)
    assert quote.invoice_void_on == day(change) + timedelta(days=7)


def test_free_upgrade_at_the_same_price_has_no_invoice_to_void() -> None:
    quote = upgrade_quote(d("500.00"), d("500.00"), *YEAR_2025, day("2025-03-01"), None, HOSTICO)
    assert quote.amount_due == d("0.00") and quote.invoice_void_on is None


def test_upgrade_refusals() -> None:
    with pytest.raises(CommerceRefusal, match="not offered in profile 'default'") as caught:
        upgrade_quote(d("100.00"), d("200.00"), *YEAR_2025, day("2025-03-01"), None, DEFAULT)
    assert caught.value.rule == "not_offered"
    with pytest.raises(ValueError, match="downgrade"):
        upgrade_quote(d("200.00"), d("100.00"), *YEAR_2025, day("2025-03-01"), None, HOSTICO)
    with pytest.raises(ValueError, match="outside the prepaid period"):
        upgrade_quote(d("100.00"), d("200.00"), *YEAR_2025, day("2026-01-01"), None, HOSTICO)
    with pytest.raises(ValueError, match="after this change"):
        upgrade_quote(d("100.00"), d("200.00"), *YEAR_2025, day("2025-03-01"), day("2025-04-01"), HOSTICO)


prices = st.decimals(min_value=0, max_value=100_000, places=2, allow_nan=False, allow_infinity=False)
days_in_2025 = st.integers(min_value=0, max_value=364).map(lambda n: day("2025-01-01") + timedelta(days=n))


@given(old=prices, extra=prices, change=days_in_2025, since=st.none() | st.integers(0, 400))
def test_upgrade_quote_is_never_negative_nor_more_than_the_difference(
    old: Decimal, extra: Decimal, change: date, since: int | None
) -> None:
    last = None if since is None else change - timedelta(days=since)
    quote = upgrade_quote(old, old + extra, *YEAR_2025, change, last, HOSTICO)
    assert d("0.00") <= quote.amount_due <= extra + quote.fee
    assert quote.amount_due == round_money(quote.difference + quote.fee)  # rounded once
    assert quote.free_change is (since is None or since >= 60)


# ----------------------------------------------------------------------------- downgrades


@pytest.mark.parametrize(
    ("old", "new", "period", "bounds", "change", "months", "credit"),
    [
        # Mar 15 + 9 months = Dec 15 <= Jan 1; + 10 = Jan 15 > Jan 1: 9 months x (2400-1200)/12 = 900.00
        ("2400.00", "1200.00", "P1Y", YEAR_2025, "2025-03-15", 9, "900.00"),
        # from the first day: 12 months x 100.00 = 1200.00
        ("2400.00", "1200.00", "P1Y", YEAR_2025, "2025-01-01", 12, "1200.00"),
        # Dec 1 + 1 month = Jan 1 2026 = D + 1: one whole month, 100.00
        ("2400.00", "1200.00", "P1Y", YEAR_2025, "2025-12-01", 1, "100.00"),
        # Dec 2: only a stub is left, no whole month: 0.00
        ("2400.00", "1200.00", "P1Y", YEAR_2025, "2025-12-02", 0, "0.00"),
        # Jan 31 + 11 months = Dec 31 <= Jan 1, + 12 = Jan 31 2026: 11 x 600.00/12 = 550.00
        ("1200.00", "600.00", "P1Y", YEAR_2025, "2025-01-31", 11, "550.00"),
        # rounded once: 6 x 666.67 / 12 = 333.335 -> 333.34 (per month 55.56 x 6 would be 333.36)
        ("1000.00", "333.33", "P1Y", YEAR_2025, "2025-06-10", 6, "333.34"),
        # a monthly period never leaves a whole month after its first day
        ("264.00", "132.00", "P1M", (day("2025-02-01"), day("2025-02-28")), "2025-02-02", 0, "0.00"),
        ("264.00", "132.00", "P1M", (day("2025-02-01"), day("2025-02-28")), "2025-02-01", 1, "132.00"),
    ],
)
def test_downgrade_credits_whole_months_only(
    old: str, new: str, period: str, bounds: tuple[date, date], change: str, months: int, credit: str
) -> None:
    quote = downgrade_credit(d(old), d(new), period, bounds[0], bounds[1], day(change), None, HOSTICO)
    assert quote.kind is PlanChangeKind.DOWNGRADE
    assert quote.months_remaining == months
    assert quote.credit == d(credit)
    assert quote.amount_due == d("0.00") and quote.free_change


def test_second_downgrade_within_60_days_bills_the_fee_apart_from_the_credit() -> None:
    quote = downgrade_credit(
        d("2400.00"), d("1200.00"), "P1Y", *YEAR_2025, day("2025-03-15"), day("2025-02-01"), HOSTICO
    )
    assert quote.credit == d("900.00")  # as without the fee: 9 x 100.00
    assert (quote.fee, quote.amount_due, quote.free_change) == (d("600.00"), d("600.00"), False)


@given(old=prices, cut=prices, change=days_in_2025)
def test_downgrade_credit_is_whole_months_times_the_monthly_difference(
    old: Decimal, cut: Decimal, change: date
) -> None:
    new = max(old - cut, Decimal("0.00"))
    quote = downgrade_credit(old, new, "P1Y", *YEAR_2025, change, None, HOSTICO)
    assert 0 <= quote.months_remaining <= 12
    assert quote.credit == round_money(quote.months_remaining * (old - new) / 12)
    assert quote.credit <= old - new


@given(start=st.dates(min_value=date(2000, 1, 1), max_value=date(2090, 1, 1)), length=st.integers(0, 800))
def test_whole_months_are_the_largest_that_fit(start: date, length: int) -> None:
    end = start + timedelta(days=length)
    months = whole_months_remaining(start, end)
    assert add_months(start, months) <= end + timedelta(days=1) < add_months(start, months + 1)


# ----------------------------------------------------------------------------- refunds

ACTIVATED = day("2025-01-10")
D_FIRST_YEAR = day("2026-01-09")


def refund(**overrides: Any) -> Any:
    facts: dict[str, Any] = {
        "product": "hosting",
        "product_kind": ProductKind.SERVICE,
        "activated_on": ACTIVATED,
        "request_day": day("2025-01-20"),
        "period_end": D_FIRST_YEAR,
        "period": "P1Y",
        "price_per_period": d("1200.00"),
        "rules": HOSTICO,
    }
    facts.update(overrides)
    return refund_quote(**facts)


@pytest.mark.parametrize(
    ("overrides", "full", "months", "amount"),
    [
        # 10 days after activation: the whole 1200.00
        ({}, True, 0, "1200.00"),
        # Feb 8 is day 30 counting the activation day as day 1: still the full 1200.00
        ({"request_day": day("2025-02-08")}, True, 0, "1200.00"),
        # Feb 9 is day 31: Feb 9 + 11 months = Jan 9 2026 <= Jan 10; 11 x 100.00 = 1100.00
        ({"request_day": day("2025-02-09")}, False, 11, "1100.00"),
        # 1.5 support hours migrating data in: 1200.00 - 1.5 x 600.00 = 300.00
        ({"support_hours_on_migration": d("1.5")}, True, 0, "300.00"),
        # a free domain bundled with the offer: 1200.00 - 150.00 = 1050.00
        ({"free_items_value": d("150.00")}, True, 0, "1050.00"),
        # Jun 15: Jun 15 + 6 = Dec 15 <= Jan 10, + 7 = Jan 15 > Jan 10: 6 x 100.00 - (120.00 + 55.50) = 424.50
        (
            {"request_day": day("2025-06-15"), "unpaid_proformas": [d("120.00"), d("55.50")]},
            False,
            6,
            "424.50",
        ),
        # migration hours only reduce a full refund, not the later whole-month one: 6 x 100.00
        ({"request_day": day("2025-06-15"), "support_hours_on_migration": d("2")}, False, 6, "600.00"),
        # Apr 10 + 9 = Jan 10 2026 = D + 1: 9 x 999.99 / 12 = 749.9925 -> 749.99
        ({"request_day": day("2025-04-10"), "price_per_period": d("999.99")}, False, 9, "749.99"),
        # monthly service prepaid through Apr 9, request on day 41 (Feb 19):
        # Feb 19 + 1 = Mar 19 <= Apr 10, + 2 = Apr 19 > Apr 10: 1 x 110.00
        (
            {
                "request_day": day("2025-02-19"),
                "period": "P1M",
                "price_per_period": d("110.00"),
                "period_end": day("2025-04-09"),
            },
            False,
            1,
            "110.00",
        ),
    ],
)
def test_refund_on_request(overrides: dict[str, Any], full: bool, months: int, amount: str) -> None:
    quote = refund(**overrides)
    assert quote.granted and quote.refused_by is None
    assert quote.full_refund is full
    assert quote.months_refunded == months
    assert quote.amount == d(amount)


def test_refund_is_paid_within_15_working_days() -> None:
    # Mon Jan 20 + 15 working days: Jan 21-24 (4), Jan 27-31 (9), Feb 3-7 (14), Mon Feb 10 (15)
    assert refund().pay_by == day("2025-02-10")
    assert add_working_days(day("2025-01-24"), 1) == day("2025-01-27")  # Friday -> Monday


@pytest.mark.parametrize(
    ("overrides", "rule"),
    [
        ({"rules": DEFAULT}, RefundRule.NOT_OFFERED),
        ({"product": "example.cz", "product_kind": ProductKind.DOMAIN}, RefundRule.EXCLUDED_PRODUCT),
        ({"product": "ssl"}, RefundRule.EXCLUDED_PRODUCT),
        ({"product": "licence"}, RefundRule.EXCLUDED_PRODUCT),
        ({"product": "backup-restore"}, RefundRule.EXCLUDED_PRODUCT),
        ({"suspended_for_tos": True}, RefundRule.TOS_SUSPENSION),
        # Dec 15: Dec 15 + 1 month = Jan 15 2026 > Jan 10: no whole month left
        ({"request_day": day("2025-12-15")}, RefundRule.NOTHING_PREPAID),
        # 1200.00 - 2000.00 owed on proformas: nothing is paid, the proformas stay owed
        ({"unpaid_proformas": [d("2000.00")]}, RefundRule.DEBT_EXCEEDS_REFUND),
        # exactly used up: 1200.00 - 2 x 600.00 = 0.00 is nothing to pay either
        ({"support_hours_on_migration": d("2")}, RefundRule.DEBT_EXCEEDS_REFUND),
    ],
)
def test_refund_refusals_name_their_rule(overrides: dict[str, Any], rule: RefundRule) -> None:
    quote = refund(**overrides)
    assert not quote.granted
    assert quote.refused_by is rule
    assert quote.amount == d("0.00") and quote.pay_by is None


def test_refund_before_activation_is_an_input_error() -> None:
    with pytest.raises(ValueError, match="before activation"):
        refund(request_day=day("2025-01-09"))


# ----------------------------------------------------------------------------- coupons

WEEK_START = datetime(2025, 3, 3, tzinfo=CET)  # a Monday


def weekly(**changes: Any) -> Coupon:
    fields: dict[str, Any] = {
        "code": "WEEK10",
        "kind": CouponKind.WEEKLY,
        "percent_off": d("20"),
        "valid_from": WEEK_START,
        "valid_until": WEEK_START + timedelta(days=7),
        "products": ["hosting"],
        "min_period_months": 12,
    }
    fields.update(changes)
    return Coupon(**fields)


def order(coupon: Coupon | None = None, **changes: Any) -> Any:
    facts: dict[str, Any] = {
        "customer_is_new": True,
        "is_first_period": True,
        "other_coupon_applied": False,
        "purpose": CouponPurpose.NEW,
        "product_kind": ProductKind.SERVICE,
        "product": "hosting",
        "period": "P1Y",
        "price": d("1200.00"),
        "order_time": datetime(2025, 3, 5, 10, 0, tzinfo=CET),
        "uses_so_far": 0,
        "rules": HOSTICO,
    }
    facts.update(changes)
    return check_coupon(coupon or weekly(), **facts)


def test_a_weekly_coupon_on_a_new_order_is_accepted() -> None:
    decision = order()
    assert decision.accepted and decision.rule_refused is None
    assert (decision.discount, decision.price_after) == (d("240.00"), d("960.00"))  # 20 % of 1200.00


@pytest.mark.parametrize(
    ("coupon", "changes", "rule"),
    [
        (
            None,
            {"product_kind": ProductKind.DOMAIN, "purpose": CouponPurpose.RENEWAL},
            CouponRule.NOT_FOR_DOMAIN_RENEWALS,
        ),
        (None, {"product_kind": ProductKind.DOMAIN}, CouponRule.PRODUCT_KIND),
        (None, {"purpose": CouponPurpose.UPGRADE}, CouponRule.NOT_FOR_UPGRADES),
        (None, {"order_paid": True}, CouponRule.NOT_RETROACTIVE),
        (None, {"other_coupon_applied": True}, CouponRule.NOT_COMBINABLE),
        (None, {"customer_is_new": False}, CouponRule.NEW_CUSTOMERS_ONLY),
        (None, {"is_first_period": False}, CouponRule.FIRST_PERIOD_ONLY),
        (None, {"purpose": CouponPurpose.RENEWAL}, CouponRule.FIRST_PERIOD_ONLY),
        (None, {"order_time": WEEK_START - timedelta(seconds=1)}, CouponRule.NOT_YET_VALID),
        (
            None,
            {"order_time": WEEK_START + timedelta(days=7)},
            CouponRule.EXPIRED,
        ),  # valid_until is exclusive
        (None, {"product": "vps"}, CouponRule.PRODUCT),
        (None, {"period": "P1M"}, CouponRule.MIN_PERIOD),
        (
            Coupon(code="ONCE", kind=CouponKind.LIMITED, amount_off=d("100.00"), max_uses=1),
            {"uses_so_far": 1},
            CouponRule.USED_UP,
        ),
    ],
)
def test_a_refused_coupon_names_the_rule(
    coupon: Coupon | None, changes: dict[str, Any], rule: CouponRule
) -> None:
    decision = order(coupon, **changes)
    assert not decision.accepted
    assert decision.rule_refused is rule
    assert decision.discount == d("0.00") and decision.price_after is None


def test_the_default_profile_keeps_only_spec_3_11() -> None:
    assert order(
        rules=DEFAULT, customer_is_new=False, is_first_period=False, purpose=CouponPurpose.RENEWAL
    ).accepted
    domain = order(rules=DEFAULT, product_kind=ProductKind.DOMAIN, purpose=CouponPurpose.RENEWAL)
    assert domain.rule_refused is CouponRule.NOT_FOR_DOMAIN_RENEWALS


@pytest.mark.parametrize(
    ("coupon", "price", "discount", "after"),
    [
        # 15 % of 333.33 = 49.9995 -> 50.00
        (weekly(percent_off=d("15")), "333.33", "50.00", "283.33"),
        # a fixed amount never exceeds the price
        (
            Coupon(code="ONCE", kind=CouponKind.LIMITED, amount_off=d("300.00"), max_uses=5),
            "250.00",
            "250.00",
            "0.00",
        ),
        (
            Coupon(code="ONCE", kind=CouponKind.LIMITED, amount_off=d("300.00"), max_uses=5),
            "1200.00",
            "300.00",
            "900.00",
        ),
    ],
)
def test_coupon_discounts(coupon: Coupon, price: str, discount: str, after: str) -> None:
    decision = order(coupon, price=d(price))
    assert (decision.discount, decision.price_after) == (d(discount), d(after))


def test_flash_monthly_and_holiday_windows() -> None:
    start = datetime(2025, 12, 24, tzinfo=CET)
    flash = Coupon(
        code="F",
        kind=CouponKind.FLASH,
        percent_off=d("50"),
        valid_from=start,
        valid_until=start + timedelta(hours=24),
    )
    assert order(flash, order_time=start + timedelta(hours=23, minutes=59)).accepted
    assert order(flash, order_time=start + timedelta(hours=24)).rule_refused is CouponRule.EXPIRED
    holiday = Coupon(
        code="H",
        kind=CouponKind.HOLIDAY,
        percent_off=d("10"),
        valid_from=start,
        valid_until=start + timedelta(days=14),
    )
    assert order(holiday, order_time=datetime(2025, 12, 30, 12, tzinfo=UTC)).accepted


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"kind": CouponKind.FLASH, "valid_until": WEEK_START + timedelta(hours=24, seconds=1)},
            "at most 1 day",
        ),
        ({"valid_until": WEEK_START + timedelta(days=7, seconds=1)}, "at most 7 days"),
        ({"kind": CouponKind.MONTHLY, "valid_until": WEEK_START + timedelta(days=32)}, "at most 31 days"),
        ({"valid_until": None}, "needs valid_from and valid_until"),
        ({"valid_until": WEEK_START}, "must come after"),
        ({"kind": CouponKind.LIMITED}, "needs max_uses"),
        ({"amount_off": d("10.00")}, "exactly one of percent_off and amount_off"),
        ({"valid_from": datetime(2025, 3, 3), "valid_until": datetime(2025, 3, 4)}, "time zone"),
        ({"percent_off": 20.0}, "must not be a float"),
    ],
)
def test_coupon_kinds_are_validated(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        weekly(**fields)


# ----------------------------------------------------------------------------- price changes


@pytest.mark.parametrize(
    ("announced", "new_price_from", "next_renewal", "period", "effective"),
    [
        # notice ends Mar 31, before the renewal: the price applies from the renewal, Jun 1
        ("2025-03-01", "2025-03-15", "2025-06-01", "P1Y", "2025-06-01"),
        # notice ends exactly on the renewal day (May 2 + 30 = Jun 1): that renewal
        ("2025-05-02", "2025-05-02", "2025-06-01", "P1Y", "2025-06-01"),
        # notice ends Jun 9, after the renewal: the one after, a year later
        ("2025-05-10", "2025-05-10", "2025-06-01", "P1Y", "2026-06-01"),
        # monthly service: the first monthly renewal after Jun 9 is Jul 1
        ("2025-05-10", "2025-05-10", "2025-06-01", "P1M", "2025-07-01"),
        # the provider's own later date wins over the notice: from Aug 15, so Sep 1 for a monthly
        ("2025-01-10", "2025-08-15", "2025-02-01", "P1M", "2025-09-01"),
    ],
)
def test_price_change_waits_for_notice_and_the_next_renewal(
    announced: str, new_price_from: str, next_renewal: str, period: str, effective: str
) -> None:
    result = price_change_effective(day(announced), day(new_price_from), day(next_renewal), HOSTICO, period)
    assert result == day(effective)


def test_price_change_needs_the_period_to_look_past_the_next_renewal() -> None:
    with pytest.raises(ValueError, match="renewal_period needed"):
        price_change_effective(day("2025-05-10"), day("2025-05-10"), day("2025-06-01"), HOSTICO)


def test_a_profile_without_prepaid_protection_applies_the_price_after_notice() -> None:
    loose = HOSTICO.model_copy(update={"price_change_from_next_renewal": False})
    assert price_change_effective(day("2025-05-10"), day("2025-05-10"), day("2025-06-01"), loose) == day(
        "2025-06-09"
    )


@given(
    announced=st.dates(min_value=date(2024, 1, 1), max_value=date(2030, 1, 1)),
    wait=st.integers(0, 400),
    until_renewal=st.integers(1, 400),
    period=st.sampled_from(["P1M", "P1Y", "P2Y"]),
)
def test_price_change_is_never_early_and_always_on_a_renewal(
    announced: date, wait: int, until_renewal: int, period: str
) -> None:
    next_renewal = announced + timedelta(days=until_renewal)
    wanted = announced + timedelta(days=wait)
    result = price_change_effective(announced, wanted, next_renewal, HOSTICO, period)
    assert result >= announced + timedelta(days=30) and result >= wanted
    expiry = next_renewal - timedelta(days=1)
    starts = {next_renewal} | {add_period(expiry, period, n) + timedelta(days=1) for n in range(1, 40)}
    assert result in starts


# ----------------------------------------------------------------------------- currency


@pytest.mark.parametrize(
    ("amount", "rate", "margin", "converted", "recorded"),
    [
        # 1200.00 CZK at BNR 0.1974 RON/CZK + 2 % = 0.201348; 1200 x 0.201348 = 241.6176 -> 241.62
        ("1200.00", "0.1974", "2", "241.62", "0.201348"),
        # the exact upgrade difference 1200 x 184/365 = 604.93150684… x 0.201348 = 121.80174… -> 121.80
        (str(Decimal(1200) * 184 / 365), "0.1974", "2", "121.80", "0.201348"),
        # EUR price at BNR 4.9742 RON/EUR + 2 % = 5.073684; 10.00 x 5.073684 = 50.73684 -> 50.74
        ("10.00", "4.9742", "2", "50.74", "5.073684"),
        # no margin: 25.00 EUR x 25.205 CZK/EUR = 630.125 -> 630.13 (half up)
        ("25.00", "25.205", "0", "630.13", "25.205"),
    ],
)
def test_convert_invoice(amount: str, rate: str, margin: str, converted: str, recorded: str) -> None:
    assert convert_invoice(d(amount), d(rate), d(margin)) == (d(converted), d(recorded))


def test_conversion_rounds_once_not_twice() -> None:
    # 0.43 x 0.1974 = 0.084882, x 1.02 = 0.08657964 -> 0.09; rounding 0.084882 to 0.08 first gives 0.08
    assert convert_invoice(d("0.43"), d("0.1974"), d("2"))[0] == d("0.09")


def test_conversion_refuses_a_rate_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        convert_invoice(d("1.00"), d("0"), d("2"))


@given(
    amount=st.decimals(min_value=0, max_value=10**9, places=6, allow_nan=False, allow_infinity=False),
    rate=st.decimals(min_value=d("0.0001"), max_value=1000, places=4, allow_nan=False, allow_infinity=False),
    margin=st.decimals(min_value=0, max_value=10, places=2, allow_nan=False, allow_infinity=False),
)
def test_conversion_is_within_half_a_heller_of_the_exact_value(
    amount: Decimal, rate: Decimal, margin: Decimal
) -> None:
    converted, recorded = convert_invoice(amount, rate, margin)
    exact = amount * rate * (1 + margin / 100)
    assert recorded == rate * (1 + margin / 100)
    assert converted == round_money(exact)
    assert abs(converted - exact) <= d("0.005")


# ----------------------------------------------------------------------------- usage notices

NOW = datetime(2025, 3, 5, 10, 0, tzinfo=UTC)


def report(**fields: Any) -> UsageReported:
    base: dict[str, Any] = {"measured_at": NOW, "managed": True, "shared_resources": False}
    base.update(fields)
    return UsageReported(**base)


@pytest.mark.parametrize(
    ("fields", "breaches"),
    [
        # 100 GiB disk, 1 GiB free: exactly 1 % and exactly 1 GiB, not under either
        ({"disk_bytes": 100 * GIB, "free_disk_bytes": GIB}, []),
        ({"disk_bytes": 100 * GIB, "free_disk_bytes": GIB - 1}, [UsageRule.DISK_LOW]),
        # 500 GiB disk, 4 GiB free = 0.8 %: under 1 % although over 1 GiB
        ({"disk_bytes": 500 * GIB, "free_disk_bytes": 4 * GIB}, [UsageRule.DISK_LOW]),
        # 50 GiB disk, 0.9 GiB free = 1.8 %: under 1 GiB
        ({"disk_bytes": 50 * GIB, "free_disk_bytes": 9 * GIB // 10}, [UsageRule.DISK_LOW]),
        # not managed by the provider: its disk is the customer's business
        ({"managed": False, "disk_bytes": 100 * GIB, "free_disk_bytes": 0}, []),
        ({"shared_resources": True, "cpu_full_minutes": 30}, []),
        ({"shared_resources": True, "cpu_full_minutes": 31}, [UsageRule.CPU_SATURATED]),
        # a dedicated VPS may run flat out
        ({"shared_resources": False, "cpu_full_minutes": 600}, []),
        (
            {"shared_resources": True, "cpu_full_minutes": 45, "disk_bytes": 10 * GIB, "free_disk_bytes": 0},
            [UsageRule.DISK_LOW, UsageRule.CPU_SATURATED],
        ),
    ],
)
def test_usage_breaches(fields: dict[str, Any], breaches: list[UsageRule]) -> None:
    measured = report(**fields)
    assert usage_breaches(measured, HOSTICO) == breaches
    assert usage_breach(measured, HOSTICO) is bool(breaches)
    assert usage_breaches(measured, DEFAULT) == []  # the default profile has no usage rules


@pytest.mark.parametrize(
    ("ignored", "last_notice_hours_ago", "step"),
    [
        (0, None, UsageStep.NOTIFY),
        (1, 25, UsageStep.NOTIFY),
        (2, 24, UsageStep.NOTIFY),
        (3, 24, UsageStep.SUSPEND),  # the third notice was ignored a day long
        (3, 23, UsageStep.WAIT),  # … but not yet a day: the customer still has time
        (1, 1, UsageStep.WAIT),
    ],
)
def test_notify_first_then_suspend(ignored: int, last_notice_hours_ago: int | None, step: UsageStep) -> None:
    last = None if last_notice_hours_ago is None else NOW - timedelta(hours=last_notice_hours_ago)
    assert next_usage_step(ignored, HOSTICO, last_notice_at=last, now=NOW) is step


def test_usage_steps_in_the_default_profile_do_nothing() -> None:
    assert next_usage_step(10, DEFAULT) is UsageStep.NONE


@given(ignored=st.integers(0, 50), needed=st.integers(0, 10))
def test_suspension_comes_exactly_after_the_configured_ignored_notices(ignored: int, needed: int) -> None:
    rules = HOSTICO.model_copy(update={"usage_notices_before_suspension": needed})
    expected = UsageStep.SUSPEND if ignored >= needed else UsageStep.NOTIFY
    assert next_usage_step(ignored, rules) is expected


# ----------------------------------------------------------------------------- provider deletion


def test_provider_deletion_gives_15_days_notice() -> None:
    assert provider_deletion_day(day("2025-03-01"), HOSTICO) == day("2025-03-16")
    with pytest.raises(CommerceRefusal, match="does not delete accounts on notice"):
        provider_deletion_day(day("2025-03-01"), DEFAULT)


def test_rules_are_frozen() -> None:
    with pytest.raises(ValidationError):
        HOSTICO.refund_full_days = 10  # type: ignore[misc]
    assert isinstance(HOSTICO, CommerceRules)

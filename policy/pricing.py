"""Prices of periods: monthly billing costs a twelfth of the year plus the surcharge."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from policy.money import HELLER
from policy.periods import Period, parse_period


def round_money(amount: Decimal) -> Decimal:
    """Round once, at the end, half up to hellers."""
    return amount.quantize(HELLER, rounding=ROUND_HALF_UP)


def price_for_period(yearly_price: Decimal, period: Period | str, surcharge_percent: Decimal) -> Decimal:
    """Yearly periods cost the yearly price per year; shorter ones yearly/12 per month + surcharge.

    >>> price_for_period(Decimal("1200.00"), "P1M", Decimal("10"))
    Decimal('110.00')
    """
    if isinstance(period, str):
        period = parse_period(period)
    if period.months == 0:
        return round_money(yearly_price * period.years)
    monthly = yearly_price / 12 * (1 + surcharge_percent / 100)
    return round_money(yearly_price * period.years + monthly * period.months)


def yearly_price_from(price: Decimal, period: Period | str, surcharge_percent: Decimal) -> Decimal:
    """The yearly price a price for `period` implies (inverse of `price_for_period`)."""
    if isinstance(period, str):
        period = parse_period(period)
    if period.months == 0:
        return round_money(price / period.years)
    factor = Decimal(period.years) + Decimal(period.months) / 12 * (1 + surcharge_percent / 100)
    return round_money(price / factor)

"""Billing periods (ISO-8601 `P1Y`, `P1M`, `P2Y`…) and calendar arithmetic on them."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date

_PERIOD = re.compile(r"^P(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?$")


@dataclass(frozen=True)
class Period:
    years: int = 0
    months: int = 0

    @property
    def total_months(self) -> int:
        return self.years * 12 + self.months

    @property
    def is_monthly(self) -> bool:
        return self.total_months < 12

    def __str__(self) -> str:
        text = "P"
        if self.years:
            text += f"{self.years}Y"
        if self.months:
            text += f"{self.months}M"
        return text


def parse_period(text: str) -> Period:
    match = _PERIOD.match(text.strip().upper()) if isinstance(text, str) else None
    if not match or not (match["years"] or match["months"]):
        raise ValueError(
            f"period must be an ISO-8601 duration of years/months such as P1Y or P1M, got {text!r}"
        )
    period = Period(years=int(match["years"] or 0), months=int(match["months"] or 0))
    if period.total_months == 0 or period.total_months > 120:
        raise ValueError(f"period must be between 1 month and 10 years, got {text!r}")
    return period


def add_months(day: date, months: int) -> date:
    """Calendar months with the day clamped to the month's end: Jan 31 + 1 month = Feb 28 (or 29)."""
    index = day.year * 12 + (day.month - 1) + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


def add_period(day: date, period: Period | str, times: int = 1, anchor_day: int | None = None) -> date:
    """The day a period that starts the day after `day` (an expiry date D) ends: the new D.

    With `anchor_day` (the day of the month the service originally expired on) the new D lands
    on that day, clamped to the month's end: an anchor of 31 gives Jan 31, Feb 28, Mar 31 and an
    anchor of 28 gives Jan 28, Feb 28, Mar 28, so no days drift over the years. Without it a
    month-end D stays month-end (Feb 28 + 1 month = Mar 31).
    """
    if isinstance(period, str):
        period = parse_period(period)
    months = period.total_months * times
    moved = add_months(day, months)
    last = calendar.monthrange(moved.year, moved.month)[1]
    if anchor_day is not None:
        if not 1 <= anchor_day <= 31:
            raise ValueError(f"anchor day must be 1-31, got {anchor_day}")
        return moved.replace(day=min(anchor_day, last))
    if day.day == calendar.monthrange(day.year, day.month)[1]:
        moved = moved.replace(day=last)
    return moved

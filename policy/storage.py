"""Backup storage charges (SPEC §5: "backup space is billed"), as pure arithmetic.

The backups workflow measures what the customer's backups hold once a day (bytes) and sums those
daily measurements over a calendar month ("byte-days"). A month is charged at the catalog's
`backup_storage_price_per_gib_month` pro rata by day: a GiB kept all month costs the full price, a
GiB kept 10 days of a 30-day month a third of it. One rounding, at the end, to the heller.
"""

from __future__ import annotations

import calendar
from datetime import date
from decimal import Decimal

from policy.pricing import round_money

GIB = 2**30


def month_start(day: date) -> date:
    return day.replace(day=1)


def days_in_month(day: date) -> int:
    return calendar.monthrange(day.year, day.month)[1]


def backup_storage_charge(byte_days: int, price_per_gib_month: Decimal, month: date) -> Decimal:
    """What `byte_days` of backups in `month` cost: byte-days / (GiB x days of the month) x price."""
    if byte_days < 0:
        raise ValueError(f"byte-days cannot be negative, got {byte_days}")
    if price_per_gib_month < 0:
        raise ValueError(f"price cannot be negative, got {price_per_gib_month}")
    return round_money(Decimal(byte_days) * price_per_gib_month / (Decimal(GIB) * days_in_month(month)))

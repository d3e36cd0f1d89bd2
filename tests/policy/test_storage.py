"""Backup storage charges: byte-days over a month, pro rata by day, rounded once to the heller."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from policy.storage import GIB, backup_storage_charge, days_in_month, month_start


@pytest.mark.parametrize(
    ("byte_days", "price", "month", "amount"),
    [
        (GIB * 30, Decimal("2.00"), date(2026, 11, 1), Decimal("2.00")),  # 1 GiB all November
        (GIB * 31, Decimal("2.00"), date(2026, 12, 1), Decimal("2.00")),  # 1 GiB all December
        (GIB * 10, Decimal("2.00"), date(2026, 11, 1), Decimal("0.67")),  # 10 of 30 days: 0.666.. up
        (GIB * 28, Decimal("3.00"), date(2027, 2, 1), Decimal("3.00")),
        (GIB * 29, Decimal("3.00"), date(2028, 2, 1), Decimal("3.00")),  # leap February
        (GIB // 4 * 87, Decimal("2.00"), date(2026, 11, 1), Decimal("1.45")),  # 21.75 GiB-days
        (1, Decimal("2.00"), date(2026, 11, 1), Decimal("0.00")),
        (0, Decimal("2.00"), date(2026, 11, 1), Decimal("0.00")),
        (GIB * 45, Decimal("0.01"), date(2026, 11, 1), Decimal("0.02")),  # 0.015 rounds half up
    ],
)
def test_charge_to_the_heller(byte_days: int, price: Decimal, month: date, amount: Decimal) -> None:
    assert backup_storage_charge(byte_days, price, month) == amount


def test_month_helpers() -> None:
    assert month_start(date(2026, 11, 22)) == date(2026, 11, 1)
    assert [days_in_month(date(2026, m, 1)) for m in (1, 2, 4, 12)] == [31, 28, 30, 31]


def test_negative_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="byte-days"):
        backup_storage_charge(-1, Decimal("2.00"), date(2026, 11, 1))
    with pytest.raises(ValueError, match="price"):
        backup_storage_charge(1, Decimal("-2.00"), date(2026, 11, 1))

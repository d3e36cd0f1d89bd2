"""Money: `Decimal` with exactly 2 places (hellers), never float."""

from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

HELLER = Decimal("0.01")
MAX_AMOUNT = Decimal("1e15")
"""No invoice or payment comes near this; anything larger is an input error, not money."""


def to_money(value: object) -> Decimal:
    """Money is exact: a float is refused, anything else must have at most 2 decimal places."""
    if isinstance(value, float):
        raise ValueError("money must not be a float; pass a decimal string such as '1200.00'")
    try:
        amount = Decimal(str(value))
    except Exception as exc:
        raise ValueError(f"not a decimal amount: {value!r}") from exc
    if not amount.is_finite():
        raise ValueError(f"not a finite amount: {value!r}")
    if abs(amount) >= MAX_AMOUNT:
        raise ValueError(f"amount {value} is too large")
    if amount != amount.quantize(HELLER, rounding=ROUND_HALF_UP):
        raise ValueError(f"amount {value} has more than 2 decimal places")
    return amount.quantize(HELLER)


Money = Annotated[Decimal, BeforeValidator(to_money), PlainSerializer(lambda d: str(d), return_type=str)]
"""A `Decimal` with exactly 2 places, serialised as a string so JSON never turns it into a float."""


def normalize_variable_symbol(value: str) -> str:
    """A VS is up to 10 digits; banks pad it with zeros, so '0012345678' and '12345678' are one VS."""
    text = str(value).strip()
    if not text.isdigit() or not text.isascii():
        raise ValueError(f"variable symbol must be digits only, got {value!r}")
    canonical = text.lstrip("0") or "0"
    if len(canonical) > 10:
        raise ValueError(f"variable symbol has at most 10 digits, got {len(canonical)}")
    return canonical


VariableSymbol = Annotated[str, BeforeValidator(normalize_variable_symbol)]
"""A variable symbol in its canonical form: digits, no leading zeros."""

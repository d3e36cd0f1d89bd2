"""Messages and state of money coming in without an invoice payment: stored cards, prepaid renewals,
invoice currency (no temporalio here)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from policy.money import Money

CARD_KEY_MEMORY = 50
PREPAID_KEY_MEMORY = 50


class StoredCard(BaseModel):
    """A card the customer let us charge for renewals: the gateway's token of the first payment."""

    model_config = ConfigDict(frozen=True)

    token: str = Field(min_length=1, max_length=200)
    """ComGate: the `transId` of the initial payment made with `initRecurring=true`."""
    label: str = Field(default="", max_length=100)
    """What the customer recognises it by, e.g. "Visa •••• 4242"."""


class StoredCardSetting(BaseModel):
    """`card=None` removes the stored card; renewal invoices are then paid as usual."""

    card: StoredCard | None = None


class InvoiceCurrency(BaseModel):
    """Invoices in another currency than the price (Hostico: RON at the central bank rate + 2 %)."""

    model_config = ConfigDict(frozen=True)

    currency: str = Field(pattern=r"^[A-Z]{3}$")
    margin_percent: Decimal = Field(ge=0, le=100)


class PrepaidRenewal(BaseModel):
    """Renew one period that was already paid from credit (bulk renewal), keyed by that debit."""

    debit_key: str = Field(min_length=1, max_length=500)
    amount: Money
    """What the credit account was debited for this service, in the credit currency."""
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    expected_amount: Money
    """The renewal price the quote showed (price currency): refused if the price changed since."""
    balance: Money | None = None
    """The account's balance after the bulk debit, for the journal."""

    @field_validator("amount", "expected_amount")
    @classmethod
    def _positive(cls, value: Decimal) -> Decimal:
        if value <= 0:
            raise ValueError(f"amount must be positive, got {value}")
        return value


class RenewalQuote(BaseModel):
    """What renewing one more period costs now, and whether it can be renewed at all (query)."""

    service_id: str
    customer_id: str
    product: str
    profile: str
    state: str
    expires_on: date
    period: str
    amount: Money
    """In the price currency."""
    currency: str
    credit_currency: str
    renewable: bool
    reason: str = ""
    """Why not, when not renewable."""

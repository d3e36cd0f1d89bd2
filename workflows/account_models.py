"""Inputs, requests, state and results of the customer's credit account (no temporalio here).

Amounts are always positive; the movement's `kind` says which way the money went. Every movement
carries the caller's idempotency key, so a retried request is answered from memory, not applied twice.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from policy.catalog import Terms
from policy.money import Money

ZERO = Decimal("0.00")
CONTINUE_AFTER = 500
"""Movements per run before the account continues as new (the server may suggest it sooner)."""
LEDGER_LIMIT = 1000
"""Ledger entries carried across continue-as-new; older ones are summed into the opening balance."""
KEY_MEMORY = 2000
"""Idempotency keys remembered; a retry comes within minutes or days, not thousands of movements."""


def account_workflow_id(customer_id: str) -> str:
    """One account per customer, named from the domain."""
    return f"customer-{customer_id}"


class MovementKind(StrEnum):
    TOP_UP = "top_up"
    DEBIT = "debit"
    REFUND = "refund"


class CreditLimits(BaseModel):
    """What a profile allows (SPEC §6, hostico: top-up 10–1000 EUR, balance ≤ 1000); None = no limit."""

    model_config = ConfigDict(frozen=True)

    min_top_up: Money | None = None
    max_top_up: Money | None = None
    max_balance: Money | None = None

    @model_validator(mode="after")
    def _consistent(self) -> CreditLimits:
        for name in ("min_top_up", "max_top_up", "max_balance"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.min_top_up is not None and self.max_top_up is not None and self.min_top_up > self.max_top_up:
            raise ValueError(f"min_top_up {self.min_top_up} exceeds max_top_up {self.max_top_up}")
        return self

    @classmethod
    def from_terms(cls, terms: Terms) -> CreditLimits:
        """The limits of a profile, as the catalog resolved them for a product."""
        return cls(
            min_top_up=terms.credit_min_top_up,
            max_top_up=terms.credit_max_top_up,
            max_balance=terms.credit_max_balance,
        )


class LedgerEntry(BaseModel):
    """One movement on the account: a line of the customer's statement."""

    model_config = ConfigDict(frozen=True)

    sequence: int
    at: datetime
    kind: MovementKind
    amount: Money
    """Always positive; `kind` gives the direction."""
    balance_after: Money
    idempotency_key: str
    service_id: str | None = None
    reason: str = ""
    batch_key: str | None = None
    """The bulk request an entry belongs to (its idempotency key); None for single movements."""
    refund_of: str | None = None


class _Request(BaseModel):
    """Common fields. A non-positive amount is refused by the workflow's validators, not here, so the
    refusal reaches the caller as one clear message instead of an argument-decoding failure."""

    idempotency_key: str = Field(min_length=1, max_length=500)
    amount: Money
    currency: str | None = None
    """When given, it must be the account's currency (a EUR account takes no CZK)."""
    reason: str = ""


class TopUpRequest(_Request):
    """Money the customer paid into the account (card, bank transfer)."""

    payment_id: str | None = None


class DebitRequest(_Request):
    """Take money for one service (automatic renewal, an invoice paid from credit)."""

    service_id: str | None = None


class RefundRequest(_Request):
    """Give money back to the account: a cancelled debit, or a remainder that becomes credit.

    With `refund_of` (the idempotency key of a debit) the refunds of that debit may not exceed it.
    """

    service_id: str | None = None
    refund_of: str | None = None


class BulkItem(BaseModel):
    service_id: str = Field(min_length=1)
    amount: Money


class BulkDebitRequest(BaseModel):
    """SPEC §3.10: renew several services of one type from credit, all or nothing."""

    idempotency_key: str = Field(min_length=1, max_length=500)
    product: str = ""
    items: list[BulkItem] = Field(min_length=1, max_length=500)
    currency: str | None = None
    reason: str = "bulk renewal"

    @field_validator("items")
    @classmethod
    def _distinct(cls, items: list[BulkItem]) -> list[BulkItem]:
        seen: set[str] = set()
        for item in items:
            if item.service_id in seen:
                raise ValueError(f"service {item.service_id} is listed twice")
            seen.add(item.service_id)
        return items

    @property
    def total(self) -> Decimal:
        return sum((item.amount for item in self.items), ZERO)


class MovementResult(BaseModel):
    """The answer to a top-up, debit or refund.

    `ok=False` only for a debit the balance does not cover: nothing moved, `missing` says how much
    more is needed. `repeated=True` when the idempotency key was seen before: this is the first
    answer again and nothing moved now.
    """

    ok: bool
    balance: Money
    missing: Money = ZERO
    entry: LedgerEntry | None = None
    repeated: bool = False


class BulkDebitResult(BaseModel):
    """All items debited (`ok`, one entry each) or none, with the amount missing."""

    ok: bool
    total: Money
    balance: Money
    missing: Money = ZERO
    entries: list[LedgerEntry] = []
    repeated: bool = False


class Remembered(BaseModel):
    """What an idempotency key did, so a retry gets the same answer (and a misuse is refused)."""

    fingerprint: str
    movement: MovementResult | None = None
    bulk: BulkDebitResult | None = None
    refunded: Money = ZERO
    """For a debit: how much of it has been refunded so far."""


class AccountState(BaseModel):
    """Everything the account knows; carried across continue-as-new, bounded."""

    customer_id: str
    currency: str
    limits: CreditLimits = CreditLimits()
    balance: Money = ZERO
    ledger: list[LedgerEntry] = []
    sequence: int = 0
    opening_balance: Money = ZERO
    """The balance before the first entry still in `ledger`."""
    opening_sequence: int = 0
    """Sequence of the last entry dropped from `ledger` (0: nothing dropped)."""
    keys: dict[str, Remembered] = {}
    runs: int = 1


class CustomerAccountInput(BaseModel):
    """Open an account (`customer_id`, `currency`, `limits`) or carry `state` from the previous run."""

    customer_id: str = Field(min_length=1, max_length=200)
    currency: str = Field(default="CZK", pattern=r"^[A-Z]{3}$")
    limits: CreditLimits = CreditLimits()
    state: AccountState | None = None
    continue_after: int = Field(default=CONTINUE_AFTER, ge=1)
    ledger_limit: int = Field(default=LEDGER_LIMIT, ge=1)
    key_memory: int = Field(default=KEY_MEMORY, ge=1)


class AccountBalance(BaseModel):
    customer_id: str
    currency: str
    balance: Money
    limits: CreditLimits
    movements: int
    """Sequence of the last movement: how many there have ever been."""


class Statement(BaseModel):
    """Entries after `since_sequence`; `complete` is False when older ones were already dropped."""

    customer_id: str
    currency: str
    opening_balance: Money
    """The balance just before the first entry returned."""
    closing_balance: Money
    entries: list[LedgerEntry]
    complete: bool

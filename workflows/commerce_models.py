"""Requests and state of plan changes, refunds on request and provider deletion (SPEC §6; no temporalio).

The starter resolves the profile's commerce rules (`policy/commerce.toml`) and the product's plan
tiers (`policy/plans.toml`) and sends them with each request, so a running service never reads a
file and a rules edit never changes how it replays; the workflow checks they are its profile's.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from pydantic import BaseModel, Field

from policy.commerce import CommerceRules, PlanChangeKind, PlanChangeQuote, RefundQuote
from policy.money import Money
from policy.plans import PlanTier


class ChangePlanRequest(BaseModel):
    """Move the service to another plan of its product (`kind` says which way the customer meant)."""

    plan: str = Field(min_length=1)
    kind: PlanChangeKind
    product: str = Field(min_length=1)
    """The product the tiers are of; it must be the service's."""
    tiers: list[PlanTier] = Field(min_length=1)
    """Every plan of the service's product, from the catalog."""
    rules: CommerceRules
    current_plan: str | None = None
    """Only for a service started without a plan: which plan it is on now (ops' word)."""


class RefundOnRequest(BaseModel):
    """The customer asks for the money back; ends the service if granted."""

    rules: CommerceRules
    support_hours_on_migration: Decimal = Field(default=Decimal(0), ge=0)
    reason: str = "customer request"
    dry_run: bool = False
    """Only say what would be refunded; change nothing."""


class ProviderDeletionRequest(BaseModel):
    """Ops: delete the service after the profile's notice period (hostico: 15 days)."""

    rules: CommerceRules
    reason: str = Field(min_length=1, max_length=500)


class ProviderDeletionCancel(BaseModel):
    note: str = "cancelled by ops"


class PendingUpgrade(BaseModel):
    """An upgrade invoice waiting for payment; the plan switches when it is paid."""

    plan: PlanTier
    variable_symbol: str
    amount: Money
    requested_on: date
    void_on: date
    """Local day the unpaid invoice is cancelled and the plan stays as it was."""
    quote: PlanChangeQuote
    request_number: int


class PlanChangeRecord(BaseModel):
    kind: PlanChangeKind
    from_plan: str | None
    to_plan: str
    on: date
    amount: Money
    """Upgrade: what the customer paid; downgrade: the credit given."""
    fee: Money = Decimal("0.00")


class ProviderDeletion(BaseModel):
    reason: str
    notified_on: date
    delete_on: date
    """Local day the service is deleted unless ops cancel first."""
    sequence: int
    """Counts notices, so a second notice after a cancelled one gets its own keys."""


class ServiceChanges(BaseModel):
    """What plan changes, refunds and provider deletion need to remember; carried across continue-as-new."""

    activated_on: date | None = None
    """The day the service was handed to hostlife (None: started before this was recorded)."""
    plan: str | None = None
    """The current plan (None: the one the service was started with, `spec.plan`)."""
    plan_resources: dict[str, int] = {}
    last_plan_change_on: date | None = None
    plan_changes: list[PlanChangeRecord] = []
    pending_upgrade: PendingUpgrade | None = None
    plan_requests: int = 0
    credit_pending: Money | None = None
    """A downgrade credit the customer account refused (e.g. above its balance limit): for ops."""
    refund: RefundQuote | None = None
    refund_id: str | None = None
    provider_deletion: ProviderDeletion | None = None
    provider_notices: int = 0


class PlanQuoteView(BaseModel):
    """What `plan_changes` answers: the current plan, a pending upgrade and the history."""

    plan: str | None
    pending_upgrade: PendingUpgrade | None
    last_plan_change_on: date | None
    changes: list[PlanChangeRecord]
    provider_deletion: ProviderDeletion | None
    refund: RefundQuote | None
    activated_on: date | None
    at: datetime

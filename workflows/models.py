"""Inputs, messages, state and results of the subscription workflow (no temporalio here)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from policy.catalog import Terms, TldRules
from policy.clock import Clock
from policy.money import Money
from policy.payments import InvoiceRecord, PaymentResult
from workflows.commerce_models import ServiceChanges
from workflows.money_models import InvoiceCurrency, StoredCard
from workflows.offers_models import OffersState


class ServiceState(StrEnum):
    """SPEC §2. `suspended`, `parked` and `cancelled` are side states over the billing state."""

    ACTIVE = "active"
    EXPIRED = "expired"
    BLOCKED = "blocked"
    SUSPENDED = "suspended"
    PARKED = "parked"
    CANCELLED = "cancelled"
    DELETED = "deleted"
    CLOSED = "closed"
    OUTZONE = "outzone"
    REDEMPTION = "redemption"
    QUARANTINE = "quarantine"
    RELEASED = "released"


GONE = frozenset({ServiceState.DELETED, ServiceState.CLOSED, ServiceState.RELEASED})
FINAL = frozenset({ServiceState.CLOSED, ServiceState.RELEASED})


class Customer(BaseModel):
    id: str
    email: str
    language: str = "cs"
    name: str = ""


class ServiceSpec(BaseModel):
    """What the starter knows about a service when it hands it to hostlife."""

    service_id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
    customer: Customer
    product: str
    profile: str = "default"
    name: str = ""
    """Domain name for domains, a label for anything else."""
    price: Money
    """Price of one `period`, in the profile's currency."""
    period: str = "P1Y"
    expires_on: date
    node: str = "node-1"
    """Hypervisor node of a VPS/APS."""
    subservers: list[str] = []
    auto_renew: bool = False
    parking_price: Money | None = None
    first_licence: bool = False
    invoice_lead_days: int | None = Field(default=None, ge=1, le=90)
    backup_rotation: Literal[0, 3, 7] = 0
    """VPS/APS: automatic daily backups kept for 3 or 7 days (0: none)."""
    follows: str | None = None
    """DNS hosting: the service id of the domain it follows (SPEC §4)."""
    new_order: bool = False
    """The customer orders it now: the first invoice hostlife issues is for the first period bought
    (coupons may apply to it). False: a service handed over mid-life, whose invoices are renewals."""
    new_customer: bool = False
    """The customer had no service with the provider before this order (coupons for new customers)."""
    plan: str | None = None
    """The plan the service runs on (policy/plans.toml); None: the product has no plans, or it was
    handed over without one. A VPS/APS's provider backup is restored only onto a plan of the same
    or a higher tier (a VPS without a plan: no tier check)."""
    activated_on: date | None = None
    """When the customer first got the service, if before it was handed to hostlife (refund window)."""


class Suspension(BaseModel):
    reason: str
    since: date
    repeat: bool
    remedy_declared: bool = False
    fee_variable_symbol: str | None = None


class JournalEntry(BaseModel):
    """One line of the service's audit trail (and of `hostlife simulate`'s output)."""

    sequence: int
    at: datetime
    kind: str
    data: dict[str, Any] = {}


class PaymentOutcome(BaseModel):
    payment_id: str
    result: PaymentResult
    reason: str
    variable_symbol: str
    amount: Money
    service_id: str


class SubscriptionState(BaseModel):
    """Everything the workflow knows; carried whole across continue-as-new."""

    spec: ServiceSpec
    terms: Terms
    tld: TldRules | None = None
    clock: Clock
    yearly_price: Money
    price: Money
    """Price of one current period."""
    period: str
    next_period: str | None = None
    expires_on: date
    billing_state: ServiceState = ServiceState.ACTIVE
    suspension: Suspension | None = None
    suspensions_on: list[date] = []
    parked: bool = False
    powered_on: bool = True
    cancel_effective_on: date | None = None
    deferral_until: date | None = None
    deleted_on: date | None = None
    backup_until: date | None = None
    restorable: bool = True
    done: list[str] = []
    invoices: list[InvoiceRecord] = []
    invoice_reissues: int = 0
    payments: dict[str, PaymentResult] = {}
    journal: list[JournalEntry] = []
    journal_sequence: int = 0
    shown_state: ServiceState | None = None
    renewals: int = 0
    runs: int = 1
    mail_failures: int = 0
    failed_actions: int = 0
    auto_renew: bool | None = None
    """Renewal from credit as the customer last set it; None: as the service was started."""
    pending_registry_renewal: str | None = None
    """A paid renewal (its period) the registry refused; waits for ops to retry it."""
    pending_registry_redemption: bool = False
    dependents: list[str] = []
    """Domain: the DNS services that follow it."""
    provider_backup: list[str] | None = None
    """VPS/APS: the provider backup's volumes (`pool/volume`) kept on the node after deletion."""
    restore_target: RestoreTarget | None = None
    """The new VPS an open restore invoice is for."""
    restored_onto: str | None = None
    """The service the provider backup was restored onto (once; refused again afterwards)."""
    mail_restores: dict[str, MailRestoreRequest] = {}
    """Open or done mail restores by invoice variable symbol."""
    credit_missing: Money | None = None
    """What the credit lacked at the last automatic-renewal attempt of this cycle."""
    last_error: str | None = None
    stored_card: StoredCard | None = None
    """Charged for each renewal invoice as soon as it is issued (SPEC §6)."""
    card_charges: dict[str, str] = {}
    """Variable symbol → what its card charge ended as ("paid", "declined", "failed"): charged once."""
    invoice_currency: InvoiceCurrency | None = None
    """Invoices in another currency than the price; None: in the price currency."""
    prepaid_keys: list[str] = []
    """Debit keys of prepaid (bulk) renewals already applied, newest last."""
    offers: OffersState | None = None
    """Coupons, price changes and usage notices (SPEC §6; workflows/subscription_offers.py)."""
    changes: ServiceChanges = ServiceChanges()
    """Plan changes, refund on request, provider deletion (workflows/subscription_commerce.py)."""


class SubscriptionInput(BaseModel):
    """Start a new service from `spec`, or carry `state` over from the previous run."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    spec: ServiceSpec | None = None
    terms: Terms | None = None
    tld: TldRules | None = None
    clock: Clock | None = None
    state: SubscriptionState | None = None
    invoice_currency: InvoiceCurrency | None = None


class SubscriptionResult(BaseModel):
    service_id: str
    final_state: ServiceState
    expires_on: date
    renewals: int


class PaymentRequest(BaseModel):
    """The update form of a payment, for callers that need the outcome."""

    payment_id: str
    variable_symbol: str
    amount: Money
    received_at: datetime | None = None
    currency: str | None = None
    """None: the currency of the invoice it pays (the caller states the amount in it)."""


class BillingDetailsChanged(BaseModel):
    reason: str = "billing details changed"


class ChangePeriod(BaseModel):
    period: str


class CancelRequest(BaseModel):
    on: date | None = None
    reason: str = "customer request"


class SuspendRequest(BaseModel):
    reason: str = Field(min_length=1)
    severe: bool = False


class ResolveRequest(BaseModel):
    note: str = "customer declared the remedy"


class DeferralRequest(BaseModel):
    days: int = Field(ge=1, le=365)
    by_support: bool = False


class AutoRenewSetting(BaseModel):
    enabled: bool


class DependentAttached(BaseModel):
    service_id: str


class DomainStateChanged(BaseModel):
    """What a domain tells the DNS hosting that follows it."""

    domain_service_id: str
    state: ServiceState
    expires_on: date


class RenewFor(BaseModel):
    """A domain renewal for this many years (SPEC §3.8: 1–10, never more than 10 years ahead)."""

    years: int


class RegistryRetry(BaseModel):
    note: str = "ops retry"


class RestoreTarget(BaseModel):
    """The newly ordered VPS a deleted VPS's provider backup goes onto, as its own workflow reports
    it (`starter.vps_restore.restore_target` reads its status): the deleted VPS's workflow checks
    customer, product, plan tier, node and that it is paid before it invoices the fee.

    The workflow reads no files, so the starter resolves both plans' numeric tiers from
    `policy/plans.toml` and sends them here: the target's current plan and the deleted VPS's
    current plan as the starter saw it (the workflow checks that name against its own record)."""

    service_id: str = Field(min_length=1)
    customer_id: str
    product: str
    plan: str | None = None
    """The target's current plan (None: it runs without one)."""
    plan_tier: int | None = Field(default=None, ge=1)
    """`plan`'s tier in policy/plans.toml."""
    from_plan: str | None = None
    """The deleted VPS's current plan, as the starter read it from its status."""
    from_plan_tier: int | None = Field(default=None, ge=1)
    """`from_plan`'s tier in policy/plans.toml."""
    node: str
    vm_name: str
    state: ServiceState
    expires_on: date

    @model_validator(mode="after")
    def _tiers_with_plans(self) -> RestoreTarget:
        """A plan without its tier (or a tier without a plan) cannot be compared: refuse it."""
        pairs = (("plan", self.plan, self.plan_tier), ("from_plan", self.from_plan, self.from_plan_tier))
        for what, plan, tier in pairs:
            if (plan is None) != (tier is None):
                raise ValueError(f"{what} and {what}_tier go together (got {plan!r} and {tier!r})")
        return self


class RestoreRequest(BaseModel):
    note: str = ""
    onto: RestoreTarget | None = None
    """VPS/APS only, and required there: the new server to restore onto (SPEC §4)."""


class MailRestoreRequest(BaseModel):
    """Mail of these domains from a deleted VPS's provider backup, 500 CZK each (SPEC §4)."""

    domains: list[str] = Field(min_length=1, max_length=100)
    onto_service_id: str = Field(min_length=1)
    """The service whose mail space receives the restored mail (usually the new VPS)."""


class BackupRestored(BaseModel):
    """Told to the new VPS once a deleted VPS's provider backup was copied onto it."""

    from_service_id: str
    label: str


class CommandResult(BaseModel):
    """What an update did, in one line, plus the invoice it issued if any."""

    message: str
    variable_symbol: str | None = None
    amount: Decimal | None = None


class UpcomingMilestone(BaseModel):
    kind: str
    on: date
    at: datetime


class ServiceStatus(BaseModel):
    service_id: str
    product: str
    profile: str
    customer_id: str
    state: ServiceState
    expires_on: date
    period: str
    price: Money
    open_invoice: InvoiceRecord | None
    invoices: list[InvoiceRecord]
    upcoming: list[UpcomingMilestone]
    details: str
    suspension: Suspension | None
    parked: bool
    deferral_until: date | None
    cancel_effective_on: date | None
    backup_until: date | None
    renewals: int
    node: str | None = None
    """VPS/APS: the hypervisor node and the VM's name."""
    vm_name: str | None = None
    plan: str | None = None
    """The current plan (after any plan change; policy/plans.toml); None: it runs without one."""
    restored_onto: str | None = None

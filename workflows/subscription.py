"""SubscriptionWorkflow: the whole life of one service, as one durable workflow.

It walks the timeline that `policy.timeline` computes from the service's terms and expiry date,
sleeping until the next milestone with a timer that any message interrupts. Payments arrive as
a signal (or an update, for callers that need the outcome); commands arrive as updates whose
validators refuse bad requests before they reach history. Every side effect is an activity with
an idempotency key built from workflow facts. History stays bounded: the workflow continues as
new after a renewal once the run is long or half a year old (`workflows.payment_path`) and
whenever the server suggests it, carrying its whole state.
"""

from __future__ import annotations

import asyncio
import math
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.accounts import AccountActivities, DebitCreditInput
    from activities.billing import (
        BillingActivities,
        CancelInvoiceInput,
        HoldPaymentInput,
        IssueInvoiceInput,
        MarkInvoicePaidInput,
        PaymentReceived,
        ReturnPaymentInput,
    )
    from activities.hypervisor import POWER_TIMEOUTS, HypervisorActivities, VmActionInput, node_task_queue
    from activities.mailer import MailActivities, NoticeFacts, NoticeKind, SendNoticeInput
    from activities.platform import PlatformActionInput, PlatformActivities
    from activities.registrar import RegistrarActivities, RenewDomainInput, RestoreDomainInput
    from policy.catalog import ProductKind
    from policy.clock import Clock
    from policy.domains import (
        RenewalPath,
        add_years,
        check_domain_renewal,
        max_renewal_years,
        renewal_path_on,
    )
    from policy.money import normalize_variable_symbol
    from policy.payments import (
        InvoicePurpose,
        InvoiceRecord,
        InvoiceState,
        PaymentResult,
        decide_payment,
    )
    from policy.periods import add_period, parse_period
    from policy.pricing import price_for_period, round_money, yearly_price_from
    from policy.timeline import (
        CycleFacts,
        Milestone,
        MilestoneKind,
        block_day,
        deletion_day,
        is_stale,
        next_milestone,
        timeline,
    )
    from workflows import search_attributes as sa
    from workflows import service_workflow_id
    from workflows.account_models import CreditLimits
    from workflows.models import (
        FINAL,
        GONE,
        AutoRenewSetting,
        BillingDetailsChanged,
        CancelRequest,
        ChangePeriod,
        CommandResult,
        DeferralRequest,
        DependentAttached,
        DomainStateChanged,
        JournalEntry,
        PaymentOutcome,
        PaymentRequest,
        RegistryRetry,
        RenewFor,
        ResolveRequest,
        RestoreRequest,
        ServiceState,
        ServiceStatus,
        SubscriptionInput,
        SubscriptionResult,
        SubscriptionState,
        SuspendRequest,
        Suspension,
        UpcomingMilestone,
    )
    from workflows.money_in import MoneyInMixin
    from workflows.subscription_commerce import COMMERCE_PURPOSES, CommerceMixin
    from workflows.subscription_offers import OffersMixin
    from workflows.vps_backups import VpsBackupsWorkflow
    from workflows.vps_models import VpsDeleted, vps_backups_workflow_id

from workflows.payment_path import PaymentPathMixin
from workflows.vps_restore import VpsRestoreMixin

JOURNAL_LIMIT = 500
PAYMENT_MEMORY = 200
INVOICE_MEMORY = 30

BILLING_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=5)),
}
# Heartbeat timeouts (activities/liveness.py): a dead or frozen worker is noticed in seconds, not
# at the start-to-close timeout; a peer that never answers is cut by the activity's own deadline.
MAIL_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=60),
    "heartbeat_timeout": timedelta(seconds=20),
    # A mail outage must not stall the lifecycle: bounded retries, then the milestone goes on.
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=10),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(minutes=30),
        maximum_attempts=8,
        non_retryable_error_types=["MailPermanentError"],
    ),
}
PLATFORM_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(minutes=5),
    "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=10)),
}
REGISTRAR_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(minutes=2),
    "heartbeat_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(
        maximum_interval=timedelta(minutes=10), non_retryable_error_types=["RegistrarRefused"]
    ),
}
CREDIT_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(
        maximum_interval=timedelta(minutes=5), non_retryable_error_types=["CreditRefused"]
    ),
}
HYPERVISOR_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": POWER_TIMEOUTS.start_to_close,
    "heartbeat_timeout": POWER_TIMEOUTS.heartbeat,
    "retry_policy": RetryPolicy(
        maximum_interval=timedelta(minutes=10), non_retryable_error_types=["VmNotFound"]
    ),
}


def initial_state(start: SubscriptionInput) -> SubscriptionState:
    """The state of a service handed to hostlife: active, its terms fixed at start."""
    if start.spec is None or start.terms is None or start.clock is None:
        raise ValueError("a new subscription needs spec, terms and clock")
    spec, terms = start.spec, start.terms
    expires_on = spec.expires_on
    if terms.free_months_first_licence and spec.first_licence:
        expires_on = add_period(expires_on, f"P{terms.free_months_first_licence}M")
    return SubscriptionState(
        spec=spec,
        terms=terms,
        tld=start.tld,
        clock=start.clock,
        yearly_price=yearly_price_from(spec.price, spec.period, terms.monthly_surcharge_percent),
        price=spec.price,
        period=spec.period,
        expires_on=expires_on,
        invoice_currency=start.invoice_currency,
    )


def _require(request: object) -> None:
    """A `null` argument would pass a validator that never reads it and then fail the handler's task."""
    if request is None:
        raise ValueError("the request is missing (got null)")


@workflow.defn
class SubscriptionWorkflow(MoneyInMixin, OffersMixin, CommerceMixin, VpsRestoreMixin, PaymentPathMixin):
    @workflow.init
    def __init__(self, start: SubscriptionInput) -> None:
        self.new = start.state is None
        self.state = start.state if start.state is not None else initial_state(start)
        self.lock = asyncio.Lock()
        self.woken = False
        self.continue_pending = False
        self.upserted: dict[str, Any] = {}
        self.background: list[asyncio.Task[None]] = []

    # ---------------------------------------------------------------- run

    @workflow.run
    async def run(self, start: SubscriptionInput) -> SubscriptionResult:
        if self.new:
            self._record("state", {"state": self._shown_state().value, "reason": "service started"})
            self.state.shown_state = self._shown_state()
        self._commerce_start()
        if self.new and self._follows() is not None:
            await self._attach_to_domain()
        self._refresh()
        while (milestone := self._next_milestone()) is not None or not self._finished():
            if milestone is None:
                # A follower (DNS hosting) has no timeline of its own: it waits for its domain.
                self.woken = False
                await workflow.wait_condition(lambda: self.woken)
                if self._should_continue_as_new():
                    break
                continue
            if await self._sleep_until(self._instant(milestone)):
                if self._should_continue_as_new():
                    break
                continue
            async with self.lock:
                if self._next_milestone() != milestone:
                    continue
                await self._apply(milestone)
                self._refresh()
            if self._should_continue_as_new():
                break
        await workflow.wait_condition(self._commerce_idle)
        await self._background_done()
        if not self._finished() or self.continue_pending:
            self._continue_as_new()
        return SubscriptionResult(
            service_id=self.state.spec.service_id,
            final_state=self._shown_state(),
            expires_on=self.state.expires_on,
            renewals=self.state.renewals,
        )

    def _finished(self) -> bool:
        return self.state.billing_state in FINAL or (
            self._next_milestone() is None and self._follows() is None
        )

    def _follows(self) -> str | None:
        state = self.state
        return state.spec.follows if state.terms.kind is ProductKind.DNS else None

    def _should_continue_as_new(self) -> bool:
        return self.continue_pending or workflow.info().is_continue_as_new_suggested()

    def _continue_as_new(self) -> None:
        state = self.state
        state.journal = state.journal[-JOURNAL_LIMIT:]
        state.payments = dict(list(state.payments.items())[-PAYMENT_MEMORY:])
        state.invoices = state.invoices[-INVOICE_MEMORY:]
        state.runs += 1
        workflow.continue_as_new(SubscriptionInput(state=state))

    async def _sleep_until(self, at: datetime) -> bool:
        """Sleep until `at`; True when a message woke us first (the facts may have changed)."""
        delay = at - workflow.now()
        if delay <= timedelta(0):
            return False
        self.woken = False
        try:
            await workflow.wait_condition(lambda: self.woken, timeout=delay, timeout_summary=self._details())
        except TimeoutError:
            return False
        return True

    def _wake(self) -> None:
        self.woken = True

    # ---------------------------------------------------------------- time and timeline

    @property
    def clock(self) -> Clock:
        return self.state.clock

    def _today(self) -> date:
        return self.clock.today(workflow.now())

    def _instant(self, milestone: Milestone) -> datetime:
        return self.clock.instant(milestone.on, milestone.at)

    def _facts(self) -> CycleFacts:
        return CycleFacts(
            expires_on=self.state.expires_on,
            deferral_until=self.state.deferral_until,
            cancel_effective_on=self.state.cancel_effective_on,
            invoice_lead_days=self.state.spec.invoice_lead_days,
            auto_renew=self._auto_renew(),
        )

    def _auto_renew(self) -> bool:
        state = self.state
        return state.spec.auto_renew if state.auto_renew is None else state.auto_renew

    def _next_milestone(self) -> Milestone | None:
        state = self.state
        if state.billing_state in FINAL:
            return None
        if state.billing_state is ServiceState.DELETED:
            purge_on = state.backup_until or self._today()
            purge = Milestone(
                kind=MilestoneKind.PURGE,
                on=purge_on,
                at=state.terms.time_of("purge"),
                offset=(purge_on - state.expires_on).days,
            )
            return None if purge.key in state.done else purge
        if self._follows() is not None:
            return None  # its domain's state drives it
        return next_milestone(state.terms, self._facts(), state.done, state.tld)

    def _upcoming(self, limit: int = 6) -> list[Milestone]:
        state = self.state
        if state.billing_state in FINAL:
            return []
        if state.billing_state is ServiceState.DELETED:
            nxt = self._next_milestone()
            return [nxt] if nxt else []
        items = [m for m in timeline(state.terms, self._facts(), state.tld) if m.key not in state.done]
        return items[:limit]

    # ---------------------------------------------------------------- milestones

    async def _apply(self, milestone: Milestone) -> None:
        state = self.state
        # An overdue milestone (a service handed over late in its cycle) happens now, not in the past.
        at = max(self._instant(milestone), workflow.now())
        state.done.append(milestone.key)
        if is_stale(milestone, self._today()):
            self._record("skipped", {"milestone": milestone.kind.value, "reason": "overdue notice"}, at)
            return
        kind = milestone.kind
        open_renewal = self._open_invoice(InvoicePurpose.RENEWAL)
        if kind is MilestoneKind.AUTO_RENEW:
            await self._renew_from_credit(milestone, at)
        elif kind is MilestoneKind.ISSUE_INVOICE:
            if open_renewal is None:
                # Due on D; the fallback invoice after a failed automatic renewal (D+1) is due at once.
                due_on = max(state.expires_on, self.clock.today(at))
                period, amount = self._renewal_period(), self._renewal_amount()
                if state.terms.kind is ProductKind.DOMAIN and workflow.patched("domain-ten-year-cap"):
                    # SPEC §3.8: never more than 10 years paid ahead of the day it is paid.
                    years = min(
                        parse_period(period).years, max_renewal_years(state.expires_on, self.clock.today(at))
                    )
                    if years < 1:
                        self._record(
                            "skipped",
                            {"milestone": kind.value, "reason": "renewal would pay more than 10 years ahead"},
                            at,
                        )
                        return
                    if years != parse_period(period).years:
                        period, amount = f"P{years}Y", round_money(state.yearly_price * years)
                record = await self._issue_invoice(InvoicePurpose.RENEWAL, amount, due_on, at, period=period)
                await self._charge_stored_card(record, at)
        elif kind is MilestoneKind.REMINDER:
            if open_renewal is not None:
                await self._notify(
                    NoticeKind.REMINDER,
                    milestone.key,
                    at,
                    self._invoice_facts(open_renewal, days_before=-milestone.offset),
                )
        elif kind is MilestoneKind.EXPIRE:
            self._set_billing_state(ServiceState.EXPIRED, "unpaid after the expiry date", at)
            await self._notify(
                NoticeKind.SERVICE_EXPIRED, milestone.key, at, self._invoice_facts(open_renewal)
            )
        elif kind is MilestoneKind.BLOCK:
            self._set_billing_state(ServiceState.BLOCKED, "unpaid", at)
            await self._sync_power(at, milestone.key)
            await self._notify(
                NoticeKind.SERVICE_BLOCKED, milestone.key, at, self._invoice_facts(open_renewal)
            )
        elif kind is MilestoneKind.DELETION_WARNING:
            await self._notify(
                NoticeKind.DELETION_WARNING, milestone.key, at, self._invoice_facts(open_renewal)
            )
        elif kind is MilestoneKind.CANCEL:
            await self._cancel_open_invoices("service cancelled", at)
            self._set_billing_state(ServiceState.CANCELLED, "cancelled at the customer's request", at)
            await self._sync_power(at, milestone.key)
            await self._notify(NoticeKind.CANCELLED, milestone.key, at, self._base_facts())
        elif kind is MilestoneKind.DELETE:
            await self._delete(
                at, milestone.key, "unpaid" if state.cancel_effective_on is None else "cancelled"
            )
        elif kind is MilestoneKind.PURGE:
            await self._purge(at, milestone.key)
        elif kind is MilestoneKind.ZONE_REMOVE:
            self._record("registrar", {"action": "zone_remove"}, at)
            self._set_billing_state(ServiceState.OUTZONE, "removed from the DNS zone", at)
        elif kind in (MilestoneKind.REDEMPTION, MilestoneKind.QUARANTINE):
            await self._enter_paid_restore(kind, at, milestone.key)
        elif kind is MilestoneKind.RELEASE:
            await self._cancel_open_invoices("domain released by the registry", at)
            self._record("registrar", {"action": "release"}, at)
            self._set_billing_state(ServiceState.RELEASED, "released by the registry", at)

    async def _delete(self, at: datetime, key: str, reason: str, restorable: bool = True) -> None:
        state = self.state
        await self._cancel_open_invoices("service deleted", at)
        kept = True
        if (
            state.terms.on_hypervisor
            and restorable
            and state.terms.restore_allowed
            and state.terms.backup_retention_days > 0
            and workflow.patched("vps-provider-backup")
        ):
            kept = await self._keep_provider_backup(at, key)  # before the VM and its disks go
        await self._service_action("delete", at, key)
        if state.terms.on_hypervisor and workflow.patched("vps-backups-on-delete"):
            await self._tell_backups_vps_deleted(reason)
        today = self.clock.today(at)
        state.deleted_on = today
        retention = state.terms.backup_retention_days if (restorable and state.terms.restore_allowed) else 0
        state.restorable = restorable and state.terms.restore_allowed and retention > 0 and kept
        state.backup_until = today + timedelta(days=retention)
        state.powered_on = False
        self._set_billing_state(ServiceState.DELETED, reason, at)
        facts = self._base_facts().model_copy(
            update={"backup_until": state.backup_until if state.restorable else None}
        )
        await self._notify(NoticeKind.SERVICE_DELETED, key, at, facts)
        if state.restorable:
            await self._notify(
                NoticeKind.RESTORE_OFFER, key, at, facts.model_copy(update={"fee": self._restore_fee()})
            )

    async def _tell_backups_vps_deleted(self, reason: str) -> None:
        """The VPS's backups go with it (SPEC §5); its backups workflow removes them and ends."""
        handle = workflow.get_external_workflow_handle(vps_backups_workflow_id(self.state.spec.service_id))
        try:
            await handle.signal(VpsBackupsWorkflow.vps_deleted, VpsDeleted(reason=reason))
        except Exception as exc:  # no backups workflow (none was ordered, or it already ended)
            self._record("backups_not_told", {"error": str(exc)})

    async def _purge(self, at: datetime, key: str) -> None:
        await self._cancel_open_invoices("provider backup purged", at)
        await self._service_action("purge_backups", at, key)
        self.state.restorable = False
        self._set_billing_state(ServiceState.CLOSED, "provider backup purged", at)

    async def _enter_paid_restore(self, kind: MilestoneKind, at: datetime, key: str) -> None:
        state = self.state
        assert state.tld is not None
        await self._cancel_open_invoices(f"domain entered {kind.value}: only a paid restore renews it", at)
        target = ServiceState.REDEMPTION if kind is MilestoneKind.REDEMPTION else ServiceState.QUARANTINE
        self._set_billing_state(target, f"registry {kind.value} period", at)
        amount = round_money(state.price + state.tld.restore_fee)
        release_on = state.expires_on + timedelta(days=state.tld.release_day)
        await self._issue_invoice(InvoicePurpose.REDEMPTION, amount, release_on - timedelta(days=1), at)

    # ---------------------------------------------------------------- state

    def _shown_state(self) -> ServiceState:
        state = self.state
        if state.billing_state in GONE:
            return state.billing_state
        if state.suspension is not None:
            return ServiceState.SUSPENDED
        if state.parked and state.billing_state is ServiceState.ACTIVE:
            return ServiceState.PARKED
        return state.billing_state

    def _set_billing_state(self, new: ServiceState, reason: str, at: datetime) -> None:
        self.state.billing_state = new
        self._note_state(reason, at)

    def _note_state(self, reason: str, at: datetime | None = None) -> None:
        shown = self._shown_state()
        if shown != self.state.shown_state:
            self.state.shown_state = shown
            self._record("state", {"state": shown.value, "reason": reason}, at)
            workflow.logger.info(
                "service state changed",
                extra={"service_id": self.state.spec.service_id, "state": shown.value, "reason": reason},
            )
            self._tell_dependents()

    def _tell_dependents(self) -> None:
        """A domain's state reaches the DNS hosting that follows it (sent as signals, in order)."""
        state = self.state
        if state.terms.kind is not ProductKind.DOMAIN or not state.dependents:
            return
        fact = DomainStateChanged(
            domain_service_id=state.spec.service_id, state=self._shown_state(), expires_on=state.expires_on
        )
        for dependent in state.dependents:
            self._in_background(self._signal_dependent(dependent, fact))

    async def _signal_dependent(self, dependent: str, fact: DomainStateChanged) -> None:
        handle = workflow.get_external_workflow_handle(service_workflow_id(dependent))
        try:
            await handle.signal(SubscriptionWorkflow.domain_state_changed, fact)
        except Exception as exc:  # the dependent is gone: nothing left to tell
            workflow.logger.warning(
                "dependent not told", extra={"service_id": self.state.spec.service_id, "dependent": dependent}
            )
            self._record("dependent_gone", {"dependent": dependent, "error": str(exc)})

    async def _attach_to_domain(self) -> None:
        domain = self._follows()
        assert domain is not None
        handle = workflow.get_external_workflow_handle(service_workflow_id(domain))
        try:
            await handle.signal(
                SubscriptionWorkflow.attach_dependent,
                DependentAttached(service_id=self.state.spec.service_id),
            )
        except Exception as exc:
            self._record("action_failed", {"action": "follow domain", "error": str(exc)})
            self.state.failed_actions += 1

    def _record(self, kind: str, data: dict[str, Any], at: datetime | None = None) -> None:
        state = self.state
        state.journal_sequence += 1
        state.journal.append(
            JournalEntry(sequence=state.journal_sequence, at=at or workflow.now(), kind=kind, data=data)
        )
        if len(state.journal) > 2 * JOURNAL_LIMIT:
            state.journal = state.journal[-JOURNAL_LIMIT:]

    def _refresh(self) -> None:
        """Keep the Web UI current: search attributes (only when they change) and current details."""
        state = self.state
        wanted: dict[str, Any] = {
            sa.SERVICE_STATE.name: self._shown_state().value,
            sa.PRODUCT.name: state.spec.product,
            sa.PROFILE.name: state.spec.profile,
            sa.CUSTOMER_ID.name: state.spec.customer.id,
            sa.SERVICE_ID.name: state.spec.service_id,
            # A calendar date, so date filters work on a compressed demo clock too.
            sa.EXPIRES_ON.name: Clock(time_zone=self.clock.time_zone).instant(state.expires_on),
            sa.VARIABLE_SYMBOLS.name: [i.variable_symbol for i in state.invoices[-INVOICE_MEMORY:]],
            sa.NEEDS_ATTENTION.name: self._attention(),
        }
        keys = {key.name: key for key in sa.ALL}
        updates = [
            keys[name].value_set(value) for name, value in wanted.items() if self.upserted.get(name) != value
        ]
        if updates:
            workflow.upsert_search_attributes(updates)
            self.upserted.update(wanted)
        workflow.set_current_details(self._details())

    def _attention(self) -> str:
        """What ops should look at, as a filterable keyword ("" when all is well)."""
        problems = []
        if self.state.pending_registry_renewal is not None:
            problems.append("registry_refused")
        if self.state.failed_actions:
            problems.append("action_failed")
        if self.state.mail_failures:
            problems.append("mail_failing")
        return ",".join(problems)

    def _details(self) -> str:
        """One line that says what comes next, as ops read it in the Web UI."""
        state = self.state
        shown = self._shown_state()
        nxt = self._next_milestone()
        open_invoice = self._open_invoice()
        currency = (open_invoice.currency if open_invoice else None) or state.terms.currency
        pay = (
            f" unless VS {open_invoice.variable_symbol} ({open_invoice.amount} {currency}) is paid"
            if open_invoice
            else ""
        )
        if shown in FINAL:
            return f"{shown.value} — nothing left to do"
        if nxt is None:
            return f"{shown.value} — expires {state.expires_on}"
        when = f"{nxt.kind.value.replace('_', ' ')} on {nxt.on.isoformat()}"
        if shown is ServiceState.SUSPENDED and state.suspension:
            return f"suspended ({state.suspension.reason}) — {when}"
        if nxt.kind is MilestoneKind.PURGE:
            if state.restorable:
                return f"{shown.value} — restorable until {nxt.on.isoformat()}, then closed"
            return f"{shown.value} — closed on {nxt.on.isoformat()}"
        if shown in (
            ServiceState.EXPIRED,
            ServiceState.BLOCKED,
            ServiceState.OUTZONE,
            ServiceState.REDEMPTION,
            ServiceState.QUARANTINE,
        ):
            end = next(
                (m for m in self._upcoming(20) if m.kind in (MilestoneKind.DELETE, MilestoneKind.RELEASE)),
                None,
            )
            ending = f"{end.kind.value.replace('_', ' ')} on {end.on.isoformat()}" if end else when
            follow = f"; next: {when}" if end is not None and end != nxt else ""
            return f"{shown.value} — {ending}{pay}{follow}"
        if nxt.kind in (
            MilestoneKind.BLOCK,
            MilestoneKind.DELETE,
            MilestoneKind.RELEASE,
            MilestoneKind.EXPIRE,
        ):
            return f"{shown.value} — {when}{pay}"
        return f"{shown.value} until {state.expires_on} — next: {when}"

    # ---------------------------------------------------------------- side effects

    def _key(self, *parts: object) -> str:
        return ":".join([workflow.info().workflow_id, *(str(p) for p in parts)])

    def _open_invoice(self, purpose: InvoicePurpose | None = None) -> InvoiceRecord | None:
        return next(
            (
                i
                for i in reversed(self.state.invoices)
                if i.status is InvoiceState.OPEN and (purpose is None or i.purpose is purpose)
            ),
            None,
        )

    def _replace_invoice(self, updated: InvoiceRecord) -> None:
        self.state.invoices = [
            updated if i.variable_symbol == updated.variable_symbol else i for i in self.state.invoices
        ]

    def _renewal_period(self) -> str:
        return self.state.next_period or self.state.period

    def _renewal_amount(self) -> Decimal:
        return self._offers_renewal_amount(self._list_renewal_amount())

    def _list_renewal_amount(self) -> Decimal:
        state = self.state
        if state.parked and state.spec.parking_price is not None:
            return state.spec.parking_price
        if state.next_period and state.next_period != state.period:
            return price_for_period(
                state.yearly_price, state.next_period, state.terms.monthly_surcharge_percent
            )
        return state.price

    async def _issue_invoice(
        self, purpose: InvoicePurpose, amount: Decimal, due_on: date, at: datetime, period: str | None = None
    ) -> InvoiceRecord:
        state = self.state
        self._expect_payment(domain=state.terms.kind is ProductKind.DOMAIN)
        state.invoice_reissues += 1
        period = period or self._renewal_period()
        money = await self._invoice_money(amount, at)
        invoice = await workflow.execute_activity_method(
            BillingActivities.issue_invoice,
            IssueInvoiceInput(
                idempotency_key=self._key("invoice", purpose.value, state.expires_on, state.invoice_reissues),
                service_id=state.spec.service_id,
                customer_id=state.spec.customer.id,
                amount=money.amount,
                currency=money.currency,
                exchange_rate=money.exchange_rate,
                rate_source=money.rate_source,
                price_amount=money.price_amount,
                issued_on=self.clock.today(at),
                due_on=due_on,
                period=period,
                description=f"{state.terms.title} {state.spec.name or state.spec.service_id} ({purpose.value})",
            ),
            summary=f"issue {purpose.value} invoice of {money.amount} {money.currency} for {state.spec.service_id}",
            **BILLING_OPTIONS,
        )
        record = InvoiceRecord(
            variable_symbol=invoice.variable_symbol,
            amount=invoice.amount,
            issued_on=invoice.issued_on,
            due_on=invoice.due_on,
            purpose=purpose,
            period=period,
            **money.record_fields(),
        )
        state.invoices.append(record)
        self._record(
            "invoice",
            {
                "action": "issued",
                "vs": record.variable_symbol,
                "amount": str(record.amount),
                "due": record.due_on.isoformat(),
                "purpose": purpose.value,
                **(
                    {
                        "currency": record.currency,
                        "rate": str(record.exchange_rate),
                        "price_amount": str(record.price_amount),  # the price-currency figure (CZK)
                    }
                    if record.currency
                    else {}
                ),
            },
            at,
        )
        await self._notify(
            NoticeKind.INVOICE_ISSUED, f"invoice:{record.variable_symbol}", at, self._invoice_facts(record)
        )
        return record

    async def _cancel_invoice(self, invoice: InvoiceRecord, reason: str, at: datetime) -> None:
        await workflow.execute_activity_method(
            BillingActivities.cancel_invoice,
            CancelInvoiceInput(
                service_id=self.state.spec.service_id, variable_symbol=invoice.variable_symbol, reason=reason
            ),
            summary=f"cancel invoice VS {invoice.variable_symbol}: {reason}",
            **BILLING_OPTIONS,
        )
        self._replace_invoice(
            invoice.model_copy(update={"status": InvoiceState.CANCELLED, "cancel_reason": reason})
        )
        self._record(
            "invoice",
            {
                "action": "cancelled",
                "vs": invoice.variable_symbol,
                "amount": str(invoice.amount),
                "due": invoice.due_on.isoformat(),
                "reason": reason,
            },
            at,
        )

    async def _cancel_open_invoices(
        self, reason: str, at: datetime, purpose: InvoicePurpose | None = None
    ) -> None:
        for invoice in list(self.state.invoices):
            if invoice.status is InvoiceState.OPEN and (purpose is None or invoice.purpose is purpose):
                await self._cancel_invoice(invoice, reason, at)

    async def _notify(
        self,
        kind: NoticeKind,
        key: str,
        at: datetime,
        facts: NoticeFacts,
        journal_after: asyncio.Task[None] | None = None,
    ) -> None:
        """Mail a notice; its journal line waits for `journal_after` (a side effect sent beside it)."""
        state = self.state
        customer = state.spec.customer
        try:
            await workflow.execute_activity_method(
                MailActivities.send_notice,
                SendNoticeInput(
                    idempotency_key=self._key("mail", kind.value, key),
                    service_id=state.spec.service_id,
                    customer_id=customer.id,
                    to=customer.email,
                    language=customer.language,
                    template=kind,
                    facts=facts,
                ),
                summary=f"mail {kind.value} to {customer.email}",
                **MAIL_OPTIONS,
            )
        except ActivityError as exc:
            if journal_after is not None:
                await journal_after
            state.mail_failures += 1
            state.last_error = f"mail {kind.value} failed: {exc.cause or exc}"
            self._record(
                "mail_failed", {"template": kind.value, "to": customer.email, "error": str(exc.cause)}, at
            )
            workflow.logger.warning("notice not delivered", extra={"service_id": state.spec.service_id})
            return
        if journal_after is not None:
            await journal_after
        self._record("mail", {"template": kind.value, "to": customer.email}, at)

    async def _service_action(self, action: str, at: datetime, key: str) -> None:
        """Switch the service off/on, delete it or purge its backup, on whatever runs it.

        Retryable failures are retried by the activity's policy without limit; what is left (a
        non-retryable refusal such as an unknown VM) must not stop the lifecycle: it is recorded,
        flagged for ops in the `HostlifeAttention` search attribute, and the life goes on.
        """
        try:
            await self._perform_service_action(action, at, key)
        except ActivityError as exc:
            self._action_failed(action, exc, at)

    def _action_failed(self, action: str, exc: ActivityError, at: datetime) -> None:
        state = self.state
        state.failed_actions += 1
        state.last_error = f"{action} failed: {exc.cause or exc}"
        self._record("action_failed", {"action": action, "error": str(exc.cause or exc)}, at)
        workflow.logger.error(
            "service action failed", extra={"service_id": state.spec.service_id, "action": action}
        )

    async def _perform_service_action(self, action: str, at: datetime, key: str) -> None:
        state = self.state
        terms = state.terms
        if terms.kind is ProductKind.DOMAIN:
            return
        if terms.on_hypervisor and action == "purge_backups" and state.provider_backup is not None:
            await self._purge_provider_backup(at, key)
            return
        if terms.on_hypervisor:
            vm_activity = {
                "block": HypervisorActivities.power_off_vm,
                "unblock": HypervisorActivities.power_on_vm,
                "delete": HypervisorActivities.delete_vm,
                "park": HypervisorActivities.park_vm,
                "unpark": HypervisorActivities.unpark_vm,
                "restore": HypervisorActivities.power_on_vm,
            }.get(action)
            vm_action = {"block": "power_off", "unblock": "power_on", "restore": "restore"}.get(
                action, action
            )
            if vm_activity is not None:
                await workflow.execute_activity_method(
                    vm_activity,
                    VmActionInput(
                        idempotency_key=self._key("vm", action, key),
                        service_id=state.spec.service_id,
                        node=state.spec.node,
                        vm_name=state.spec.name or state.spec.service_id,
                        addons=[f"{state.spec.service_id}-mail", f"{state.spec.service_id}-backup"],
                    ),
                    task_queue=node_task_queue(state.spec.node),
                    summary=f"{vm_action.replace('_', ' ')} VPS {state.spec.service_id} on {state.spec.node}",
                    **HYPERVISOR_OPTIONS,
                )
                self._record("hypervisor", {"action": vm_action, "node": state.spec.node}, at)
                return
            if action != "purge_backups":
                return
        platform_activity = {
            "block": PlatformActivities.block_service,
            "unblock": PlatformActivities.unblock_service,
            "delete": PlatformActivities.delete_service,
            "purge_backups": PlatformActivities.purge_backups,
            "restore": PlatformActivities.restore_service,
        }.get(action)
        if platform_activity is None:
            return
        subservers = state.spec.subservers if terms.cascade_to_subservers else []
        await workflow.execute_activity_method(
            platform_activity,
            PlatformActionInput(
                idempotency_key=self._key("platform", action, key),
                service_id=state.spec.service_id,
                product=state.spec.product,
                subservers=subservers,
                mail_bounces=terms.mail_bounces_when_blocked,
            ),
            summary=f"{action.replace('_', ' ')} {terms.title} {state.spec.service_id}"
            + (f" and {len(subservers)} subservers" if subservers else ""),
            **PLATFORM_OPTIONS,
        )
        self._record("platform", {"action": action, "targets": [state.spec.service_id, *subservers]}, at)

    async def _sync_power(self, at: datetime, key: str) -> None:
        """Switch the service on or off so that it matches its state."""
        state = self.state
        if state.terms.kind is ProductKind.DOMAIN or state.billing_state in GONE:
            return
        should_run = (
            state.billing_state in (ServiceState.ACTIVE, ServiceState.EXPIRED)
            and state.suspension is None
            and not state.parked
        )
        if should_run == state.powered_on:
            return
        await self._service_action("unblock" if should_run else "block", at, key)
        state.powered_on = should_run

    # ---------------------------------------------------------------- facts for notices

    def _base_facts(self) -> NoticeFacts:
        state = self.state
        delete_on = deletion_day(state.terms, state.expires_on)
        return NoticeFacts(
            service_name=state.spec.name or state.spec.service_id,
            product=state.terms.title,
            expires_on=state.expires_on,
            currency=state.terms.currency,
            block_on=block_day(state.terms, self._facts()),
            deletion_on=delete_on,
        )

    def _invoice_facts(self, invoice: InvoiceRecord | None, days_before: int | None = None) -> NoticeFacts:
        facts = self._base_facts()
        if invoice is None:
            return facts
        return facts.model_copy(
            update={
                "currency": invoice.currency or facts.currency,
                "variable_symbol": invoice.variable_symbol,
                "amount": invoice.amount,
                "due_on": invoice.due_on,
                "days_before": days_before,
                "purpose": invoice.purpose.value,
            }
        )

    def _restore_fee(self) -> Decimal:
        state = self.state
        terms = state.terms
        fee = terms.restore_fee
        if terms.restore_fee_per_subserver:
            fee = fee * max(1, len(state.spec.subservers))
        if terms.restore_support_hours:
            days = (self._today() - (state.deleted_on or self._today())).days
            hours = terms.restore_support_hours + max(0, math.ceil((days - 30) / 30))
            fee += terms.support_hour_rate * hours
        return round_money(fee)

    # ---------------------------------------------------------------- payments

    @workflow.signal
    async def payment_received(self, payment: PaymentReceived) -> None:
        """What payment systems send. The outcome is in the journal and the billing ledger."""
        await self._take_payment(payment)

    @workflow.update
    async def submit_payment(self, request: PaymentRequest) -> PaymentOutcome:
        """The same as the signal, for callers that need the outcome."""
        payment = PaymentReceived(
            payment_id=request.payment_id,
            variable_symbol=request.variable_symbol,
            amount=request.amount,
            received_at=request.received_at or workflow.now(),
        )
        payment.currency = request.currency or self._invoice_currency_of(payment.variable_symbol)
        return await self._take_payment(payment)

    def _invoice_currency_of(self, variable_symbol: str) -> str:
        """The currency of the invoice with this VS (the price currency when none matches)."""
        invoice = next((i for i in self.state.invoices if i.variable_symbol == variable_symbol), None)
        return (invoice.currency if invoice else None) or self.state.terms.currency

    @submit_payment.validator
    def _validate_payment(self, request: PaymentRequest) -> None:
        _require(request)
        normalize_variable_symbol(request.variable_symbol)
        if request.amount <= 0:
            raise ValueError(f"amount must be positive, got {request.amount}")

    async def _take_payment(self, payment: PaymentReceived) -> PaymentOutcome:
        async with self.lock:
            outcome = await self._decide_and_apply(payment)
            self._refresh()
        self._wake()
        return outcome

    async def _decide_and_apply(self, payment: PaymentReceived) -> PaymentOutcome:
        state = self.state
        at = workflow.now()
        decision = decide_payment(
            payment.variable_symbol,
            payment.amount,
            state.invoices,
            service_gone=state.billing_state in GONE,
            already_seen=state.payments.get(payment.payment_id),
            currency=payment.currency if workflow.patched("payment-currency-check") else None,
            price_currency=state.terms.currency,
        )
        outcome = PaymentOutcome(
            payment_id=payment.payment_id,
            result=decision.result,
            reason=decision.reason,
            variable_symbol=payment.variable_symbol,
            amount=payment.amount,
            service_id=state.spec.service_id,
        )
        line = {
            "result": decision.result.value,
            "reason": decision.reason,
            "vs": payment.variable_symbol,
            "amount": str(payment.amount),
            "payment_id": payment.payment_id,
        }
        if decision.result is PaymentResult.DUPLICATE:
            self._record("payment", line, at)
            return outcome
        state.payments[payment.payment_id] = decision.result
        if decision.result is PaymentResult.HELD:
            await workflow.execute_activity_method(
                BillingActivities.hold_payment,
                HoldPaymentInput(
                    payment=payment,
                    reason=decision.reason,
                    service_id=state.spec.service_id,
                    customer_id=state.spec.customer.id,
                ),
                summary=f"hold payment {payment.payment_id} for the billing department: {decision.reason}",
                **BILLING_OPTIONS,
            )
            self._record("payment", line, at)
            await self._tell_payer(NoticeKind.PAYMENT_HELD, payment, decision.reason, at, with_vs=True)
            return outcome
        if decision.result is PaymentResult.RETURNED:
            await workflow.execute_activity_method(
                BillingActivities.return_payment,
                ReturnPaymentInput(payment=payment, reason=decision.reason, service_id=state.spec.service_id),
                summary=f"return payment {payment.payment_id} to the payer: {decision.reason}",
                **BILLING_OPTIONS,
            )
            self._record("payment", line, at)
            await self._tell_payer(NoticeKind.PAYMENT_RETURNED, payment, decision.reason, at)
            return outcome
        invoice = decision.invoice
        assert invoice is not None
        await self._mark_invoice_paid(
            MarkInvoicePaidInput(
                service_id=state.spec.service_id,
                variable_symbol=invoice.variable_symbol,
                payment_id=payment.payment_id,
            ),
            summary=f"mark invoice VS {invoice.variable_symbol} paid by {payment.payment_id}",
        )
        self._replace_invoice(invoice.model_copy(update={"status": InvoiceState.PAID}))
        self._record("payment", line, at)
        self._record(
            "invoice",
            {
                "action": "paid",
                "vs": invoice.variable_symbol,
                "amount": str(invoice.amount),
                "due": invoice.due_on.isoformat(),
            },
            at,
        )
        if invoice.purpose is InvoicePurpose.UNBLOCK_FEE:
            await self._fee_paid(at, payment.payment_id)
        elif invoice.purpose is InvoicePurpose.RESTORE and self.state.terms.on_hypervisor:
            await self._vps_restore_paid(invoice, at, payment.payment_id)
        elif invoice.purpose is InvoicePurpose.RESTORE:
            await self._restore_paid(invoice, at, payment.payment_id)
        elif invoice.purpose in COMMERCE_PURPOSES:
            await self._commerce_invoice_paid(invoice, at, payment.payment_id)
        elif invoice.purpose is InvoicePurpose.MAIL_RESTORE:
            await self._mail_restore_paid(invoice, at, payment.payment_id)
        else:
            await self._renew(invoice.period, at, f"payment:{payment.payment_id}", invoice)
        return outcome

    async def _tell_payer(
        self, kind: NoticeKind, payment: PaymentReceived, reason: str, at: datetime, with_vs: bool = False
    ) -> None:
        """The customer learns what became of a payment that did not renew anything."""
        update: dict[str, Any] = {
            "amount": payment.amount,
            "reason": reason,
            "payment_id": payment.payment_id,
        }
        if with_vs:
            update["variable_symbol"] = payment.variable_symbol
        await self._notify(
            kind, f"payment:{payment.payment_id}", at, self._base_facts().model_copy(update=update)
        )

    async def _renew(
        self,
        period: str,
        at: datetime,
        key: str,
        invoice: InvoiceRecord | None = None,
        reason: str = "renewed by payment",
        amount: Decimal | None = None,
    ) -> None:
        """Renew from D, never from the payment date (SPEC §3.1); switch back on if blocked.

        A domain is extended at its registry first (only after payment, SPEC §4). If the registry
        refuses, D stays where the registry keeps it: the paid renewal waits for ops
        (`retry_registry_renewal`) and the service is flagged, instead of pretending it was renewed.
        """
        state = self.state
        new_expiry: date | None = None
        if state.terms.kind is ProductKind.DOMAIN:
            redemption = invoice is not None and invoice.purpose is InvoicePurpose.REDEMPTION
            try:
                new_expiry = await self._extend_at_registry(redemption, period, at)
            except ActivityError as exc:
                self._action_failed("registrar renew", exc, at)
                state.pending_registry_renewal = period
                state.pending_registry_redemption = redemption
                return
            expected = add_years(state.expires_on, max(1, parse_period(period).years))
            if abs((new_expiry - expected).days) > 1:
                # A registry answer we cannot believe must not move D (into the past, say): flag it.
                self._record(
                    "action_failed",
                    {
                        "action": "registrar renew",
                        "error": f"registry reports expiry {new_expiry}, expected {expected}",
                    },
                    at,
                )
                state.failed_actions += 1
                state.pending_registry_renewal = period
                state.pending_registry_redemption = redemption
                return
        if period != state.period:
            state.price = price_for_period(state.yearly_price, period, state.terms.monthly_surcharge_percent)
            state.period = period
        state.next_period = None
        self._offers_renewing(period, at)
        if new_expiry is not None and workflow.patched("domain-expiry-from-registry"):
            state.expires_on = new_expiry  # the registry's word, e.g. 29 Feb renewed to 28 Feb
        elif workflow.patched("renewal-anchor-day"):
            # Renew onto the day of the month the service started on, so monthly D never drifts.
            state.expires_on = add_period(state.expires_on, period, anchor_day=state.spec.expires_on.day)
        else:
            state.expires_on = add_period(state.expires_on, period)
        state.done = []
        state.deferral_until = None
        state.pending_registry_renewal = None
        state.renewals += 1
        self._record("renewed", {"expires_on": state.expires_on.isoformat(), "period": period}, at)
        self._set_billing_state(ServiceState.ACTIVE, reason, at)
        facts = (
            self._invoice_facts(invoice)
            if invoice is not None
            else self._base_facts().model_copy(update={"amount": amount})
        ).model_copy(update={"expires_on": state.expires_on})
        beside = self._receipt_beside_power_on()
        if beside:
            self.continue_pending = self.continue_pending or self._continue_after_renewal()
        if beside and not self.continue_pending:
            # Both scheduled in this workflow task: the power-on first, then the receipt, whose
            # journal line still follows the power-on's. The caller waits for the power-on only.
            power = asyncio.create_task(self._sync_power(at, f"renew:{key}"))
            self._in_background(
                self._notify(NoticeKind.PAYMENT_RECEIVED, key, at, facts, journal_after=power)
            )
            await power
            return
        # Old runs, or the run ends right after: the answer waits for the receipt, so that nobody
        # asking the service about this payment catches it between two runs.
        await self._sync_power(at, f"renew:{key}")
        await self._notify(NoticeKind.PAYMENT_RECEIVED, key, at, facts)
        if not beside:
            self.continue_pending = self.continue_pending or self._continue_after_renewal()

    async def _extend_at_registry(self, redemption: bool, period: str, at: datetime) -> date:
        """Extend at the registry only after payment (SPEC §4); a paid redemption restores first."""
        state = self.state
        if redemption:
            await workflow.execute_activity_method(
                RegistrarActivities.restore_domain,
                RestoreDomainInput(
                    idempotency_key=self._key("registrar", "restore", state.expires_on),
                    service_id=state.spec.service_id,
                    domain_name=state.spec.name,
                ),
                summary=f"restore {state.spec.name} out of {state.billing_state.value}",
                **REGISTRAR_OPTIONS,
            )
            self._record("registrar", {"action": "redemption_restore"}, at)
        years = max(1, parse_period(period).years)
        result = await workflow.execute_activity_method(
            RegistrarActivities.renew_domain,
            RenewDomainInput(
                idempotency_key=self._key("registrar", "renew", state.expires_on),
                service_id=state.spec.service_id,
                domain_name=state.spec.name,
                current_expiry=state.expires_on,
                years=years,
            ),
            summary=f"renew {state.spec.name} for {years} year(s) from {state.expires_on}",
            **REGISTRAR_OPTIONS,
        )
        self._record("registrar", {"action": "renew", "expires_on": result.new_expiry.isoformat()}, at)
        if state.billing_state is ServiceState.OUTZONE:
            self._record("registrar", {"action": "zone_restore"}, at)
        return result.new_expiry

    async def _renew_from_credit(self, milestone: Milestone, at: datetime) -> None:
        """SPEC §3.9: debit the credit account; no invoice. A shortfall is retried the next day."""
        state = self.state
        price = self._renewal_amount()
        amount, converted = await self._credit_amount(price, at)
        customer = state.spec.customer.id
        try:
            result = await workflow.execute_activity_method(
                AccountActivities.debit_credit,
                DebitCreditInput(
                    # One key per cycle: the daily retries of a short debit can never take money twice.
                    idempotency_key=self._key("credit", state.expires_on),
                    customer_id=customer,
                    amount=amount,
                    currency=state.terms.credit_currency,
                    service_id=state.spec.service_id,
                    reason=f"automatic renewal of {state.spec.service_id} from {state.expires_on}",
                    limits=CreditLimits.from_terms(state.terms),
                ),
                summary=f"debit {amount} from the credit of customer {customer} to renew {state.spec.service_id}",
                **CREDIT_OPTIONS,
            )
        except ActivityError as exc:
            self._action_failed("credit debit", exc, at)
            return
        line = {"customer": customer, "amount": str(amount), "balance": str(result.balance)}
        if converted is not None:
            line.update(currency=state.terms.credit_currency, converted=converted)
        if not result.ok:
            last_attempt = milestone.offset >= 0
            # Daily retries: the journal notes a shortfall when it first appears, changes, or finally fails.
            if last_attempt or state.credit_missing != result.missing:
                self._record("credit", {"action": "debit_failed", **line, "missing": str(result.missing)}, at)
            state.credit_missing = result.missing
            if last_attempt:
                await self._notify(
                    NoticeKind.AUTO_RENEW_FAILED,
                    milestone.key,
                    at,
                    self._base_facts().model_copy(
                        update={
                            "amount": amount,
                            "currency": state.terms.credit_currency,
                            "reason": f"the credit lacks {result.missing}",
                        }
                    ),
                )
            return
        self._record("credit", {"action": "debit", **line}, at)
        state.credit_missing = None
        await self._cancel_open_invoices("paid from credit", at, InvoicePurpose.RENEWAL)
        await self._renew(
            self._renewal_period(),
            at,
            f"credit:{state.expires_on}",
            reason="renewed from credit",
            amount=price,
        )

    async def _restore_paid(self, invoice: InvoiceRecord, at: datetime, payment_id: str) -> None:
        state = self.state
        await self._service_action("restore", at, f"restore:{payment_id}")
        today = self.clock.today(at)
        state.expires_on = add_period(today - timedelta(days=1), invoice.period)
        state.period = invoice.period
        state.done = []
        state.deleted_on = None
        state.backup_until = None
        state.cancel_effective_on = None
        state.powered_on = True
        state.renewals += 1
        self._record("renewed", {"expires_on": state.expires_on.isoformat(), "period": invoice.period}, at)
        self._set_billing_state(ServiceState.ACTIVE, "restored from backup", at)
        await self._notify(NoticeKind.RESTORED, f"payment:{payment_id}", at, self._base_facts())
        self.continue_pending = self.continue_pending or self._continue_after_renewal()

    async def _fee_paid(self, at: datetime, payment_id: str) -> None:
        suspension = self.state.suspension
        if suspension is None:
            return
        suspension.fee_variable_symbol = None
        if suspension.remedy_declared:
            await self._lift_suspension(at, f"fee:{payment_id}")

    async def _lift_suspension(self, at: datetime, key: str) -> None:
        self.state.suspension = None
        self._note_state("suspension lifted", at)
        await self._sync_power(at, key)
        await self._notify(NoticeKind.SUSPENSION_LIFTED, key, at, self._base_facts())

    # ---------------------------------------------------------------- a DNS hosting following its domain

    @workflow.signal
    async def attach_dependent(self, request: DependentAttached) -> None:
        """A DNS hosting starts following this domain; it is told the current state at once."""
        async with self.lock:
            if request.service_id not in self.state.dependents:
                self.state.dependents.append(request.service_id)
                self._record("dependent", {"service": request.service_id})
            fact = DomainStateChanged(
                domain_service_id=self.state.spec.service_id,
                state=self._shown_state(),
                expires_on=self.state.expires_on,
            )
            self._in_background(self._signal_dependent(request.service_id, fact))

    @workflow.signal
    async def domain_state_changed(self, fact: DomainStateChanged) -> None:
        """SPEC §4: DNS hosting follows its domain. Out of the zone: records keep resolving but cannot
        be edited (blocked); released: the zone is deleted, its records history kept for restore."""
        async with self.lock:
            state = self.state
            if state.billing_state in GONE or fact.domain_service_id != self._follows():
                return
            at = workflow.now()
            state.expires_on = fact.expires_on
            reason = f"domain {fact.domain_service_id} is {fact.state.value}"
            if fact.state in (ServiceState.RELEASED, ServiceState.DELETED, ServiceState.CLOSED):
                await self._delete(at, f"domain:{fact.state.value}:{fact.expires_on}", reason)
            elif fact.state in (ServiceState.OUTZONE, ServiceState.REDEMPTION, ServiceState.QUARANTINE):
                self._set_billing_state(ServiceState.BLOCKED, reason, at)
                await self._sync_power(at, f"domain:{fact.state.value}:{fact.expires_on}")
            else:
                self._set_billing_state(ServiceState.ACTIVE, reason, at)
                await self._sync_power(at, f"domain:{fact.state.value}:{fact.expires_on}")
            self._refresh()
        self._wake()

    # ---------------------------------------------------------------- commands

    def _refuse_if_gone(self) -> None:
        if self.state.billing_state in GONE:
            raise ValueError(f"service {self.state.spec.service_id} is {self.state.billing_state.value}")

    @workflow.update
    async def billing_details_changed(self, request: BillingDetailsChanged) -> CommandResult:
        """SPEC §3.4: every open invoice is cancelled and re-issued with a new variable symbol."""
        async with self.lock:
            at = workflow.now()
            reissued: list[tuple[InvoiceRecord, InvoiceRecord]] = []
            for old in [i for i in self.state.invoices if i.status is InvoiceState.OPEN]:
                reissued.append((old, await self._reissue(old, request.reason, at)))
            self._refresh()
        self._wake()
        if not reissued:
            return CommandResult(message="no open invoice; nothing re-issued")
        return CommandResult(
            message="; ".join(
                f"invoice VS {old.variable_symbol} cancelled, re-issued as VS {new.variable_symbol}"
                for old, new in reissued
            ),
            variable_symbol=reissued[-1][1].variable_symbol,
            amount=reissued[-1][1].amount,
        )

    async def _reissue(self, old: InvoiceRecord, reason: str, at: datetime) -> InvoiceRecord:
        await self._cancel_invoice(old, reason, at)
        # An invoice in another currency is converted again from its price, at the new day's rate.
        new = await self._issue_invoice(
            old.purpose, old.price_amount or old.amount, old.due_on, at, period=old.period
        )
        suspension = self.state.suspension
        if suspension is not None and suspension.fee_variable_symbol == old.variable_symbol:
            suspension.fee_variable_symbol = new.variable_symbol
        return new

    @billing_details_changed.validator
    def _validate_billing_changed(self, request: BillingDetailsChanged) -> None:
        _require(request)
        self._refuse_if_gone()

    @workflow.update
    async def change_period(self, request: ChangePeriod) -> CommandResult:
        """Yearly ↔ monthly, effective from the current D: the next invoice is for the new period."""
        async with self.lock:
            at = workflow.now()
            period = str(parse_period(request.period))
            self.state.next_period = period
            message = f"next period {period} from {self.state.expires_on + timedelta(days=1)}"
            old = self._open_invoice(InvoicePurpose.RENEWAL)
            if old is not None:
                await self._cancel_invoice(old, f"period changed to {period}", at)
                new = await self._issue_invoice(
                    InvoicePurpose.RENEWAL, self._renewal_amount(), old.due_on, at
                )
                message += f"; invoice re-issued as VS {new.variable_symbol} for {new.amount}"
            self._refresh()
        self._wake()
        return CommandResult(message=message)

    @change_period.validator
    def _validate_change_period(self, request: ChangePeriod) -> None:
        _require(request)
        self._refuse_if_gone()
        period = str(parse_period(request.period))
        if period not in self.state.terms.periods:
            allowed = ", ".join(self.state.terms.periods)
            raise ValueError(f"{self.state.terms.title} cannot be billed for {period}; allowed: {allowed}")
        if period == self._renewal_period():
            raise ValueError(f"the service is already billed for {period}")

    @workflow.update
    async def cancel(self, request: CancelRequest) -> CommandResult:
        """End the service at the customer's request, on a date or on D."""
        async with self.lock:
            at = workflow.now()
            effective = request.on or self.state.expires_on
            self.state.cancel_effective_on = effective
            if effective <= self.state.expires_on:
                await self._cancel_open_invoices(
                    "service cancelled by the customer", at, InvoicePurpose.RENEWAL
                )
            self._record(
                "cancel_requested", {"effective_on": effective.isoformat(), "reason": request.reason}, at
            )
            self._refresh()
        self._wake()
        return CommandResult(message=f"service ends after {effective}, then it is deleted")

    @cancel.validator
    def _validate_cancel(self, request: CancelRequest) -> None:
        _require(request)
        self._refuse_if_gone()
        today = self._today()
        if request.on is not None and request.on < today:
            raise ValueError(f"cannot cancel on {request.on}: that day has passed (today is {today})")
        minimum = self.state.terms.minimum_months
        if minimum:
            # The first paid month ends on the starting expiry date; the minimum ends minimum-1 months later.
            earliest = (
                add_period(self.state.spec.expires_on, f"P{minimum - 1}M")
                if minimum > 1
                else self.state.spec.expires_on
            )
            effective = request.on or self.state.expires_on
            if effective < earliest:
                raise ValueError(
                    f"{self.state.terms.title} has a minimum of {minimum} months; the earliest end is {earliest}"
                )

    @workflow.update
    async def suspend_for_abuse(self, request: SuspendRequest) -> CommandResult:
        """SPEC §5: suspend (open-ended); a severe case deletes without suspension."""
        async with self.lock:
            at = workflow.now()
            state = self.state
            today = self._today()
            if request.severe:
                self._record("abuse", {"severe": True, "reason": request.reason}, at)
                await self._delete(
                    at, f"abuse:{today}", f"severe violation: {request.reason}", restorable=False
                )
                self._refresh()
                self._wake()
                return CommandResult(message="deleted without suspension (severe violation)")
            window = timedelta(days=state.terms.abuse_repeat_window_days)
            repeat = any(today - earlier <= window for earlier in state.suspensions_on)
            state.suspensions_on = [*state.suspensions_on[-9:], today]
            state.suspension = Suspension(reason=request.reason, since=today, repeat=repeat)
            self._note_state(f"abuse: {request.reason}", at)
            await self._sync_power(at, f"suspend:{today}:{len(state.suspensions_on)}")
            fee = state.terms.abuse_unblock_fee if repeat else Decimal("0.00")
            await self._notify(
                NoticeKind.SUSPENDED,
                f"suspend:{today}:{len(state.suspensions_on)}",
                at,
                self._base_facts().model_copy(
                    update={"reason": request.reason, "fee": fee if repeat else None}
                ),
            )
            self._refresh()
        self._wake()
        return CommandResult(
            message="suspended"
            + (f"; repeat within the window: unblock fee {fee}" if repeat else "; first case, free")
        )

    @suspend_for_abuse.validator
    def _validate_suspend(self, request: SuspendRequest) -> None:
        _require(request)
        self._refuse_if_gone()
        if self.state.suspension is not None and not request.severe:
            raise ValueError(
                f"already suspended since {self.state.suspension.since}: {self.state.suspension.reason}"
            )

    @workflow.update
    async def resolve_abuse(self, request: ResolveRequest) -> CommandResult:
        """The customer declared the remedy: lift, or first issue the unblock fee for a repeat."""
        async with self.lock:
            at = workflow.now()
            state = self.state
            suspension = state.suspension
            assert suspension is not None
            suspension.remedy_declared = True
            if (
                suspension.repeat
                and suspension.fee_variable_symbol is None
                and state.terms.abuse_unblock_fee > 0
            ):
                fee_paid = any(
                    i.purpose is InvoicePurpose.UNBLOCK_FEE
                    and i.status is InvoiceState.PAID
                    and i.issued_on >= suspension.since
                    for i in state.invoices
                )
                if not fee_paid:
                    invoice = await self._issue_invoice(
                        InvoicePurpose.UNBLOCK_FEE,
                        state.terms.abuse_unblock_fee,
                        self._today() + timedelta(days=14),
                        at,
                    )
                    suspension.fee_variable_symbol = invoice.variable_symbol
                    self._refresh()
                    self._wake()
                    return CommandResult(
                        message="remedy noted; the suspension lifts when the unblock fee is paid",
                        variable_symbol=invoice.variable_symbol,
                        amount=invoice.amount,
                    )
            if suspension.fee_variable_symbol is not None:
                self._refresh()
                return CommandResult(
                    message=f"remedy noted; waiting for unblock fee VS {suspension.fee_variable_symbol}"
                )
            await self._lift_suspension(at, f"resolve:{suspension.since}:{len(state.suspensions_on)}")
            self._refresh()
        self._wake()
        return CommandResult(message="suspension lifted")

    @resolve_abuse.validator
    def _validate_resolve(self, request: ResolveRequest) -> None:
        _require(request)
        self._refuse_if_gone()
        if self.state.suspension is None:
            raise ValueError("the service is not suspended")

    @workflow.update
    async def grant_deferral(self, request: DeferralRequest) -> CommandResult:
        """Hostico: payment deferred up to 14 days after the due date; support may grant more."""
        async with self.lock:
            until = self.state.expires_on + timedelta(days=request.days)
            self.state.deferral_until = until
            at = workflow.now()
            self._record("deferral", {"until": until.isoformat(), "by_support": request.by_support}, at)
            if self.state.billing_state is ServiceState.BLOCKED and self._today() <= until:
                self._set_billing_state(ServiceState.EXPIRED, f"payment deferred until {until}", at)
                await self._sync_power(at, f"deferral:{until}")
            await self._notify(
                NoticeKind.DEFERRAL_GRANTED,
                f"deferral:{until}",
                at,
                self._base_facts().model_copy(update={"due_on": until}),
            )
            self._refresh()
        self._wake()
        return CommandResult(
            message=f"payment deferred until {until}; block moves to {until + timedelta(days=1)}"
        )

    @grant_deferral.validator
    def _validate_deferral(self, request: DeferralRequest) -> None:
        _require(request)
        self._refuse_if_gone()
        terms = self.state.terms
        if terms.deferral_max_days == 0 and not request.by_support:
            raise ValueError(f"profile {terms.profile} has no payment deferral")
        if request.days > terms.deferral_max_days and not request.by_support:
            raise ValueError(
                f"a deferral is at most {terms.deferral_max_days} days after the due date; ask support"
            )
        if self._open_invoice(InvoicePurpose.RENEWAL) is None:
            raise ValueError("there is no open invoice to defer")
        if self.state.expires_on + timedelta(days=request.days) >= deletion_day(terms, self.state.expires_on):
            raise ValueError("a deferral cannot reach the deletion day")

    @workflow.update
    async def renew_for(self, request: RenewFor) -> CommandResult:
        """A domain renewed for 1–10 years: the open renewal invoice is re-issued for that period."""
        async with self.lock:
            at = workflow.now()
            state = self.state
            period = f"P{request.years}Y"
            old = self._open_invoice(InvoicePurpose.RENEWAL)
            if old is not None:
                await self._cancel_invoice(old, f"renewal changed to {request.years} years", at)
            due_on = max(state.expires_on, self._today())
            invoice = await self._issue_invoice(
                InvoicePurpose.RENEWAL,
                round_money(state.yearly_price * request.years),
                due_on,
                at,
                period=period,
            )
            self._refresh()
        self._wake()
        return CommandResult(
            message=f"renewal for {request.years} years: pay VS {invoice.variable_symbol}",
            variable_symbol=invoice.variable_symbol,
            amount=invoice.amount,
        )

    @renew_for.validator
    def _validate_renew_for(self, request: RenewFor) -> None:
        _require(request)
        self._refuse_if_gone()
        state = self.state
        if state.terms.kind is not ProductKind.DOMAIN or state.tld is None:
            raise ValueError(f"{state.terms.title} is not a domain; its period is changed with change_period")
        if state.billing_state in (ServiceState.REDEMPTION, ServiceState.QUARANTINE):
            paid_restore = self._open_invoice(InvoicePurpose.REDEMPTION)
            vs = f" (VS {paid_restore.variable_symbol})" if paid_restore else ""
            raise ValueError(
                f"the domain is in {state.billing_state.value}: only the paid restore{vs} renews it"
            )
        if renewal_path_on(state.tld, state.expires_on, self._today()) is RenewalPath.NONE:
            raise ValueError("the registry no longer renews this domain")
        check_domain_renewal(state.expires_on, self._today(), request.years)

    @workflow.update
    async def set_auto_renew(self, request: AutoRenewSetting) -> CommandResult:
        """Switch renewal from the credit account on or off (SPEC §3.9), from the next attempt on."""
        async with self.lock:
            self.state.auto_renew = request.enabled
            self._record("auto_renew", {"enabled": request.enabled}, workflow.now())
            self._refresh()
        self._wake()
        return CommandResult(message=f"automatic renewal from credit {'on' if request.enabled else 'off'}")

    @set_auto_renew.validator
    def _validate_auto_renew(self, request: AutoRenewSetting) -> None:
        _require(request)
        self._refuse_if_gone()
        if request.enabled == self._auto_renew():
            raise ValueError(f"automatic renewal is already {'on' if request.enabled else 'off'}")

    @workflow.update
    async def retry_registry_renewal(self, request: RegistryRetry) -> CommandResult:
        """Ops: try again the paid renewal the registry refused (after fixing its cause)."""
        async with self.lock:
            at = workflow.now()
            period = self.state.pending_registry_renewal
            assert period is not None
            self._record("registry_retry", {"period": period, "note": request.note}, at)
            redemption = self.state.pending_registry_redemption
            invoice = next(
                (
                    i
                    for i in reversed(self.state.invoices)
                    if i.status is InvoiceState.PAID
                    and i.purpose in (InvoicePurpose.RENEWAL, InvoicePurpose.REDEMPTION)
                ),
                None,
            )
            await self._renew(period, at, f"registry-retry:{self.state.journal_sequence}", invoice)
            self._refresh()
        self._wake()
        if self.state.pending_registry_renewal is not None:
            return CommandResult(message="the registry refused again; see the journal")
        return CommandResult(
            message=f"renewed at the registry until {self.state.expires_on}"
            + (" (restored)" if redemption else "")
        )

    @retry_registry_renewal.validator
    def _validate_registry_retry(self, request: RegistryRetry) -> None:
        _require(request)
        if self.state.pending_registry_renewal is None:
            raise ValueError("no paid renewal is waiting for the registry")

    @workflow.update
    async def park(self) -> CommandResult:
        """VPS parking: shut down and unreachable, disk, configuration and addresses kept."""
        async with self.lock:
            at = workflow.now()
            await self._service_action("park", at, f"park:{self.state.journal_sequence}")
            self.state.parked = True
            self.state.powered_on = False
            self._note_state("parked at the customer's request", at)
            await self._notify(
                NoticeKind.PARKED, f"park:{self.state.journal_sequence}", at, self._base_facts()
            )
            self._refresh()
        self._wake()
        price = self.state.spec.parking_price
        return CommandResult(
            message="parked" + (f"; parking price {price} from the next period" if price else "")
        )

    @park.validator
    def _validate_park(self) -> None:
        self._refuse_if_gone()
        if not self.state.terms.parking_allowed:
            raise ValueError(f"{self.state.terms.title} cannot be parked")
        if self.state.parked:
            raise ValueError("already parked")
        if self._shown_state() is not ServiceState.ACTIVE:
            raise ValueError(f"only an active service can be parked; it is {self._shown_state().value}")

    @workflow.update
    async def unpark(self) -> CommandResult:
        async with self.lock:
            at = workflow.now()
            await self._service_action("unpark", at, f"unpark:{self.state.journal_sequence}")
            self.state.parked = False
            self.state.powered_on = True
            self._note_state("unparked", at)
            await self._sync_power(at, f"unpark-sync:{self.state.journal_sequence}")
            await self._notify(
                NoticeKind.UNPARKED, f"unpark:{self.state.journal_sequence}", at, self._base_facts()
            )
            self._refresh()
        self._wake()
        return CommandResult(message="unparked")

    @unpark.validator
    def _validate_unpark(self) -> None:
        self._refuse_if_gone()
        if not self.state.parked:
            raise ValueError("the service is not parked")

    @workflow.update
    async def restore(self, request: RestoreRequest) -> CommandResult:
        """Restore after deletion while the provider backup exists: price of the service + fee.
        A VPS/APS goes onto a newly ordered server instead: the fee only (workflows/vps_restore.py)."""
        if self.state.terms.on_hypervisor:
            return await self._request_vps_restore(request)
        async with self.lock:
            at = workflow.now()
            existing = self._open_invoice(InvoicePurpose.RESTORE)
            if existing is not None:
                return CommandResult(
                    message=f"restore invoice VS {existing.variable_symbol} is already open",
                    variable_symbol=existing.variable_symbol,
                    amount=existing.amount,
                )
            amount = round_money(self.state.price + self._restore_fee())
            backup_until = self.state.backup_until or self._today()
            invoice = await self._issue_invoice(InvoicePurpose.RESTORE, amount, backup_until, at)
            self._refresh()
        self._wake()
        return CommandResult(
            message=f"restore invoice issued; pay by {backup_until} while the backup exists",
            variable_symbol=invoice.variable_symbol,
            amount=invoice.amount,
        )

    @restore.validator
    def _validate_restore(self, request: RestoreRequest) -> None:
        _require(request)
        state = self.state
        if state.billing_state is not ServiceState.DELETED:
            raise ValueError(f"only a deleted service can be restored; it is {self._shown_state().value}")
        if not state.terms.restore_allowed:
            raise ValueError(f"{state.terms.title} cannot be restored after deletion")
        if state.terms.on_hypervisor:
            self._validate_vps_restore(request)
            return
        if not state.restorable or (state.backup_until is not None and self._today() > state.backup_until):
            raise ValueError("the provider backup no longer exists")

    # ---------------------------------------------------------------- queries

    @workflow.query
    def status(self) -> ServiceStatus:
        state = self.state
        return ServiceStatus(
            service_id=state.spec.service_id,
            product=state.spec.product,
            profile=state.spec.profile,
            customer_id=state.spec.customer.id,
            state=self._shown_state(),
            expires_on=state.expires_on,
            period=state.period,
            price=state.price,
            open_invoice=self._open_invoice(),
            invoices=state.invoices,
            upcoming=[
                UpcomingMilestone(kind=m.kind.value, on=m.on, at=self._instant(m)) for m in self._upcoming()
            ],
            details=self._details(),
            suspension=state.suspension,
            parked=state.parked,
            deferral_until=state.deferral_until,
            cancel_effective_on=state.cancel_effective_on,
            backup_until=state.backup_until,
            renewals=state.renewals,
            node=state.spec.node if state.terms.on_hypervisor else None,
            vm_name=(state.spec.name or state.spec.service_id) if state.terms.on_hypervisor else None,
            plan=state.changes.plan or state.spec.plan,
            restored_onto=state.restored_onto,
        )

    @workflow.query
    def journal(self, since: int = 0) -> list[JournalEntry]:
        return [entry for entry in self.state.journal if entry.sequence > since]

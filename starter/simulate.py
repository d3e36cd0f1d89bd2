"""`hostlife simulate`: a scenario through the real workflows on the time-skipping test server.

The contract is `shared/SIMULATOR.md`. Only the outside systems are recording fakes; the
workflows, activities, policy catalog and billing ledger are the production ones. Output is
JSON Lines in time order, built from each service's own journal (its audit trail).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.billing import PaymentReceived, ReturnPaymentInput, SqliteBilling
from activities.hypervisor import RecordingHypervisor
from activities.mailer import RecordingMailer
from activities.platform import RecordingPlatform
from activities.registrar import RecordingRegistrar
from policy.catalog import Catalog, CatalogError, ProductKind, Terms, default_catalog
from policy.clock import Clock
from policy.money import Money
from policy.payments import InvoiceRecord, InvoiceState
from policy.periods import parse_period
from starter.accounts import balance, statement, top_up
from starter.services import start_service
from starter.temporal_setup import installed_binary, quiet_runtime, register_search_attributes
from starter.vps_restore import RestoreRefused, restore_target_for
from worker import Adapters, build_workers
from workflows import service_workflow_id
from workflows.account_models import MovementKind
from workflows.models import (
    AutoRenewSetting,
    BillingDetailsChanged,
    CancelRequest,
    ChangePeriod,
    Customer,
    DeferralRequest,
    JournalEntry,
    PaymentRequest,
    ResolveRequest,
    RestoreRequest,
    ServiceSpec,
    ServiceStatus,
    SuspendRequest,
)
from workflows.subscription import SubscriptionWorkflow

EVENT_TIME = time(12, 0)
EventType = Literal[
    "pay",
    "billing_changed",
    "top_up",
    "set_auto_renew",
    "cancel",
    "suspend",
    "resolve",
    "park",
    "unpark",
    "change_period",
    "restore",
    "defer",
    "upgrade",
    "downgrade",
    "refund",
    "provider_delete",
    "provider_keep",
]


class ScenarioError(ValueError):
    """A scenario that is not valid; the message is the one line the CLI prints."""


class ScenarioCustomer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    email: str = Field(min_length=3)
    credit: Money = Decimal("0.00")
    language: str = "cs"
    name: str = ""


class ScenarioService(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    customer: str
    product: str
    name: str = ""
    expires_in_days: int = Field(ge=-3650, le=3650)
    price: Money
    period: str = "P1Y"
    auto_renew: bool = False
    subservers: list[str] = []
    node: str = "node-1"
    parking_price: Money | None = None
    first_licence: bool = False
    plan: str | None = None
    """The plan (policy/plans.toml): for the `upgrade` and `downgrade` events, and a deleted VPS's
    provider backup is restored only onto a plan of the same or a higher tier."""

    @field_validator("period")
    @classmethod
    def _period(cls, value: str) -> str:
        return str(parse_period(value))

    @field_validator("price")
    @classmethod
    def _positive(cls, value: Decimal) -> Decimal:
        if value < 0:
            raise ValueError("price must not be negative")
        return value


class ScenarioEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    day: int = Field(ge=0)
    type: EventType
    service: str | None = None
    customer: str | None = None
    invoice: Literal["open", "cancelled", "previous"] = "open"
    amount: str | None = None
    vs: str | None = None
    payment_id: str | None = None
    enabled: bool | None = None
    on_day: int | None = Field(default=None, ge=0)
    reason: str | None = None
    period: str | None = None
    severe: bool = False
    days: int | None = Field(default=None, ge=1, le=365)
    by_support: bool = False
    plan: str | None = None
    """`upgrade` / `downgrade`: the plan to move to."""
    current_plan: str | None = None
    hours: str | None = None
    """`refund`: support hours spent migrating the customer's data in."""
    onto: str | None = None
    """restore of a deleted VPS/APS: the newly ordered service its provider backup goes onto."""

    @model_validator(mode="after")
    def _fields_for_type(self) -> ScenarioEvent:
        needs_service = {
            "pay",
            "set_auto_renew",
            "cancel",
            "suspend",
            "resolve",
            "park",
            "unpark",
            "change_period",
            "restore",
            "upgrade",
            "downgrade",
            "refund",
        }
        if self.type in needs_service and not self.service:
            raise ValueError(f"event {self.type} needs 'service'")
        if self.type in {"billing_changed", "top_up"} and not self.customer:
            raise ValueError(f"event {self.type} needs 'customer'")
        if self.type == "top_up" and self.amount is None:
            raise ValueError("event top_up needs 'amount'")
        if self.type == "set_auto_renew" and self.enabled is None:
            raise ValueError("event set_auto_renew needs 'enabled'")
        if self.type in {"upgrade", "downgrade"} and not self.plan:
            raise ValueError(f"event {self.type} needs 'plan'")
        if self.type in {"provider_delete", "provider_keep"} and (self.service is None) == (
            self.customer is None
        ):
            raise ValueError(f"event {self.type} needs 'service' or 'customer' (one of them)")
        if self.type == "provider_delete" and not self.reason:
            raise ValueError("event provider_delete needs 'reason'")
        if self.hours is not None:
            from decimal import InvalidOperation

            try:
                hours = Decimal(self.hours)
            except InvalidOperation:
                hours = Decimal(-1)
            if not hours.is_finite() or hours < 0:
                raise ValueError(f"hours must be a non-negative decimal string, got {self.hours!r}")
        if self.type == "change_period":
            if not self.period:
                raise ValueError("event change_period needs 'period'")
            parse_period(self.period)
        if self.amount is not None and not (self.type == "pay" and self.amount == "exact"):
            from policy.money import to_money

            to_money(self.amount)
        if self.vs is not None:
            from policy.money import normalize_variable_symbol

            normalize_variable_symbol(self.vs)
        return self


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profile: str = "default"
    customers: list[ScenarioCustomer] = []
    services: list[ScenarioService] = Field(min_length=1)
    events: list[ScenarioEvent] = []
    until_day: int = Field(ge=0, le=36500)

    @model_validator(mode="after")
    def _references(self) -> Scenario:
        customers = {c.id for c in self.customers}
        services = {s.id for s in self.services}
        if len(customers) != len(self.customers):
            raise ValueError("customer ids must be unique")
        if len(services) != len(self.services):
            raise ValueError("service ids must be unique")
        for service in self.services:
            if service.customer not in customers:
                raise ValueError(f"service {service.id}: unknown customer {service.customer!r}")
        for index, event in enumerate(self.events):
            if event.service is not None and event.service not in services:
                raise ValueError(f"events[{index}]: unknown service {event.service!r}")
            if event.customer is not None and event.customer not in customers:
                raise ValueError(f"events[{index}]: unknown customer {event.customer!r}")
            if event.day > self.until_day:
                raise ValueError(f"events[{index}]: day {event.day} is after until_day {self.until_day}")
        return self


def load_scenario(text: str, catalog: Catalog | None = None) -> Scenario:
    """Parse and check a whole scenario before anything runs; errors are one line."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScenarioError(f"scenario is not valid JSON: {exc}") from None
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "scenario"
        raise ScenarioError(f"{where}: {first['msg']}") from None
    catalog = catalog or default_catalog()
    try:
        profile = catalog.profile(scenario.profile)
        for service in scenario.services:
            terms = profile.terms(service.product)
            if service.period not in terms.periods:
                raise ScenarioError(
                    f"service {service.id}: {terms.title} cannot be billed for {service.period}; "
                    f"allowed: {', '.join(terms.periods)}"
                )
            if terms.kind is ProductKind.DOMAIN:
                if not service.name:
                    raise ScenarioError(f"service {service.id}: a domain needs its 'name'")
                profile.tld_rules(service.name)
    except CatalogError as exc:
        raise ScenarioError(str(exc)) from None
    _check_commerce(scenario)
    return scenario


def _check_commerce(scenario: Scenario) -> None:
    """Plans and SPEC §6 events refused before anything runs (an unknown plan, another product's)."""
    from policy.commerce import CommerceRulesError, PlanChangeKind
    from policy.plans import PlansError, configured_plans
    from starter.commerce import change_plan_request, rules_for

    products = {s.id: s.product for s in scenario.services}
    try:
        for service in scenario.services:
            if service.plan is not None:
                configured_plans().product_plans(scenario.profile, service.product).plan(service.plan)
        for index, event in enumerate(scenario.events):
            if event.type in ("upgrade", "downgrade"):
                assert event.plan is not None and event.service is not None
                kind = PlanChangeKind.UPGRADE if event.type == "upgrade" else PlanChangeKind.DOWNGRADE
                try:
                    change_plan_request(scenario.profile, products[event.service], event.plan, kind)
                except ValueError as exc:
                    raise ScenarioError(f"events[{index}]: {exc}") from None
            elif event.type in ("refund", "provider_delete", "provider_keep"):
                rules_for(scenario.profile)
    except (PlansError, CommerceRulesError) as exc:
        raise ScenarioError(str(exc)) from None


@dataclass
class Simulation:
    """A running simulation: the environment, its workers and the services started in it."""

    env: WorkflowEnvironment
    scenario: Scenario
    clock: Clock
    day0: date
    task_queue: str
    billing: SqliteBilling
    extra_lines: list[dict[str, Any]] = field(default_factory=list)
    first_run_ids: dict[str, str] = field(default_factory=dict)

    def instant(self, day: int, at: time = time(0)) -> datetime:
        return self.clock.instant(self.day0 + timedelta(days=day), at)

    async def sleep_until(self, target: datetime) -> None:
        delta = target - await self.env.get_current_time()
        if delta > timedelta(0):
            await self.env.sleep(delta)

    def handle(self, service_id: str) -> Any:
        return self.env.client.get_workflow_handle_for(
            SubscriptionWorkflow.run, service_workflow_id(service_id)
        )

    async def start_services(self) -> None:
        customers = {c.id: c for c in self.scenario.customers}
        for service in self.scenario.services:
            customer = customers[service.customer]
            spec = ServiceSpec(
                service_id=service.id,
                customer=Customer(
                    id=customer.id, email=customer.email, language=customer.language, name=customer.name
                ),
                product=service.product,
                profile=self.scenario.profile,
                name=service.name,
                price=service.price,
                period=service.period,
                expires_on=self.day0 + timedelta(days=service.expires_in_days),
                node=service.node,
                subservers=service.subservers,
                auto_renew=service.auto_renew,
                parking_price=service.parking_price,
                first_licence=service.first_licence,
                plan=service.plan,
            )
            handle = await start_service(self.env.client, spec, clock=self.clock, task_queue=self.task_queue)
            self.first_run_ids[service.id] = handle.first_execution_run_id or ""

    async def run_events(self) -> None:
        ordered = sorted(enumerate(self.scenario.events), key=lambda pair: (pair[1].day, pair[0]))
        for index, event in ordered:
            await self.sleep_until(self.instant(event.day, EVENT_TIME))
            await self.apply(index, event)
        await self.sleep_until(self.instant(self.scenario.until_day + 1) - timedelta(seconds=1))

    async def apply(self, index: int, event: ScenarioEvent) -> None:
        at = await self.env.get_current_time()
        try:
            if event.type == "pay":
                await self.pay(index, event, at)
            elif event.type == "top_up":
                await self.top_up(index, event, at)
            elif event.type == "set_auto_renew":
                assert event.service is not None and event.enabled is not None
                await self.command(
                    event, event.service, at, "set_auto_renew", AutoRenewSetting(enabled=event.enabled)
                )
            elif event.type == "billing_changed":
                for service in self.scenario.services:
                    if service.customer == event.customer:
                        await self.command(
                            event, service.id, at, "billing_details_changed", BillingDetailsChanged()
                        )
            elif event.type in ("provider_delete", "provider_keep"):
                for service in self.scenario.services:
                    if event.service in (None, service.id) and event.customer in (None, service.customer):
                        await self.command(event, service.id, at, *self.update_for(event))
            elif event.type == "restore" and event.onto:
                assert event.service is not None
                try:
                    target = await restore_target_for(self.env.client, event.service, event.onto)
                except RestoreRefused as exc:
                    self.note(at, event, "rejected", str(exc))
                    return
                await self.command(event, event.service, at, "restore", RestoreRequest(onto=target))
            else:
                assert event.service is not None
                await self.command(event, event.service, at, *self.update_for(event))
        except RPCError as exc:
            self.note(at, event, "rejected", f"server refused: {exc.message}")

    def update_for(self, event: ScenarioEvent) -> tuple[str, Any]:
        if event.type == "cancel":
            on = self.day0 + timedelta(days=event.on_day) if event.on_day is not None else None
            return "cancel", CancelRequest(on=on)
        if event.type == "suspend":
            return "suspend_for_abuse", SuspendRequest(
                reason=event.reason or "abuse report", severe=event.severe
            )
        if event.type == "resolve":
            return "resolve_abuse", ResolveRequest(note=event.reason or "remedy declared")
        if event.type == "change_period":
            assert event.period is not None
            return "change_period", ChangePeriod(period=event.period)
        if event.type == "restore":
            return "restore", RestoreRequest()
        if event.type == "defer":
            return "grant_deferral", DeferralRequest(days=event.days or 14, by_support=event.by_support)
        if event.type in ("park", "unpark"):
            return event.type, None
        return self.commerce_update_for(event)

    def commerce_update_for(self, event: ScenarioEvent) -> tuple[str, Any]:
        """SPEC §6 events, with the rules and plans the CLI would send (starter/commerce.py)."""
        from policy.commerce import PlanChangeKind
        from starter.commerce import (
            change_plan_request,
            provider_deletion_request,
            refund_request,
        )
        from workflows.commerce_models import ProviderDeletionCancel

        profile = self.scenario.profile
        if event.type in ("upgrade", "downgrade"):
            assert event.plan is not None and event.service is not None
            product = next(s.product for s in self.scenario.services if s.id == event.service)
            kind = PlanChangeKind.UPGRADE if event.type == "upgrade" else PlanChangeKind.DOWNGRADE
            return "change_plan", change_plan_request(profile, product, event.plan, kind, event.current_plan)
        if event.type == "refund":
            return "request_refund", refund_request(
                profile, Decimal(event.hours or "0"), event.reason or "customer request"
            )
        if event.type == "provider_delete":
            return "schedule_provider_deletion", provider_deletion_request(profile, event.reason or "")
        if event.type == "provider_keep":
            return "cancel_provider_deletion", ProviderDeletionCancel(note=event.reason or "cancelled by ops")
        raise AssertionError(event.type)

    async def command(
        self, event: ScenarioEvent, service_id: str, at: datetime, name: str, argument: Any
    ) -> None:
        handle = self.handle(service_id)
        try:
            args = [] if argument is None else [argument]
            await handle.execute_update(name, args=args)
        except WorkflowUpdateFailedError as exc:
            reason = str(exc.cause.message if hasattr(exc.cause, "message") else exc.cause)
            self.note(at, event, "rejected", reason, service_id)
        except RPCError as exc:
            self.note(at, event, "rejected", f"service is no longer running: {exc.message}", service_id)

    def note(
        self, at: datetime, event: ScenarioEvent, result: str, reason: str, service_id: str | None = None
    ) -> None:
        line: dict[str, Any] = {
            "at": at,
            "kind": "command",
            "command": event.type,
            "result": result,
            "reason": reason,
        }
        if service_id or event.service:
            line["service"] = service_id or event.service
        else:
            line["customer"] = event.customer
        self.extra_lines.append(line)

    @property
    def terms(self) -> Terms:
        """Credit currency and limits are the profile's (any product's terms carry them)."""
        profile = default_catalog().profile(self.scenario.profile)
        return profile.terms(self.scenario.services[0].product)

    async def open_accounts(self) -> None:
        """A customer's starting credit is a top-up on day 0."""
        for customer in self.scenario.customers:
            if customer.credit > 0:
                await top_up(
                    self.env.client,
                    customer.id,
                    customer.credit,
                    f"simulation-opening-{customer.id}",
                    self.terms,
                    task_queue=self.task_queue,
                    reason="opening credit",
                )

    async def top_up(self, index: int, event: ScenarioEvent, at: datetime) -> None:
        assert event.customer is not None and event.amount is not None
        try:
            await top_up(
                self.env.client,
                event.customer,
                Decimal(event.amount),
                f"simulation-top-up-{index + 1}",
                self.terms,
                task_queue=self.task_queue,
            )
        except WorkflowUpdateFailedError as exc:
            self.note(at, event, "rejected", str(getattr(exc.cause, "message", exc.cause)))

    async def credit_lines(self) -> list[tuple[datetime, dict[str, Any]]]:
        """Top-ups and refunds from each account's statement (debits are in the services' journals)."""
        lines = []
        for customer in self.scenario.customers:
            found = await statement(self.env.client, customer.id)
            for entry in found.entries if found else []:
                if entry.kind is MovementKind.DEBIT:
                    continue
                lines.append(
                    (
                        entry.at,
                        {
                            "kind": "credit",
                            "customer": customer.id,
                            "action": entry.kind.value,
                            "amount": str(entry.amount),
                            "balance": str(entry.balance_after),
                        },
                    )
                )
        return lines

    async def pay(self, index: int, event: ScenarioEvent, at: datetime) -> None:
        assert event.service is not None
        payment_id = event.payment_id or f"sim-{index + 1}"
        handle = self.handle(event.service)
        try:
            status: ServiceStatus | None = await handle.query(SubscriptionWorkflow.status)
        except (RPCError, WorkflowFailureError):
            status = None
        invoice = pick_invoice(status.invoices if status else [], event.invoice)
        vs = event.vs or (invoice.variable_symbol if invoice else "0")
        if event.amount is None or event.amount == "exact":
            amount = invoice.amount if invoice else Decimal("0.01")
        else:
            amount = Decimal(event.amount)
        request = PaymentRequest(payment_id=payment_id, variable_symbol=vs, amount=amount, received_at=at)
        try:
            await handle.execute_update(SubscriptionWorkflow.submit_payment, request)
        except (RPCError, WorkflowUpdateFailedError) as exc:
            # The workflow is over (closed or released): the payment goes back to the payer.
            refund = self.billing.return_payment(
                ReturnPaymentInput(
                    payment=PaymentReceived(
                        payment_id=payment_id, variable_symbol=vs, amount=amount, received_at=at
                    ),
                    reason="service closed: payment returned to the payer",
                    service_id=event.service,
                )
            )
            self.extra_lines.append(
                {
                    "at": at,
                    "kind": "payment",
                    "service": event.service,
                    "result": "returned",
                    "reason": refund.reason,
                    "vs": vs,
                    "amount": str(amount),
                    "payment_id": payment_id,
                    "detail": str(getattr(exc, "message", exc)),
                }
            )

    async def journals(self) -> dict[str, list[JournalEntry]]:
        result: dict[str, list[JournalEntry]] = {}
        for service in self.scenario.services:
            result[service.id] = await self.handle(service.id).query(SubscriptionWorkflow.journal, 0)
        return result

    async def statuses(self) -> dict[str, ServiceStatus]:
        return {
            s.id: await self.handle(s.id).query(SubscriptionWorkflow.status) for s in self.scenario.services
        }

    async def output(self) -> list[dict[str, Any]]:
        end = self.instant(self.scenario.until_day + 1)
        lines: list[tuple[datetime, int, int, dict[str, Any]]] = []
        order = {s.id: i for i, s in enumerate(self.scenario.services)}
        for service_id, entries in (await self.journals()).items():
            for entry in entries:
                if entry.at < end:
                    line = {"kind": entry.kind, "service": service_id, **entry.data}
                    lines.append((entry.at, order[service_id], entry.sequence, line))
        for extra in self.extra_lines:
            at = extra.pop("at")
            lines.append((at, order.get(extra.get("service", ""), -1), 10**9, extra))
        for at, credit in await self.credit_lines():
            if at < end:
                lines.append((at, -1, 0, credit))
        lines.sort(key=lambda item: (item[0], item[1], item[2]))
        rendered = [self.stamp(at, line) for at, _, _, line in lines]
        statuses = await self.statuses()
        summary = {
            "kind": "summary",
            "services": {
                sid: {"state": s.state.value, "expires_on": s.expires_on.isoformat()}
                for sid, s in statuses.items()
            },
            "customers": {c.id: {"credit": await self.credit_of(c.id)} for c in self.scenario.customers},
        }
        last = await self.env.get_current_time()
        rendered.append(self.stamp(min(last, end - timedelta(seconds=1)), summary))
        return rendered

    async def credit_of(self, customer_id: str) -> str:
        found = await balance(self.env.client, customer_id)
        return str(found.balance) if found else "0.00"

    def stamp(self, at: datetime, line: dict[str, Any]) -> dict[str, Any]:
        local = self.clock.local(at)
        return {"at": local.isoformat(timespec="seconds"), "day": (local.date() - self.day0).days, **line}


def pick_invoice(invoices: Iterable[InvoiceRecord], which: str) -> InvoiceRecord | None:
    items = list(invoices)
    if which == "open":
        return next(
            (i for i in reversed(items) if i.status is InvoiceState.OPEN), items[-1] if items else None
        )
    if which == "cancelled":
        return next((i for i in reversed(items) if i.status is InvoiceState.CANCELLED), None)
    open_index = next(
        (n for n in range(len(items) - 1, -1, -1) if items[n].status is InvoiceState.OPEN), len(items)
    )
    return items[open_index - 1] if open_index >= 1 else None


@contextlib.asynccontextmanager
async def simulation(scenario: Scenario, catalog: Catalog | None = None) -> AsyncIterator[Simulation]:
    profile = (catalog or default_catalog()).profile(scenario.profile)
    time_zone = next(iter(profile.products.values())).time_zone
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(installed_binary("temporal-test-server")),
        data_converter=pydantic_data_converter,
        runtime=quiet_runtime(),
    )
    async with env:
        await register_search_attributes(env.client)
        nodes = {s.node for s in scenario.services}
        adapters = Adapters(
            billing=SqliteBilling(),
            mailer=RecordingMailer(),
            platform=RecordingPlatform(),
            registrar=RecordingRegistrar(),
            hypervisors={node: RecordingHypervisor() for node in nodes},
        )
        assert isinstance(adapters.billing, SqliteBilling)
        clock = Clock(time_zone=time_zone)
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as executor:
            workers = build_workers(env.client, adapters, task_queue="hostlife-simulate", executor=executor)
            async with contextlib.AsyncExitStack() as stack:
                for worker in workers:
                    await stack.enter_async_context(worker)
                day0 = clock.today(await env.get_current_time())
                yield Simulation(
                    env=env,
                    scenario=scenario,
                    clock=clock,
                    day0=day0,
                    task_queue="hostlife-simulate",
                    billing=adapters.billing,
                )


async def run_scenario(scenario: Scenario, emit: Callable[[dict[str, Any]], None]) -> None:
    async with simulation(scenario) as sim:
        await sim.open_accounts()
        await sim.start_services()
        await sim.run_events()
        for line in await sim.output():
            emit(line)


def to_json_line(line: dict[str, Any]) -> str:
    return json.dumps(line, ensure_ascii=False, default=str)


def run(text: str, emit: Callable[[str], None]) -> None:
    scenario = load_scenario(text)
    # What goes wrong inside the run is in the output (mail_failed, action_failed); stderr is for
    # the one-line error of a bad scenario.
    logging.getLogger().setLevel(logging.CRITICAL)
    asyncio.run(run_scenario(scenario, lambda line: emit(to_json_line(line))))

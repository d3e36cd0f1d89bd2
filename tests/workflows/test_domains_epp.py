"""Domains end to end: SubscriptionWorkflow on the time-skipping server, its registrar activities
backed by real `EppRegistrar`s talking EPP over TLS to local test registries (tests/eppserver.py).

One registry per catalog TLD entry, each on its own free loopback port: FRED (CZ.NIC dialect) for
.cz, IETF for .sk, .eu and the gTLDs. The registries do not run a calendar of their own, so a
test moves a domain into the registry's state for the day (`registry_follows`, from
`policy.domains.registry_state_on`) before paying, as the real registry would have done.
Assertions are on what each registry received and executed, and on the calendar day (relative
to D, profile time zone) of every state the workflow journals.
"""

from __future__ import annotations

import asyncio
import calendar
import concurrent.futures
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest
from lxml import etree
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.billing import SqliteBilling
from activities.epp import EppConfig
from activities.mailer import RecordingMailer
from activities.platform import RecordingPlatform
from activities.registrar import (
    EppRegistrar,
    RegistrarByTld,
    RenewDomainResult,
)
from policy.catalog import CatalogError, Profile, TldRules, default_catalog
from policy.clock import Clock
from policy.domains import RegistryState, add_years, registry_state_on
from policy.payments import InvoicePurpose, InvoiceRecord
from starter.services import start_service
from tests.eppserver import Domain, EppServer, Tls
from tests.workflows.harness import finish
from worker import Adapters, build_workers
from workflows import service_workflow_id
from workflows.models import (
    Customer,
    JournalEntry,
    PaymentOutcome,
    PaymentRequest,
    ServiceSpec,
    SubscriptionResult,
)
from workflows.subscription import SubscriptionWorkflow

Handle = WorkflowHandle[SubscriptionWorkflow, Any]
PROFILE: Profile = default_catalog().profile("default")
PRICE = Decimal("290.00")
NOON = time(12, 0)
REAL_TIME_LIMIT = 60.0
"""Seconds of wall-clock time any one payment or lifecycle may take here."""


# --- registries --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenewRequest:
    """One `<domain:renew>` as the registry received it, executed or refused."""

    domain_name: str
    current_expiry: date
    years: int
    executed: bool
    new_expiry: date | None


class Registry(EppServer):
    """The test registry, also keeping every renew it was asked for (curExpDate, period, outcome).

    Its renew is the base server's with two registry behaviours added: 29 February plus a year is
    28 February (the base server's `date.replace` raises there, the session dies and the client
    sees a dropped connection), and a renew that went through clears the expiry statuses.
    """

    def __init__(self, tls: Tls, dialect: str = "ietf") -> None:
        super().__init__(tls, dialect=dialect)
        self.renew_requests: list[RenewRequest] = []

    def _renew(self, domain: Domain, element: etree._Element, cl_trid: str | None) -> etree._Element:
        current = element.findtext(f"{{{self.domain_ns}}}curExpDate") or ""
        years = int(element.findtext(f"{{{self.domain_ns}}}period") or "1")
        request = RenewRequest(domain.name, date.fromisoformat(current), years, False, None)
        if domain.statuses & {"pendingDelete", "serverRenewProhibited", "clientRenewProhibited"}:
            self.renew_requests.append(request)
            return self._response(2304, cl_trid)
        if current != domain.expires_on.isoformat():
            self.renew_requests.append(request)
            code = 2004 if self.dialect == "fred" else 2306  # as the base server answers a stale date
            return self._response(code, cl_trid, reason="curExpDate does not match the expiration date")
        domain.expires_on = add_years(domain.expires_on, years)
        domain.statuses, domain.rgp = {"ok"}, set()
        self.executed.append(("renew", domain.name))
        self.renew_requests.append(
            RenewRequest(domain.name, request.current_expiry, years, True, domain.expires_on)
        )
        epp = self._response(1000, cl_trid)
        data = self._res_data(epp, "renData")
        etree.SubElement(data, f"{{{self.domain_ns}}}name").text = domain.name
        etree.SubElement(data, f"{{{self.domain_ns}}}exDate").text = self._expiry_text(domain.expires_on)
        return epp

    def commands(self, *verbs: str) -> list[str]:
        """The commands the registry executed, in order, optionally only these."""
        return [c for c, _ in self.executed if not verbs or c in verbs]


def registry_follows(registry: Registry, name: str, rules: TldRules, expires_on: date, today: date) -> None:
    """Put the domain into the state its registry keeps it in on `today` when unpaid since `expires_on`.

    .eu quarantine is modelled as an RFC 3915 redemption period (restore request + report), the
    same path the adapter takes for gTLD redemption.
    """
    domain = registry.domains[name]
    state = registry_state_on(rules, expires_on, today)
    fred = registry.dialect == "fred"
    if state is RegistryState.EXPIRED:
        domain.statuses = {"expired"} if fred else {"ok"}
    elif state is RegistryState.OUTZONE:
        domain.statuses = {"expired", "outzone"} if fred else {"serverHold"}
    elif state in (RegistryState.REDEMPTION, RegistryState.QUARANTINE):
        domain.statuses, domain.rgp = {"pendingDelete"}, {"redemptionPeriod"}
        domain.updated_at = datetime.combine(expires_on, time(0), tzinfo=UTC)
    elif state is RegistryState.RELEASED:
        del registry.domains[name]


# --- the lab -------------------------------------------------------------------------------------


@dataclass
class EppLab:
    env: WorkflowEnvironment
    task_queue: str
    registries: dict[str, Registry]
    registrars: dict[str, EppRegistrar]
    billing: SqliteBilling
    clock: Clock

    def registry(self, domain_name: str) -> Registry:
        return self.registries[PROFILE.tld_rules(domain_name).tld]

    async def today(self) -> date:
        return self.clock.today(await self.env.get_current_time())

    async def go(self, d: date, offset: int, at: time = NOON) -> date:
        """Move the server clock to D+offset (noon unless told) and return that day."""
        day = d + timedelta(days=offset)
        delta = self.clock.instant(day, at) - await self.env.get_current_time()
        if delta > timedelta(0):
            await self.env.sleep(delta)
        assert await self.today() == day
        return day

    @contextlib.asynccontextmanager
    async def service(self, **spec: Any) -> AsyncIterator[Handle]:
        """A hostlife service, terminated if the test leaves it running (its timers would outlive the worker)."""
        fields: dict[str, Any] = {
            "service_id": f"{spec.get('product', 'domain')}-{uuid.uuid4().hex[:10]}",
            "customer": Customer(id="c1", email="jana@example.cz"),
            "product": "domain",
            "price": PRICE,
            "period": "P1Y",
        }
        fields.update(spec)
        handle = await start_service(self.env.client, ServiceSpec(**fields), task_queue=self.task_queue)
        try:
            yield handle
        finally:
            await finish(handle)

    @contextlib.asynccontextmanager
    async def domain(self, name: str, expires_on: date, **spec: Any) -> AsyncIterator[Handle]:
        """A domain registered at its registry, handed to hostlife."""
        self.registry(name).add_domain(name, expires_on)
        async with self.service(name=name, expires_on=expires_on, **spec) as handle:
            yield handle

    async def journal(self, handle: Handle) -> list[JournalEntry]:
        return await handle.query(SubscriptionWorkflow.journal, 0)

    def offsets(
        self, journal: list[JournalEntry], d: date, kind: str = "state", key: str = "state"
    ) -> list[tuple[str, int]]:
        """(value of `key`, calendar day relative to D) of each journal line of `kind`."""
        return [(str(e.data[key]), (self.clock.today(e.at) - d).days) for e in journal if e.kind == kind]


@pytest.fixture(scope="module")
def tls() -> Iterator[Tls]:
    yield Tls()


@contextlib.asynccontextmanager
async def epp_lab(env: WorkflowEnvironment, tls: Tls) -> AsyncIterator[EppLab]:
    """Four registries on free TLS ports, an EppRegistrar for each, and a worker set using them."""
    dialects = {"cz": "fred", "sk": "ietf", "eu": "ietf", "gtld": "ietf"}
    registries = {tld: Registry(tls, dialect) for tld, dialect in dialects.items()}
    for registry in registries.values():
        await registry.start()
    registrars = {
        tld: EppRegistrar(
            EppConfig(
                host="127.0.0.1",
                port=r.port,
                client_id=r.client_id,
                password=r.password,
                dialect=r.dialect,
                ca_file=tls.ca_file,
                command_timeout=5.0,
            )
        )
        for tld, r in registries.items()
    }
    billing = SqliteBilling()
    adapters = Adapters(
        billing=billing,
        mailer=RecordingMailer(),
        platform=RecordingPlatform(),
        registrar=RegistrarByTld(dict(registrars), lambda name: PROFILE.tld_rules(name).tld),
        hypervisors={},
    )
    task_queue = f"tq-{uuid.uuid4()}"
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as executor:
            async with contextlib.AsyncExitStack() as stack:
                for worker in build_workers(env.client, adapters, task_queue=task_queue, executor=executor):
                    await stack.enter_async_context(worker)
                yield EppLab(env, task_queue, registries, registrars, billing, Clock())
    finally:
        for registrar in registrars.values():
            await registrar.close()
        for registry in registries.values():
            await registry.stop()


async def open_invoice(handle: Handle, purpose: InvoicePurpose) -> InvoiceRecord:
    status = await handle.query(SubscriptionWorkflow.status)
    invoice = next(
        (i for i in reversed(status.invoices) if i.purpose is purpose and i.status == "open"), None
    )
    assert invoice is not None, f"no open {purpose.value} invoice; {status.details}"
    return invoice


async def pay(handle: Handle, invoice: InvoiceRecord) -> PaymentOutcome:
    """A bank payment with the invoice's exact VS and amount, through the update.

    Bounded in real time: a registrar activity retried forever would otherwise hang the suite.
    """
    async with asyncio.timeout(REAL_TIME_LIMIT):
        return await handle.execute_update(
            SubscriptionWorkflow.submit_payment,
            PaymentRequest(
                payment_id=f"pay-{uuid.uuid4().hex[:10]}",
                variable_symbol=invoice.variable_symbol,
                amount=invoice.amount,
            ),
        )


async def final_result(handle: Handle) -> SubscriptionResult:
    """The service's final result, bounded in real time like `pay`."""
    async with asyncio.timeout(REAL_TIME_LIMIT):
        return await handle.result()


def name(tld: str) -> str:
    return f"d-{uuid.uuid4().hex[:10]}.{tld}"


def after(journal: list[JournalEntry], sequence: int) -> list[JournalEntry]:
    return [e for e in journal if e.sequence > sequence]


# --- whole lifecycles, one per registry --------------------------------------------------------------


async def test_cz_paid_out_of_the_zone_then_released_a_year_later(env: WorkflowEnvironment, tls: Tls) -> None:
    """FRED: works through D+30, out of the zone D+31, renewable through D+60, released D+61."""
    async with epp_lab(env, tls) as lab:
        domain = name("cz")
        registry, rules = lab.registry(domain), PROFILE.tld_rules(domain)
        d = await lab.today() + timedelta(days=40)
        async with lab.domain(domain, d) as handle:
            await lab.go(d, 35)
            registry_follows(registry, domain, rules, d, await lab.today())
            assert (await handle.query(SubscriptionWorkflow.status)).state == "outzone"
            assert registry.renew_requests == []  # invoiced at D-30, unpaid: nothing at the registry

            before = (await lab.journal(handle))[-1].sequence
            outcome = await pay(handle, await open_invoice(handle, InvoicePurpose.RENEWAL))
            assert outcome.result == "applied", outcome.reason

            d2 = add_years(d, 1)
            assert registry.renew_requests == [RenewRequest(domain, d, 1, True, d2)]
            assert registry.domains[domain].expires_on == d2
            journal = await lab.journal(handle)
            assert lab.offsets(after(journal, before), d, "registrar", "action") == [
                ("renew", 35),
                ("zone_restore", 35),
            ]
            assert lab.offsets(journal, d) == [
                ("active", -40),
                ("expired", 1),
                ("outzone", 31),
                ("active", 35),
            ]

            result = await final_result(handle)  # the next year goes unpaid
            journal = await lab.journal(handle)
            assert (result.final_state, result.expires_on, result.renewals) == ("released", d2, 1)
            assert lab.offsets(after(journal, before), d2)[1:] == [
                ("expired", 1),
                ("outzone", 31),
                ("released", 61),
            ]
            assert len(registry.renew_requests) == 1
            assert registry.commands("renew", "restore-request", "restore-report") == ["renew"]


async def test_sk_paid_on_the_last_protective_day_then_deleted_a_year_later(
    env: WorkflowEnvironment, tls: Tls
) -> None:
    """SK-NIC: protective period (not working) from D+1, renewable through D+40, deleted D+41."""
    async with epp_lab(env, tls) as lab:
        domain = name("sk")
        registry, rules = lab.registry(domain), PROFILE.tld_rules(domain)
        d = await lab.today() + timedelta(days=40)
        async with lab.domain(domain, d) as handle:
            await lab.go(d, 40)
            registry_follows(registry, domain, rules, d, await lab.today())
            assert registry.renew_requests == []
            before = (await lab.journal(handle))[-1].sequence
            assert (await pay(handle, await open_invoice(handle, InvoicePurpose.RENEWAL))).result == "applied"

            d2 = add_years(d, 1)
            assert registry.renew_requests == [RenewRequest(domain, d, 1, True, d2)]
            journal = await lab.journal(handle)
            assert lab.offsets(after(journal, before), d, "registrar", "action") == [
                ("renew", 40),
                ("zone_restore", 40),
            ]
            assert lab.offsets(journal, d) == [("active", -40), ("outzone", 1), ("active", 40)]

            result = await final_result(handle)
            journal = await lab.journal(handle)
            assert (result.final_state, result.expires_on) == ("released", d2)
            assert lab.offsets(after(journal, before), d2)[1:] == [("outzone", 1), ("released", 41)]
            assert len(registry.renew_requests) == 1


async def test_eu_quarantine_from_d_only_the_paid_release_renews(env: WorkflowEnvironment, tls: Tls) -> None:
    """EURid: quarantine from D itself, only a paid release (its fee on the invoice), released D+40."""
    async with epp_lab(env, tls) as lab:
        domain = name("eu")
        registry, rules = lab.registry(domain), PROFILE.tld_rules(domain)
        d = await lab.today() + timedelta(days=40)
        async with lab.domain(domain, d) as handle:
            await lab.go(d, -1)
            renewal = await open_invoice(handle, InvoicePurpose.RENEWAL)
            await lab.go(d, 10)
            registry_follows(registry, domain, rules, d, await lab.today())
            status = await handle.query(SubscriptionWorkflow.status)
            assert status.state == "quarantine"

            stale = await pay(handle, renewal)  # the original invoice was cancelled on D
            assert stale.result == "held", stale
            assert registry.renew_requests == []

            release = await open_invoice(handle, InvoicePurpose.REDEMPTION)
            assert release.amount == PRICE + rules.restore_fee == Decimal("1790.00")
            assert (release.issued_on, release.due_on) == (d, d + timedelta(days=39))
            before = (await lab.journal(handle))[-1].sequence
            assert (await pay(handle, release)).result == "applied"

            d2 = add_years(d, 1)
            assert registry.commands("restore-request", "restore-report", "renew") == [
                "restore-request",
                "restore-report",
                "renew",
            ]
            assert registry.renew_requests == [RenewRequest(domain, d, 1, True, d2)]
            journal = await lab.journal(handle)
            assert lab.offsets(after(journal, before), d, "registrar", "action") == [
                ("redemption_restore", 10),
                ("renew", 10),
            ]
            assert lab.offsets(journal, d) == [("active", -40), ("quarantine", 0), ("active", 10)]

            result = await final_result(handle)
            journal = await lab.journal(handle)
            assert (result.final_state, result.expires_on) == ("released", d2)
            assert lab.offsets(after(journal, before), d2)[1:] == [("quarantine", 0), ("released", 40)]
            assert len(registry.renew_requests) == 1
            assert registry.count("restore-request") == registry.count("restore-report") == 1


async def test_com_paid_in_redemption_is_restored_then_renewed(env: WorkflowEnvironment, tls: Tls) -> None:
    """gTLD: out of the zone D+1, renewable through D+30, redemption D+31 (paid restore), released D+61."""
    async with epp_lab(env, tls) as lab:
        domain = name("com")
        registry, rules = lab.registry(domain), PROFILE.tld_rules(domain)
        d = await lab.today() + timedelta(days=40)
        async with lab.domain(domain, d) as handle:
            await lab.go(d, 45)
            registry_follows(registry, domain, rules, d, await lab.today())
            assert (await handle.query(SubscriptionWorkflow.status)).state == "redemption"
            assert registry.commands() == []  # nothing was sent to the registry before a payment

            redemption = await open_invoice(handle, InvoicePurpose.REDEMPTION)
            assert redemption.amount == PRICE + rules.restore_fee == Decimal("2790.00")
            before = (await lab.journal(handle))[-1].sequence
            assert (await pay(handle, redemption)).result == "applied"

            d2 = add_years(d, 1)
            assert registry.commands("restore-request", "restore-report", "renew") == [
                "restore-request",
                "restore-report",
                "renew",
            ]
            (report,) = registry.reports
            assert f"name={domain}" in report["preData"][0]
            assert len(report["statement"]) == 2
            assert registry.renew_requests == [RenewRequest(domain, d, 1, True, d2)]
            journal = await lab.journal(handle)
            assert lab.offsets(after(journal, before), d, "registrar", "action") == [
                ("redemption_restore", 45),
                ("renew", 45),
            ]
            assert lab.offsets(journal, d) == [
                ("active", -40),
                ("outzone", 1),
                ("redemption", 31),
                ("active", 45),
            ]

            result = await final_result(handle)
            journal = await lab.journal(handle)
            assert (result.final_state, result.expires_on) == ("released", d2)
            assert lab.offsets(after(journal, before), d2)[1:] == [
                ("outzone", 1),
                ("redemption", 31),
                ("released", 61),
            ]
            # The second year's redemption invoice, unpaid, is cancelled when the registry releases it.
            assert lab.offsets(after(journal, before), d2, "invoice", "action")[-1] == ("cancelled", 61)
            assert len(registry.renew_requests) == 1


@pytest.mark.parametrize("tld", ["cz", "sk", "eu", "com"])
async def test_unpaid_domain_is_released_without_a_word_to_the_registry(
    env: WorkflowEnvironment, tls: Tls, tld: str
) -> None:
    async with epp_lab(env, tls) as lab:
        domain = name(tld)
        d = await lab.today() + timedelta(days=40)
        async with lab.domain(domain, d) as handle:
            result = await final_result(handle)
            journal = await lab.journal(handle)
        expected = {
            "cz": [("expired", 1), ("outzone", 31), ("released", 61)],
            "sk": [("outzone", 1), ("released", 41)],
            "eu": [("quarantine", 0), ("released", 40)],
            "com": [("outzone", 1), ("redemption", 31), ("released", 61)],
        }[tld]
        assert (result.final_state, result.expires_on, result.renewals) == ("released", d, 0)
        assert lab.offsets(journal, d) == [("active", -40), *expected]
        assert all(r.commands() == [] for r in lab.registries.values())


# --- a renew the registry executed but whose answer was lost -------------------------------------


@pytest.mark.parametrize("tld", ["cz", "com"])
async def test_renew_retried_after_dropped_connection_renews_exactly_once(
    env: WorkflowEnvironment, tls: Tls, tld: str
) -> None:
    """The registry renews, then drops the connection; the retry's stale curExpDate is refused
    (FRED 2004, gTLD 2306) and the adapter reads the domain back: already renewed."""
    async with epp_lab(env, tls) as lab:
        domain = name(tld)
        registry = lab.registry(domain)
        d = await lab.today() + timedelta(days=40)
        async with lab.domain(domain, d) as handle:
            await lab.go(d, -5)
            registry.drop_after_next("renew")
            assert (await pay(handle, await open_invoice(handle, InvoicePurpose.RENEWAL))).result == "applied"

            d2 = add_years(d, 1)
            assert registry.renew_requests == [
                RenewRequest(domain, d, 1, True, d2),  # executed, answer never sent
                RenewRequest(domain, d, 1, False, None),  # the retry, refused: curExpDate is stale
            ]
            assert registry.count("renew") == 1
            assert registry.domains[domain].expires_on == d2
            assert registry.commands()[-2:] == ["login", "info"]  # the retry reconnected and read it back
            status = await handle.query(SubscriptionWorkflow.status)
            assert (status.state, status.expires_on, status.renewals) == ("active", d2, 1)
            journal = await lab.journal(handle)
            assert [e.data for e in journal if e.kind == "registrar"] == [
                {"action": "renew", "expires_on": d2.isoformat()}
            ]
            attempts, result = await renew_activity_outcome(env, handle)
            assert attempts == 2
            assert (result.new_expiry, result.already_renewed) == (d2, True)


async def renew_activity_outcome(env: WorkflowEnvironment, handle: Handle) -> tuple[int, RenewDomainResult]:
    """The attempt count and result of the one renew_domain activity in the service's first run."""
    first_run = env.client.get_workflow_handle(handle.id, run_id=handle.result_run_id)
    history = await first_run.fetch_history()
    scheduled = [
        e.event_id
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "renew_domain"
    ]
    assert len(scheduled) == 1
    attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
        and e.activity_task_started_event_attributes.scheduled_event_id == scheduled[0]
    ]
    completed = [
        e.activity_task_completed_event_attributes.result
        for e in history.events
        if e.HasField("activity_task_completed_event_attributes")
        and e.activity_task_completed_event_attributes.scheduled_event_id == scheduled[0]
    ]
    (payloads,) = completed
    (result,) = await env.client.data_converter.decode(payloads.payloads, [RenewDomainResult])
    assert isinstance(result, RenewDomainResult)
    return attempts[-1], result


# --- refused at start -------------------------------------------------------------------------------


async def test_a_tld_without_registry_rules_is_refused_at_start(env: WorkflowEnvironment, tls: Tls) -> None:
    async with epp_lab(env, tls) as lab:
        service_id = f"domain-{uuid.uuid4().hex[:10]}"
        spec = ServiceSpec(
            service_id=service_id,
            customer=Customer(id="c1", email="jana@example.cz"),
            product="domain",
            name="example.de",
            price=PRICE,
            expires_on=await lab.today() + timedelta(days=40),
        )
        with pytest.raises(
            CatalogError, match=r"TLD \.de of 'example\.de' has no registry rules; known: .*com"
        ):
            await start_service(env.client, spec, task_queue=lab.task_queue)
        with pytest.raises(RPCError, match="not found"):
            await env.client.get_workflow_handle(service_workflow_id(service_id)).describe()


# --- where the workflow contradicts SPEC (for the lead; workflows/* is theirs) ----------------------


def next_day(today: date, month: int, day: int, ok: Callable[[int], bool] = lambda year: True) -> date:
    """The first `month`/`day` more than 35 days after `today` (room for the D-30 invoice) in a year that is `ok`."""
    year = today.year
    while True:
        with contextlib.suppress(ValueError):
            candidate = date(year, month, day)
            if candidate > today + timedelta(days=35) and ok(year):
                return candidate
        year += 1


async def test_workflow_expiry_matches_the_registry_after_a_renewal_into_a_leap_year(
    env: WorkflowEnvironment, tls: Tls
) -> None:
    """28 February + 1 year is 28 February at the registry, never the month's end (29 February)."""
    async with epp_lab(env, tls) as lab:
        d = next_day(await lab.today(), 2, 28, ok=lambda year: calendar.isleap(year + 1))
        domain = name("com")
        registry = lab.registry(domain)
        async with lab.domain(domain, d) as handle:
            await lab.go(d, -5)
            assert (await pay(handle, await open_invoice(handle, InvoicePurpose.RENEWAL))).result == "applied"
            assert registry.domains[domain].expires_on == date(d.year + 1, 2, 28)
            status = await handle.query(SubscriptionWorkflow.status)
            assert status.expires_on == registry.domains[domain].expires_on


async def test_a_29_february_domain_keeps_the_registrys_expiry_through_yearly_renewals(
    env: WorkflowEnvironment, tls: Tls
) -> None:
    async with epp_lab(env, tls) as lab:
        d = next_day(await lab.today(), 2, 29)
        domain = name("com")
        registry = lab.registry(domain)
        async with lab.domain(domain, d) as handle:
            for _ in range(4):
                await lab.go(d, -5)
                assert (
                    await pay(handle, await open_invoice(handle, InvoicePurpose.RENEWAL))
                ).result == "applied"
                assert registry.renew_requests[-1].executed
                d = (await handle.query(SubscriptionWorkflow.status)).expires_on
                assert d == registry.domains[domain].expires_on


async def test_a_ten_year_domain_paid_before_d_is_never_paid_more_than_ten_years_ahead(
    env: WorkflowEnvironment, tls: Tls
) -> None:
    async with epp_lab(env, tls) as lab:
        domain = name("com")
        registry = lab.registry(domain)
        d = await lab.today() + timedelta(days=40)
        async with lab.domain(domain, d, period="P10Y", price=PRICE * 10) as handle:
            paid_on = await lab.go(d, -20)
            assert (await pay(handle, await open_invoice(handle, InvoicePurpose.RENEWAL))).result == "applied"
            (renewal,) = registry.renew_requests
            assert renewal.new_expiry is not None
            assert renewal.new_expiry <= add_years(paid_on, 10)


async def test_a_renew_the_registry_refused_does_not_move_the_expiry(
    env: WorkflowEnvironment, tls: Tls
) -> None:
    async with epp_lab(env, tls) as lab:
        domain = name("com")
        registry = lab.registry(domain)
        d = await lab.today() + timedelta(days=40)
        async with lab.domain(domain, d) as handle:
            registry.domains[domain].statuses = {"serverRenewProhibited"}
            await lab.go(d, -5)
            assert (await pay(handle, await open_invoice(handle, InvoicePurpose.RENEWAL))).result == "applied"
            assert registry.renew_requests == [RenewRequest(domain, d, 1, False, None)]
            journal = await lab.journal(handle)
            assert [e.data["action"] for e in journal if e.kind == "action_failed"] == ["registrar renew"]
            status = await handle.query(SubscriptionWorkflow.status)
            assert status.expires_on == registry.domains[domain].expires_on == d


async def test_dns_hosting_is_blocked_when_its_domain_leaves_the_zone(
    env: WorkflowEnvironment, tls: Tls
) -> None:
    async with epp_lab(env, tls) as lab:
        domain = name("cz")
        d = await lab.today() + timedelta(days=40)
        async with (
            lab.domain(domain, d) as domain_handle,
            lab.service(
                product="dns",
                name=domain,
                expires_on=d + timedelta(days=200),
                price=Decimal("120.00"),
                follows=domain_handle.id.removeprefix("service-"),
            ) as dns_handle,
        ):
            await lab.go(d, 35)
            assert (await domain_handle.query(SubscriptionWorkflow.status)).state == "outzone"
            assert (await dns_handle.query(SubscriptionWorkflow.status)).state == "blocked"

"""Adapters that fail N times, fail for good, hang, or answer garbage: the lifecycle goes on, ops see it.

Whole lifecycles on the session's time-skipping server, with the harness's recording adapters
wrapped in fault injectors of the same Protocol. What must hold in every case:

* a fault that passes (N failures, a hang the timeout cuts) leaves the effect done exactly once
  at the adapter and nothing flagged;
* a fault that does not pass ends visibly: `mail_failed` / `action_failed` in the service's
  journal and the `HostlifeAttention` search attribute set, and the lifecycle's later milestones
  (block, deletion) still happen on their days.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import date, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.billing import (
    BillingError,
    CancelInvoiceInput,
    CustomerRefund,
    HeldPayment,
    HoldPaymentInput,
    Invoice,
    IssueInvoiceInput,
    MarkInvoicePaidInput,
    Refund,
    RefundCustomerInput,
    ReturnPaymentInput,
    SqliteBilling,
)
from activities.hypervisor import HypervisorUnavailable, RecordingHypervisor, VmNotFound
from activities.mailer import (
    Mailer,
    MailPermanentError,
    MailTemporaryError,
    RecordingMailer,
    SmtpMailer,
    SmtpSettings,
)
from activities.platform import PlatformAction, PlatformActionInput, PlatformUnavailable, RecordingPlatform
from activities.registrar import RecordingRegistrar, RegistrarUnavailable, RenewDomainResult
from starter.cli_services import in_progress
from starter.mailcatcher import MailCatcher
from tests.reliability.crash_lab import HoldingMailStore
from tests.workflows.harness import Lab, finish, states
from worker import Adapters, build_workers
from workflows import search_attributes as sa
from workflows.models import JournalEntry, PaymentRequest
from workflows.subscription import SubscriptionWorkflow

Handle = WorkflowHandle[SubscriptionWorkflow, Any]


class Hang(Exception):
    """Planned instead of an error: the call never answers (until the test releases it)."""


class Faults:
    """How many more times a call fails, with which exception, or hangs.

    A hang holds the time-skipping server's clock (it does not skip time while an activity runs),
    so hang tests shorten the activities' deadlines to seconds (`short_deadlines`); the activity's
    own deadline, not a start-to-close timeout, cuts the hang.
    """

    def __init__(self) -> None:
        self.plan: dict[str, list[BaseException]] = {}
        self.attempts: dict[str, int] = {}
        self.released = threading.Event()

    def fail(self, call: str, times: int, error: BaseException) -> None:
        self.plan.setdefault(call, []).extend([error] * times)

    def hang(self, call: str, times: int) -> None:
        self.plan.setdefault(call, []).extend([Hang(call)] * times)

    def _next(self, call: str) -> BaseException | None:
        self.attempts[call] = self.attempts.get(call, 0) + 1
        queue = self.plan.get(call)
        return queue.pop(0) if queue else None

    async def enter(self, call: str) -> None:
        fault = self._next(call)
        if isinstance(fault, Hang):
            while not self.released.is_set():  # noqa: ASYNC110 - set from another thread; cancelled here
                await asyncio.sleep(0.05)
            raise ConnectionError(f"{call}: connection abandoned")
        if fault is not None:
            raise fault

    def enter_sync(self, call: str) -> None:
        fault = self._next(call)
        if isinstance(fault, Hang):
            self.released.wait()  # a blocked libvirt call: its thread is abandoned, not killed
            raise ConnectionError(f"{call}: connection abandoned")
        if fault is not None:
            raise fault


class FaultyBilling:
    def __init__(self, inner: SqliteBilling, faults: Faults) -> None:
        self.inner, self.faults = inner, faults

    def issue_invoice(self, request: IssueInvoiceInput) -> Invoice:
        self.faults.enter_sync("issue_invoice")
        return self.inner.issue_invoice(request)

    def cancel_invoice(self, request: CancelInvoiceInput) -> Invoice:
        return self.inner.cancel_invoice(request)

    def mark_invoice_paid(self, request: MarkInvoicePaidInput) -> Invoice:
        self.faults.enter_sync("mark_invoice_paid")
        return self.inner.mark_invoice_paid(request)

    def hold_payment(self, request: HoldPaymentInput) -> HeldPayment:
        return self.inner.hold_payment(request)

    def return_payment(self, request: ReturnPaymentInput) -> Refund:
        return self.inner.return_payment(request)

    def refund_customer(self, request: RefundCustomerInput) -> CustomerRefund:
        return self.inner.refund_customer(request)


class FaultyMailer:
    def __init__(self, inner: Mailer, faults: Faults) -> None:
        self.inner, self.faults = inner, faults
        self.attempted: list[str] = []

    async def deliver(self, message: EmailMessage) -> None:
        template = str(message["X-Hostlife-Template"])
        self.attempted.append(template)
        await self.faults.enter(f"mail:{template}")
        await self.inner.deliver(message)


class FaultyPlatform:
    def __init__(self, inner: RecordingPlatform, faults: Faults) -> None:
        self.inner, self.faults = inner, faults

    async def apply(self, action: PlatformAction, target: str, request: PlatformActionInput) -> bool:
        await self.faults.enter(f"platform:{action.value}")
        return await self.inner.apply(action, target, request)


class FaultyRegistrar(RecordingRegistrar):
    def __init__(self, faults: Faults) -> None:
        super().__init__()
        self.faults = faults
        self.garbage_expiry: date | None = None

    async def renew_domain(self, domain_name: str, current_expiry: date, years: int) -> RenewDomainResult:
        await self.faults.enter("renew")
        result = await super().renew_domain(domain_name, current_expiry, years)
        if self.garbage_expiry is not None:
            return result.model_copy(update={"new_expiry": self.garbage_expiry})
        return result


class FaultyHypervisor(RecordingHypervisor):
    def __init__(self, faults: Faults) -> None:
        super().__init__()
        self.faults = faults

    def power_off(self, vm_name: str, graceful_timeout: timedelta) -> bool:
        self.faults.enter_sync("power_off")
        return super().power_off(vm_name, graceful_timeout)

    def delete(self, vm_name: str) -> bool:
        self.faults.enter_sync("delete")
        return super().delete(vm_name)


@contextlib.asynccontextmanager
async def fault_lab(
    env: WorkflowEnvironment, real_mailer: Mailer | None = None
) -> AsyncIterator[tuple[Lab, Faults, FaultyMailer, FaultyRegistrar]]:
    """The harness's lab, with every adapter behind a fault injector (mail optionally to a real server)."""
    faults = Faults()
    node = f"node-{uuid.uuid4().hex[:8]}"
    stack_guard = contextlib.ExitStack()
    stack_guard.callback(faults.released.set)  # no hung call outlives its test
    billing, mailer, platform = SqliteBilling(), RecordingMailer(), RecordingPlatform()
    faulty_mailer = FaultyMailer(real_mailer or mailer, faults)
    registrar = FaultyRegistrar(faults)
    hypervisor = FaultyHypervisor(faults)
    adapters = Adapters(
        billing=FaultyBilling(billing, faults),
        mailer=faulty_mailer,
        platform=FaultyPlatform(platform, faults),
        registrar=registrar,
        hypervisors={node: hypervisor},
    )
    task_queue = f"faults-{uuid.uuid4()}"
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as executor:
        workers = build_workers(env.client, adapters, task_queue=task_queue, executor=executor)
        async with contextlib.AsyncExitStack() as stack:
            for worker in workers:
                await stack.enter_async_context(worker)
            with stack_guard:
                yield (
                    Lab(env, task_queue, node, billing, mailer, platform, registrar, hypervisor),
                    faults,
                    faulty_mailer,
                    registrar,
                )


async def attention(handle: Handle) -> str:
    description = await handle.describe()
    return description.typed_search_attributes.get(sa.NEEDS_ATTENTION) or ""


def kinds(journal: list[JournalEntry], kind: str) -> list[dict[str, Any]]:
    return [e.data for e in journal if e.kind == kind]


async def run_until(l: Lab, handle: Handle, day: date) -> list[JournalEntry]:
    await l.sleep_until(day)
    return await l.journal(handle)


# ---------------------------------------------------------------------------------------------


async def test_a_ledger_failing_three_times_issues_the_invoice_once_and_flags_nothing(
    env: WorkflowEnvironment,
) -> None:
    async with fault_lab(env) as (l, faults, _, _):
        faults.fail("issue_invoice", 3, BillingError("database is locked"))
        handle = await l.start(expires_in_days=40)
        d = await l.day0(handle)
        journal = await run_until(l, handle, d - timedelta(days=29))

        assert faults.attempts["issue_invoice"] == 4
        assert len(l.billing.invoices()) == 1
        assert [x["action"] for x in kinds(journal, "invoice")] == ["issued"]
        assert l.mails() == ["invoice_issued"]
        assert await attention(handle) == ""
        await finish(handle)


@pytest.mark.parametrize(
    ("error", "times"),
    [(MailPermanentError("550 no such user"), 1), (MailTemporaryError("421 try later"), 100)],
    ids=["refused-for-good", "deferred-beyond-the-retry-bound"],
)
async def test_a_mail_server_that_never_takes_the_notice_is_journalled_flagged_and_life_goes_on(
    env: WorkflowEnvironment, error: Exception, times: int
) -> None:
    async with fault_lab(env) as (l, faults, mailer, _):
        faults.fail("mail:invoice_issued", times, error)
        handle = await l.start(expires_in_days=40)
        d = await l.day0(handle)
        journal = await run_until(l, handle, d + timedelta(days=2))

        failed = kinds(journal, "mail_failed")
        assert [f["template"] for f in failed] == ["invoice_issued"]
        expected_attempts = 1 if isinstance(error, MailPermanentError) else 8  # MAIL_OPTIONS bound
        assert mailer.attempted.count("invoice_issued") == expected_attempts
        assert "mail_failing" in await attention(handle)
        # The lifecycle went on: reminders were mailed and the service was blocked on D+1.
        assert l.mails() == ["reminder", "reminder", "reminder", "service_blocked"]
        assert states(journal, l.clock)[-1] == ("blocked", d + timedelta(days=1))
        await finish(handle)


async def test_a_mail_server_that_hangs_after_taking_the_message_gets_it_once(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """A real SMTP server stores the notice and never answers; the client's timeout cuts the wait.

    The time-skipping server does not skip time while an activity runs, so the hang is cut by
    the SMTP client's own timeout (1 s here, 30 s by default), well inside the activity's 60 s.
    """
    store = HoldingMailStore(tmp_path / "mail")
    async with MailCatcher(port=0, store=store) as catcher:
        smtp = SmtpMailer(SmtpSettings(host="127.0.0.1", port=catcher.port, timeout=1))
        try:
            async with fault_lab(env, real_mailer=smtp) as (l, _, mailer, _):
                handle = await l.start(expires_in_days=40)
                store.hold_first(handle.id.removeprefix("service-"), "invoice_issued")
                d = await l.day0(handle)
                journal = await run_until(l, handle, d - timedelta(days=20))

                assert mailer.attempted.count("invoice_issued") == 2
                assert store.deliveries[(handle.id.removeprefix("service-"), "invoice_issued")] == 2
                assert [m["X-Hostlife-Template"] for m in catcher.messages()] == ["invoice_issued"]
                assert kinds(journal, "mail_failed") == []
                assert await attention(handle) == ""
                await finish(handle)
        finally:
            store.release.set()


async def test_a_control_panel_down_for_a_while_blocks_the_service_once_when_it_is_back(
    env: WorkflowEnvironment,
) -> None:
    async with fault_lab(env) as (l, faults, _, _):
        faults.fail("platform:block", 5, PlatformUnavailable("control panel 503"))
        handle = await l.start(expires_in_days=40)
        d = await l.day0(handle)
        journal = await run_until(l, handle, d + timedelta(days=2))

        assert faults.attempts["platform:block"] == 6
        assert l.platform.calls.count(("block", handle.id.removeprefix("service-"))) == 1
        assert kinds(journal, "platform") == [
            {"action": "block", "targets": [handle.id.removeprefix("service-")]}
        ]
        assert kinds(journal, "action_failed") == []
        assert await attention(handle) == ""
        await finish(handle)


async def test_a_vps_the_hypervisor_does_not_know_is_flagged_and_still_deleted_on_its_day(
    env: WorkflowEnvironment,
) -> None:
    async with fault_lab(env) as (l, faults, _, _):
        faults.fail("power_off", 1, VmNotFound("vps-x"))  # garbage: the node never heard of it
        handle = await l.start(expires_in_days=40, product="vps", name="vps-x")
        d = await l.day0(handle)
        journal = await run_until(l, handle, d + timedelta(days=62))

        assert [f["action"] for f in kinds(journal, "action_failed")] == ["block"]
        assert "action_failed" in await attention(handle)
        assert ("deleted", d + timedelta(days=31)) in states(journal, l.clock)  # VPS: block_days 30
        assert ("delete", "vps-x") in l.hypervisor.calls
        await finish(handle)


async def test_a_hypervisor_unavailable_for_a_while_powers_the_vps_off_once(
    env: WorkflowEnvironment,
) -> None:
    async with fault_lab(env) as (l, faults, _, _):
        faults.fail("power_off", 4, HypervisorUnavailable("libvirtd not answering"))
        handle = await l.start(expires_in_days=40, product="vps", name="vps-h")
        d = await l.day0(handle)
        journal = await run_until(l, handle, d + timedelta(days=2))

        assert faults.attempts["power_off"] == 5
        assert l.hypervisor.calls.count(("power_off", "vps-h")) == 1
        assert kinds(journal, "hypervisor") == [{"action": "power_off", "node": l.node}]
        assert states(journal, l.clock)[-1] == ("blocked", d + timedelta(days=1))
        assert await attention(handle) == ""
        await finish(handle)


async def pay(handle: Handle, payment_id: str) -> Any:
    status = await handle.query(SubscriptionWorkflow.status)
    assert status.open_invoice is not None
    invoice = status.open_invoice
    return await handle.execute_update(
        SubscriptionWorkflow.submit_payment,
        PaymentRequest(payment_id=payment_id, variable_symbol=invoice.variable_symbol, amount=invoice.amount),
    )


async def test_a_registry_unavailable_three_times_renews_the_paid_domain_once(
    env: WorkflowEnvironment,
) -> None:
    async with fault_lab(env) as (l, faults, _, registrar):
        faults.fail("renew", 3, RegistrarUnavailable("EPP session dropped"))
        handle = await l.start(expires_in_days=20, product="domain", name="faults-once.cz", price="290.00")
        d = await l.day0(handle)
        await l.sleep_until(d - timedelta(days=19))

        outcome = await pay(handle, "pay-registry-flaky")

        assert outcome.result == "applied"
        assert faults.attempts["renew"] == 4
        assert registrar.expiries["faults-once.cz"] == d.replace(year=d.year + 1)
        status = await l.status(handle)
        assert (status.renewals, status.expires_on) == (1, d.replace(year=d.year + 1))
        assert await attention(handle) == ""
        await finish(handle)


async def test_a_registry_answering_a_garbage_expiry_does_not_expire_a_paid_domain(
    env: WorkflowEnvironment,
) -> None:
    async with fault_lab(env) as (l, _, _, registrar):
        handle = await l.start(expires_in_days=20, product="domain", name="faults-garbage.cz", price="290.00")
        d = await l.day0(handle)
        await l.sleep_until(d - timedelta(days=19))
        registrar.garbage_expiry = date(2001, 1, 1)

        await pay(handle, "pay-registry-garbage")
        journal = await run_until(l, handle, d - timedelta(days=17))

        try:
            status = await l.status(handle)
            assert status.expires_on >= d, f"D moved back to {status.expires_on}"
            assert status.state == "active", states(journal, l.clock)
            assert "registry" in await attention(handle) or "action_failed" in await attention(handle)
        finally:
            await finish(handle)


# --------------------------------------------------------------------------------------------- hangs


@pytest.fixture
def short_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hangs are cut after 2 s (a VM's graceful-shutdown allowance too), heartbeats every 0.2 s."""
    from activities import hypervisor, liveness

    monkeypatch.setattr(liveness, "HEARTBEAT_EVERY", 0.2)
    monkeypatch.setattr(liveness, "DEADLINES", {"hypervisor": 2.0, "registrar": 2.0, "mail": 2.0})
    monkeypatch.setattr(hypervisor, "deadline_for", lambda kind, extra_seconds=0.0: liveness.DEADLINES[kind])


async def what_ops_see_while_it_hangs(env: WorkflowEnvironment, handle: Handle, activity_type: str) -> Any:
    """The pending activity as the Web UI shows it, once a retry follows a hang: attempt, last failure,
    last heartbeat; and the heartbeat timeouts it was scheduled with (a dead worker is noticed)."""
    for _ in range(600):
        description = await handle.describe()
        for pending in description.raw_description.pending_activities:
            if (
                pending.activity_type.name == activity_type
                and pending.attempt >= 2
                and pending.HasField("last_failure")
                and pending.HasField("heartbeat_details")
            ):
                (details,) = await env.client.data_converter.decode(pending.heartbeat_details.payloads)
                # the run that scheduled it (a payment may continue-as-new right after)
                run = env.client.get_workflow_handle(handle.id, run_id=description.run_id)
                history = await run.fetch_history()
                timeouts = {
                    e.activity_task_scheduled_event_attributes.heartbeat_timeout.ToTimedelta()
                    for e in history.events
                    if e.activity_task_scheduled_event_attributes.activity_type.name == activity_type
                }
                # ... and what `hostlife service show` prints under "in progress"
                (row,) = [
                    r
                    for r in await in_progress(description, env.client.data_converter)
                    if r["activity"] == activity_type
                ]
                assert row["attempt"] >= 2 and row["last_failure"].startswith("AdapterHung: ")
                assert row["last_heartbeat"] is not None
                return pending, details, timeouts
        await asyncio.sleep(0.05)
    raise AssertionError(f"no retried {activity_type} seen pending")


def assert_hang_shown(pending: Any, details: Any, what: str) -> None:
    failure = pending.last_failure
    assert failure.application_failure_info.type == "AdapterHung"
    assert "did not answer within 2 s" in failure.message and what in failure.message
    assert what in details["waiting_for"]


async def test_a_hypervisor_call_that_hangs_is_cut_retried_and_powers_the_vps_off_once(
    env: WorkflowEnvironment, short_deadlines: None
) -> None:
    async with fault_lab(env) as (l, faults, _, _):
        faults.hang("power_off", 2)
        handle = await l.start(expires_in_days=40, product="vps", name="vps-hang")
        d = await l.day0(handle)
        await l.sleep_until(d)
        clock = asyncio.create_task(l.sleep_until(d + timedelta(days=2)))
        pending, details, timeouts = await what_ops_see_while_it_hangs(env, handle, "power_off_vm")
        await clock
        journal = await l.journal(handle)

        assert_hang_shown(pending, details, "power_off vps-hang")
        assert timeouts == {timedelta(minutes=1)}
        assert faults.attempts["power_off"] == 3
        assert l.hypervisor.calls.count(("power_off", "vps-hang")) == 1
        assert kinds(journal, "hypervisor") == [{"action": "power_off", "node": l.node}]
        assert states(journal, l.clock)[-1] == ("blocked", d + timedelta(days=1))
        assert await attention(handle) == ""  # recovered: nothing left for ops
        await finish(handle)


async def test_a_registry_that_hangs_is_cut_retried_and_renews_the_paid_domain_once(
    env: WorkflowEnvironment, short_deadlines: None
) -> None:
    async with fault_lab(env) as (l, faults, _, registrar):
        faults.hang("renew", 2)
        handle = await l.start(expires_in_days=20, product="domain", name="faults-hang.cz", price="290.00")
        d = await l.day0(handle)
        await l.sleep_until(d - timedelta(days=19))

        paying = asyncio.create_task(pay(handle, "pay-registry-hang"))
        pending, details, timeouts = await what_ops_see_while_it_hangs(env, handle, "renew_domain")
        outcome = await paying

        assert_hang_shown(pending, details, "renew faults-hang.cz")
        assert timeouts == {timedelta(seconds=30)}
        assert outcome.result == "applied"
        assert faults.attempts["renew"] == 3
        assert registrar.expiries["faults-hang.cz"] == d.replace(year=d.year + 1)
        status = await l.status(handle)
        assert (status.renewals, status.expires_on) == (1, d.replace(year=d.year + 1))
        assert await attention(handle) == ""
        await finish(handle)


async def test_a_mail_relay_that_hangs_is_cut_retried_and_delivers_the_notice_once(
    env: WorkflowEnvironment, short_deadlines: None
) -> None:
    async with fault_lab(env) as (l, faults, mailer, _):
        faults.hang("mail:invoice_issued", 2)
        handle = await l.start(expires_in_days=40)
        d = await l.day0(handle)
        clock = asyncio.create_task(l.sleep_until(d - timedelta(days=25)))
        pending, details, timeouts = await what_ops_see_while_it_hangs(env, handle, "send_notice")
        await clock
        journal = await l.journal(handle)

        assert_hang_shown(pending, details, "deliver invoice_issued")
        assert timeouts == {timedelta(seconds=20)}
        assert mailer.attempted.count("invoice_issued") == 3
        assert l.mails() == ["invoice_issued"]
        assert kinds(journal, "mail_failed") == []
        assert await attention(handle) == ""
        await finish(handle)


async def test_a_mail_relay_that_always_hangs_ends_as_mail_failed_and_attention(
    env: WorkflowEnvironment, short_deadlines: None
) -> None:
    """A hang that outlasts the mail retry bound is what ops must act on: journalled and flagged."""
    async with fault_lab(env) as (l, faults, mailer, _):
        faults.hang("mail:invoice_issued", 100)
        handle = await l.start(expires_in_days=40)
        d = await l.day0(handle)
        journal = await run_until(l, handle, d - timedelta(days=25))

        assert mailer.attempted.count("invoice_issued") == 8  # MAIL_OPTIONS bound
        (failed,) = kinds(journal, "mail_failed")
        assert "AdapterHung" in failed["error"] or "did not answer" in failed["error"]
        assert "mail_failing" in await attention(handle)
        await finish(handle)

"""Running real workflows against recording adapters on the session's time-skipping server."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.billing import SqliteBilling
from activities.hypervisor import RecordingHypervisor
from activities.mailer import RecordingMailer
from activities.platform import RecordingPlatform
from activities.registrar import RecordingRegistrar
from policy.clock import Clock
from starter.services import start_service
from worker import Adapters, build_workers
from workflows.models import Customer, JournalEntry, ServiceSpec, ServiceStatus
from workflows.subscription import SubscriptionWorkflow


@dataclass
class Lab:
    env: WorkflowEnvironment
    task_queue: str
    node: str
    billing: SqliteBilling
    mailer: RecordingMailer
    platform: RecordingPlatform
    registrar: RecordingRegistrar
    hypervisor: RecordingHypervisor
    clock: Clock = field(default_factory=Clock)

    def today(self, now: datetime) -> date:
        return self.clock.today(now)

    async def now(self) -> datetime:
        return await self.env.get_current_time()

    async def start(self, **overrides: Any) -> WorkflowHandle[SubscriptionWorkflow, Any]:
        today = self.today(await self.now())
        expires_in_days = overrides.pop("expires_in_days", 40)
        fields: dict[str, Any] = {
            "service_id": f"svc-{uuid.uuid4().hex[:10]}",
            "customer": Customer(id="c1", email="jana@example.cz"),
            "product": "hosting",
            "price": Decimal("1200.00"),
            "period": "P1Y",
            "expires_on": today + timedelta(days=expires_in_days),
            "node": self.node,
        }
        fields.update(overrides)
        return await start_service(
            self.env.client, ServiceSpec(**fields), task_queue=self.task_queue, clock=self.clock
        )

    async def sleep_until(self, day: date, at: time = time(12, 0)) -> None:
        target = self.clock.instant(day, at)
        delta = target - await self.now()
        if delta > timedelta(0):
            await self.env.sleep(delta)

    async def day0(self, handle: WorkflowHandle[SubscriptionWorkflow, Any]) -> date:
        status = await handle.query(SubscriptionWorkflow.status)
        return status.expires_on

    async def status(self, handle: WorkflowHandle[SubscriptionWorkflow, Any]) -> ServiceStatus:
        return await handle.query(SubscriptionWorkflow.status)

    async def journal(self, handle: WorkflowHandle[SubscriptionWorkflow, Any]) -> list[JournalEntry]:
        return await handle.query(SubscriptionWorkflow.journal, 0)

    def mails(self) -> list[str]:
        return [str(m["X-Hostlife-Template"]) for m in self.mailer.sent]


async def finish(handle: WorkflowHandle[Any, Any], settle_seconds: float = 10.0) -> None:
    """Terminate a service a test leaves running, once nothing of it is in flight.

    Terminating a workflow under a running workflow task or activity leaves the time-skipping
    server's time lock held, and every later `env.sleep` of the session times out. A payment's
    receipt mail runs beside its answer (workflows/payment_path.py), so a test can end while it is
    still out: wait (up to `settle_seconds`) for the activities, then for the task (a query waits
    for it), then terminate.
    """
    with contextlib.suppress(Exception):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settle_seconds
        while loop.time() < deadline:
            description = await handle.describe()
            if description.status is not WorkflowExecutionStatus.RUNNING:
                return
            if not description.raw_description.pending_activities:
                break
            await asyncio.sleep(0.05)
        await asyncio.wait_for(handle.query(SubscriptionWorkflow.status), settle_seconds)
    with contextlib.suppress(Exception):
        await handle.terminate(reason="test finished")


def states(journal: list[JournalEntry], clock: Clock) -> list[tuple[str, date]]:
    return [(e.data["state"], clock.today(e.at)) for e in journal if e.kind == "state"]


@contextlib.asynccontextmanager
async def lab(env: WorkflowEnvironment, **adapters_given: Any) -> AsyncIterator[Lab]:
    """`adapters_given` replaces any of the other adapters (e.g. `card_gateway=`, `exchange_rates=`)."""
    node = f"node-{uuid.uuid4().hex[:8]}"
    hypervisor = RecordingHypervisor()
    defaults: dict[str, Any] = {
        "billing": SqliteBilling(),
        "mailer": RecordingMailer(),
        "platform": RecordingPlatform(),
        "registrar": RecordingRegistrar(),
        "hypervisors": {node: hypervisor},
    }
    adapters = Adapters(**{**defaults, **adapters_given})
    task_queue = f"tq-{uuid.uuid4()}"
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as executor:
        workers = build_workers(env.client, adapters, task_queue=task_queue, executor=executor)
        async with contextlib.AsyncExitStack() as stack:
            for worker in workers:
                await stack.enter_async_context(worker)
            assert isinstance(adapters.billing, SqliteBilling)
            assert isinstance(adapters.mailer, RecordingMailer)
            assert isinstance(adapters.platform, RecordingPlatform)
            assert isinstance(adapters.registrar, RecordingRegistrar)
            yield Lab(
                env=env,
                task_queue=task_queue,
                node=node,
                billing=adapters.billing,
                mailer=adapters.mailer,
                platform=adapters.platform,
                registrar=adapters.registrar,
                hypervisor=hypervisor,
            )

"""Lifecycle throughput against the engine's own limit (issue 10, part 1).

N services on a compressed clock go through a whole cycle: half are shared hosting that is
invoiced, reminded, blocked and then paid (renewed, switched back on, continued as new), half are
e-mail that is invoiced, reminded, blocked, warned, deleted and purged. Then, on the same server
with the same worker settings, N minimal workflows (`bench.baseline`) do the same timers and the
same number of no-op activities on the same schedule. Each phase is timed from its first start
to the moment its last workflow's last activity ran; the ratio of the two is what is left of the
engine's throughput after hostlife's own work (policy, rendering mail, the ledger, search
attributes, the sandbox importing bigger modules).

Timers fire on the clock, so a phase cannot finish before `floor` (the last milestone's instant);
a phase that ends close to its floor was not saturated, and its ratio says little — use more
services or fewer seconds per day.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import time
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowUpdateRPCTimeoutOrCancelledError, WorkflowUpdateStage
from temporalio.service import RPCError
from temporalio.worker import Worker

from activities.billing import Invoice, IssueInvoiceInput, SqliteBilling
from activities.hypervisor import RecordingHypervisor
from activities.mailer import RecordingMailer
from activities.platform import PlatformAction, PlatformActionInput, RecordingPlatform
from activities.registrar import RecordingRegistrar
from bench.baseline import FINISHED, BaselineInput, BaselineStep, BaselineWorkflow, noop
from bench.common import (
    DevServer,
    HistoryStats,
    cpu_seconds,
    dev_server,
    gather_limited,
    history_stats,
    percentile,
    print_table,
    write_result,
)
from policy.catalog import default_catalog
from policy.clock import Clock
from policy.timeline import CycleFacts, timeline
from starter.services import start_service
from worker import Adapters, build_workers
from workflows.models import Customer, PaymentRequest, ServiceSpec
from workflows.subscription import SubscriptionWorkflow

PATHS = {"pay": "hosting", "del": "email"}
"""Service id prefix → product: paid after the block, or never paid and deleted."""
LEAD_DAYS = 30


class BenchBilling(SqliteBilling):
    """The real ledger, remembering each service's latest invoice so the payer needs no query."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        super().__init__(path)
        self.latest: dict[str, Invoice] = {}

    def issue_invoice(self, request: IssueInvoiceInput) -> Invoice:
        invoice = super().issue_invoice(request)
        self.latest[invoice.service_id] = invoice
        return invoice


class CountingMailer(RecordingMailer):
    """Delivers into a set of Message-IDs: the recording mailer scans its whole list per message."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.count = 0

    async def deliver(self, message: Any) -> None:
        self.ids.add(str(message["Message-ID"]))
        self.count += 1


class BenchPlatform(RecordingPlatform):
    """Notes when a service's last action ran and hands blocked `pay-` services to the payer."""

    def __init__(self, blocked: asyncio.Queue[str]) -> None:
        super().__init__()
        self.blocked = blocked
        self.finished: dict[str, float] = {}

    async def apply(self, action: PlatformAction, target: str, request: PlatformActionInput) -> bool:
        self.state[target] = action.value
        if action is PlatformAction.BLOCK and target.startswith("pay-"):
            self.blocked.put_nowait(target)
        elif (action is PlatformAction.UNBLOCK and target.startswith("pay-")) or (
            action is PlatformAction.PURGE_BACKUPS and target.startswith("del-")
        ):
            self.finished.setdefault(target, time.monotonic())
        return True


def milestone_days(product: str, expires_on: date, epoch_day: date, paid: bool) -> list[int]:
    """Days (from the clock's day 0) on which the path's milestones fall, distinct, in order."""
    terms = default_catalog().profile("default").terms(product)
    days: list[int] = []
    for milestone in timeline(terms, CycleFacts(expires_on=expires_on), None):
        day = (milestone.on - epoch_day).days
        if day not in days:
            days.append(day)
        if paid and milestone.kind.value == "block":
            break
    return days


async def pay_blocked(client: Client, billing: BenchBilling, blocked: asyncio.Queue[str]) -> None:
    """The customer pays as soon as the service is blocked, through the same update the ingress uses."""
    tasks: set[asyncio.Task[Any]] = set()

    async def pay(service_id: str) -> None:
        invoice = billing.latest[service_id]
        handle = client.get_workflow_handle_for(SubscriptionWorkflow.run, f"service-{service_id}")
        request = PaymentRequest(
            payment_id=f"bench-{service_id}", variable_symbol=invoice.variable_symbol, amount=invoice.amount
        )
        for _ in range(20):  # under load an update can outlast the RPC deadline; the payment id dedupes
            try:
                await handle.start_update(
                    SubscriptionWorkflow.submit_payment, request, wait_for_stage=WorkflowUpdateStage.ACCEPTED
                )
                return
            except (RPCError, WorkflowUpdateRPCTimeoutOrCancelledError):
                await asyncio.sleep(1)

    while True:
        service_id = await blocked.get()
        task = asyncio.create_task(pay(service_id))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


async def wait_for(done: dict[str, float], count: int, deadline: float) -> None:
    while len(done) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(done)} of {count} workflows finished in time")
        await asyncio.sleep(0.2)


async def phase_stats(
    client: Client, starts: dict[str, str | None]
) -> tuple[HistoryStats, dict[str, list[Any]]]:
    """Totals over every workflow's history, and one sample first run per path."""
    results = await gather_limited((history_stats(client, wid, run) for wid, run in starts.items()), 16)
    total = HistoryStats()
    samples: dict[str, list[Any]] = {}
    for wid, (stats, events) in zip(starts, results, strict=True):
        total.add(stats)
        samples.setdefault(wid.removeprefix("service-").split("-")[0], events)
    return total, samples


def steps_from_sample(events: list[Any], days: list[int], clock: Clock) -> list[BaselineStep]:
    """The baseline's steps: a timer per milestone day, with the activities the sample ran after it."""
    counts = [0] * len(days)
    fired = 0
    for event in events:
        if event.event_type == EventType.EVENT_TYPE_TIMER_FIRED:
            fired += 1
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            counts[min(fired, len(days) - 1)] += 1
    assert clock.epoch_day is not None
    return [
        BaselineStep(at=clock.instant(clock.epoch_day + timedelta(days=day)), activities=count)
        for day, count in zip(days, counts, strict=True)
    ]


def rates(
    label: str,
    elapsed: float,
    stats: HistoryStats,
    milestones: int,
    floor: float,
    wft_ms: list[float],
    cpu: tuple[float, float],
) -> dict[str, Any]:
    """Per-second rates over the phase, and CPU per 1,000 timers+activities (meaningful unsaturated too)."""
    work = stats.timers_fired + stats.activities
    return {
        "phase": label,
        "elapsed_s": round(elapsed, 2),
        "floor_s": round(floor, 2),
        "worker_cpu_s": round(cpu[0], 2),
        "server_cpu_s": round(cpu[1], 2),
        "worker_cpu_ms_per_unit": round(1000 * cpu[0] / max(1, work), 2),
        "server_cpu_ms_per_unit": round(1000 * cpu[1] / max(1, work), 2),
        "milestones": milestones,
        "milestones_per_s": round(milestones / elapsed, 1),
        "workflow_tasks_per_s": round(stats.workflow_tasks / elapsed, 1),
        "timers_and_activities_per_s": round(work / elapsed, 1),
        "workflow_task_p50_ms": round(percentile(wft_ms, 50), 1),
        "workflow_task_p99_ms": round(percentile(wft_ms, 99), 1),
        "history": asdict(stats),
    }


async def run(
    services: int = 2000, seconds_per_day: int = 1, cache: int | None = None, concurrency: int = 32
) -> dict[str, Any]:
    cache = cache or max(services + 100, 1000)
    async with dev_server() as server, contextlib.AsyncExitStack() as stack:
        drain = asyncio.create_task(server.metrics.drain_forever())
        stack.callback(drain.cancel)
        executor = stack.enter_context(concurrent.futures.ThreadPoolExecutor(max_workers=16))
        ours = await hostlife_phase(server, services, seconds_per_day, cache, concurrency, executor)
        base = await baseline_phase(
            server, ours.pop("_steps"), ours["milestones"], services, cache, concurrency, executor
        )
    ratio = base["elapsed_s"] / ours["elapsed_s"]
    cpu_ratio = (base["worker_cpu_s"] + base["server_cpu_s"]) / max(
        0.01, ours["worker_cpu_s"] + ours["server_cpu_s"]
    )
    result = {
        "parameters": {
            "services": services,
            "seconds_per_day": seconds_per_day,
            "max_cached_workflows": cache,
            "start_concurrency": concurrency,
            "paths": {
                "pay": "hosting: invoice, 3 reminders, block, paid, renewed, unblocked",
                "del": "email: invoice, 3 reminders, block, deletion warning, delete, purge",
            },
        },
        "hostlife": ours,
        "baseline": base,
        "ratio": round(ratio, 3),
        "cpu_ratio": round(cpu_ratio, 3),
        "target_ratio": 0.7,
    }
    write_result("lifecycle_throughput", result)
    print_table(
        f"Lifecycle throughput, {services} services, 1 day = {seconds_per_day} s",
        [
            ("hostlife elapsed s (floor)", f"{ours['elapsed_s']} ({ours['floor_s']})"),
            ("hostlife milestones/s", ours["milestones_per_s"]),
            ("hostlife workflow tasks/s", ours["workflow_tasks_per_s"]),
            ("hostlife timers+activities/s", ours["timers_and_activities_per_s"]),
            ("baseline elapsed s (floor)", f"{base['elapsed_s']} ({base['floor_s']})"),
            ("baseline workflow tasks/s", base["workflow_tasks_per_s"]),
            ("baseline timers+activities/s", base["timers_and_activities_per_s"]),
            ("hostlife CPU s worker / server", f"{ours['worker_cpu_s']} / {ours['server_cpu_s']}"),
            ("baseline CPU s worker / server", f"{base['worker_cpu_s']} / {base['server_cpu_s']}"),
            ("ratio (baseline time / hostlife time)", f"{ratio:.2f} (target ≥ 0.7)"),
            ("CPU ratio (baseline CPU / hostlife CPU)", f"{cpu_ratio:.2f}"),
        ],
    )
    return result


async def hostlife_phase(
    server: DevServer,
    services: int,
    seconds_per_day: int,
    cache: int,
    concurrency: int,
    executor: concurrent.futures.Executor,
) -> dict[str, Any]:
    client = server.client
    blocked: asyncio.Queue[str] = asyncio.Queue()
    billing = BenchBilling()
    platform = BenchPlatform(blocked)
    adapters = Adapters(
        billing=billing,
        mailer=CountingMailer(),
        platform=platform,
        registrar=RecordingRegistrar(),
        hypervisors={"node-1": RecordingHypervisor()},
    )
    task_queue = "bench-lifecycle"
    clock = Clock.compressed_from(datetime.now(UTC), seconds_per_day)
    assert clock.epoch_day is not None
    expires_on = clock.epoch_day + timedelta(days=LEAD_DAYS)
    days = {
        prefix: milestone_days(product, expires_on, clock.epoch_day, prefix == "pay")
        for prefix, product in PATHS.items()
    }
    milestones_per = {
        prefix: len(
            timeline(
                default_catalog().profile("default").terms(product), CycleFacts(expires_on=expires_on), None
            )
        )
        for prefix, product in PATHS.items()
    }
    milestones_per["pay"] = 5  # invoice, three reminders, block; then the payment ends the cycle
    ids = [f"{'pay' if i % 2 == 0 else 'del'}-{i:06d}" for i in range(services)]
    async with contextlib.AsyncExitStack() as stack:
        for worker in build_workers(
            client, adapters, task_queue=task_queue, executor=executor, max_cached_workflows=cache
        ):
            await stack.enter_async_context(worker)
        payer = asyncio.create_task(pay_blocked(client, billing, blocked))
        stack.callback(payer.cancel)
        server.metrics.workflow_task_ms.clear()
        started, started_wall = time.monotonic(), datetime.now(UTC)
        cpu0 = (cpu_seconds(), cpu_seconds(server.pid))

        async def start(service_id: str) -> tuple[str, str | None]:
            spec = ServiceSpec(
                service_id=service_id,
                customer=Customer(id=f"c-{service_id}", email="bench@example.cz", language="en"),
                product=PATHS[service_id[:3]],
                price=Decimal("1200.00"),
                expires_on=expires_on,
            )
            handle = await start_service(client, spec, clock=clock, task_queue=task_queue)
            return handle.id, handle.first_execution_run_id

        starts = dict(await gather_limited((start(i) for i in ids), concurrency))
        last_day = max(max(d) for d in days.values())
        floor = (clock.instant(clock.epoch_day + timedelta(days=last_day)) - started_wall).total_seconds()
        await wait_for(platform.finished, services, started + 3 * last_day * seconds_per_day + 900)
        elapsed = max(platform.finished.values()) - started
        wft_ms = list(server.metrics.workflow_task_ms)
        cpu = (cpu_seconds() - cpu0[0], cpu_seconds(server.pid) - cpu0[1])
    stats, samples = await phase_stats(client, starts)
    milestones = sum(milestones_per[i[:3]] for i in ids)
    result = rates("hostlife", elapsed, stats, milestones, floor, wft_ms, cpu)
    result["mails"] = adapters.mailer.count  # type: ignore[attr-defined]
    assert clock.epoch is not None
    result["_steps"] = {
        prefix: [
            ((step.at - clock.epoch).total_seconds(), step.activities)
            for step in steps_from_sample(samples[prefix], days[prefix], clock)
        ]
        for prefix in PATHS
        if prefix in samples
    }
    return result


async def baseline_phase(
    server: DevServer,
    shape: dict[str, list[tuple[float, int]]],
    hostlife_milestones: int,
    services: int,
    cache: int,
    concurrency: int,
    executor: concurrent.futures.Executor,
) -> dict[str, Any]:
    client = server.client
    task_queue = "bench-baseline"
    FINISHED.clear()
    epoch = datetime.now(UTC)
    ids = [f"base-{'pay' if i % 2 == 0 else 'del'}-{i:06d}" for i in range(services)]
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[BaselineWorkflow],
        activities=[noop],
        activity_executor=executor,
        max_cached_workflows=cache,
    )
    async with worker:
        server.metrics.workflow_task_ms.clear()
        started, started_wall = time.monotonic(), datetime.now(UTC)
        cpu0 = (cpu_seconds(), cpu_seconds(server.pid))

        async def start(workflow_id: str) -> tuple[str, str | None]:
            steps = [
                BaselineStep(at=epoch + timedelta(seconds=offset), activities=count)
                for offset, count in shape[workflow_id.split("-")[1]]
            ]
            handle = await client.start_workflow(
                BaselineWorkflow.run, BaselineInput(steps=steps), id=workflow_id, task_queue=task_queue
            )
            return handle.id, handle.first_execution_run_id

        starts = dict(await gather_limited((start(i) for i in ids), concurrency))
        last = max(offset for steps in shape.values() for offset, _ in steps)
        floor = last + (epoch - started_wall).total_seconds()
        await wait_for(FINISHED, services, started + 3 * last + 900)
        elapsed = max(FINISHED.values()) - started
        wft_ms = list(server.metrics.workflow_task_ms)
        cpu = (cpu_seconds() - cpu0[0], cpu_seconds(server.pid) - cpu0[1])
    stats, _ = await phase_stats(client, starts)
    milestones = hostlife_milestones  # the same work, counted as hostlife counts it
    result = rates("baseline", elapsed, stats, milestones, floor, wft_ms, cpu)
    result["steps"] = shape
    return result


def main(argv: list[str] | None = None, quick: bool = False) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench lifecycle_throughput", description=__doc__)
    parser.add_argument("--services", type=int, default=20 if quick else 2000)
    parser.add_argument("--seconds-per-day", type=int, default=1)
    parser.add_argument("--cache", type=int, default=None, help="max cached workflows (default: all of them)")
    args = parser.parse_args(argv or [])
    return asyncio.run(run(args.services, args.seconds_per_day, args.cache))

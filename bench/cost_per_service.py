"""Cost per service (issue 10, part 3): history, worker memory and database bytes.

1. History events and bytes per service-year, per profile and product, on the time-skipping
   server (as tests/workflows/test_history.py): a service is invoiced and paid every year for
   `--years` years, and every run of its continue-as-new chain is counted. Bytes are the
   serialized size of the history events (what the server stores and replays).
2. Worker memory per 1,000 cached workflows and dev-server database bytes per open service, on
   a dev server: `--open` idle services (months before their invoice) are started with a cache
   large enough for all; the worker process's VmRSS and the SQLite file (with its WAL) are read
   before and after, once every service has had its first workflow task.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import gc
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from decimal import Decimal
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.billing import SqliteBilling
from activities.hypervisor import RecordingHypervisor
from activities.platform import RecordingPlatform
from activities.registrar import RecordingRegistrar
from bench.common import (
    dev_server,
    gather_limited,
    history_stats,
    mib,
    print_table,
    rss_bytes,
    write_result,
)
from bench.lifecycle_throughput import CountingMailer
from policy.clock import Clock
from starter.services import start_service
from starter.temporal_setup import installed_binary, register_search_attributes
from worker import Adapters, build_workers
from workflows.models import Customer, PaymentRequest, ServiceSpec
from workflows.subscription import SubscriptionWorkflow

CASES: list[tuple[str, str, str, str, Decimal]] = [
    # profile, product, period, name, price
    ("default", "hosting", "P1Y", "", Decimal("1200.00")),
    ("default", "email", "P1Y", "", Decimal("240.00")),
    ("default", "vps", "P1Y", "", Decimal("3960.00")),
    ("default", "vps", "P1M", "", Decimal("330.00")),
    ("default", "domain", "P1Y", "bench-example.cz", Decimal("250.00")),
    ("hostico", "hosting", "P1Y", "", Decimal("1200.00")),
    ("hostico", "vps", "P1Y", "", Decimal("3960.00")),
    ("hostico", "domain", "P1Y", "bench-example.eu", Decimal("250.00")),
]


@contextlib.asynccontextmanager
async def time_skipping() -> AsyncIterator[tuple[WorkflowEnvironment, str]]:
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(installed_binary("temporal-test-server")),
        data_converter=pydantic_data_converter,
    ) as env:
        await register_search_attributes(env.client)
        adapters = Adapters(
            billing=SqliteBilling(),
            mailer=CountingMailer(),
            platform=RecordingPlatform(),
            registrar=RecordingRegistrar(),
            hypervisors={"node-1": RecordingHypervisor()},
        )
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as executor:
            async with contextlib.AsyncExitStack() as stack:
                for worker in build_workers(env.client, adapters, task_queue="bench-cost", executor=executor):
                    await stack.enter_async_context(worker)
                yield env, "bench-cost"


async def pay_each_cycle(
    env: WorkflowEnvironment, handle: WorkflowHandle[SubscriptionWorkflow, Any], cycles: int, clock: Clock
) -> None:
    """Skip to the day after each invoice and pay it, `cycles` times."""
    for cycle in range(cycles):
        status = await handle.query(SubscriptionWorkflow.status)
        if status.open_invoice is None:
            invoice_day = status.expires_on - timedelta(days=29)
            delta = clock.instant(invoice_day, clock_time(12)) - await env.get_current_time()
            if delta > timedelta(0):
                await env.sleep(delta)
            status = await handle.query(SubscriptionWorkflow.status)
        invoice = status.open_invoice
        assert invoice is not None, f"no open invoice in cycle {cycle}: {status}"
        outcome = await handle.execute_update(
            SubscriptionWorkflow.submit_payment,
            PaymentRequest(
                payment_id=f"bench-{handle.id}-{cycle}",
                variable_symbol=invoice.variable_symbol,
                amount=invoice.amount,
            ),
        )
        assert outcome.result.value == "applied", outcome


async def history_per_year(years: int) -> list[dict[str, Any]]:
    rows = []
    for profile, product, period, name, price in CASES:
        # A server per case: on a shared one, a later case's skip could time out (seen, not explained).
        async with time_skipping() as (env, task_queue):
            clock = Clock()
            today = clock.today(await env.get_current_time())
            spec = ServiceSpec(
                service_id=f"cost-{profile}-{product}-{period}".lower(),
                customer=Customer(id="c-cost", email="bench@example.cz", language="en"),
                product=product,
                profile=profile,
                name=name,
                price=price,
                period=period,
                expires_on=today + timedelta(days=40),
            )
            handle = await start_service(env.client, spec, clock=clock, task_queue=task_queue)
            cycles = years * (12 if period == "P1M" else 1)
            await pay_each_cycle(env, handle, cycles, clock)
            stats, _ = await history_stats(env.client, handle.id, handle.first_execution_run_id)
            await handle.terminate(reason="benchmark finished")
            rows.append(
                {
                    "profile": profile,
                    "product": product,
                    "period": period,
                    "years": years,
                    "runs": stats.runs,
                    "events_per_year": round(stats.events / years, 1),
                    "bytes_per_year": round(stats.bytes / years),
                    "workflow_tasks_per_year": round(stats.workflow_tasks / years, 1),
                    "activities_per_year": round(stats.activities / years, 1),
                }
            )
    return rows


async def memory_and_database(open_services: int, concurrency: int = 32) -> dict[str, Any]:
    """Worker RSS per 1,000 cached workflows and database bytes per open service."""
    async with dev_server() as server, contextlib.AsyncExitStack() as stack:
        client: Client = server.client
        adapters = Adapters(
            billing=SqliteBilling(),
            mailer=CountingMailer(),
            platform=RecordingPlatform(),
            registrar=RecordingRegistrar(),
            hypervisors={"node-1": RecordingHypervisor()},
        )
        executor = stack.enter_context(concurrent.futures.ThreadPoolExecutor(max_workers=8))
        task_queue = "bench-memory"
        for worker in build_workers(
            client,
            adapters,
            task_queue=task_queue,
            executor=executor,
            max_cached_workflows=open_services + 100,
        ):
            await stack.enter_async_context(worker)
        # One warm-up service, so imports and the first sandbox are not counted per workflow.
        today = Clock().today(datetime.now(UTC))

        def spec(i: int) -> ServiceSpec:
            return ServiceSpec(
                service_id=f"mem-{i:06d}" if i >= 0 else "mem-warmup",
                customer=Customer(id=f"c-mem-{i}", email="bench@example.cz", language="en"),
                product="hosting",
                price=Decimal("1200.00"),
                expires_on=today + timedelta(days=120 + i % 200),
            )

        await start_service(client, spec(-1), task_queue=task_queue)
        await server.metrics.wait_workflow_tasks(1)
        await asyncio.sleep(1)
        gc.collect()
        rss0, db0 = rss_bytes(), server.db_bytes()
        base_tasks = server.metrics.workflow_tasks
        await gather_limited(
            (start_service(client, spec(i), task_queue=task_queue) for i in range(open_services)), concurrency
        )
        await server.metrics.wait_workflow_tasks(base_tasks + open_services)
        await asyncio.sleep(2)  # let the server flush its writes
        gc.collect()
        rss1, db1 = rss_bytes(), server.db_bytes()
        server_rss = server.rss_bytes()
    return {
        "open_services": open_services,
        "worker_rss_mib_before": round(mib(rss0), 1),
        "worker_rss_mib_after": round(mib(rss1), 1),
        "worker_rss_mib_per_1000_cached": round(mib(rss1 - rss0) / open_services * 1000, 1),
        "database_bytes_before": db0,
        "database_bytes_after": db1,
        "database_bytes_per_open_service": round((db1 - db0) / open_services),
        "dev_server_rss_mib": round(mib(server_rss), 1),
    }


async def run(years: int = 3, open_services: int = 2000) -> dict[str, Any]:
    history = await history_per_year(years)
    memory = await memory_and_database(open_services)
    result = {"history_per_service_year": history, "memory_and_database": memory}
    write_result("cost_per_service", result)
    rows: list[tuple[str, object]] = [
        (
            f"{r['profile']}/{r['product']} {r['period']}: events, bytes per year",
            f"{r['events_per_year']:.0f} ev, {r['bytes_per_year']:,} B",
        )
        for r in history
    ]
    rows += [
        ("worker RSS per 1,000 cached workflows", f"{memory['worker_rss_mib_per_1000_cached']} MiB"),
        ("dev-server database per open service", f"{memory['database_bytes_per_open_service']:,} B"),
    ]
    print_table(f"Cost per service ({years} paid years; {open_services} open services)", rows)
    return result


def main(argv: list[str] | None = None, quick: bool = False) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench cost_per_service", description=__doc__)
    parser.add_argument("--years", type=int, default=1 if quick else 3)
    parser.add_argument("--open", type=int, default=50 if quick else 2000, help="idle services for memory/db")
    args = parser.parse_args(argv or [])
    return asyncio.run(run(args.years, args.open))

"""Payment to service back on (issue 10, part 2): POST → completed power-on activity.

The `make run` topology in one process: the real ingress (FastAPI on uvicorn, loopback), the
`TemporalPaymentRouter` reading a SQLite billing ledger, and the lifecycle and hypervisor-node
workers, all on one event loop against one dev server. `--services` services are open (default
10,000); most are shared hosting far from their expiry (idle, on the real clock), and
`rate × seconds` VPS services on a compressed clock are blocked for non-payment (their
power-off ran). Then signed card webhooks arrive open-loop at a steady `--rate` per second, one
per blocked VPS with its open invoice's VS and amount, and each latency is measured from just
before the POST to the moment the hypervisor's `power_on` returned (a `RecordingHypervisor`
subclass stamps it) — the update, the ledger write and the power-on activity on the node's
task queue are all inside it.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import gc
import json
import os
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from temporalio.client import Client
from temporalio.worker import Worker

from activities.billing import SqliteBilling
from bench.baseline import POWERED_ON, PaymentFloorWorkflow, power_on_floor
from bench.common import (
    GcPauses,
    cpu_seconds,
    dev_server,
    gather_limited,
    machine_cores_since,
    machine_cpu_seconds,
    mib,
    percentile,
    print_table,
    rss_bytes,
    write_result,
)
from bench.worker_pool import (
    BenchWorkers,
    PoolConfig,
    in_process_workers,
    wait_workflow_tasks,
    worker_processes,
)
from policy.clock import Clock
from starter.ingress import IngressSettings, create_app, sign_webhook
from starter.payment_router import TemporalPaymentRouter
from starter.quiet_gc import quiet_collector_from_env
from starter.services import start_service
from workflows.models import Customer, ServiceSpec

SECRET = "bench-webhook-secret-0123456789abcdef"
API_KEY = "bench-statement-api-key-0123456789abcdef"
NODE = "node-1"


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Uvicorn on a free loopback port on this loop; yields an HTTP client for it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120, limits=limits) as http:
            yield http
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, 10)
        except TimeoutError:  # requests still waiting on their updates: stop anyway
            task.cancel()
        sock.close()


async def post_card(
    http: httpx.AsyncClient, payment_id: str, variable_symbol: str, amount: Decimal
) -> httpx.Response:
    body = json.dumps(
        {
            "payment_id": payment_id,
            "variable_symbol": variable_symbol,
            "amount": str(amount),
            "currency": "CZK",
            "received_at": datetime.now(UTC).isoformat(),
        }
    ).encode()
    stamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "X-Hostlife-Timestamp": str(stamp),
        "X-Hostlife-Signature": sign_webhook(SECRET, stamp, body),
    }
    return await http.post("/payments/card", content=body, headers=headers)


def worker_options(cache: int, workflow_pollers: int, activity_pollers: int) -> dict[str, Any]:
    """The worker settings both phases run with (SDK defaults: 1,000 cached, 5 + 5 pollers)."""
    return {
        "max_cached_workflows": cache,
        "max_concurrent_workflow_task_polls": workflow_pollers,
        "max_concurrent_activity_task_polls": activity_pollers,
    }


def floor_app(client: Client) -> FastAPI:
    """The floor's ingress: one route that sends the update and answers with its result."""
    app = FastAPI()

    @app.post("/pay/{workflow_id}")
    async def pay(workflow_id: str) -> dict[str, str]:
        handle = client.get_workflow_handle_for(PaymentFloorWorkflow.run, workflow_id)
        return {"paid": await handle.execute_update(PaymentFloorWorkflow.pay, f"pay-{workflow_id}")}

    return app


async def floor_phase(
    server: Any,
    executor: concurrent.futures.Executor,
    paid: int,
    rate: float,
    options: dict[str, Any],
    concurrency: int,
) -> dict[str, Any]:
    """The same open-loop payments on the same server, to `PaymentFloorWorkflow`: the engine's floor."""
    client = server.client
    POWERED_ON.clear()
    async with contextlib.AsyncExitStack() as stack:
        for worker in (
            Worker(
                client,
                task_queue="bench-floor",
                workflows=[PaymentFloorWorkflow],
                activity_executor=executor,
                **options,
            ),
            Worker(
                client,
                task_queue="bench-floor-node",
                activities=[power_on_floor],
                activity_executor=executor,
                **options,
            ),
        ):
            await stack.enter_async_context(worker)
        http = await stack.enter_async_context(serving(floor_app(client)))
        ids = [f"floor-{i:06d}" for i in range(paid)]
        tasks0 = server.metrics.workflow_tasks
        await gather_limited(
            (
                client.start_workflow(
                    PaymentFloorWorkflow.run, "bench-floor-node", id=workflow_id, task_queue="bench-floor"
                )
                for workflow_id in ids
            ),
            concurrency,
        )
        await server.metrics.wait_workflow_tasks(tasks0 + paid, 600)  # each one's first task
        await asyncio.sleep(1)
        posted: dict[str, float] = {}
        statuses: dict[str, int] = {}

        async def pay(k: int, at: float) -> None:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            posted[ids[k]] = time.monotonic()
            try:
                statuses[ids[k]] = (await http.post(f"/pay/{ids[k]}")).status_code
            except httpx.TimeoutException:  # the power-on may still come; the answer is reported
                statuses[ids[k]] = 0

        counts0 = (server.metrics.workflow_tasks, server.metrics.activities)
        cpu0 = (cpu_seconds(), cpu_seconds(server.pid))
        machine0 = machine_cpu_seconds()
        t0 = time.monotonic() + 0.5
        with GcPauses() as gc_pauses:
            await asyncio.gather(*(pay(k, t0 + k / rate) for k in range(paid)))
            with contextlib.suppress(TimeoutError):
                await wait_until(lambda: all(i in POWERED_ON for i in ids), "every floor power-on", 120)
        load_s = time.monotonic() - t0
        cpu = (cpu_seconds() - cpu0[0], cpu_seconds(server.pid) - cpu0[1])
        machine = machine_cores_since(machine0, load_s)
        counts = (server.metrics.workflow_tasks - counts0[0], server.metrics.activities - counts0[1])
    latencies = [1000 * (POWERED_ON[i] - posted[i]) for i in ids if i in POWERED_ON]
    return {
        "payments": paid,
        "answers": sorted({str(code) for code in statuses.values()}),
        "not_powered_on": paid - len(latencies),
        "post_to_power_on_ms": {
            "p50": round(percentile(latencies, 50), 1),
            "p95": round(percentile(latencies, 95), 1),
            "p99": round(percentile(latencies, 99), 1),
            "max": round(max(latencies, default=0.0), 1),
        },
        "during_load": {
            "seconds": round(load_s, 1),
            "worker_process_cpu_s": round(cpu[0], 2),
            "server_cpu_s": round(cpu[1], 2),
            **machine,
        },
        "per_payment": per_payment(paid, cpu, counts),
        "gc_pauses_during_load": gc_pauses.summary(),
    }


def quiet_collector_counts(workers: BenchWorkers) -> dict[str, int] | None:
    """What the in-process workers' quiet collector did over the whole run (None in processes)."""
    collector = getattr(workers, "collector", None)
    if collector is None:
        return None
    return {"collections": collector.collections, "forced": collector.forced, "freezes": collector.freezes}


def per_payment(paid: int, cpu: tuple[float, float], counts: tuple[int, int]) -> dict[str, float]:
    """CPU milliseconds and worker round trips per payment during the load."""
    return {
        "worker_process_cpu_ms": round(1000 * cpu[0] / max(1, paid), 1),
        "server_cpu_ms": round(1000 * cpu[1] / max(1, paid), 1),
        "workflow_tasks": round(counts[0] / max(1, paid), 2),
        "activities": round(counts[1] / max(1, paid), 2),
    }


async def wait_until(check: Any, what: str, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def run(
    services: int = 10_000,
    rate: float = 20.0,
    seconds: float = 30.0,
    seconds_per_day: int = 10,
    concurrency: int = 32,
    options: dict[str, Any] | None = None,
    floor: bool = True,
    processes: int = 0,
    quiet_before_load_s: float = 0.0,
) -> dict[str, Any]:
    paid = max(1, round(rate * seconds))
    options = options if options is not None else worker_options(1000, 5, 5)
    idle = max(0, services - paid)
    async with dev_server() as server, contextlib.AsyncExitStack() as stack:
        drain = asyncio.create_task(server.metrics.drain_forever())
        stack.callback(drain.cancel)
        client = server.client
        billing = SqliteBilling(server.data_dir / "billing.sqlite")
        executor = stack.enter_context(concurrent.futures.ThreadPoolExecutor(max_workers=32))
        task_queue = "bench-payments"
        config = PoolConfig(
            server.address, task_queue, str(server.data_dir / "billing.sqlite"), NODE, options
        )
        workers: BenchWorkers = await stack.enter_async_context(
            worker_processes(config, processes) if processes else in_process_workers(server, config, billing)
        )
        settings = IngressSettings.model_validate({"webhook_secret": SECRET, "api_key": API_KEY})
        http = await stack.enter_async_context(
            serving(create_app(TemporalPaymentRouter(client, billing), settings))
        )

        # The open services that just wait (real clock, expiry months away), then the ones to pay.
        today = Clock().today(datetime.now(UTC))
        started = time.monotonic()
        idle_tasks0 = workers.workflow_tasks

        async def start(spec: ServiceSpec, clock: Clock | None = None) -> None:
            await start_service(client, spec, clock=clock, task_queue=task_queue)

        await gather_limited(
            (
                start(
                    ServiceSpec(
                        service_id=f"idle-{i:06d}",
                        customer=Customer(id=f"c-idle-{i}", email="bench@example.cz", language="en"),
                        product="hosting",
                        price=Decimal("1200.00"),
                        expires_on=today + timedelta(days=100 + i % 200),
                    )
                )
                for i in range(idle)
            ),
            concurrency,
        )
        idle_started_s = time.monotonic() - started
        # Every idle service's first workflow task, before the VPS clock starts: with that backlog
        # still queued, the VPSs' own first tasks waited minutes, their compressed clock ran on, and
        # some were deleted for non-payment before their payment came (answered "returned").
        await wait_workflow_tasks(workers, idle_tasks0 + idle, 1800)
        idle_settled_s = time.monotonic() - started
        clock = Clock.compressed_from(datetime.now(UTC), seconds_per_day)
        assert clock.epoch_day is not None
        vps_ids = [f"vps-{i:06d}" for i in range(paid)]
        await gather_limited(
            (
                start(
                    ServiceSpec(
                        service_id=service_id,
                        customer=Customer(id=f"c-{service_id}", email="bench@example.cz", language="en"),
                        product="vps",
                        price=Decimal("330.00"),
                        expires_on=clock.epoch_day,
                        node=NODE,
                    ),
                    clock,
                )
                for service_id in vps_ids
            ),
            concurrency,
        )
        await wait_until(lambda: len(workers.off_at) >= paid, "the VPS services to be blocked", 600)
        open_services = idle + paid
        quiet_window = (time.monotonic(), time.monotonic() + quiet_before_load_s)
        await asyncio.sleep(quiet_before_load_s)  # a quiet spell before the burst, if asked for
        worker_rss, server_rss, bench_rss = workers.rss_bytes(), server.rss_bytes(), rss_bytes()
        latest = {invoice.service_id: invoice for invoice in billing.invoices()}  # by sequence

        # Steady, open-loop load: payment k is sent at t0 + k/rate whatever the earlier ones do.
        posted: dict[str, float] = {}
        answers: dict[str, tuple[int, float, str]] = {}
        retried: dict[str, int] = {}

        async def pay(k: int, at: float) -> None:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            service_id = vps_ids[k]
            invoice = latest[service_id]
            posted[service_id] = time.monotonic()
            status, outcome = 0, "no answer"
            for attempt in range(10):  # a 503 means "retry": routing is idempotent by payment id
                try:
                    response = await post_card(
                        http, f"card-{service_id}", invoice.variable_symbol, invoice.amount
                    )
                except httpx.TimeoutException:  # an overloaded machine: retry, as a gateway would
                    retried[service_id] = attempt + 1
                    continue
                status = response.status_code
                outcome = response.json()["results"][0]["outcome"] if status == 200 else ""
                if status != 503:
                    break
                retried[service_id] = attempt + 1
                await asyncio.sleep(1)
            answers[service_id] = (status, time.monotonic() - posted[service_id], outcome)

        counts0 = (workers.workflow_tasks, workers.activities)
        server.metrics.mark()  # the in-process workers' SDK metrics (not other processes')
        cpu0 = (workers.cpu_seconds(), cpu_seconds(server.pid), cpu_seconds())
        machine0 = machine_cpu_seconds()
        t0 = time.monotonic() + 0.5
        with GcPauses() as bench_gc_pauses:
            await asyncio.gather(*(pay(k, t0 + k / rate) for k in range(paid)))
            with contextlib.suppress(TimeoutError):  # what never came back on is reported, not fatal
                await wait_until(
                    lambda: all(s in workers.on_at for s in vps_ids), "every VPS powered on", 120
                )
        load_s = time.monotonic() - t0
        load_window = (t0, t0 + load_s)
        cpu = (workers.cpu_seconds() - cpu0[0], cpu_seconds(server.pid) - cpu0[1])
        bench_cpu = cpu_seconds() - cpu0[2]
        machine = machine_cores_since(machine0, load_s)
        if processes:  # the ingress and the load generator run here, apart from the workers
            cpu = (cpu[0] + bench_cpu, cpu[1])
        await asyncio.sleep(0.5)  # the counters of worker processes are pulled every 0.1 s
        # Every answer is in, so the workflow tasks and activities of each payment are all counted
        # (including the receipt mail and any continue-as-new that follow the power-on).
        counts = (workers.workflow_tasks - counts0[0], workers.activities - counts0[1])
        sdk_metrics = None if processes else server.metrics.summary_since_mark()
        sent_s = max(posted.values()) - min(posted.values())
        floor_result = (
            await floor_phase(server, executor, paid, rate, options, concurrency) if floor else None
        )

    latencies = [1000 * (workers.on_at[s] - posted[s]) for s in vps_ids if s in workers.on_at]
    http_ms = [1000 * answers[s][1] for s in vps_ids if s in answers]
    statuses = sorted({f"{answers[s][0]} {answers[s][2]}" for s in vps_ids if s in answers})
    result: dict[str, Any] = {
        "parameters": {
            "open_services": open_services,
            "idle_hosting": idle,
            "blocked_vps_paid": paid,
            "rate_per_s": rate,
            "seconds_per_day_of_vps_clock": seconds_per_day,
            "gc_threshold": list(gc.get_threshold()),
            "worker_processes": processes,
            "quiet_before_load_s": quiet_before_load_s,
            "quiet_gc": (collector := quiet_collector_from_env()) is not None,
            "quiet_gc_mode": collector.mode if collector is not None else "off",
        },
        "achieved_rate_per_s": round((paid - 1) / sent_s, 2) if paid > 1 and sent_s > 0 else None,
        "answers": statuses,
        "not_powered_on": paid - len(latencies),
        "posts_retried_after_503": len(retried),
        "post_to_power_on_ms": {
            "p50": round(percentile(latencies, 50), 1),
            "p95": round(percentile(latencies, 95), 1),
            "p99": round(percentile(latencies, 99), 1),
            "max": round(max(latencies, default=0.0), 1),
        },
        "http_response_ms": {
            "p50": round(percentile(http_ms, 50), 1),
            "p99": round(percentile(http_ms, 99), 1),
        },
        "target_p99_ms": 1000,
        "worker_options": options,
        "per_payment": per_payment(paid, cpu, counts),
        "sdk_metrics_during_load": sdk_metrics,
        "quiet_collector": quiet_collector_counts(workers),
        "gc_pauses_during_load": workers.gc_pauses(*load_window),
        "gc_pauses_in_quiet_spell": workers.gc_pauses(*quiet_window)["generation_2"],
        "bench_process_gc_pauses_during_load": bench_gc_pauses.summary() if processes else None,
        "engine_floor": floor_result,
        "idle_services_started_in_s": round(idle_started_s, 1),
        "idle_services_first_tasks_done_in_s": round(idle_settled_s, 1),
        "during_load": {
            "seconds": round(load_s, 1),
            "worker_process_cpu_s": round(cpu[0], 2),
            "server_cpu_s": round(cpu[1], 2),
            **machine,
        },
        "rss_mib_with_all_open": {
            "worker_process": round(mib(worker_rss), 1),
            "dev_server": round(mib(server_rss), 1),
            "ingress_and_load_process": round(mib(bench_rss), 1) if processes else None,
        },
    }
    write_result("payment_latency", result)
    lat = result["post_to_power_on_ms"]
    print_table(
        f"Payment → power on, {open_services} open services, {rate}/s × {paid} payments",
        [
            ("p50 ms", lat["p50"]),
            ("p95 ms", lat["p95"]),
            ("p99 ms (target < 1000)", lat["p99"]),
            ("max ms", lat["max"]),
            (
                "HTTP answer p50 / p99 ms",
                f"{result['http_response_ms']['p50']} / {result['http_response_ms']['p99']}",
            ),
            ("achieved rate /s", str(result["achieved_rate_per_s"])),
            ("answers", ", ".join(statuses)),
            (
                "per payment: worker / server CPU ms",
                f"{result['per_payment']['worker_process_cpu_ms']} / {result['per_payment']['server_cpu_ms']}",
            ),
            (
                "per payment: workflow tasks / activities",
                f"{result['per_payment']['workflow_tasks']} / {result['per_payment']['activities']}",
            ),
            (
                "machine busy during load: cores of (stolen)",
                f"{result['during_load']['machine_busy_cores']} / {os.cpu_count()}"
                f" (stolen {result['during_load']['machine_stolen_cores']})",
            ),
            (
                "full GC pauses during load: count / max ms",
                "{collections} / {max_ms}".format(**result["gc_pauses_during_load"]["generation_2"]),
            ),
            *floor_rows(floor_result),
        ],
    )
    return result


def floor_rows(floor: dict[str, Any] | None) -> list[tuple[str, object]]:
    if floor is None:
        return []
    lat, each = floor["post_to_power_on_ms"], floor["per_payment"]
    return [
        ("engine floor p50 / p95 / p99 ms", f"{lat['p50']} / {lat['p95']} / {lat['p99']}"),
        (
            "engine floor per payment: worker / server CPU ms",
            f"{each['worker_process_cpu_ms']} / {each['server_cpu_ms']}",
        ),
        (
            "engine floor per payment: workflow tasks / activities",
            f"{each['workflow_tasks']} / {each['activities']}",
        ),
    ]


def main(argv: list[str] | None = None, quick: bool = False) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench payment_latency", description=__doc__)
    parser.add_argument("--services", type=int, default=60 if quick else 10_000, help="open services in all")
    parser.add_argument("--rate", type=float, default=20.0, help="payments per second")
    parser.add_argument(
        "--seconds", type=float, default=2.0 if quick else 30.0, help="how long the load lasts"
    )
    parser.add_argument("--seconds-per-day", type=int, default=10, help="compressed clock of the paid VPS")
    parser.add_argument("--cache", type=int, default=1000, help="max cached workflows per worker")
    parser.add_argument("--workflow-pollers", type=int, default=5, help="concurrent workflow task polls")
    parser.add_argument("--activity-pollers", type=int, default=5, help="concurrent activity task polls")
    parser.add_argument(
        "--no-floor",
        action="store_true",
        help="skip the engine's floor (PaymentFloorWorkflow) after the load",
    )
    parser.add_argument(
        "--worker-processes",
        type=int,
        default=0,
        help="run the workers in N processes of their own (0: in this process, beside the ingress)",
    )
    parser.add_argument(
        "--quiet-before-load",
        type=float,
        default=0.0,
        help="seconds of quiet after every VPS is blocked, before the first payment (a burst after a lull)",
    )
    args = parser.parse_args(argv or [])
    options = worker_options(args.cache, args.workflow_pollers, args.activity_pollers)
    return asyncio.run(
        run(
            args.services,
            args.rate,
            args.seconds,
            args.seconds_per_day,
            options=options,
            floor=not args.no_floor,
            processes=args.worker_processes,
            quiet_before_load_s=args.quiet_before_load,
        )
    )

"""Scale (issue 10, part 4): many services on one dev server, and the simulator on a big scenario.

1. `--services` idle shared-hosting services (default 100,000; expiry months away, real clock)
   are started on one dev server with the lifecycle worker running (a cache of `--cache`
   workflows, 1,000 by default; in this process, or in `--worker-processes` processes of their
   own). Every `--sample-every` starts, the start rate of that window, the dev server's RSS, the
   workers' RSS and the database size are sampled. The run ends when every service has had its
   first workflow task.
2. `hostlife simulate` machinery (`starter.simulate.run_scenario`, time-skipping server) on a
   generated scenario of `--sim-services` services (default 1,000; hosting, e-mail, VPS and .cz
   domains) over `--sim-days` days (default 730): every other service is paid before D in both
   years, the rest run to deletion. The wall time and the output lines are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from activities.billing import SqliteBilling
from bench.common import dev_server, mib, print_table, rss_bytes, write_result
from bench.worker_pool import BenchWorkers, PoolConfig, in_process_workers, worker_processes
from policy.clock import Clock
from starter.services import start_service
from starter.simulate import load_scenario, run_scenario
from workflows.models import Customer, ServiceSpec

PRODUCTS = [
    ("hosting", "1200.00", ""),
    ("email", "240.00", ""),
    ("vps", "3960.00", ""),
    ("domain", "250.00", ".cz"),
]


async def start_many(
    services: int,
    sample_every: int,
    drain_limit_s: float = 3600.0,
    concurrency: int = 32,
    processes: int = 0,
    cache: int = 1000,
) -> dict[str, Any]:
    samples: list[dict[str, Any]] = []
    async with dev_server() as server, contextlib.AsyncExitStack() as stack:
        drain = asyncio.create_task(server.metrics.drain_forever())
        stack.callback(drain.cancel)
        client = server.client
        billing_path = server.data_dir / "billing.sqlite"
        task_queue = "bench-scale"
        config = PoolConfig(
            server.address, task_queue, str(billing_path), "node-1", {"max_cached_workflows": cache}
        )
        workers: BenchWorkers = await stack.enter_async_context(
            worker_processes(config, processes)
            if processes
            else in_process_workers(server, config, SqliteBilling(billing_path))
        )
        today = Clock().today(datetime.now(UTC))
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(services):
            queue.put_nowait(i)
        done = 0

        async def starter() -> None:
            nonlocal done
            while not queue.empty():
                i = queue.get_nowait()
                spec = ServiceSpec(
                    service_id=f"scale-{i:07d}",
                    customer=Customer(id=f"c-{i // 3}", email="bench@example.cz", language="en"),
                    product="hosting",
                    price=Decimal("1200.00"),
                    expires_on=today + timedelta(days=60 + i % 300),
                )
                await start_service(client, spec, task_queue=task_queue)
                done += 1

        started = time.monotonic()
        tasks = [asyncio.create_task(starter()) for _ in range(concurrency)]
        last_t, last_n = started, 0
        while done < services:
            await asyncio.sleep(0.5)
            if done - last_n >= sample_every or done >= services:
                now = time.monotonic()
                samples.append(
                    {
                        "started": done,
                        "elapsed_s": round(now - started, 1),
                        "window_starts_per_s": round((done - last_n) / (now - last_t), 1),
                        "first_tasks_done": workers.workflow_tasks,
                        "dev_server_rss_mib": round(mib(server.rss_bytes()), 1),
                        "worker_rss_mib": round(mib(workers.rss_bytes()), 1),
                        "database_mib": round(mib(server.db_bytes()), 1),
                    }
                )
                print(json.dumps(samples[-1]), flush=True)
                last_t, last_n = now, done
        await asyncio.gather(*tasks)
        all_started_s = time.monotonic() - started
        # Each new workflow's first task trails its start; keep sampling while they drain, and
        # report how far they got rather than nothing when `drain_limit_s` runs out.
        drain_samples: list[dict[str, Any]] = []
        deadline = time.monotonic() + drain_limit_s
        last_t, last_tasks = time.monotonic(), workers.workflow_tasks
        while workers.workflow_tasks < services and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            if now - last_t >= 30:
                tasks_done = workers.workflow_tasks
                drain_samples.append(
                    {
                        "elapsed_s": round(now - started, 1),
                        "first_tasks_done": tasks_done,
                        "window_first_tasks_per_s": round((tasks_done - last_tasks) / (now - last_t), 1),
                        "dev_server_rss_mib": round(mib(server.rss_bytes()), 1),
                        "worker_rss_mib": round(mib(workers.rss_bytes()), 1),
                    }
                )
                print(json.dumps(drain_samples[-1]), flush=True)
                last_t, last_tasks = now, tasks_done
        settled_s = time.monotonic() - started
        end = {
            "dev_server_rss_mib": round(mib(server.rss_bytes()), 1),
            "worker_rss_mib": round(mib(workers.rss_bytes()), 1),
            "database_mib": round(mib(server.db_bytes()), 1),
            "starter_process_rss_mib": round(mib(rss_bytes()), 1) if processes else None,
            "first_workflow_tasks": workers.workflow_tasks,
            "all_first_tasks_done": workers.workflow_tasks >= services,
        }
    return {
        "services": services,
        "worker_processes": processes,
        "max_cached_workflows_per_process": cache,
        "all_started_s": round(all_started_s, 1),
        "all_first_tasks_done_s": round(settled_s, 1),
        "mean_starts_per_s": round(services / all_started_s, 1),
        "end": end,
        "samples": samples,
        "drain_samples": drain_samples,
    }


def scenario(services: int, days: int) -> dict[str, Any]:
    """A generated simulator scenario: a quarter each of hosting, e-mail, VPS and .cz domains."""
    items, events = [], []
    for i in range(services):
        product, price, tld = PRODUCTS[i % len(PRODUCTS)]
        d = 30 + (i * 7) % 300
        items.append(
            {
                "id": f"s-{i}",
                "customer": f"c-{i // 4}",
                "product": product,
                "name": f"bench-{i}{tld}" if tld else "",
                "expires_in_days": d,
                "price": price,
                "period": "P1Y",
            }
        )
        if i % 2 == 0:
            for year in range(3):
                day = d - 10 + 365 * year
                if 0 <= day <= days:
                    events.append({"day": day, "type": "pay", "service": f"s-{i}"})
    customers = [{"id": f"c-{n}", "email": f"c{n}@example.cz"} for n in range((services + 3) // 4)]
    return {
        "profile": "default",
        "customers": customers,
        "services": items,
        "events": events,
        "until_day": days,
    }


async def simulate(services: int, days: int) -> dict[str, Any]:
    text = json.dumps(scenario(services, days))
    loaded = load_scenario(text)
    lines: list[dict[str, Any]] = []
    logging.getLogger().setLevel(logging.CRITICAL)
    started = time.monotonic()
    await run_scenario(loaded, lines.append)
    elapsed = time.monotonic() - started
    kinds: dict[str, int] = {}
    for line in lines:
        kinds[line["kind"]] = kinds.get(line["kind"], 0) + 1
    return {
        "services": services,
        "days": days,
        "events": len(loaded.events),
        "wall_s": round(elapsed, 1),
        "output_lines": len(lines),
        "lines_by_kind": kinds,
        "worker_rss_mib": round(mib(rss_bytes()), 1),
    }


async def run(
    services: int,
    sample_every: int,
    sim_services: int,
    sim_days: int,
    drain_limit_s: float = 3600.0,
    processes: int = 0,
    cache: int = 1000,
) -> dict[str, Any]:
    many = (
        await start_many(services, sample_every, drain_limit_s, processes=processes, cache=cache)
        if services > 0
        else None
    )
    sim = await simulate(sim_services, sim_days) if sim_services > 0 else None
    result = {"start_many": many, "simulator": sim}
    write_result("scale", result)
    rows: list[tuple[str, object]] = []
    if many:
        rows += [
            (f"{services:,} services started in s", many["all_started_s"]),
            ("mean starts/s", many["mean_starts_per_s"]),
            (
                f"first workflow tasks: {many['end']['first_workflow_tasks']:,} of {services:,} done at s",
                many["all_first_tasks_done_s"],
            ),
            ("dev server RSS at end MiB", many["end"]["dev_server_rss_mib"]),
            ("database at end MiB", many["end"]["database_mib"]),
            ("worker RSS at end MiB", many["end"]["worker_rss_mib"]),
        ]
    if sim:
        rows += [(f"simulator: {sim_services:,} services × {sim_days} days, s", sim["wall_s"])]
    print_table("Scale", rows)
    return result


def main(argv: list[str] | None = None, quick: bool = False) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench scale", description=__doc__)
    parser.add_argument("--services", type=int, default=200 if quick else 100_000)
    parser.add_argument("--sample-every", type=int, default=None, help="starts between samples")
    parser.add_argument("--sim-services", type=int, default=8 if quick else 1000)
    parser.add_argument("--sim-days", type=int, default=60 if quick else 730)
    parser.add_argument(
        "--drain-limit",
        type=float,
        default=3600.0,
        help="seconds to wait, after the last start, for every first workflow task (then report how far)",
    )
    parser.add_argument(
        "--worker-processes",
        type=int,
        default=0,
        help="run the workers in N processes of their own (0: in this process, beside the starter)",
    )
    parser.add_argument("--cache", type=int, default=1000, help="max cached workflows per worker process")
    args = parser.parse_args(argv or [])
    sample_every = args.sample_every or max(50, args.services // 20)
    return asyncio.run(
        run(
            args.services,
            sample_every,
            args.sim_services,
            args.sim_days,
            args.drain_limit,
            args.worker_processes,
            args.cache,
        )
    )

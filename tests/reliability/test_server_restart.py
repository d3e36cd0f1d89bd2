"""Stop the dev server (SQLite file) with open services, start it again: every timer fires on its day.

N services (HOSTLIFE_RESTART_SERVICES, default 100) on a compressed clock whose day 0 begins
after the setup; each is blocked on D+1 (hosting: no grace), with D spread over three days. The
server and the worker are stopped after every service has issued its invoice and is sleeping on
its timers, then started again on the same data directory; the journal must show each block,
and the D+1 reminder, on its calendar day.
"""

from __future__ import annotations

import asyncio
import functools
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from policy.clock import Clock
from starter.services import start_service
from tests.reliability.crash_lab import wait_until
from tests.reliability.stack import env_int, gather_limited, stack
from workflows import service_workflow_id
from workflows.models import Customer, ServiceSpec
from workflows.subscription import SubscriptionWorkflow

SECONDS_PER_DAY = 20
"""Long enough that a burst of simultaneous milestones on 2 cores still lands inside its day."""


async def test_every_timer_fires_on_its_day_after_a_server_restart(tmp_path: Path) -> None:
    count = env_int("HOSTLIFE_RESTART_SERVICES", 100)
    setup = 25 + count * 0.2  # seconds until day 0 begins: start, invoice, stop, restart
    now = datetime.now(UTC)
    clock = Clock.compressed_from(now + timedelta(seconds=setup), SECONDS_PER_DAY)
    day0 = clock.epoch_day
    assert day0 is not None
    expiries = {f"restart-{i:05d}": day0 + timedelta(days=1 + i % 3) for i in range(count)}
    async with stack(tmp_path / "data", "restart") as s:
        specs = [
            ServiceSpec(
                service_id=service_id,
                customer=Customer(id="c-restart", email="restart@example.cz"),
                product="hosting",
                price=Decimal("1200.00"),
                expires_on=expires_on,
            )
            for service_id, expires_on in expiries.items()
        ]
        await gather_limited(
            [
                functools.partial(start_service, s.env.client, spec, clock=clock, task_queue="restart")
                for spec in specs
            ],
            limit=64,
        )
        await wait_until(
            lambda: sum(1 for m in s.mailer.sent if m["X-Hostlife-Template"] == "invoice_issued") >= count,
            setup,
            "every invoice before the restart",
            interval=0.5,
        )
    stopped_at = time.monotonic()
    async with stack(tmp_path / "data", "restart") as s:
        restarted = datetime.now(UTC)
        first_block = clock.instant(day0 + timedelta(days=2))
        assert restarted < first_block, f"setup too slow: restarted {restarted}, first block {first_block}"
        last_block = clock.instant(day0 + timedelta(days=4))
        await asyncio.sleep((last_block - datetime.now(UTC)).total_seconds() + SECONDS_PER_DAY * 0.9)

        async def blocked_day(service_id: str) -> tuple[str, object, object]:
            handle = s.env.client.get_workflow_handle_for(
                SubscriptionWorkflow.run, service_workflow_id(service_id)
            )
            journal = await handle.query(SubscriptionWorkflow.journal, 0)
            blocks = [
                clock.today(e.at) for e in journal if e.kind == "state" and e.data["state"] == "blocked"
            ]
            reminders = [
                clock.today(e.at) for e in journal if e.kind == "mail" and e.data["template"] == "reminder"
            ]
            return service_id, blocks, reminders[-1:] if reminders else []

        seen = await gather_limited([functools.partial(blocked_day, sid) for sid in expiries], limit=32)
        wrong = [
            (sid, blocks, reminders)
            for sid, blocks, reminders in seen
            if blocks != [expiries[sid] + timedelta(days=1)]
            or reminders != [expiries[sid] + timedelta(days=1)]
        ]
        print(
            f"{count} services, checked {time.monotonic() - stopped_at:.1f} s after the stop, {len(wrong)} late or missing"
        )
        assert wrong == [], wrong[:10]

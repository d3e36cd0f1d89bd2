"""Restart: stop the dev server (SQLite file) with N open services, start it again; every timer fires on its day.

    python -m bench.restart --services 1000                     # issue 11's size (see docs/RELIABILITY.md)
    python -m bench.restart --services 200 --seconds-per-day 20

The services run on a compressed clock (`--seconds-per-day`) whose day 0 begins once the setup is
done. Each is a hosting service (no grace) with D on day 1, 2 or 3, so it is blocked on D+1 with
the D+1 reminder. Every service is started and has issued its invoice (it now sleeps on its
timers), then the dev server and the worker are stopped and started again on the same SQLite file
and ledger; after the last block day the journal of every service must show its block, and its
D+1 reminder, on its calendar day. Exit status 0 only when none is late or missing.

tests/reliability/test_server_restart.py runs the same code at 100 services.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.reliability_stack import gather_limited, stack, wait_until
from policy.clock import Clock
from starter.services import start_service
from workflows import service_workflow_id
from workflows.models import Customer, ServiceSpec
from workflows.subscription import SubscriptionWorkflow

TASK_QUEUE = "restart"


def default_seconds_per_day(services: int) -> int:
    """Long enough that a day's burst (a third of the services, each a reminder and a block, ~15
    milestones/s on a loaded 2-core machine) is done inside its compressed day, twice over.

    A real day is 86,400 s; a compressed day shorter than the burst measures throughput, not
    whether timers survive the restart (at 1,000 services and 40 s a day, 12 % landed a day late).
    """
    return max(20, math.ceil(services / 10))


def default_setup_seconds(services: int) -> float:
    """Start, invoice, stop and restart before day 0 (≈7 services a second on a loaded 2-core machine)."""
    return 30 + services * 0.25


@dataclass
class RestartResult:
    services: int
    seconds_per_day: int
    wrong: list[tuple[str, Any, Any]]
    timings: dict[str, float] = field(default_factory=dict)
    block_lag_s: list[float] = field(default_factory=list)
    """For each block: seconds after the start of its (compressed) day that it was journalled."""

    def lag_summary(self) -> dict[str, float]:
        lags = sorted(self.block_lag_s)
        if not lags:
            return {}
        rank = lambda q: lags[min(len(lags) - 1, math.ceil(q * len(lags)) - 1)]  # noqa: E731
        return {"p50": round(rank(0.5), 1), "p95": round(rank(0.95), 1), "max": round(lags[-1], 1)}


async def run_restart(
    data_dir: Path, services: int, seconds_per_day: int | None = None, setup_seconds: float | None = None
) -> RestartResult:
    per_day = seconds_per_day or default_seconds_per_day(services)
    setup = setup_seconds if setup_seconds is not None else default_setup_seconds(services)
    began = time.monotonic()
    now = datetime.now(UTC)
    clock = Clock.compressed_from(now + timedelta(seconds=setup), per_day)
    day0 = clock.epoch_day
    assert day0 is not None
    expiries = {f"restart-{i:05d}": day0 + timedelta(days=1 + i % 3) for i in range(services)}
    timings: dict[str, float] = {}
    async with stack(data_dir, TASK_QUEUE) as s:
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
                functools.partial(start_service, s.env.client, spec, clock=clock, task_queue=TASK_QUEUE)
                for spec in specs
            ],
            limit=64,
        )
        await wait_until(
            lambda: sum(1 for m in s.mailer.sent if m["X-Hostlife-Template"] == "invoice_issued") >= services,
            setup,
            "every invoice before the restart (raise --setup-seconds)",
            interval=0.5,
        )
        timings["start_and_invoice_s"] = time.monotonic() - began
    stopped = time.monotonic()
    async with stack(data_dir, TASK_QUEUE) as s:
        timings["restart_s"] = time.monotonic() - stopped
        restarted = datetime.now(UTC)
        first_block = clock.instant(day0 + timedelta(days=2))
        if restarted >= first_block:
            raise RuntimeError(
                f"setup too slow: restarted {restarted}, first block {first_block}; raise --setup-seconds"
            )
        last_block = clock.instant(day0 + timedelta(days=4))
        await asyncio.sleep((last_block - datetime.now(UTC)).total_seconds() + per_day * 0.9)

        lags: list[float] = []

        async def blocked_day(service_id: str) -> tuple[str, list[date], list[date]]:
            handle = s.env.client.get_workflow_handle_for(
                SubscriptionWorkflow.run, service_workflow_id(service_id)
            )
            journal = await handle.query(SubscriptionWorkflow.journal, 0)
            blocked_at = [e.at for e in journal if e.kind == "state" and e.data["state"] == "blocked"]
            lags.extend((at - clock.instant(clock.today(at))).total_seconds() for at in blocked_at)
            blocks = [clock.today(at) for at in blocked_at]
            reminders = [
                clock.today(e.at) for e in journal if e.kind == "mail" and e.data["template"] == "reminder"
            ]
            return service_id, blocks, reminders[-1:] if reminders else []

        seen = await gather_limited([functools.partial(blocked_day, sid) for sid in expiries], limit=32)
        timings["total_s"] = time.monotonic() - began
    wrong = [
        (sid, blocks, reminders)
        for sid, blocks, reminders in seen
        if blocks != [expiries[sid] + timedelta(days=1)] or reminders != [expiries[sid] + timedelta(days=1)]
    ]
    return RestartResult(services, per_day, wrong, timings, lags)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.restart", description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--seconds-per-day", type=int, help="compressed day (default max(20, services/10))")
    parser.add_argument("--setup-seconds", type=float, help="time before day 0 (default 30 + services/4)")
    parser.add_argument(
        "--data-dir", type=Path, help="where the dev server and ledger live (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    from starter.logging import configure_logging

    configure_logging("WARNING")
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="hostlife-restart-"))
    result = asyncio.run(
        run_restart(data_dir / "data", args.services, args.seconds_per_day, args.setup_seconds)
    )
    print(
        json.dumps(
            {
                "services": result.services,
                "seconds_per_day": result.seconds_per_day,
                **{k: round(v, 1) for k, v in result.timings.items()},
                "block_seconds_into_its_day": result.lag_summary(),
                "late_or_missing": len(result.wrong),
                "examples": [
                    [sid, [str(d) for d in b], [str(d) for d in r]] for sid, b, r in result.wrong[:10]
                ],
                "data_dir": str(data_dir / "data"),
            },
            indent=2,
        )
    )
    return 0 if not result.wrong else 1


if __name__ == "__main__":
    raise SystemExit(main())

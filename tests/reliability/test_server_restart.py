"""Stop the dev server (SQLite file) with open services, start it again: every timer fires on its day.

The scenario is `bench/restart.py`'s (`python -m bench.restart --services 1000` at full size):
N services on a compressed clock (20 s a day here), each blocked on D+1 with D spread over three
days; the server and the worker are stopped once every service has issued its invoice and sleeps
on its timers, then started again on the same data directory; each block and D+1 reminder must be
journalled on its calendar day.

    HOSTLIFE_RESTART_SERVICES (default 100)
"""

from __future__ import annotations

from pathlib import Path

from bench.restart import run_restart
from tests.reliability.stack import env_int


async def test_every_timer_fires_on_its_day_after_a_server_restart(tmp_path: Path) -> None:
    count = env_int("HOSTLIFE_RESTART_SERVICES", 100)
    result = await run_restart(tmp_path / "data", count, seconds_per_day=20, setup_seconds=25 + count * 0.2)
    print(f"{count} services, {result.timings}, {len(result.wrong)} late or missing")
    assert result.services == count
    assert result.wrong == [], result.wrong[:10]

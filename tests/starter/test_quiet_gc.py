"""The worker's quiet-time full collection: it runs in a lull after work, never while busy."""

from __future__ import annotations

import asyncio
import gc
import threading
import time

import pytest

from starter.quiet_gc import QuietCollector, quiet_collector_from_env


def full_collections() -> int:
    return int(gc.get_stats()[2]["collections"])


def some_work(young: int) -> None:
    """What a burst leaves behind: collections of the middle generation since the last full one."""
    for _ in range(young):
        gc.collect(1)


async def test_a_lull_after_work_gets_one_full_collection() -> None:
    collector = QuietCollector(quiet_s=0.3, every_s=0.05, min_young=2)
    task = asyncio.create_task(collector.run())
    await asyncio.sleep(0.05)
    some_work(3)
    before = full_collections()
    await asyncio.sleep(1.2)
    task.cancel()
    assert collector.collections == 1  # then nothing is pending: no second one for nothing
    assert full_collections() >= before + 1
    assert collector.young_since_full == 0
    assert collector.pauses_s and collector.pauses_s[0] > 0


async def test_nothing_pending_means_no_collection() -> None:
    collector = QuietCollector(quiet_s=0.2, every_s=0.05, min_young=1_000)
    task = asyncio.create_task(collector.run())
    await asyncio.sleep(0.8)
    task.cancel()
    assert collector.collections == 0


async def test_a_busy_process_is_left_to_the_automatic_collector() -> None:
    collector = QuietCollector(quiet_s=0.3, every_s=0.05, min_young=1)
    busy_until = time.monotonic() + 1.0

    def spin() -> None:  # a busy worker: CPU in another thread, as activities and the core use
        while time.monotonic() < busy_until:
            sum(range(1000))

    spinner = threading.Thread(target=spin)
    task = asyncio.create_task(collector.run())
    await asyncio.sleep(0.05)
    spinner.start()
    some_work(3)
    await asyncio.sleep(0.9)
    assert collector.collections == 0
    spinner.join()
    await asyncio.sleep(0.8)  # the lull that follows
    task.cancel()
    assert collector.collections == 1


def test_the_worker_runs_it_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOSTLIFE_QUIET_GC", raising=False)
    assert isinstance(quiet_collector_from_env(), QuietCollector)
    monkeypatch.setenv("HOSTLIFE_QUIET_GC", "0")
    assert quiet_collector_from_env() is None

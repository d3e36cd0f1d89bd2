"""The worker's quiet-time full collection: it runs in a lull after work, not while busy, and what
it freezes is freed again at the next one or once it has grown past its bound."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
import weakref
from collections.abc import Iterator

import pytest

from starter.quiet_gc import QuietCollector, quiet_collector_from_env


@pytest.fixture(autouse=True)
def nothing_left_frozen() -> Iterator[None]:
    yield
    gc.unfreeze()


class Node:
    """A reference cycle, as a cached workflow's sandbox is full of: only the collector frees it."""

    def __init__(self) -> None:
        self.me = self


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
    assert collector.young_since_collect == 0
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


async def test_a_busy_process_freezes_its_old_generation_without_a_pause() -> None:
    """No lull needed: what the middle generation promotes is frozen, so the automatic full
    collections of a burst no longer walk it; freed at the next quiet collection."""
    collector = QuietCollector(quiet_s=30, every_s=0.05, min_young=1)
    collector.collect()  # what is alive now is the baseline of the bound, as in a running worker
    task = asyncio.create_task(collector.run())
    await asyncio.sleep(0.01)
    node = Node()
    alive = weakref.ref(node)
    gc.collect(1)  # a middle-generation collection: node survives into the old generation
    await asyncio.sleep(0.2)
    assert collector.freezes >= 1 and collector.collections == 1
    assert gc.get_freeze_count() > 0
    del node
    gc.collect()  # what CPython's automatic full collection would do: frozen, so not walked
    assert alive() is not None
    task.cancel()
    collector.collect()
    assert alive() is None


async def test_short_lived_cycles_are_not_frozen() -> None:
    """A payment's cycles die young: only what survived a middle-generation collection is frozen."""
    collector = QuietCollector(quiet_s=30, every_s=0.05, min_young=1)
    collector.collect()
    task = asyncio.create_task(collector.run())
    await asyncio.sleep(0.01)
    gc.collect(1)  # survivors promoted and frozen
    node = Node()
    alive = weakref.ref(node)
    del node  # garbage while still young
    await asyncio.sleep(0.2)  # ticks of the collector in between
    gc.collect(1)  # the next young collection frees it
    task.cancel()
    assert collector.freezes >= 2
    assert alive() is None


async def test_collect_mode_never_freezes() -> None:
    collector = QuietCollector(mode="collect", quiet_s=30, every_s=0.05, min_young=1)
    task = asyncio.create_task(collector.run())
    await asyncio.sleep(0.01)
    gc.collect(1)
    await asyncio.sleep(0.2)
    task.cancel()
    assert collector.freezes == 0 and gc.get_freeze_count() == 0


def test_the_worker_runs_it_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOSTLIFE_QUIET_GC", raising=False)
    assert isinstance(quiet_collector_from_env(), QuietCollector)
    collector = quiet_collector_from_env()
    assert collector is not None and collector.mode == "freeze"
    monkeypatch.setenv("HOSTLIFE_QUIET_GC", "collect")
    collector = quiet_collector_from_env()
    assert collector is not None and collector.mode == "collect"
    monkeypatch.setenv("HOSTLIFE_QUIET_GC", "0")
    assert quiet_collector_from_env() is None
    monkeypatch.setenv("HOSTLIFE_QUIET_GC", "sometimes")
    with pytest.raises(ValueError, match="HOSTLIFE_QUIET_GC='sometimes'"):
        quiet_collector_from_env()


def test_what_was_frozen_is_freed_at_the_next_quiet_collection() -> None:
    collector = QuietCollector()
    node = Node()
    alive = weakref.ref(node)
    collector.collect()  # node survives and is frozen: automatic collections no longer walk it
    assert gc.get_freeze_count() > 0
    del node
    gc.collect()
    assert alive() is not None  # the price of freezing: frozen garbage waits
    collector.collect()
    assert alive() is None


def test_collect_mode_freezes_nothing() -> None:
    collector = QuietCollector(mode="collect")
    node = Node()
    alive = weakref.ref(node)
    collector.collect()
    assert gc.get_freeze_count() == 0
    del node
    gc.collect()
    assert alive() is None


async def busy_for(seconds: float, collector: QuietCollector, *, grow_mib: int = 0) -> list[bytes]:
    """Keep the process busy (CPU in another thread, as activities and the core use) meanwhile."""
    await asyncio.sleep(0.01)  # the collector is watching
    busy_until = time.monotonic() + seconds

    def spin() -> None:
        while time.monotonic() < busy_until:
            sum(range(1000))

    spinner = threading.Thread(target=spin)
    spinner.start()
    some_work(3)
    grown = [b"\x01" * 2**20 for _ in range(grow_mib)]  # touched pages: resident memory grows
    await asyncio.sleep(seconds)
    spinner.join()
    return grown


async def test_frozen_garbage_past_its_memory_bound_is_collected_even_when_busy() -> None:
    collector = QuietCollector(quiet_s=30, every_s=0.05, min_young=1, max_growth_mib=64)
    collector.collect()
    task = asyncio.create_task(collector.run())
    held = await busy_for(0.6, collector, grow_mib=16)
    assert collector.forced == 0  # grown, but not past the bound
    held += await busy_for(0.6, collector, grow_mib=96)
    task.cancel()
    assert collector.forced == 1
    assert collector.collections == 2
    del held


async def test_allocations_grown_by_the_ratio_are_collected_even_when_busy() -> None:
    """Counted on the allocated memory blocks (here a quarter more, CPython's own ratio)."""
    collector = QuietCollector(
        quiet_s=30, every_s=0.05, min_young=1, min_growth_blocks=1_000, growth_ratio=0.25
    )
    collector.collect()
    alive = sys.getallocatedblocks()
    task = asyncio.create_task(collector.run())
    garbage = [Node() for _ in range(alive // 16)]  # a node is one or two blocks: under the bound
    await busy_for(0.4, collector)
    assert collector.freezes >= 1 and collector.forced == 0
    garbage += [Node() for _ in range(alive // 4)]  # now over a quarter more
    await busy_for(0.4, collector)
    task.cancel()
    assert collector.forced == 1
    del garbage


async def test_frozen_garbage_is_collected_after_max_frozen_s_even_when_busy() -> None:
    collector = QuietCollector(quiet_s=30, every_s=0.05, min_young=1, max_frozen_s=0.5)
    collector.collect()
    task = asyncio.create_task(collector.run())
    await busy_for(0.9, collector)
    task.cancel()
    await asyncio.sleep(0)
    assert collector.forced >= 1


async def test_the_collector_leaves_nothing_frozen_when_it_stops() -> None:
    collector = QuietCollector(quiet_s=0.1, every_s=0.05, min_young=1)
    task = asyncio.create_task(collector.run())
    await asyncio.sleep(0.01)
    some_work(2)
    await asyncio.sleep(0.4)
    assert collector.collections == 1 and gc.get_freeze_count() > 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gc.get_freeze_count() == 0

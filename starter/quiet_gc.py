"""Full garbage collections in the worker's quiet moments, not in the middle of a burst.

CPython's automatic full collection walks every live object of the process and stops it
meanwhile: with a thousand cached workflow sandboxes that is ~0.55 s in which no workflow task
runs (docs/BENCHMARKS.md, fifth and sixth passes). It comes when enough objects have survived
since the last one, which is to say in the middle of work: a burst of payments (a bank statement
import, a batch of card payments) meets it and every payment of the burst waits.

`QuietCollector` runs that collection itself once the process has been quiet for a while. By
default it also `gc.freeze()`s the old generation as it grows: right after each collection of the
middle generation, when the young generations are empty and everything left has survived two
collections (short-lived cycles die young and are not frozen). Freezing is a list splice, no
pause. CPython's automatic full collections then walk only what survived since the last freeze,
which is small, so a burst pays milliseconds, not half a second, even with no lull before it.

The price is memory: a frozen object that becomes garbage (a workflow evicted from the cache, a
payment's cycles that grew old) is only freed at the collector's next collection
(`gc.unfreeze(); gc.collect(); gc.freeze()`). So it collects even while busy (one pause, as
CPython would have made anyway) once the allocated memory blocks have doubled since its last
collection (`growth_ratio`; CPython's own rule is a quarter more, which in the benchmark put a
forced collection into every burst), or resident memory has grown by `max_growth_mib`, or
`max_frozen_s` has passed. With 1,000 cached workflows that is ~1 GiB of worker instead of ~0.7.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Mode = Literal["freeze", "collect"]


def resident_mib() -> float | None:
    """This process's resident memory (Linux); None where /proc is not there."""
    try:
        pages = int(Path("/proc/self/statm").read_text(encoding="ascii").split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@dataclass
class QuietCollector:
    """Collect when the process used under `busy_share` of a core for `quiet_s` seconds.

    Only after at least `min_young` middle-generation collections since its own last one, so a
    worker at rest does not collect over and over for nothing. With `mode="freeze"` the old
    generation is frozen as it grows and after every collection, and `growth_ratio` (of
    allocated blocks, at least `min_growth_blocks`), `max_growth_mib` and `max_frozen_s` bound the
    frozen garbage.
    """

    mode: Mode = "freeze"
    quiet_s: float = 2.0
    busy_share: float = 0.05
    min_young: int = 3
    every_s: float = 0.25
    growth_ratio: float = 1.0
    min_growth_blocks: int = 200_000
    max_growth_mib: float = 256.0
    max_frozen_s: float = 900.0
    young_since_collect: int = 0
    collections: int = 0
    forced: int = 0
    freezes: int = 0
    pauses_s: list[float] = field(default_factory=list)
    _rss_after_mib: float | None = None
    _blocks_after: int = 0  # allocated blocks right after the last collection: what was alive
    _collected_at: float = field(default_factory=time.monotonic)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info["generation"] >= 1:
            self.young_since_collect += 1
            if self.mode == "freeze":
                # Only survivors are left, all in the old generation: freeze them. The collection
                # is over (this is its "stop" callback) and freezing only splices lists.
                self.freeze()

    def due(self, quiet_for_s: float) -> bool:
        return quiet_for_s >= self.quiet_s and self.young_since_collect >= self.min_young

    def overdue(self) -> bool:
        """Frozen garbage has grown past its bound: collect now, busy or not."""
        if self.mode != "freeze" or self.young_since_collect < self.min_young:
            return False
        if time.monotonic() - self._collected_at >= self.max_frozen_s:
            return True
        growth = sys.getallocatedblocks() - self._blocks_after  # O(1), unlike counting frozen objects
        if growth >= max(self.min_growth_blocks, self.growth_ratio * self._blocks_after):
            return True
        rss = resident_mib()
        return (
            rss is not None
            and self._rss_after_mib is not None
            and rss - self._rss_after_mib >= self.max_growth_mib
        )

    def collect(self) -> None:
        started = time.perf_counter()
        if self.mode == "freeze":
            gc.unfreeze()
        gc.collect()
        if self.mode == "freeze":
            gc.freeze()
        self.pauses_s.append(time.perf_counter() - started)
        self.collections += 1
        self.young_since_collect = 0
        self._collected_at = time.monotonic()
        self._rss_after_mib = resident_mib()
        self._blocks_after = sys.getallocatedblocks()

    def freeze(self) -> None:
        """Move the survivors promoted since the last freeze out of the automatic collector's walk."""
        gc.freeze()
        self.freezes += 1

    async def run(self) -> None:
        """Watch this process's CPU time; collect in a quiet spell. Runs until cancelled."""
        gc.callbacks.append(self._callback)
        if not self.collections:  # the bounds count from what is alive when the worker starts
            self._rss_after_mib = resident_mib()
            self._blocks_after = sys.getallocatedblocks()
        try:
            cpu, quiet_since = time.process_time(), time.monotonic()
            while True:
                await asyncio.sleep(self.every_s)
                now_cpu, now = time.process_time(), time.monotonic()
                busy = (now_cpu - cpu) / self.every_s > self.busy_share
                cpu = now_cpu
                if busy:
                    quiet_since = now
                if (not busy and self.due(now - quiet_since)) or self.overdue():
                    self.forced += busy
                    self.collect()
                    cpu, quiet_since = time.process_time(), time.monotonic()
        finally:
            gc.callbacks.remove(self._callback)
            if self.mode == "freeze":
                gc.unfreeze()  # leave the process as it found it: everything collectable again


def quiet_collector_from_env() -> QuietCollector | None:
    """The collector the worker runs: `HOSTLIFE_QUIET_GC` = `freeze` (default), `collect`, `0`."""
    value = os.environ.get("HOSTLIFE_QUIET_GC", "").strip().lower()
    if value == "0":
        return None
    if value in ("", "1", "freeze"):
        return QuietCollector(mode="freeze")
    if value == "collect":
        return QuietCollector(mode="collect")
    raise ValueError(f"HOSTLIFE_QUIET_GC={value!r}: expected freeze (the default), collect or 0")


def start_quiet_collector(stack: contextlib.AsyncExitStack) -> QuietCollector | None:
    """Run the worker's collector (unless turned off) until `stack` closes."""
    collector = quiet_collector_from_env()
    if collector is not None:
        task = asyncio.create_task(collector.run())
        stack.callback(task.cancel)
    return collector

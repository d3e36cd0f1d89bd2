"""Full garbage collections in the worker's quiet moments, not in the middle of a burst.

CPython's automatic full collection walks every live object of the process and stops it
meanwhile: with a thousand cached workflow sandboxes that is ~0.55 s in which no workflow task
runs (docs/BENCHMARKS.md, fifth pass). It comes when enough objects have survived since the last
one, which is to say in the middle of work: a burst of payments (a bank statement import, a
batch of card payments) meets it and every payment of the burst waits. `QuietCollector` runs
that collection itself once the process has been quiet for a while and enough has piled up since
the last one, so a burst that follows a quiet spell starts with nothing pending. It cannot help
a load that never pauses; there the automatic collection still comes (and is still counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from dataclasses import dataclass, field


@dataclass
class QuietCollector:
    """Collect when the process used under `busy_share` of a core for `quiet_s` seconds.

    Only after at least `min_young` middle-generation collections since the last full one, so a
    worker at rest does not collect over and over for nothing.
    """

    quiet_s: float = 2.0
    busy_share: float = 0.05
    min_young: int = 3
    every_s: float = 0.25
    young_since_full: int = 0
    collections: int = 0
    pauses_s: list[float] = field(default_factory=list)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase != "stop":
            return
        if info["generation"] == 2:
            self.young_since_full = 0
        elif info["generation"] == 1:
            self.young_since_full += 1

    def due(self, quiet_for_s: float) -> bool:
        return quiet_for_s >= self.quiet_s and self.young_since_full >= self.min_young

    def collect(self) -> None:
        started = time.perf_counter()
        gc.collect()
        self.pauses_s.append(time.perf_counter() - started)
        self.collections += 1

    async def run(self) -> None:
        """Watch this process's CPU time; collect in a quiet spell. Runs until cancelled."""
        gc.callbacks.append(self._callback)
        try:
            cpu, quiet_since = time.process_time(), time.monotonic()
            while True:
                await asyncio.sleep(self.every_s)
                now_cpu, now = time.process_time(), time.monotonic()
                busy = (now_cpu - cpu) / self.every_s > self.busy_share
                cpu = now_cpu
                if busy:
                    quiet_since = now
                elif self.due(now - quiet_since):
                    self.collect()
                    cpu, quiet_since = time.process_time(), time.monotonic()
        finally:
            gc.callbacks.remove(self._callback)


def quiet_collector_from_env() -> QuietCollector | None:
    """The collector the worker runs, unless `HOSTLIFE_QUIET_GC=0`."""
    if os.environ.get("HOSTLIFE_QUIET_GC", "") == "0":
        return None
    return QuietCollector()


def start_quiet_collector(stack: contextlib.AsyncExitStack) -> QuietCollector | None:
    """Run the worker's collector (unless turned off) until `stack` closes."""
    collector = quiet_collector_from_env()
    if collector is not None:
        task = asyncio.create_task(collector.run())
        stack.callback(task.cancel)
    return collector

"""The lifecycle and node workers for a benchmark, in this process or in N worker processes.

A Python worker runs all its workflow tasks on one core, and a full garbage collection walks
every object of its process: about 490 per cached workflow sandbox, so ~0.35 s at 1,000 cached
and ~0.12 s at 250 (docs/BENCHMARKS.md, fifth pass), and the whole process stands still
meanwhile. A provider scales the way the SDK intends, with several `worker.py` processes on one
task queue, each caching fewer workflows. `WorkerProcesses` is that topology with the
benchmark's recording adapters; `InProcessWorkers` is the one-process topology of the earlier
passes. Both stamp each VM's power-off and power-on (monotonic clock, comparable across processes
on one machine), count the workflow tasks and activities the workers completed and time their
garbage collector's pauses, so a benchmark reads either the same way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import multiprocessing
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from activities.billing import SqliteBilling
from activities.hypervisor import RecordingHypervisor
from activities.platform import RecordingPlatform
from activities.registrar import RecordingRegistrar
from bench.common import DevServer, WorkerMetrics, cpu_seconds, rss_bytes
from bench.lifecycle_throughput import CountingMailer
from starter.quiet_gc import QuietCollector, start_quiet_collector

Stamp = Callable[[str, str, float], None]


class StampingHypervisor(RecordingHypervisor):
    """Hands `stamp(kind, vm, monotonic time)` each VM's first power-off and power-on."""

    def __init__(self, stamp: Stamp) -> None:
        super().__init__()
        self._stamp = stamp

    def power_off(self, vm_name: str, graceful_timeout: timedelta) -> bool:
        changed = super().power_off(vm_name, graceful_timeout)
        self._stamp("off", vm_name, time.monotonic())
        return changed

    def power_on(self, vm_name: str) -> bool:
        changed = super().power_on(vm_name)
        self._stamp("on", vm_name, time.monotonic())
        return changed


Pause = tuple[int, float, float, float, int]
"""A collection: generation, monotonic start, wall seconds, CPU seconds of the thread, objects freed."""


class PauseLog:
    """Every garbage collection of this process (`Pause`).

    Wall time beside CPU time: on a busy machine a collection's wall time also holds the time the
    process was not scheduled, and the objects it freed tell a walk of live objects from a sweep.
    """

    def __init__(self) -> None:
        self.pauses: list[Pause] = []
        self._started = (0.0, 0.0)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = (time.monotonic(), time.thread_time())
        else:
            at, cpu = self._started
            self.pauses.append(
                (info["generation"], at, time.monotonic() - at, time.thread_time() - cpu, info["collected"])
            )

    def __enter__(self) -> PauseLog:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


def pause_summary(pauses: list[Pause], since: float, until: float) -> dict[str, Any]:
    """Per generation: collections started in [since, until], their total and longest pause, ms.

    For full collections also each one's wall and CPU ms and the objects it freed."""
    summary: dict[str, Any] = {}
    for generation in (0, 1, 2):
        these = [p for p in pauses if p[0] == generation and since <= p[1] <= until]
        summary[f"generation_{generation}"] = {
            "collections": len(these),
            "total_ms": round(1000 * sum(p[2] for p in these), 1),
            "max_ms": round(1000 * max((p[2] for p in these), default=0.0), 1),
        }
        if generation == 2:
            summary["generation_2"]["each"] = [
                {"wall_ms": round(1000 * p[2], 1), "cpu_ms": round(1000 * p[3], 1), "freed": p[4]}
                for p in these
            ]
    return summary


@dataclass(frozen=True)
class PoolConfig:
    """What every worker process needs: all plain values, so it crosses a `spawn`."""

    address: str
    task_queue: str
    billing_path: str
    node: str
    options: dict[str, Any]


class BenchWorkers(Protocol):
    off_at: dict[str, float]
    on_at: dict[str, float]

    @property
    def workflow_tasks(self) -> int: ...

    @property
    def activities(self) -> int: ...

    def cpu_seconds(self) -> float: ...

    def rss_bytes(self) -> int: ...

    def gc_pauses(self, since: float, until: float) -> dict[str, Any]: ...


async def wait_workflow_tasks(workers: BenchWorkers, count: int, limit_s: float = 1800) -> None:
    """Until the workers have completed `count` workflow tasks in all (metrics are polled)."""
    deadline = time.monotonic() + limit_s
    while workers.workflow_tasks < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {workers.workflow_tasks} of {count} workflow tasks ran")
        await asyncio.sleep(0.2)


def bench_adapters(billing: SqliteBilling, node: str, stamp: Stamp) -> Any:
    from worker import Adapters

    return Adapters(
        billing=billing,
        mailer=CountingMailer(),
        platform=RecordingPlatform(),
        registrar=RecordingRegistrar(),
        hypervisors={node: StampingHypervisor(stamp)},
    )


class InProcessWorkers:
    """The workers on this process's event loop, metrics from the dev server's runtime."""

    def __init__(self, server: DevServer) -> None:
        self.server = server
        self.off_at: dict[str, float] = {}
        self.on_at: dict[str, float] = {}
        self.pause_log = PauseLog()
        self.collector: QuietCollector | None = None

    def stamp(self, kind: str, vm_name: str, at: float) -> None:
        (self.off_at if kind == "off" else self.on_at).setdefault(vm_name, at)

    @property
    def workflow_tasks(self) -> int:
        return self.server.metrics.workflow_tasks

    @property
    def activities(self) -> int:
        return self.server.metrics.activities

    def cpu_seconds(self) -> float:
        return cpu_seconds()

    def rss_bytes(self) -> int:
        return rss_bytes()

    def gc_pauses(self, since: float, until: float) -> dict[str, Any]:
        return pause_summary(self.pause_log.pauses, since, until)


@contextlib.asynccontextmanager
async def in_process_workers(
    server: DevServer, config: PoolConfig, billing: SqliteBilling
) -> AsyncIterator[InProcessWorkers]:
    from worker import build_workers

    workers = InProcessWorkers(server)
    adapters = bench_adapters(billing, config.node, workers.stamp)
    with (
        concurrent.futures.ThreadPoolExecutor(max_workers=32) as executor,
        workers.pause_log,
    ):
        async with contextlib.AsyncExitStack() as stack:
            for worker in build_workers(
                server.client, adapters, task_queue=config.task_queue, executor=executor, **config.options
            ):
                await stack.enter_async_context(worker)
            workers.collector = start_quiet_collector(stack)  # as worker.py does
            yield workers


class WorkerProcesses:
    """N `spawn`ed interpreters, each running the lifecycle and node workers on one task queue."""

    def __init__(self, config: PoolConfig, processes: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.off_at: dict[str, float] = {}
        self.on_at: dict[str, float] = {}
        self._stamps: multiprocessing.Queue[tuple[str, str, float]] = context.Queue()
        self._reports: multiprocessing.Queue[tuple[int, Any]] = context.Queue()
        self._stop = context.Event()
        self._counters = [context.Array("q", 3, lock=False) for _ in range(processes)]
        self._processes = [
            context.Process(
                target=serve,
                args=(config, index, self._counters[index], self._stamps, self._reports, self._stop),
                name=f"bench-worker-{index}",
                daemon=True,
            )
            for index in range(processes)
        ]
        self._pauses: list[Pause] = []
        self._drain = threading.Thread(target=self._drain_stamps, daemon=True)
        self._draining = True

    def _drain_stamps(self) -> None:
        while self._draining:
            try:
                kind, vm_name, at = self._stamps.get(timeout=0.2)
            except queue.Empty:
                continue
            (self.off_at if kind == "off" else self.on_at).setdefault(vm_name, at)

    async def start(self) -> None:
        for process in self._processes:
            process.start()
        self._drain.start()
        deadline = time.monotonic() + 120
        while not all(counter[2] for counter in self._counters):  # each one's workers are polling
            dead = [p.name for p in self._processes if not p.is_alive()]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"worker processes did not start: {dead or 'timed out'}")
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        self._stop.set()
        for _ in self._processes:
            with contextlib.suppress(queue.Empty):
                _index, pauses = await asyncio.to_thread(self._reports.get, True, 60)
                self._pauses.extend(pauses)
        for process in self._processes:
            await asyncio.to_thread(process.join, 30)
            if process.is_alive():
                process.kill()
        self._draining = False
        await asyncio.to_thread(self._drain.join)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes if p.pid is not None]

    @property
    def workflow_tasks(self) -> int:
        return sum(counter[0] for counter in self._counters)

    @property
    def activities(self) -> int:
        return sum(counter[1] for counter in self._counters)

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)

    def rss_bytes(self) -> int:
        return sum(rss_bytes(pid) for pid in self.pids)

    def gc_pauses(self, since: float, until: float) -> dict[str, Any]:
        """Over all processes; only complete after `stop` (each process reports when it ends)."""
        return pause_summary(self._pauses, since, until)


@contextlib.asynccontextmanager
async def worker_processes(config: PoolConfig, processes: int) -> AsyncIterator[WorkerProcesses]:
    workers = WorkerProcesses(config, processes)
    try:
        await workers.start()
        yield workers
    finally:
        await workers.stop()


def serve(
    config: PoolConfig,
    index: int,
    counters: Any,
    stamps: multiprocessing.Queue[tuple[str, str, float]],
    reports: multiprocessing.Queue[tuple[int, Any]],
    stop: Any,
) -> None:
    """One worker process: its own client and metrics; counts go to `counters`, stamps to `stamps`."""
    import worker

    worker.ensure_workflow_bytecode()
    with PauseLog() as pause_log:
        asyncio.run(_serve(config, counters, stamps, stop))
    reports.put((index, pause_log.pauses))


async def _serve(config: PoolConfig, counters: Any, stamps: Any, stop: Any) -> None:
    from worker import build_workers

    metrics = WorkerMetrics()
    client = await Client.connect(
        config.address, data_converter=pydantic_data_converter, runtime=metrics.runtime
    )
    billing = SqliteBilling(Path(config.billing_path))
    adapters = bench_adapters(billing, config.node, lambda kind, vm, at: stamps.put((kind, vm, at)))
    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as executor:
        async with contextlib.AsyncExitStack() as stack:
            for each in build_workers(
                client, adapters, task_queue=config.task_queue, executor=executor, **config.options
            ):
                await stack.enter_async_context(each)
            start_quiet_collector(stack)  # as worker.py does
            counters[2] = 1
            while not stop.is_set():
                counters[0] = metrics.workflow_tasks
                counters[1] = metrics.activities
                await asyncio.sleep(0.1)

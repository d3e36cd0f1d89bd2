"""Each benchmark runs end to end in `--quick` mode: the scripts work. No timing is asserted.

Results go to a temporary directory (never over the committed bench/results/).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import common
from bench.__main__ import BENCHMARKS

ROOT = Path(__file__).resolve().parents[2]


def run_quick(name: str, results: Path, *flags: str) -> dict[str, Any]:
    """`python -m bench NAME --quick` in a child process (each benchmark owns its event loop,
    servers and Temporal runtime); the result it wrote to `results`."""
    done = subprocess.run(
        [sys.executable, "-m", "bench", name, "--quick", *flags],
        cwd=ROOT,
        env={**os.environ, "HOSTLIFE_BENCH_RESULTS": str(results)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    written = list(results.rglob(f"{name}.json"))
    assert written, f"no {name}.json written; stderr: {done.stderr[-2000:]}"
    result: dict[str, Any] = json.loads(written[0].read_text(encoding="utf-8"))
    return result


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_runs_in_quick_mode_and_writes_its_result(name: str, tmp_path: Path) -> None:
    result = run_quick(name, tmp_path)
    assert result["benchmark"] == name
    assert result["machine"]["cores"] >= 1
    assert result["command"]
    if name == "payment_latency":  # where the time went, from the in-process workers' SDK metrics
        sdk = result["sdk_metrics_during_load"]
        assert sdk["temporal_workflow_task_schedule_to_start_latency"]["count"] >= 1
        assert sdk["temporal_activity_execution_latency"]["count"] >= 1


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert common.percentile(values, 50) == 50.0
    assert common.percentile(values, 99) == 99.0
    assert common.percentile([], 99) == 0.0


def test_machine_cpu_seconds_counts_this_process_burning_a_core() -> None:
    """The machine's busy time grows at least by what this process alone spends on the CPU."""
    before_machine, before_self = common.machine_cpu_seconds()[0], common.cpu_seconds()
    while common.cpu_seconds() - before_self < 0.3:
        sum(range(10_000))
    spent_self = common.cpu_seconds() - before_self
    # /proc/stat and /proc/self/stat tick apart by a tick or two: allow 0.05 s of slack
    busy, stolen, iowait = common.machine_cpu_seconds()
    assert busy - before_machine >= spent_self - 0.05
    assert stolen >= 0 and iowait >= 0


def test_payment_latency_with_worker_processes(tmp_path: Path) -> None:
    """The workers in two processes of their own: stamps, counts and pauses come back from them."""
    result = run_quick("payment_latency", tmp_path, "--worker-processes", "2")
    assert result["parameters"]["worker_processes"] == 2
    assert result["not_powered_on"] == 0
    assert result["answers"] == ["200 applied"]
    assert result["per_payment"]["workflow_tasks"] >= 1  # counted in the worker processes
    assert result["per_payment"]["activities"] >= 1
    assert result["rss_mib_with_all_open"]["worker_process"] > 0  # read from the worker pids
    assert result["during_load"]["machine_busy_cores"] > 0
    assert result["sdk_metrics_during_load"] is None  # those are in the worker processes

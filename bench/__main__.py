"""`python -m bench [name ...] [--quick] [-- benchmark flags]`: run benchmarks, write bench/results/.

    python -m bench                                   # all four, full size (see docs/BENCHMARKS.md)
    python -m bench lifecycle_throughput --services 5000
    python -m bench --quick                           # tiny sizes: proves the scripts work
    python -m bench scale --no-bytecode               # no .pyc for workflow modules (HOSTLIFE_WORKFLOW_BYTECODE=0)

Flags after the names go to the benchmark(s) named (each has `--help`). `--quick` writes its
results under a temporary directory instead of bench/results/, so it never overwrites the
committed numbers; `HOSTLIFE_BENCH_RESULTS=DIR` sends results elsewhere.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench import common

BENCHMARKS = ("lifecycle_throughput", "payment_latency", "cost_per_service", "scale")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    quick = "--quick" in args
    bytecode = "--no-bytecode" not in args
    args = [a for a in args if a not in ("--quick", "--no-bytecode")]
    if args and args[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    names = []
    while args and not args[0].startswith("-"):
        names.append(args.pop(0))
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    if os.environ.get("HOSTLIFE_BENCH_RESULTS"):
        common.RESULTS = Path(os.environ["HOSTLIFE_BENCH_RESULTS"])
    elif quick:
        common.RESULTS = Path(tempfile.mkdtemp(prefix="hostlife-bench-quick-"))
        print(f"--quick: results go to {common.RESULTS}", file=sys.stderr)
    if bytecode:  # before any worker is built, so the compile is in no measured phase
        from worker import ensure_workflow_bytecode

        ensure_workflow_bytecode()
    else:  # measure a worker that compiles workflow modules from source for every run
        os.environ["HOSTLIFE_WORKFLOW_BYTECODE"] = "0"
    common.BYTECODE = bytecode
    for name in names or BENCHMARKS:
        module = importlib.import_module(f"bench.{name}")
        module.main(args, quick=quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

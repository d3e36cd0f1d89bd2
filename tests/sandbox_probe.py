"""A workflow that breaks determinism on purpose: the sandbox must refuse it (tests/test_sandbox.py).

Its own module, importing nothing else, because the sandbox re-imports a workflow's module."""

from __future__ import annotations

from datetime import datetime

from temporalio import workflow


@workflow.defn
class ReadsTheWallClock:
    @workflow.run
    async def run(self) -> str:
        return datetime.now().isoformat()

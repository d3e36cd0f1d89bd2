"""The yardstick: a minimal workflow that only sleeps and calls a no-op activity.

It is given the same timers and the same number of activities as a hostlife service had, so its
throughput on the same server and worker settings is what the engine (server + SDK) can do with
that shape of work; hostlife's throughput divided by it is the share left after our own overhead.
Kept in its own small module so the workflow sandbox imports nothing else.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from pydantic import BaseModel
from temporalio import activity, workflow


class BaselineStep(BaseModel):
    at: datetime
    """Sleep until this instant (no timer when it has passed), then run the activities."""
    activities: int


class BaselineInput(BaseModel):
    steps: list[BaselineStep]


FINISHED: dict[str, float] = {}
"""Workflow id → `time.monotonic()` when its last activity ran (the activity runs in this process)."""


@activity.defn
async def noop(last: bool) -> None:
    """Does nothing; the last one of a workflow notes when the workflow's work was done."""
    if last:
        FINISHED[activity.info().workflow_id or ""] = time.monotonic()


@workflow.defn
class BaselineWorkflow:
    @workflow.run
    async def run(self, start: BaselineInput) -> int:
        ran = 0
        total = sum(step.activities for step in start.steps)
        for step in start.steps:
            delay = step.at - workflow.now()
            if delay > timedelta(0):
                await workflow.sleep(delay)
            for _ in range(step.activities):
                ran += 1
                await workflow.execute_activity(
                    noop, ran == total, start_to_close_timeout=timedelta(seconds=30)
                )
        return ran

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


# ---------------------------------------------------------------- the payment path's floor

POWERED_ON: dict[str, float] = {}
"""Workflow id → `time.monotonic()` when the floor's stand-in power-on ran."""


@activity.defn
async def power_on_floor(workflow_id: str) -> None:
    """The node's power-on, minus the node: notes when it ran."""
    POWERED_ON.setdefault(workflow_id, time.monotonic())


@workflow.defn
class PaymentFloorWorkflow:
    """The least a payment can cost on this engine: an update whose handler runs one activity.

    Idle until paid, like a blocked service; the update runs the stand-in power-on on another
    task queue (as hostlife's node queue) and answers when it is done. What hostlife's payment
    path costs beyond this is ours; what this costs is the engine's.
    """

    @workflow.init
    def __init__(self, node_task_queue: str) -> None:
        self.paid = False
        self.node_task_queue = node_task_queue

    @workflow.run
    async def run(self, node_task_queue: str) -> None:
        await workflow.wait_condition(lambda: self.paid)

    @workflow.update
    async def pay(self, payment_id: str) -> str:
        await workflow.execute_activity(
            power_on_floor,
            workflow.info().workflow_id,
            task_queue=self.node_task_queue,
            start_to_close_timeout=timedelta(seconds=30),
        )
        self.paid = True
        return payment_id

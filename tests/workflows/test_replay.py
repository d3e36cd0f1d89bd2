"""Recorded histories of the example scenarios must replay on the current workflow code.

A change that alters the commands a running service's history already holds fails here; such a
change belongs behind `workflow.patched(...)`. Re-record with `python -m tests.histories.record`
only when releasing a new workflow version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from activities.mailer import NoticeKind
from workflows.models import SubscriptionInput, SubscriptionResult
from workflows.subscription import SubscriptionWorkflow

HISTORIES = sorted((Path(__file__).parent.parent / "histories").glob("*.json"))
RECORDED = {path.name: json.loads(path.read_text(encoding="utf-8")) for path in HISTORIES}


def test_there_are_recorded_histories() -> None:
    assert len(HISTORIES) >= 4


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays(path: Path) -> None:
    raw = RECORDED[path.name]
    history = WorkflowHistory.from_json(f"replay-{path.stem}", raw)
    replayer = Replayer(workflows=[SubscriptionWorkflow], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None


# A behaviour change made the wrong way and the right way: stop mailing invoice notices.
@workflow.defn(name="SubscriptionWorkflow", sandboxed=False)
class UnpatchedChange(SubscriptionWorkflow):
    @workflow.run
    async def run(self, start: SubscriptionInput) -> SubscriptionResult:
        return await super().run(start)

    async def _notify(self, kind: NoticeKind, *rest: Any, **named: Any) -> None:  # type: ignore[override]
        if kind is NoticeKind.INVOICE_ISSUED:
            return
        await super()._notify(kind, *rest, **named)


@workflow.defn(name="SubscriptionWorkflow", sandboxed=False)
class PatchedChange(SubscriptionWorkflow):
    @workflow.run
    async def run(self, start: SubscriptionInput) -> SubscriptionResult:
        return await super().run(start)

    async def _notify(self, kind: NoticeKind, *rest: Any, **named: Any) -> None:  # type: ignore[override]
        if kind is NoticeKind.INVOICE_ISSUED and workflow.patched("no-invoice-mail"):
            return
        await super()._notify(kind, *rest, **named)


@pytest.mark.parametrize(("variant", "replays"), [(UnpatchedChange, False), (PatchedChange, True)])
async def test_only_a_patched_change_replays(variant: type, replays: bool) -> None:
    path = next(
        p for p in HISTORIES if p.name.startswith("hosting-paid-late-while-blocked") and "run1" in p.name
    )
    history = WorkflowHistory.from_json("replay-change", RECORDED[path.name])
    replayer = Replayer(workflows=[variant], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert (result.replay_failure is None) is replays, result.replay_failure

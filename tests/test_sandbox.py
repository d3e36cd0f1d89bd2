"""The worker's sandbox passes through only pure modules, so workflow code stays guarded.

A module passed through the sandbox is imported once per process with the real `datetime`,
`random` and I/O; a `datetime.now()` in such a module would go unnoticed. These tests keep every
module holding workflow code out of the pass-through list and show the runner still refuses a
non-deterministic call.
"""

from __future__ import annotations

import ast
import concurrent.futures
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.sandbox_probe import ReadsTheWallClock
from worker import PURE_MODULES, workflow_runner

WORKFLOWS = Path(__file__).parent.parent / "workflows"


def workflow_code_modules() -> list[str]:
    """Modules of `workflows/` that define a workflow or handlers (decorated with `workflow.*`)."""
    found = []
    for path in sorted(WORKFLOWS.glob("*.py")):
        tree = ast.parse(path.read_text())
        decorated = any(
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and any("workflow." in ast.unparse(d) for d in node.decorator_list)
            for node in ast.walk(tree)
        )
        if decorated:
            found.append(f"workflows.{path.stem}")
    return found


def test_no_module_with_workflow_code_is_passed_through() -> None:
    modules = workflow_code_modules()
    assert "workflows.subscription" in modules and "workflows.money_in" in modules
    for module in modules:
        covering = [p for p in PURE_MODULES if module == p or module.startswith(p + ".")]
        assert not covering, f"{module} holds workflow code but is passed through by {covering}"


async def test_the_runner_refuses_a_wall_clock_read_in_workflow_code(env: WorkflowEnvironment) -> None:
    queue = f"sandbox-{uuid.uuid4().hex[:8]}"
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as executor:
        async with Worker(
            env.client,
            task_queue=queue,
            workflows=[ReadsTheWallClock],
            workflow_runner=workflow_runner(),
            workflow_task_executor=executor,
            workflow_failure_exception_types=[Exception],
        ):
            with pytest.raises(WorkflowFailureError) as failed:
                await env.client.execute_workflow(
                    ReadsTheWallClock.run,
                    id=f"sandbox-{uuid.uuid4().hex[:8]}",
                    task_queue=queue,
                    execution_timeout=timedelta(seconds=30),
                )
    assert "datetime.datetime.now" in str(failed.value.cause)

"""Record the histories of the example scenarios, for the replay test.

    .venv/bin/python -m tests.histories.record [EXAMPLE.json ...]   # default: every example

Run it only when a new workflow version is released: the committed histories are what running
services look like, and every later change to the workflow must still replay them (behind
`workflow.patched` where it changes behaviour).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from temporalio.api.enums.v1 import EventType

from starter.simulate import load_scenario, simulation
from workflows import service_workflow_id

HERE = Path(__file__).parent
EXAMPLES = HERE.parent.parent / "examples"


async def record(example: Path) -> list[Path]:
    scenario = load_scenario(await asyncio.to_thread(example.read_text, encoding="utf-8"))
    written = []
    async with simulation(scenario) as sim:
        await sim.start_services()
        await sim.run_events()
        for service in scenario.services:
            run_id: str | None = sim.first_run_ids[service.id]
            index = 0
            while run_id:
                handle = sim.env.client.get_workflow_handle(service_workflow_id(service.id), run_id=run_id)
                history = await handle.fetch_history()
                index += 1
                target = HERE / f"{example.stem}.{service.id}.run{index}.json"
                text = json.dumps(json.loads(history.to_json()), indent=1) + "\n"
                await asyncio.to_thread(target.write_text, text, encoding="utf-8")
                written.append(target)
                last = history.events[-1]
                run_id = (
                    last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
                    if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
                    else None
                )
    return written


async def main() -> None:
    chosen = [Path(arg) for arg in sys.argv[1:]] or sorted(EXAMPLES.glob("*.json"))
    for example in chosen:
        for path in await record(example):
            print(path.relative_to(HERE.parent.parent))


if __name__ == "__main__":
    asyncio.run(main())

from datetime import timedelta

from temporalio.testing import WorkflowEnvironment

from tests.workflows.harness import lab, states
from workflows.subscription import SubscriptionWorkflow


async def test_unpaid_hosting_runs_to_closed(env: WorkflowEnvironment) -> None:
    async with lab(env) as l:
        handle = await l.start(expires_in_days=40)
        d = (await l.status(handle)).expires_on
        result = await handle.result()
        journal = await l.journal(handle)
        for e in journal:
            print(l.clock.today(e.at), e.kind, e.data)
        assert result.final_state == "closed"
        assert states(journal, l.clock) == [
            ("active", d - timedelta(days=40)),
            ("blocked", d + timedelta(days=1)),
            ("deleted", d + timedelta(days=61)),
            ("closed", d + timedelta(days=75)),
        ]
        assert handle.id.startswith("service-")
        _ = SubscriptionWorkflow

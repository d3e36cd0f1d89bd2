"""History stays bounded: a renewal continues as new once the run is half a year old or long
(`workflows.payment_path`), so a service renewed every year for 30 years gets a run per renewal,
a monthly one a run per half year, and no single run's event history grows with the service's age."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from policy.periods import add_period
from tests.workflows.harness import Lab, lab
from tests.workflows.lifecycle import at_day, entries, open_invoice, pay, service
from workflows.payment_path import RENEWAL_RUN_EVENTS

YEARS = 30
MAX_EVENTS_PER_RUN = 100
"""One service-year (invoice, three reminders, payment, renewal) takes a few dozen events; a run
that kept the whole history would pass this bound after two or three years."""


async def test_thirty_years_of_renewals_keep_each_run_small(env: WorkflowEnvironment) -> None:
    async with lab(env) as l, service(l, expires_in_days=40) as handle:
        first_d = (await l.status(handle)).expires_on
        for year in range(YEARS):
            d = (await l.status(handle)).expires_on
            assert d == add_period(first_d, "P1Y", year)
            await at_day(l, d, -30)
            invoice = await open_invoice(l, handle)
            assert invoice.issued_on == (await l.now()).astimezone(l.clock.zone).date()
            outcome = await pay(handle, invoice)
            assert outcome.result == "applied", (year, outcome)

        status = await l.status(handle)
        assert (status.renewals, status.expires_on, status.state) == (
            YEARS,
            add_period(first_d, "P1Y", YEARS),
            "active",
        )
        journal = await l.journal(handle)
        assert len(entries(journal, "renewed")) == YEARS

        sizes, carried = await runs_of(l, handle)
        per_year = ", ".join(str(n) for n in sizes)
        message = (
            f"{len(sizes)} runs; events per run (≈ one service-year each): {per_year}; "
            f"state carried into the first/last run: {carried[0]}/{carried[-1]} bytes"
        )
        print(message)
        # One run per renewal, plus the current one; the first renewal (10 days after the start)
        # stays in the first run, which is younger than half a year then.
        assert len(sizes) >= YEARS, message
        assert max(sizes) < MAX_EVENTS_PER_RUN, message
        assert carried[-1] < 512 * 1024, message  # well under the server's payload limits
        latest = await handle.fetch_history()
        assert len(latest.events) < MAX_EVENTS_PER_RUN, message


async def runs_of(l: Lab, handle: Any) -> tuple[list[int], list[int]]:
    """Events per run and bytes of state carried into each run, along the continue-as-new chain."""
    run_id = handle.first_execution_run_id
    sizes: list[int] = []
    carried: list[int] = []
    while run_id:
        history = await l.env.client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
        sizes.append(len(history.events))
        started = history.events[0].workflow_execution_started_event_attributes
        carried.append(sum(len(p.data) for p in started.input.payloads))
        last = history.events[-1]
        if last.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            break
        run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
    return sizes, carried


async def test_a_monthly_service_continues_as_new_twice_a_year_not_monthly(env: WorkflowEnvironment) -> None:
    """Two years of monthly payments: every renewal applied, but a run per ~half year, not per month."""
    months = 24
    async with (
        lab(env) as l,
        service(l, product="vps", period="P1M", price=Decimal("330.00"), expires_in_days=20) as handle,
    ):
        first_d = (await l.status(handle)).expires_on
        for month in range(months):
            d = (await l.status(handle)).expires_on
            await at_day(l, d, -1)
            invoice = await open_invoice(l, handle)
            outcome = await pay(handle, invoice)
            assert outcome.result == "applied", (month, outcome)
        status = await l.status(handle)
        assert (status.renewals, status.expires_on) == (months, add_period(first_d, "P1M", months))
        assert len(entries(await l.journal(handle), "renewed")) == months

        sizes, _ = await runs_of(l, handle)
        message = f"{len(sizes)} runs for {months} monthly renewals; events per run: {sizes}"
        print(message)
        assert 4 <= len(sizes) <= 6, message  # every ~6 months (180 days), not 25 runs
        assert max(sizes) < RENEWAL_RUN_EVENTS, message

"""A shorter path from a payment to a service back on (issue 10), as a mixin of SubscriptionWorkflow.

Profiles of `python -m bench payment_latency` showed a payment costing four workflow tasks, three
activity round trips and a continue-as-new (a new run, its input and a fresh workflow sandbox) —
each a server transaction on the dev server's single SQLite writer. Two changes, each behind its
own patch so that runs already in flight replay the commands they recorded:

* `mark-paid-local-activity`: marking the invoice paid in the ledger runs as a local activity in
  the workflow task that accepted the payment, so the power-on is scheduled by that same task
  instead of one activity round trip and one more workflow task later. The ledger write is
  idempotent (it sets a status) and lives on the lifecycle worker that runs the workflow anyway.
* `receipt-mail-beside-power-on`: the receipt mail of a renewal is scheduled in the same workflow
  task as the power-on and runs beside it, instead of after it with the payment's update still
  waiting. The update (the ingress's HTTP answer) is done once the service is back on; the
  receipt lands in the journal when the mail server has taken it, and the run waits for it
  before it ends or continues as new. When both activities finish close together, one workflow
  task takes both results instead of two.
* `payment-path-patches-at-invoice`: issuing an invoice first checks the patches of the payment
  path, so their markers are recorded in that (timer-driven) workflow task. The SDK records a
  marker and upserts the `TemporalChangeVersion` search attribute the first time a run checks a
  patch; without this, the first payment of every run (every payment of a yearly service) carried
  five markers and five search-attribute upserts on its way to the power-on. Not at the run's
  start: most runs of an idle service see no payment, and every start would pay for them.
* `continue-as-new-when-run-is-long`: a renewal continues as new only once the run's history is
  long (`RENEWAL_RUN_EVENTS`) or the run old (`RENEWAL_RUN_AGE`), instead of after every
  renewal. History stays bounded per run and a yearly service still starts a run per renewal,
  but a monthly one no longer writes its whole state into history twice a month, and the
  payment path of a service that renews often skips the new run (and its fresh sandbox).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.billing import BillingActivities, MarkInvoicePaidInput

RENEWAL_RUN_EVENTS = 500
"""A renewal continues as new once the run holds this many events (a monthly VPS cycle is ~65)."""

RENEWAL_RUN_AGE = timedelta(days=180)
"""...or once the run is this old, so runs stay well inside any run timeout (the time-skipping
test server imposes 10 years) and pick up new workflow code within months."""

MARK_PAID_PATCH = "mark-paid-local-activity"
RUN_LENGTH_PATCH = "continue-as-new-when-run-is-long"
RECEIPT_PATCH = "receipt-mail-beside-power-on"
UP_FRONT_PATCH = "payment-path-patches-at-invoice"
PAYMENT_PATH_PATCHES = (
    "payment-currency-check",
    MARK_PAID_PATCH,
    "renewal-anchor-day",
    RECEIPT_PATCH,
    RUN_LENGTH_PATCH,
)
"""The patches a payment that renews checks (a domain also "domain-expiry-from-registry")."""

LOCAL_BILLING_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30),
    # Retries beyond a minute back off on a workflow timer instead of holding the task.
    "local_retry_threshold": timedelta(minutes=1),
    "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=5)),
}
REMOTE_BILLING_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=5)),
}


class PaymentPathMixin:
    """Hooks `SubscriptionWorkflow` calls on the payment path; see the module docstring."""

    background: list[asyncio.Task[None]]

    def _expect_payment(self, domain: bool) -> None:
        """An invoice goes out: record the payment path's patch markers now, not in the payment's task."""
        if workflow.patched(UP_FRONT_PATCH):
            for patch in (*PAYMENT_PATH_PATCHES, *(("domain-expiry-from-registry",) if domain else ())):
                workflow.patched(patch)

    def _receipt_beside_power_on(self) -> bool:
        """Whether the receipt mail runs beside the power-on (new runs) or after it (old runs)."""
        return workflow.patched(RECEIPT_PATCH)

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` (a receipt, a signal to a dependent) beside the caller; the run waits for it
        before it ends or continues as new (`_background_done`)."""
        self.background = [task for task in self.background if not task.done()]
        self.background.append(asyncio.create_task(work))

    async def _background_done(self) -> None:
        if self.background:
            await asyncio.gather(*self.background)

    async def _mark_invoice_paid(self, request: MarkInvoicePaidInput, summary: str) -> None:
        """Record the payment in the ledger: a local activity on new runs, a remote one on old ones."""
        if workflow.patched(MARK_PAID_PATCH):
            await workflow.execute_local_activity_method(
                BillingActivities.mark_invoice_paid, request, summary=summary, **LOCAL_BILLING_OPTIONS
            )
        else:
            await workflow.execute_activity_method(
                BillingActivities.mark_invoice_paid, request, summary=summary, **REMOTE_BILLING_OPTIONS
            )

    def _continue_after_renewal(self) -> bool:
        """Whether this renewal should end the run (old runs: always, as they recorded)."""
        if not workflow.patched(RUN_LENGTH_PATCH):
            return True
        info = workflow.info()
        age = workflow.now() - info.start_time
        limit = RENEWAL_RUN_AGE if info.run_timeout is None else min(RENEWAL_RUN_AGE, info.run_timeout / 2)
        return info.get_current_history_length() >= RENEWAL_RUN_EVENTS or age >= limit

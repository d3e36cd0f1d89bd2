"""IsoImageWorkflow: one customer ISO image, kept while the credit covers its storage (SPEC §5).

Independent of any VPS, id `iso-image-<image_id>`. Each month of storage is charged to the
credit account in advance (`charge_iso_storage`, lifecycle queue). When the credit does not cover
it the customer is warned once and the charge is retried daily; if it is still unpaid after
`grace_days`, the image volume is deleted on its node (`delete_iso_image`, `hypervisor-<node>`
queue) and the workflow ends. A top-up is noticed at the next daily retry, or at once with the
signal `credit_topped_up`; the customer can delete the image any time (update `delete_image`).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.hypervisor import node_task_queue
    from activities.vps_storage import (
        ChargeIsoStorageInput,
        DeleteIsoImageInput,
        VpsStorageActivities,
        WarnIsoStorageInput,
    )
    from policy.clock import Clock
    from policy.periods import add_period
    from workflows.models import JournalEntry
    from workflows.vps_models import (
        DeleteIsoImageRequest,
        IsoCharge,
        IsoImageInput,
        IsoImageResult,
        IsoImageState,
        IsoImageStatus,
    )

BILLING_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(
        maximum_interval=timedelta(minutes=5), non_retryable_error_types=["InsufficientCredit"]
    ),
}
NODE_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(minutes=5),
    "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=10)),
}
JOURNAL_LIMIT = 100


@workflow.defn
class IsoImageWorkflow:
    @workflow.init
    def __init__(self, start: IsoImageInput) -> None:
        if start.state is not None:
            self.state = start.state
        elif start.config is not None:
            self.state = IsoImageState(config=start.config)
        else:
            raise ValueError("IsoImageInput needs config or state")
        self.woken = False
        self.delete_request: DeleteIsoImageRequest | None = None
        self.lock = asyncio.Lock()
        self.periods = 0

    @property
    def clock(self) -> Clock:
        return self.state.config.clock

    def _today(self) -> date:
        return self.clock.today(workflow.now())

    @property
    def monthly_amount(self) -> Decimal:
        config = self.state.config
        return (config.size_gib * config.price_per_gib_month).quantize(Decimal("0.01"), ROUND_HALF_UP)

    @workflow.run
    async def run(self, start: IsoImageInput) -> IsoImageResult:
        state = self.state
        while state.deleted_on is None and self.delete_request is None:
            today = self._today()
            if state.paid_until is None or today > state.paid_until:
                async with self.lock:
                    await self._charge(today)
                if state.deleted_on is not None:
                    break
            if state.unpaid_since is not None:
                wake_at = self.clock.instant(today + timedelta(days=1))  # daily retry during the grace
            else:
                assert state.paid_until is not None
                wake_at = self.clock.instant(state.paid_until + timedelta(days=1))
            self._details()
            await self._sleep_until(wake_at)
            if self.periods >= state.config.periods_per_run or workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                if self.delete_request is None:
                    state.journal = state.journal[-JOURNAL_LIMIT:]
                    state.runs += 1
                    workflow.continue_as_new(IsoImageInput(state=state))
        await workflow.wait_condition(workflow.all_handlers_finished)
        if state.deleted_on is None:
            async with self.lock:
                await self._delete((self.delete_request or DeleteIsoImageRequest()).reason)
        assert state.deleted_on is not None
        return IsoImageResult(
            image_id=state.config.image_id, deleted_on=state.deleted_on, reason=state.deleted_reason or ""
        )

    async def _sleep_until(self, at: datetime) -> None:
        delay = at - workflow.now()
        if delay <= timedelta(0):
            return
        self.woken = False
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: self.woken or self.delete_request is not None, timeout=delay
            )

    async def _charge(self, today: date) -> None:
        state, config = self.state, self.state.config
        start = state.paid_until + timedelta(days=1) if state.paid_until else today
        end = add_period(start, "P1M") - timedelta(days=1)
        amount = self.monthly_amount
        try:
            await workflow.execute_activity_method(
                VpsStorageActivities.charge_iso_storage,
                ChargeIsoStorageInput(
                    idempotency_key=f"{workflow.info().workflow_id}:storage:{start}",
                    customer_id=config.customer_id,
                    image_id=config.image_id,
                    period_start=start,
                    period_end=end,
                    size_gib=config.size_gib,
                    amount=amount,
                    currency=config.currency,
                ),
                summary=f"charge {amount} {config.currency} for ISO {config.image_id} storage from {start}",
                **BILLING_OPTIONS,
            )
        except ActivityError as exc:
            cause = exc.cause
            if not (isinstance(cause, ApplicationError) and cause.type == "InsufficientCredit"):
                raise
            await self._unpaid(today, amount)
            return
        state.paid_until = end
        state.charges.append(IsoCharge(period_start=start, period_end=end, amount=amount))
        state.charges = state.charges[-24:]
        if state.unpaid_since is not None:
            self._record("paid_after_warning", {"unpaid_since": state.unpaid_since.isoformat()})
        state.unpaid_since = None
        state.delete_on = None
        self.periods += 1
        self._record("charged", {"from": start.isoformat(), "to": end.isoformat(), "amount": str(amount)})

    async def _unpaid(self, today: date, amount: Decimal) -> None:
        state, config = self.state, self.state.config
        if state.unpaid_since is None:
            state.unpaid_since = today
            state.delete_on = today + timedelta(days=config.grace_days)
            self._record("unpaid", {"amount": str(amount), "delete_on": state.delete_on.isoformat()})
            await workflow.execute_activity_method(
                VpsStorageActivities.warn_iso_storage_unpaid,
                WarnIsoStorageInput(
                    idempotency_key=f"{workflow.info().workflow_id}:warn:{today}",
                    customer_id=config.customer_id,
                    image_id=config.image_id,
                    amount=amount,
                    delete_on=state.delete_on,
                ),
                summary=f"warn {config.customer_id}: ISO {config.image_id} deleted on {state.delete_on}",
                **BILLING_OPTIONS,
            )
        assert state.delete_on is not None
        if today >= state.delete_on:
            await self._delete(f"storage unpaid since {state.unpaid_since}")

    async def _delete(self, reason: str) -> None:
        state, config = self.state, self.state.config
        await workflow.execute_activity_method(
            VpsStorageActivities.delete_iso_image,
            DeleteIsoImageInput(
                idempotency_key=f"{workflow.info().workflow_id}:delete",
                image_id=config.image_id,
                node=config.node,
                pool=config.pool,
                volume=config.volume,
            ),
            task_queue=node_task_queue(config.node),
            summary=f"delete ISO {config.image_id} ({config.pool}/{config.volume}) on {config.node}",
            **NODE_OPTIONS,
        )
        state.deleted_on = self._today()
        state.deleted_reason = reason
        self._record("deleted", {"reason": reason})
        self._details()

    @workflow.update
    async def delete_image(self, request: DeleteIsoImageRequest) -> IsoImageStatus:
        async with self.lock:
            if self.state.deleted_on is None:
                await self._delete(request.reason)
        self.delete_request = request
        return self.status()

    @delete_image.validator
    def _validate_delete(self, request: DeleteIsoImageRequest) -> None:
        if self.state.deleted_on is not None:
            raise ValueError(f"image already deleted on {self.state.deleted_on}")

    @workflow.signal
    def credit_topped_up(self) -> None:
        """Retry an unpaid charge now rather than at the next daily retry."""
        self.woken = True

    @workflow.query
    def status(self) -> IsoImageStatus:
        state = self.state
        return IsoImageStatus(
            image_id=state.config.image_id,
            paid_until=state.paid_until,
            unpaid_since=state.unpaid_since,
            delete_on=state.delete_on,
            deleted_on=state.deleted_on,
            monthly_amount=self.monthly_amount,
            charges=list(state.charges),
        )

    @workflow.query
    def journal(self, since: int = 0) -> list[JournalEntry]:
        return [entry for entry in self.state.journal if entry.sequence > since]

    def _record(self, kind: str, data: dict[str, Any]) -> None:
        state = self.state
        state.journal_sequence += 1
        state.journal.append(
            JournalEntry(sequence=state.journal_sequence, at=workflow.now(), kind=kind, data=data)
        )

    def _details(self) -> None:
        state = self.state
        if state.deleted_on is not None:
            text = f"deleted on {state.deleted_on}: {state.deleted_reason}"
        elif state.unpaid_since is not None:
            text = f"storage unpaid since {state.unpaid_since} — deleted on {state.delete_on} unless credit covers it"
        else:
            text = f"paid until {state.paid_until} — {self.monthly_amount} {state.config.currency} a month"
        workflow.set_current_details(text)

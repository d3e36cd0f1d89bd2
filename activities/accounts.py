"""Credit-account activities: how a subscription takes money from the customer's prepaid credit.

    ApplicationError type="CreditRefused"   (not retried: the account refused the request itself,
                                             e.g. another currency or a key reused differently)

The account is a workflow (`CustomerAccountWorkflow`, id `customer-<id>`); a workflow cannot send
an update to another workflow, so the subscription asks through this activity, which sends the
update with a Temporal client, starting the account first if the customer has none yet
(update-with-start, `USE_EXISTING`). An account that did not exist has nothing on it, so such a
debit simply answers `ok=False` with the whole amount missing.

The update id is left to the client on purpose: Temporal remembers update ids per run, and a debit
that was short today must be tried again tomorrow under the same idempotency key. The account's
own memory of idempotency keys keeps money from moving twice.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError

from policy.money import Money
from workflows import TASK_QUEUE
from workflows.account_models import (
    ZERO,
    CreditLimits,
    CustomerAccountInput,
    DebitRequest,
    RefundRequest,
    account_workflow_id,
)
from workflows.customer_account import CustomerAccountWorkflow


class DebitCreditInput(BaseModel):
    idempotency_key: str = Field(min_length=1)
    """Built by the caller from workflow facts (e.g. `service-1:credit:2025-06-30`), never random."""
    customer_id: str
    amount: Money
    service_id: str | None = None
    reason: str = ""
    currency: str = "CZK"
    """The profile's credit currency (`Terms.credit_currency`); the account refuses any other."""
    limits: CreditLimits = CreditLimits()
    """Used only when the account has to be opened by this call."""


class DebitCreditResult(BaseModel):
    """`ok`: the amount was taken; otherwise nothing moved and `missing` is what the balance lacks."""

    ok: bool
    balance: Money
    missing: Money = ZERO
    sequence: int | None = None
    """The ledger entry of the debit (None when nothing moved)."""
    repeated: bool = False


class CreditAccountInput(BaseModel):
    """Money put back on the customer's credit (a downgrade's remainder, SPEC §6)."""

    idempotency_key: str = Field(min_length=1)
    customer_id: str
    amount: Money
    service_id: str | None = None
    reason: str = ""
    currency: str = "CZK"
    limits: CreditLimits = CreditLimits()


class CreditAccountResult(BaseModel):
    balance: Money
    sequence: int | None = None
    repeated: bool = False


class AccountActivities:
    """Talks to the account workflows through a client; `task_queue` is where accounts run."""

    def __init__(self, client: Client, task_queue: str = TASK_QUEUE) -> None:
        self.client = client
        self.task_queue = task_queue

    def _open_account(
        self, customer_id: str, currency: str, limits: CreditLimits
    ) -> WithStartWorkflowOperation[Any, Any]:
        """The customer's account workflow, started if this is its first movement."""
        return WithStartWorkflowOperation(
            CustomerAccountWorkflow.run,
            CustomerAccountInput(customer_id=customer_id, currency=currency, limits=limits),
            id=account_workflow_id(customer_id),
            task_queue=self.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary=f"credit account of customer {customer_id}",
        )

    @activity.defn
    async def debit_credit(self, request: DebitCreditInput) -> DebitCreditResult:
        workflow_id = account_workflow_id(request.customer_id)
        start = self._open_account(request.customer_id, request.currency, request.limits)
        debit = DebitRequest(
            idempotency_key=request.idempotency_key,
            amount=request.amount,
            currency=request.currency,
            service_id=request.service_id,
            reason=request.reason,
        )
        try:
            result = await self.client.execute_update_with_start_workflow(
                CustomerAccountWorkflow.debit, debit, start_workflow_operation=start
            )
        except WorkflowUpdateFailedError as exc:
            reason = str(getattr(exc.cause, "message", exc.cause))
            raise ApplicationError(
                f"account {workflow_id} refused the debit: {reason}", type="CreditRefused", non_retryable=True
            ) from exc
        activity.logger.info(
            "credit debit answered",
            extra={"customer_id": request.customer_id, "ok": result.ok, "missing": str(result.missing)},
        )
        return DebitCreditResult(
            ok=result.ok,
            balance=result.balance,
            missing=result.missing,
            sequence=result.entry.sequence if result.entry else None,
            repeated=result.repeated,
        )

    @activity.defn
    async def credit_account(self, request: CreditAccountInput) -> CreditAccountResult:
        """Credit the account (opening it if needed); a refusal (balance limit) is not retried."""
        workflow_id = account_workflow_id(request.customer_id)
        start = self._open_account(request.customer_id, request.currency, request.limits)
        refund = RefundRequest(
            idempotency_key=request.idempotency_key,
            amount=request.amount,
            currency=request.currency,
            service_id=request.service_id,
            reason=request.reason,
        )
        try:
            result = await self.client.execute_update_with_start_workflow(
                CustomerAccountWorkflow.refund, refund, start_workflow_operation=start
            )
        except WorkflowUpdateFailedError as exc:
            reason = str(getattr(exc.cause, "message", exc.cause))
            raise ApplicationError(
                f"account {workflow_id} refused the credit: {reason}",
                type="CreditRefused",
                non_retryable=True,
            ) from exc
        activity.logger.info(
            "credit added", extra={"customer_id": request.customer_id, "amount": str(request.amount)}
        )
        return CreditAccountResult(
            balance=result.balance,
            sequence=result.entry.sequence if result.entry else None,
            repeated=result.repeated,
        )

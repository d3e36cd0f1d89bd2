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

from typing import Any, TypeVar

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.workflow import UpdateMethodMultiParam

from policy.money import Money
from workflows import TASK_QUEUE
from workflows.account_models import (
    ZERO,
    CreditLimits,
    CustomerAccountInput,
    DebitRequest,
    MovementResult,
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


MovementRequest = TypeVar("MovementRequest", DebitRequest, RefundRequest)


def open_account_operation(
    account: CustomerAccountInput, task_queue: str = TASK_QUEUE
) -> WithStartWorkflowOperation[CustomerAccountWorkflow, Any]:
    """Start the customer's account workflow with an update unless it runs already (update-with-start)."""
    return WithStartWorkflowOperation(
        CustomerAccountWorkflow.run,
        account,
        id=account_workflow_id(account.customer_id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"credit account of customer {account.customer_id}",
    )


class AccountActivities:
    """Talks to the account workflows through a client; `task_queue` is where accounts run."""

    def __init__(self, client: Client, task_queue: str = TASK_QUEUE) -> None:
        self.client = client
        self.task_queue = task_queue

    async def _move(
        self,
        update: UpdateMethodMultiParam[[CustomerAccountWorkflow, MovementRequest], MovementResult],
        movement: MovementRequest,
        request: DebitCreditInput | CreditAccountInput,
        what: str,
    ) -> MovementResult:
        """One movement on the customer's account, opening it first if needed; a refusal is final."""
        account = CustomerAccountInput(
            customer_id=request.customer_id, currency=request.currency, limits=request.limits
        )
        try:
            return await self.client.execute_update_with_start_workflow(
                update, movement, start_workflow_operation=open_account_operation(account, self.task_queue)
            )
        except WorkflowUpdateFailedError as exc:
            reason = str(getattr(exc.cause, "message", exc.cause))
            raise ApplicationError(
                f"account {account_workflow_id(request.customer_id)} refused the {what}: {reason}",
                type="CreditRefused",
                non_retryable=True,
            ) from exc

    @activity.defn
    async def debit_credit(self, request: DebitCreditInput) -> DebitCreditResult:
        debit = DebitRequest(
            idempotency_key=request.idempotency_key,
            amount=request.amount,
            currency=request.currency,
            service_id=request.service_id,
            reason=request.reason,
        )
        result = await self._move(CustomerAccountWorkflow.debit, debit, request, "debit")
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
        refund = RefundRequest(
            idempotency_key=request.idempotency_key,
            amount=request.amount,
            currency=request.currency,
            service_id=request.service_id,
            reason=request.reason,
        )
        result = await self._move(CustomerAccountWorkflow.refund, refund, request, "credit")
        activity.logger.info(
            "credit added", extra={"customer_id": request.customer_id, "amount": str(request.amount)}
        )
        return CreditAccountResult(
            balance=result.balance,
            sequence=result.entry.sequence if result.entry else None,
            repeated=result.repeated,
        )

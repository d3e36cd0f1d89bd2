"""Credit accounts from the outside: top-ups, the automatic-renewal switch, statements, bulk renewal."""

from __future__ import annotations

from decimal import Decimal

from temporalio.client import Client

from activities.accounts import open_account_operation
from policy.catalog import Terms
from workflows import TASK_QUEUE
from workflows.account_models import (
    AccountBalance,
    CreditLimits,
    CustomerAccountInput,
    MovementResult,
    Statement,
    TopUpRequest,
    account_workflow_id,
)
from workflows.customer_account import CustomerAccountWorkflow


def account_input(customer_id: str, terms: Terms) -> CustomerAccountInput:
    """A new account in the profile's credit currency, with its limits (SPEC §6)."""
    return CustomerAccountInput(
        customer_id=customer_id, currency=terms.credit_currency, limits=CreditLimits.from_terms(terms)
    )


async def top_up(
    client: Client,
    customer_id: str,
    amount: Decimal,
    idempotency_key: str,
    terms: Terms,
    *,
    task_queue: str = TASK_QUEUE,
    reason: str = "top-up",
) -> MovementResult:
    """Add credit, opening the account first if the customer has none (update-with-start)."""
    start = open_account_operation(account_input(customer_id, terms), task_queue)
    request = TopUpRequest(
        idempotency_key=idempotency_key, amount=amount, currency=terms.credit_currency, reason=reason
    )
    return await client.execute_update_with_start_workflow(
        CustomerAccountWorkflow.top_up, request, start_workflow_operation=start
    )


async def balance(client: Client, customer_id: str) -> AccountBalance | None:
    """The balance, or None for a customer who never had an account."""
    from temporalio.service import RPCError, RPCStatusCode

    handle = client.get_workflow_handle_for(CustomerAccountWorkflow.run, account_workflow_id(customer_id))
    try:
        return await handle.query(CustomerAccountWorkflow.balance)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


async def statement(client: Client, customer_id: str, since_sequence: int = 0) -> Statement | None:
    from temporalio.service import RPCError, RPCStatusCode

    handle = client.get_workflow_handle_for(CustomerAccountWorkflow.run, account_workflow_id(customer_id))
    try:
        return await handle.query(CustomerAccountWorkflow.statement, since_sequence)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise

"""Commands that change one service: each is a workflow update, so the answer is what happened.

A validator that refuses the request (parking a hosting package, restoring a live service)
answers before anything reaches the service's history; the CLI prints its reason as one line.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

import typer
from temporalio.service import RPCError, RPCStatusCode

from starter.cli_common import (
    CliError,
    JsonFlag,
    checked,
    connect,
    console,
    parse_date,
    parse_money,
    rpc_timeout,
    run_async,
    service_handle,
)
from workflows import search_attributes as sa
from workflows.models import (
    BillingDetailsChanged,
    CancelRequest,
    ChangePeriod,
    CommandResult,
    DeferralRequest,
    PaymentOutcome,
    PaymentRequest,
    ResolveRequest,
    RestoreRequest,
    ServiceStatus,
    SuspendRequest,
)


async def _update(service_id: str, update: str, argument: Any) -> CommandResult:
    client = await connect()
    args = [] if argument is None else [argument]
    try:
        result: CommandResult = await service_handle(client, service_id).execute_update(
            update, args=args, result_type=CommandResult, rpc_timeout=rpc_timeout()
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND and "already completed" in exc.message:
            raise CliError(f"service {service_id} has ended (closed): nothing can change it now") from None
        raise
    return result


def _print_result(service_id: str, result: CommandResult, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"service_id": service_id, **result.model_dump(mode="json")}))
        return
    line = f"{service_id}: {result.message}"
    if result.variable_symbol and result.variable_symbol not in result.message:
        line += f" (VS {result.variable_symbol}, {result.amount})"
    console().print(line)


def command(service_id: str, update: str, argument: Any, as_json: bool) -> None:
    """Send one update to one service and print its answer."""
    result = run_async(lambda: _update(service_id, update, argument))
    _print_result(service_id, result, as_json)


def pay(
    service_id: str,
    amount: Annotated[
        str | None, typer.Option(help="amount, e.g. 1200.00 (default: the open invoice's)")
    ] = None,
    vs: Annotated[str | None, typer.Option(help="variable symbol (default: the open invoice's)")] = None,
    payment_id: Annotated[
        str | None, typer.Option(help="the payment system's id; the same id twice is applied once")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Deliver a payment to a service and print its outcome (applied, held, returned, duplicate)."""
    from workflows.subscription import SubscriptionWorkflow

    given_amount = checked(lambda: parse_money(amount)) if amount is not None else None
    pid = payment_id or f"cli-{uuid.uuid4().hex[:12]}"

    async def go() -> PaymentOutcome:
        client = await connect()
        handle = service_handle(client, service_id)
        variable_symbol, money = vs, given_amount
        if variable_symbol is None or money is None:
            status: ServiceStatus = await handle.query(SubscriptionWorkflow.status, rpc_timeout=rpc_timeout())
            if status.open_invoice is None:
                raise CliError(f"service {service_id} has no open invoice; give --vs and --amount")
            variable_symbol = variable_symbol or status.open_invoice.variable_symbol
            money = money if money is not None else status.open_invoice.amount
        request = PaymentRequest(payment_id=pid, variable_symbol=variable_symbol, amount=money)
        outcome: PaymentOutcome = await handle.execute_update(
            SubscriptionWorkflow.submit_payment, request, rpc_timeout=rpc_timeout()
        )
        return outcome

    outcome = run_async(go)
    if as_json:
        print(outcome.model_dump_json())
    else:
        console().print(
            f"{service_id}: payment {outcome.payment_id} of {outcome.amount} with VS "
            f"{outcome.variable_symbol}: {outcome.result.value} ({outcome.reason})"
        )


def billing_changed(
    service_id: Annotated[str | None, typer.Argument(help="one service")] = None,
    customer: Annotated[str | None, typer.Option(help="every running service of this customer")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Billing details changed: open invoices are cancelled and re-issued with a new VS."""
    if (service_id is None) == (customer is None):
        raise CliError("give a SERVICE_ID or --customer, not both", 2)
    if service_id is not None:
        command(service_id, "billing_details_changed", BillingDetailsChanged(), as_json)
        return
    from starter.cli_services import list_query

    query = checked(lambda: list_query(None, None, customer, None, None, False, False))

    async def go() -> list[tuple[str, CommandResult]]:
        client = await connect()
        ids = [
            str(w.typed_search_attributes.get(sa.SERVICE_ID))
            async for w in client.list_workflows(query, rpc_timeout=rpc_timeout())
        ]
        if not ids:
            raise CliError(f"customer {customer} has no running services")
        results = []
        for sid in ids:
            results.append((sid, await _update(sid, "billing_details_changed", BillingDetailsChanged())))
        return results

    for sid, result in run_async(go):
        _print_result(sid, result, as_json)


def change_period(
    service_id: str,
    period: Annotated[str, typer.Argument(help="P1Y or P1M")],
    as_json: JsonFlag = False,
) -> None:
    """Yearly ↔ monthly, from the current expiry date."""
    command(service_id, "change_period", ChangePeriod(period=period), as_json)


def cancel(
    service_id: str,
    on: Annotated[str | None, typer.Option(help="last day, YYYY-MM-DD (default: the expiry date)")] = None,
    reason: Annotated[str, typer.Option(help="why, for the audit trail")] = "customer request",
    as_json: JsonFlag = False,
) -> None:
    """End a service at the customer's request (then it is deleted)."""
    day = checked(lambda: parse_date(on, "--on")) if on else None
    command(service_id, "cancel", CancelRequest(on=day, reason=reason), as_json)


def suspend(
    service_id: str,
    reason: Annotated[str, typer.Option(help="abuse / ToS / spam reason")],
    severe: Annotated[
        bool, typer.Option(help="a severe, deliberate violation: delete without suspension")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Suspend for abuse (a payment never lifts it)."""
    if not reason.strip():
        raise CliError("--reason must not be empty", 2)
    command(service_id, "suspend_for_abuse", SuspendRequest(reason=reason, severe=severe), as_json)


def resolve(
    service_id: str,
    note: Annotated[str, typer.Option(help="what the customer declared")] = "customer declared the remedy",
    as_json: JsonFlag = False,
) -> None:
    """The customer remedied the abuse: lift the suspension (a repeat first pays the unblock fee)."""
    command(service_id, "resolve_abuse", ResolveRequest(note=note), as_json)


def park(service_id: str, as_json: JsonFlag = False) -> None:
    """Park a VPS: off and unreachable, disk, configuration and addresses kept."""
    command(service_id, "park", None, as_json)


def unpark(service_id: str, as_json: JsonFlag = False) -> None:
    """Bring a parked VPS back."""
    command(service_id, "unpark", None, as_json)


def restore(service_id: str, as_json: JsonFlag = False) -> None:
    """Order the restore of a deleted service: issues an invoice for price + restore fee."""
    command(service_id, "restore", RestoreRequest(), as_json)


def defer(
    service_id: str,
    days: Annotated[int, typer.Argument(help="days after the due date")],
    by_support: Annotated[bool, typer.Option(help="support grants more than the profile's maximum")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Defer payment (hostico profile)."""
    if not 1 <= days <= 365:
        raise CliError("DAYS must be between 1 and 365", 2)
    command(service_id, "grant_deferral", DeferralRequest(days=days, by_support=by_support), as_json)


def register(app: typer.Typer) -> None:
    """Add the service commands to the top-level app, under their historical names."""
    app.command()(pay)
    app.command("billing-changed")(billing_changed)
    app.command("change-period")(change_period)
    app.command()(cancel)
    app.command()(suspend)
    app.command()(resolve)
    app.command()(park)
    app.command()(unpark)
    app.command()(restore)
    app.command()(defer)


__all__ = ["command", "register"]

"""The `hostlife` command line: run the system, steer services, simulate their future.

Every error is one line on stderr with a non-zero exit status: an unknown service, an update
a validator refused (with its reason), an unreachable server.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from starter.config import Settings
from workflows import service_workflow_id
from workflows.models import (
    BillingDetailsChanged,
    CancelRequest,
    ChangePeriod,
    CommandResult,
    Customer,
    DeferralRequest,
    PaymentRequest,
    ResolveRequest,
    RestoreRequest,
    ServiceSpec,
    ServiceStatus,
    SuspendRequest,
)

app = typer.Typer(help="hostlife: the life of hosting services on Temporal.", no_args_is_help=True)
service_app = typer.Typer(help="Start, inspect and list services.", no_args_is_help=True)
app.add_typer(service_app, name="service")
console = Console()
T = TypeVar("T")


class CliError(Exception):
    """An error the user made or met; printed as one line."""


def fail(message: str, code: int = 1) -> None:
    sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise typer.Exit(code)


def run_async(factory: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(factory())  # type: ignore[arg-type]
    except CliError as exc:
        fail(str(exc))
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            fail(f"not found: {exc.message}")
        if exc.status == RPCStatusCode.UNAVAILABLE:
            fail(f"Temporal server unreachable: {exc.message}")
        fail(f"Temporal refused: {exc.message}")
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        fail(f"refused: {getattr(cause, 'message', None) or cause}")
    except RuntimeError as exc:
        if "connect" in str(exc).lower():
            fail(f"Temporal server unreachable: {exc}")
        raise
    raise AssertionError("unreachable")


async def _client() -> Client:
    from worker import connect

    try:
        return await connect(Settings.from_env())
    except RuntimeError as exc:
        raise CliError(
            f"Temporal server unreachable at {Settings.from_env().temporal_address}: {exc}"
        ) from None


def _handle(client: Client, service_id: str) -> Any:
    from workflows.subscription import SubscriptionWorkflow

    return client.get_workflow_handle_for(SubscriptionWorkflow.run, service_workflow_id(service_id))


def _money(text: str) -> Decimal:
    from policy.money import to_money

    try:
        return to_money(text)
    except (ValueError, InvalidOperation) as exc:
        raise typer.BadParameter(str(exc)) from None


# ---------------------------------------------------------------------------- simulate


@app.command()
def simulate(scenario: Annotated[Path, typer.Argument(help="scenario JSON (shared/SIMULATOR.md)")]) -> None:
    """Run a scenario on the time-skipping server and print what happens, as JSON Lines."""
    from starter.simulate import ScenarioError, run

    try:
        text = scenario.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {scenario}: {exc.strerror}", 2)
    code = 0
    try:
        run(text, lambda line: print(line))
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    # The SDK's runtime can abort the interpreter at exit in plain scripts (sdk-python #300):
    # flush what we printed and leave deliberately.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# ---------------------------------------------------------------------------- run


@app.command("run")
def run_system(
    demo: Annotated[bool, typer.Option(help="start a few demo services on a compressed clock")] = False,
    seconds_per_day: Annotated[int, typer.Option(help="demo clock: real seconds per day")] = 10,
) -> None:
    """Start the Temporal dev server (SQLite in .data/, UI on :8233) and the worker; Ctrl-C stops all."""
    from starter.runner import run_stack

    asyncio.run(run_stack(Settings.from_env(), demo=demo, seconds_per_day=seconds_per_day))


# ---------------------------------------------------------------------------- services


@service_app.command("start")
def service_start(
    service_id: Annotated[str, typer.Option("--id", help="service id")],
    customer_id: Annotated[str, typer.Option("--customer", help="customer id")],
    email: Annotated[str, typer.Option(help="customer e-mail")],
    product: Annotated[str, typer.Option(help="product of the catalog, e.g. hosting, vps, domain")],
    price: Annotated[str, typer.Option(help="price of one period, e.g. 1200.00")],
    expires_on: Annotated[str, typer.Option(help="expiry date D, YYYY-MM-DD")],
    period: Annotated[str, typer.Option(help="P1Y, P1M, …")] = "P1Y",
    name: Annotated[str, typer.Option(help="domain name, or a label")] = "",
    profile: Annotated[str, typer.Option(help="policy profile")] = "default",
    language: Annotated[str, typer.Option(help="customer language (cs, en)")] = "cs",
    node: Annotated[str, typer.Option(help="hypervisor node of a VPS")] = "node-1",
) -> None:
    """Hand one service to hostlife."""
    from starter.services import start_service

    try:
        spec = ServiceSpec(
            service_id=service_id,
            customer=Customer(id=customer_id, email=email, language=language),
            product=product,
            profile=profile,
            name=name,
            price=_money(price),
            period=period,
            expires_on=date.fromisoformat(expires_on),
            node=node,
        )
    except ValueError as exc:
        fail(str(exc).splitlines()[0] if "\n" not in str(exc) else str(exc).replace("\n", " "), 2)

    async def go() -> str:
        client = await _client()
        try:
            handle = await start_service(client, spec, task_queue=Settings.from_env().task_queue)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        return str(handle.id)

    workflow_id = run_async(go)
    console.print(f"started {workflow_id}")


@service_app.command("show")
def service_show(
    service_id: str, as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False
) -> None:
    """State, expiry, open invoice and what comes next."""
    from workflows.subscription import SubscriptionWorkflow

    async def go() -> ServiceStatus:
        client = await _client()
        status: ServiceStatus = await _handle(client, service_id).query(SubscriptionWorkflow.status)
        return status

    status = run_async(go)
    if as_json:
        print(status.model_dump_json(indent=2))
        return
    table = Table(title=f"service {status.service_id}", show_header=False)
    table.add_row("state", status.state.value)
    table.add_row("product", f"{status.product} ({status.profile})")
    table.add_row("customer", status.customer_id)
    table.add_row("expires on", status.expires_on.isoformat())
    table.add_row("price", f"{status.price} per {status.period}")
    if status.open_invoice:
        inv = status.open_invoice
        table.add_row("open invoice", f"VS {inv.variable_symbol}, {inv.amount}, due {inv.due_on}")
    table.add_row("now", status.details)
    for item in status.upcoming:
        table.add_row("next", f"{item.on} {item.kind}")
    console.print(table)


@service_app.command("list")
def service_list(
    state: Annotated[str | None, typer.Option(help="e.g. blocked")] = None,
    product: Annotated[str | None, typer.Option(help="e.g. vps")] = None,
    customer: Annotated[str | None, typer.Option(help="customer id")] = None,
    expiring_before: Annotated[str | None, typer.Option(help="YYYY-MM-DD")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Services by state, product, customer and expiry (visibility search attributes)."""
    clauses = ["WorkflowType = 'SubscriptionWorkflow'", "ExecutionStatus = 'Running'"]
    if state:
        clauses.append(f"HostlifeServiceState = '{state}'")
    if product:
        clauses.append(f"HostlifeProduct = '{product}'")
    if customer:
        clauses.append(f"HostlifeCustomerId = '{customer}'")
    if expiring_before:
        clauses.append(f"HostlifeExpiresOn < '{date.fromisoformat(expiring_before).isoformat()}T00:00:00Z'")
    query = " AND ".join(clauses)

    async def go() -> list[dict[str, Any]]:
        client = await _client()
        rows = []
        async for execution in client.list_workflows(query):
            attrs = execution.typed_search_attributes
            from workflows import search_attributes as sa

            rows.append(
                {
                    "service_id": attrs.get(sa.SERVICE_ID),
                    "state": attrs.get(sa.SERVICE_STATE),
                    "product": attrs.get(sa.PRODUCT),
                    "customer_id": attrs.get(sa.CUSTOMER_ID),
                    "expires_on": (attrs.get(sa.EXPIRES_ON) or None) and str(attrs.get(sa.EXPIRES_ON))[:10],
                    "workflow_id": execution.id,
                }
            )
        return rows

    rows = run_async(go)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("service", "state", "product", "customer", "expires on")
    for row in rows:
        table.add_row(row["service_id"], row["state"], row["product"], row["customer_id"], row["expires_on"])
    console.print(table)


# ---------------------------------------------------------------------------- commands


def _command(service_id: str, update: str, argument: Any, as_json: bool) -> None:
    async def go() -> CommandResult:
        client = await _client()
        args = [] if argument is None else [argument]
        result: CommandResult = await _handle(client, service_id).execute_update(
            update, args=args, result_type=CommandResult
        )
        return result

    result = run_async(go)
    if as_json:
        print(result.model_dump_json())
    else:
        console.print(result.message)


JsonFlag = Annotated[bool, typer.Option("--json", help="machine-readable output")]


@app.command()
def pay(
    service_id: str,
    amount: Annotated[str, typer.Option(help="amount, e.g. 1200.00")],
    vs: Annotated[str, typer.Option(help="variable symbol")],
    payment_id: Annotated[str, typer.Option(help="the payment system's id (duplicates are applied once)")],
    as_json: JsonFlag = False,
) -> None:
    """Deliver a payment to a service and print its outcome."""
    from workflows.models import PaymentOutcome
    from workflows.subscription import SubscriptionWorkflow

    request = PaymentRequest(payment_id=payment_id, variable_symbol=vs, amount=_money(amount))

    async def go() -> PaymentOutcome:
        client = await _client()
        outcome: PaymentOutcome = await _handle(client, service_id).execute_update(
            SubscriptionWorkflow.submit_payment, request
        )
        return outcome

    outcome = run_async(go)
    if as_json:
        print(outcome.model_dump_json())
    else:
        console.print(f"{outcome.result.value}: {outcome.reason}")


@app.command("billing-changed")
def billing_changed(service_id: str, as_json: JsonFlag = False) -> None:
    """Billing details changed: the open invoice is re-issued with a new VS."""
    _command(service_id, "billing_details_changed", BillingDetailsChanged(), as_json)


@app.command("change-period")
def change_period(service_id: str, period: str, as_json: JsonFlag = False) -> None:
    """Yearly ↔ monthly, from the current expiry date."""
    _command(service_id, "change_period", ChangePeriod(period=period), as_json)


@app.command()
def cancel(
    service_id: str,
    on: Annotated[str | None, typer.Option(help="last day, YYYY-MM-DD (default: the expiry date)")] = None,
    as_json: JsonFlag = False,
) -> None:
    """End a service at the customer's request."""
    _command(service_id, "cancel", CancelRequest(on=date.fromisoformat(on) if on else None), as_json)


@app.command()
def suspend(
    service_id: str,
    reason: Annotated[str, typer.Option(help="abuse / ToS / spam reason")],
    severe: Annotated[bool, typer.Option(help="delete without suspension")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Suspend for abuse (a payment never lifts it)."""
    _command(service_id, "suspend_for_abuse", SuspendRequest(reason=reason, severe=severe), as_json)


@app.command()
def resolve(service_id: str, note: str = "customer declared the remedy", as_json: JsonFlag = False) -> None:
    """The customer remedied the abuse."""
    _command(service_id, "resolve_abuse", ResolveRequest(note=note), as_json)


@app.command()
def park(service_id: str, as_json: JsonFlag = False) -> None:
    """Park a VPS."""
    _command(service_id, "park", None, as_json)


@app.command()
def unpark(service_id: str, as_json: JsonFlag = False) -> None:
    """Unpark a VPS."""
    _command(service_id, "unpark", None, as_json)


@app.command()
def restore(service_id: str, as_json: JsonFlag = False) -> None:
    """Order the restore of a deleted service (price + fee)."""
    _command(service_id, "restore", RestoreRequest(), as_json)


@app.command()
def defer(
    service_id: str,
    days: int,
    by_support: Annotated[bool, typer.Option(help="support grants more than the profile's maximum")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Defer payment (hostico profile)."""
    _command(service_id, "grant_deferral", DeferralRequest(days=days, by_support=by_support), as_json)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

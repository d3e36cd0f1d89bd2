"""SPEC §6 commands: plan upgrades and downgrades, refunds on request, provider-initiated deletion.

    hostlife upgrade SERVICE PLAN            invoice for the difference; the plan switches on payment
    hostlife downgrade SERVICE PLAN          switch now; the whole months left become credit
    hostlife refund SERVICE [--dry-run]      refund on request; ends the service
    hostlife account delete CUSTOMER --reason R      15 days' notice, then every service is deleted
    hostlife account keep CUSTOMER                   withdraw the notice (also --service S for one)

Each reads the service's profile and product first, resolves the profile's commerce rules and the
product's plans (starter/commerce.py) and sends one update; a refusal prints the workflow's reason.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import typer

from policy.commerce import CommerceRulesError, PlanChangeKind
from policy.plans import PlansError
from starter.cli_commands import _print_result
from starter.cli_common import (
    CliError,
    JsonFlag,
    checked,
    connect,
    console,
    rpc_timeout,
    run_async,
    service_handle,
)
from workflows import search_attributes as sa
from workflows.models import CommandResult, ServiceStatus

account_app = typer.Typer(
    help="Provider-initiated deletion of a customer's services (SPEC §6).", no_args_is_help=True
)


async def _status(service_id: str) -> ServiceStatus:
    from workflows.subscription import SubscriptionWorkflow

    client = await connect()
    status: ServiceStatus = await service_handle(client, service_id).query(
        SubscriptionWorkflow.status, rpc_timeout=rpc_timeout()
    )
    return status


async def _send(service_id: str, update: str, argument: Any) -> CommandResult:
    client = await connect()
    result: CommandResult = await service_handle(client, service_id).execute_update(
        update, args=[argument], result_type=CommandResult, rpc_timeout=rpc_timeout()
    )
    return result


def _built(factory: Any) -> Any:
    """Build a request from the rules files; their errors (unknown plan, bad file) are one line."""
    try:
        return factory()
    except (PlansError, CommerceRulesError, ValueError) as exc:
        raise CliError(str(exc), 2) from None


def _change(
    service_id: str, plan: str, kind: PlanChangeKind, current_plan: str | None, as_json: bool
) -> None:
    from starter.commerce import change_plan_request

    async def go() -> CommandResult:
        status = await _status(service_id)
        request = _built(
            lambda: change_plan_request(status.profile, status.product, plan, kind, current_plan)
        )
        return await _send(service_id, "change_plan", request)

    _print_result(service_id, run_async(go), as_json)


CurrentPlan = Annotated[
    str | None, typer.Option(help="the plan the service is on now, if it was started without one")
]


def upgrade(
    service_id: str,
    plan: Annotated[str, typer.Argument(help="a higher plan of the same product, e.g. vps-l")],
    current_plan: CurrentPlan = None,
    as_json: JsonFlag = False,
) -> None:
    """Upgrade: pay the difference for the rest of the prepaid period; the plan switches on payment."""
    _change(service_id, plan, PlanChangeKind.UPGRADE, current_plan, as_json)


def downgrade(
    service_id: str,
    plan: Annotated[str, typer.Argument(help="a lower plan of the same product")],
    current_plan: CurrentPlan = None,
    as_json: JsonFlag = False,
) -> None:
    """Downgrade now: the remaining whole prepaid months become credit; renewals at the new price."""
    _change(service_id, plan, PlanChangeKind.DOWNGRADE, current_plan, as_json)


def refund(
    service_id: str,
    migration_hours: Annotated[
        str, typer.Option(help="support hours spent migrating data in (deducted from a full refund)")
    ] = "0",
    reason: Annotated[str, typer.Option(help="why, for the audit trail")] = "customer request",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only say what would be refunded")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Refund on request (hostico): pays the refund through the billing ledger and ends the service."""
    from starter.commerce import refund_request

    try:
        hours = Decimal(migration_hours)
    except InvalidOperation:
        raise CliError(f"bad --migration-hours {migration_hours!r}: a number such as 1.5", 2) from None
    if not hours.is_finite() or hours < 0:
        raise CliError(f"bad --migration-hours {migration_hours!r}: must be 0 or more", 2)

    async def go() -> CommandResult:
        status = await _status(service_id)
        request = _built(lambda: refund_request(status.profile, hours, reason, dry_run))
        return await _send(service_id, "request_refund", request)

    _print_result(service_id, run_async(go), as_json)


async def _customer_services(customer: str) -> list[str]:
    from starter.cli_services import list_query

    query = checked(lambda: list_query(None, None, customer, None, None, False, False))
    client = await connect()
    ids = [
        str(w.typed_search_attributes.get(sa.SERVICE_ID))
        async for w in client.list_workflows(query, rpc_timeout=rpc_timeout())
    ]
    if not ids:
        raise CliError(f"customer {customer} has no running services")
    return sorted(ids)


def _targets(customer: str | None, service: str | None) -> tuple[str | None, str | None]:
    if (customer is None) == (service is None):
        raise CliError("give a CUSTOMER or --service, not both", 2)
    return customer, service


async def _send_built(sid: str, update: str, build: Any) -> CommandResult:
    status = await _status(sid)
    request = _built(lambda: build(status.profile))
    return await _send(sid, update, request)


def _each(customer: str | None, service: str | None, update: str, build: Any, as_json: bool) -> None:
    from temporalio.client import WorkflowUpdateFailedError

    async def go() -> list[tuple[str, CommandResult | str]]:
        if service is not None:
            return [(service, await _send_built(service, update, build))]
        answers: list[tuple[str, CommandResult | str]] = []
        for sid in await _customer_services(str(customer)):
            try:  # one refusal (a service already announced, say) must not stop the others
                answers.append((sid, await _send_built(sid, update, build)))
            except WorkflowUpdateFailedError as exc:
                answers.append((sid, f"refused: {getattr(exc.cause, 'message', None) or exc.cause}"))
        return answers

    refused = 0
    for sid, answer in run_async(go):
        if isinstance(answer, CommandResult):
            _print_result(sid, answer, as_json)
            continue
        refused += 1
        if as_json:
            print(json.dumps({"service_id": sid, "error": answer}))
        else:
            console().print(f"{sid}: {answer}")
    if refused:
        raise typer.Exit(1)


@account_app.command("delete")
def account_delete(
    customer: Annotated[str | None, typer.Argument(help="every running service of this customer")] = None,
    reason: Annotated[str, typer.Option(help="why; the customer reads it in the notice")] = "",
    service: Annotated[str | None, typer.Option(help="only this service")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Give notice (hostico: 15 days), then delete the services; `account keep` withdraws it."""
    from starter.commerce import provider_deletion_request

    _targets(customer, service)
    if not reason.strip():
        raise CliError("--reason is required: the customer reads it in the notice", 2)
    _each(
        customer,
        service,
        "schedule_provider_deletion",
        lambda p: provider_deletion_request(p, reason),
        as_json,
    )


@account_app.command("keep")
def account_keep(
    customer: Annotated[str | None, typer.Argument(help="every running service of this customer")] = None,
    service: Annotated[str | None, typer.Option(help="only this service")] = None,
    note: Annotated[str, typer.Option(help="why, for the audit trail")] = "cancelled by ops",
    as_json: JsonFlag = False,
) -> None:
    """Withdraw an announced deletion before its day."""
    from workflows.commerce_models import ProviderDeletionCancel

    _targets(customer, service)
    _each(
        customer, service, "cancel_provider_deletion", lambda _p: ProviderDeletionCancel(note=note), as_json
    )


def register(app: typer.Typer) -> None:
    app.command()(upgrade)
    app.command()(downgrade)
    app.command()(refund)
    app.add_typer(account_app, name="account")


__all__ = ["account_app", "register"]

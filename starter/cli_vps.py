"""`hostlife vps ...`: support actions, the customer's backups and restores of a VPS/APS.

    hostlife vps start|stop|restart SERVICE --requested-by WHO --ticket T-1   support action (audited)
    hostlife vps reinstall SERVICE --image debian-12.qcow2 --requested-by WHO --ticket T-2
    hostlife vps backup create|list SERVICE / backup delete SERVICE LABEL        manual backups
    hostlife vps restore DELETED --onto NEW        provider backup onto a newly ordered, paid VPS (fee)
    hostlife vps restore-mail DELETED DOMAIN... --onto NEW                      mail, fee per domain

Support actions need an authorised request: who asked (`--requested-by`) and its ticket
(`--ticket`, which also makes the request run once). Node and VM name come from the service's own
workflow, which also refuses what its state forbids (starting a blocked server). A refusal is one
`error:` line with the reason, like every other command.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from temporalio.client import Client

from starter.cli_common import CliError, JsonFlag, connect, console, rpc_timeout, run_async, service_handle
from starter.vps_restore import (
    RestoreRefused,
    delete_manual_backup,
    list_backups,
    request_mail_restore,
    request_vps_restore,
    take_manual_backup,
)
from starter.vps_support import SupportActionRefused, run_support_action
from workflows.models import CommandResult, ServiceStatus
from workflows.vps_models import BackupCommandResult, BackupRecord, SupportAction, SupportActionRequest

T = TypeVar("T")

vps_app = typer.Typer(help="VPS/APS: support actions, backups, restore after deletion.", no_args_is_help=True)
backup_app = typer.Typer(help="The customer's manual backups of a VPS.", no_args_is_help=True)
vps_app.add_typer(backup_app, name="backup")

RequestedBy = Annotated[
    str, typer.Option("--requested-by", help="who authorised the request (customer contact, agent)")
]
Ticket = Annotated[str, typer.Option("--ticket", help="the request's ticket number; one ticket runs once")]
Reason = Annotated[str, typer.Option(help="why, for the audit trail")]


async def _support(
    service_id: str, action: SupportAction, requested_by: str, ticket: str, reason: str, image: str | None
) -> str:
    client = await connect()
    status: ServiceStatus = await service_handle(client, service_id).query(
        "status", result_type=ServiceStatus, rpc_timeout=rpc_timeout()
    )
    if status.node is None or status.vm_name is None:
        raise CliError(f"{service_id} is a {status.product}, not a server on a hypervisor")
    try:
        request = SupportActionRequest(
            service_id=service_id,
            node=status.node,
            vm_name=status.vm_name,
            action=action,
            request_id=ticket,
            requested_by=requested_by,
            reason=reason,
            image=image,
        )
    except ValueError as exc:
        raise CliError(f"bad request: {exc}", 2) from None
    try:
        result = await run_support_action(client, request, task_queue=_task_queue())
    except SupportActionRefused as exc:
        raise CliError(f"refused: {exc}") from None
    return f"{service_id}: {result.message} on {result.node} (ticket {ticket}, for {requested_by})"


def _task_queue() -> str:
    from starter.config import Settings

    return Settings.from_env().task_queue


def _support_command(action: SupportAction) -> None:
    def run(
        service_id: str,
        requested_by: RequestedBy,
        ticket: Ticket,
        reason: Reason = "",
    ) -> None:
        if not requested_by.strip():
            raise CliError("--requested-by must name who authorised the request", 2)
        console().print(run_async(lambda: _support(service_id, action, requested_by, ticket, reason, None)))

    run.__doc__ = f"{action.value.capitalize()} the VPS at an authorised request (support action)."
    vps_app.command(action.value)(run)


for _action in (SupportAction.START, SupportAction.STOP, SupportAction.RESTART):
    _support_command(_action)


@vps_app.command()
def reinstall(
    service_id: str,
    image: Annotated[str, typer.Option(help="OS image, a volume on the node (e.g. debian-12.qcow2)")],
    requested_by: RequestedBy,
    ticket: Ticket,
    reason: Reason = "",
) -> None:
    """Reinstall the VPS from an OS image at an authorised request: its disk is replaced."""
    if not requested_by.strip():
        raise CliError("--requested-by must name who authorised the request", 2)
    console().print(
        run_async(lambda: _support(service_id, SupportAction.REINSTALL, requested_by, ticket, reason, image))
    )


async def _refused_as_error(call: Callable[[Client], Awaitable[T]]) -> T:
    """Connect, make the call, and turn a refusal into the CLI's one-line error."""
    client = await connect()
    try:
        return await call(client)
    except RestoreRefused as exc:
        raise CliError(f"refused: {exc}") from None


def _print_command(service_id: str, result: CommandResult | BackupCommandResult, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"service_id": service_id, **result.model_dump(mode="json")}))
        return
    line = f"{service_id}: {result.message}"
    variable_symbol = getattr(result, "variable_symbol", None)
    if variable_symbol and variable_symbol not in result.message:
        line += f" (VS {variable_symbol}, {getattr(result, 'amount', '')})"
    console().print(line)


@backup_app.command("create")
def backup_create(service_id: str, as_json: JsonFlag = False) -> None:
    """Take a manual backup now (kept until deleted, or until the VPS is deleted)."""

    async def go() -> BackupCommandResult:
        return await _refused_as_error(lambda client: take_manual_backup(client, service_id))

    _print_command(service_id, run_async(go), as_json)


@backup_app.command("delete")
def backup_delete(service_id: str, label: str, as_json: JsonFlag = False) -> None:
    """Delete a manual backup (automatic ones go with their rotation)."""

    async def go() -> BackupCommandResult:
        return await _refused_as_error(lambda client: delete_manual_backup(client, service_id, label))

    _print_command(service_id, run_async(go), as_json)


@backup_app.command("list")
def backup_list(service_id: str, as_json: JsonFlag = False) -> None:
    """The VPS's backups, oldest first."""

    async def go() -> list[BackupRecord]:
        return await _refused_as_error(lambda client: list_backups(client, service_id))

    backups = run_async(go)
    if as_json:
        print(json.dumps([b.model_dump(mode="json") for b in backups]))
        return
    for backup in backups:
        console().print(f"{backup.label}\t{backup.kind.value}\t{backup.day}")
    console().print(f"{len(backups)} backup(s)")


@vps_app.command()
def restore(
    service_id: Annotated[str, typer.Argument(help="the deleted VPS whose provider backup is restored")],
    onto: Annotated[
        str, typer.Option(help="the newly ordered, paid VPS on a plan of the same or a higher tier")
    ],
    as_json: JsonFlag = False,
) -> None:
    """Restore a deleted VPS's provider backup onto a new VPS: invoices the restore fee; paying it restores."""

    async def go() -> CommandResult:
        return await _refused_as_error(lambda client: request_vps_restore(client, service_id, onto))

    _print_command(service_id, run_async(go), as_json)


@vps_app.command("restore-mail")
def restore_mail(
    service_id: Annotated[str, typer.Argument(help="the deleted VPS whose provider backup holds the mail")],
    domains: Annotated[list[str], typer.Argument(help="mail domains to restore (fee per domain)")],
    onto: Annotated[str, typer.Option(help="the service whose mail space receives the mail")],
    as_json: JsonFlag = False,
) -> None:
    """Restore the mail of DOMAINS from a deleted VPS's provider backup: invoices the fee per domain."""

    async def go() -> CommandResult:
        return await _refused_as_error(lambda client: request_mail_restore(client, service_id, domains, onto))

    _print_command(service_id, run_async(go), as_json)


def register(app: typer.Typer) -> None:
    app.add_typer(vps_app, name="vps")


__all__ = ["register", "vps_app"]

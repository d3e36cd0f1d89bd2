"""Restore a deleted VPS's provider backup, its mail, and the customer's own backups, through client handles.

    target = await restore_target_for(client, "vps-old", "vps-new")  # the new VPS, both plans' tiers
    result = await request_vps_restore(client, "vps-old", "vps-new")  # CommandResult with the fee invoice
    result = await request_mail_restore(client, "vps-old", ["example.cz"], onto="vps-new")

The deleted VPS's workflow decides (plan tier, customer, node, paid, backup still there) and refuses
with a reason (`RestoreRefused` here, from its update validator); the fee invoice it issues is paid like
any other, and the payment does the copy. Workflows read no files, so the tiers of both current
plans are resolved here from `policy/plans.toml` (HOSTLIFE_PLANS) and sent in the `RestoreTarget`.
Manual backups of a live VPS go through its `VpsBackupsWorkflow` (`vps-backups-<service>`).
"""

from __future__ import annotations

from typing import Any

from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from policy.plans import PlansCatalog, PlansError, configured_plans
from workflows import service_workflow_id
from workflows.models import CommandResult, MailRestoreRequest, RestoreRequest, RestoreTarget, ServiceStatus
from workflows.subscription import SubscriptionWorkflow
from workflows.vps_backups import VpsBackupsWorkflow
from workflows.vps_models import (
    BackupCommandResult,
    BackupRecord,
    DeleteBackupRequest,
    ManualBackupRequest,
    vps_backups_workflow_id,
)


class RestoreRefused(Exception):
    """The request cannot be carried out as asked; the message says why (printed by the CLI)."""


def _reason(exc: WorkflowUpdateFailedError) -> str:
    cause = exc.cause
    return str(getattr(cause, "message", None) or cause)


async def _status(client: Client, service_id: str) -> ServiceStatus:
    handle = client.get_workflow_handle_for(SubscriptionWorkflow.run, service_workflow_id(service_id))
    try:
        return await handle.query(SubscriptionWorkflow.status)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise RestoreRefused(f"no service {service_id} in hostlife") from exc
        raise


def plan_tier(status: ServiceStatus, plans: PlansCatalog | None = None) -> int | None:
    """The numeric tier of the service's current plan (None: it runs without a plan)."""
    if status.plan is None:
        return None
    try:
        catalog = plans or configured_plans()
        return catalog.product_plans(status.profile, status.product).plan(status.plan).tier
    except PlansError as exc:
        raise RestoreRefused(
            f"{status.service_id} is on plan {status.plan}, which the plans lack: {exc}"
        ) from None


async def restore_target(
    client: Client,
    service_id: str,
    source: ServiceStatus | None = None,
    plans: PlansCatalog | None = None,
) -> RestoreTarget:
    """The newly ordered VPS as its own workflow reports it, with its plan's tier and, given the
    deleted VPS's status (`source`), that one's current plan and tier for the same-or-higher check."""
    status = await _status(client, service_id)
    if status.node is None or status.vm_name is None:
        raise RestoreRefused(f"{service_id} is a {status.product}, not a server on a hypervisor")
    return RestoreTarget(
        service_id=status.service_id,
        customer_id=status.customer_id,
        product=status.product,
        plan=status.plan,
        plan_tier=plan_tier(status, plans),
        from_plan=source.plan if source else None,
        from_plan_tier=plan_tier(source, plans) if source else None,
        node=status.node,
        vm_name=status.vm_name,
        state=status.state,
        expires_on=status.expires_on,
    )


async def restore_target_for(
    client: Client, service_id: str, onto: str, plans: PlansCatalog | None = None
) -> RestoreTarget:
    """What the restore of the deleted VPS `service_id` onto `onto` sends: both current plans' tiers."""
    source = await _status(client, service_id)
    return await restore_target(client, onto, source, plans)


async def request_vps_restore(client: Client, service_id: str, onto: str, note: str = "") -> CommandResult:
    """Ask the deleted VPS `service_id` to restore its provider backup onto `onto` (fee invoiced)."""
    target = await restore_target_for(client, service_id, onto)
    handle = client.get_workflow_handle_for(SubscriptionWorkflow.run, service_workflow_id(service_id))
    try:
        return await handle.execute_update(
            SubscriptionWorkflow.restore, RestoreRequest(note=note, onto=target)
        )
    except WorkflowUpdateFailedError as exc:
        raise RestoreRefused(_reason(exc)) from exc


async def request_mail_restore(
    client: Client, service_id: str, domains: list[str], onto: str
) -> CommandResult:
    """Invoice the mail restore of `domains` (fee per domain) from the deleted VPS's provider backup,
    into a service of the same customer (never into someone else's mail space)."""
    source, target = await _status(client, service_id), await _status(client, onto)
    if target.customer_id != source.customer_id:
        raise RestoreRefused(f"{onto} belongs to another customer")
    handle = client.get_workflow_handle_for(SubscriptionWorkflow.run, service_workflow_id(service_id))
    try:
        return await handle.execute_update(
            SubscriptionWorkflow.restore_mail, MailRestoreRequest(domains=domains, onto_service_id=onto)
        )
    except WorkflowUpdateFailedError as exc:
        raise RestoreRefused(_reason(exc)) from exc


def _backups_handle(client: Client, service_id: str) -> WorkflowHandle[VpsBackupsWorkflow, Any]:
    return client.get_workflow_handle_for(VpsBackupsWorkflow.run, vps_backups_workflow_id(service_id))


async def take_manual_backup(client: Client, service_id: str) -> BackupCommandResult:
    try:
        return await _backups_handle(client, service_id).execute_update(
            VpsBackupsWorkflow.take_manual_backup, ManualBackupRequest()
        )
    except WorkflowUpdateFailedError as exc:
        raise RestoreRefused(_reason(exc)) from exc
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise RestoreRefused(f"VPS {service_id} has no backups workflow") from exc
        raise


async def delete_manual_backup(client: Client, service_id: str, label: str) -> BackupCommandResult:
    try:
        return await _backups_handle(client, service_id).execute_update(
            VpsBackupsWorkflow.delete_manual_backup, DeleteBackupRequest(label=label)
        )
    except WorkflowUpdateFailedError as exc:
        raise RestoreRefused(_reason(exc)) from exc
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise RestoreRefused(f"VPS {service_id} has no backups workflow") from exc
        raise


async def list_backups(client: Client, service_id: str) -> list[BackupRecord]:
    try:
        return await _backups_handle(client, service_id).query(VpsBackupsWorkflow.backups)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise RestoreRefused(f"VPS {service_id} has no backups workflow") from exc
        raise

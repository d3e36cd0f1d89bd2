"""The hosting platform: shared hosting, mail, e-shops, site builders, DNS, support plans.

    PlatformError
     └── PlatformUnavailable   (retried)

Switching a service off and on, deleting it, purging its provider backup and restoring it from
that backup. Multihosting and VMS act on every subserver. Each call is idempotent, so an
activity retry is harmless.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel
from temporalio import activity


class PlatformAction(StrEnum):
    BLOCK = "block"
    UNBLOCK = "unblock"
    DELETE = "delete"
    PURGE_BACKUPS = "purge_backups"
    RESTORE = "restore"
    CHANGE_PLAN = "change_plan"
    RESTORE_MAIL = "restore_mail"


class PlatformActionInput(BaseModel):
    idempotency_key: str
    service_id: str
    product: str
    subservers: list[str] = []
    reason: str = ""
    mail_bounces: bool = False
    """Blocked mailboxes bounce incoming mail (SPEC §4); Exchange keeps delivering."""
    plan: str | None = None
    """CHANGE_PLAN: the plan to switch to, with what it provides (disk, CPUs, mailboxes)."""
    resources: dict[str, int] = {}


class RestoreMailInput(BaseModel):
    """Mail of `domains` from a deleted VPS's provider backup into another service's mail space."""

    idempotency_key: str
    service_id: str
    """The deleted VPS whose provider backup holds the mail."""
    backup_label: str
    onto_service_id: str
    domains: list[str]


class PlatformActionResult(BaseModel):
    action: PlatformAction
    targets: list[str]
    changed: bool


class PlatformError(Exception):
    """Root of the platform adapter's errors."""


class PlatformUnavailable(PlatformError):
    """The control panel cannot be reached now."""


class HostingPlatform(Protocol):
    async def apply(self, action: PlatformAction, target: str, request: PlatformActionInput) -> bool: ...


class RecordingPlatform:
    """Keeps each target's switch state in memory; what the simulator and tests use."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.state: dict[str, str] = {}
        self.plans: dict[str, str] = {}

    async def apply(self, action: PlatformAction, target: str, request: PlatformActionInput) -> bool:
        self.calls.append((action.value, target))
        if action is PlatformAction.CHANGE_PLAN:
            changed = self.plans.get(target) != request.plan
            self.plans[target] = request.plan or ""
            return changed
        after = {
            PlatformAction.BLOCK: "blocked",
            PlatformAction.UNBLOCK: "active",
            PlatformAction.DELETE: "deleted",
            PlatformAction.PURGE_BACKUPS: "purged",
            PlatformAction.RESTORE: "active",
            PlatformAction.RESTORE_MAIL: "restored",
        }[action]
        changed = self.state.get(target) != after
        self.state[target] = after
        return changed


class PlatformActivities:
    def __init__(self, platform: HostingPlatform) -> None:
        self.platform = platform

    async def _each(self, action: PlatformAction, request: PlatformActionInput) -> PlatformActionResult:
        targets = [request.service_id, *request.subservers]
        changed = False
        for target in targets:
            changed = await self.platform.apply(action, target, request) or changed
        activity.logger.info("platform action", extra={"action": action.value, "targets": targets})
        return PlatformActionResult(action=action, targets=targets, changed=changed)

    @activity.defn
    async def block_service(self, request: PlatformActionInput) -> PlatformActionResult:
        return await self._each(PlatformAction.BLOCK, request)

    @activity.defn
    async def unblock_service(self, request: PlatformActionInput) -> PlatformActionResult:
        return await self._each(PlatformAction.UNBLOCK, request)

    @activity.defn
    async def delete_service(self, request: PlatformActionInput) -> PlatformActionResult:
        return await self._each(PlatformAction.DELETE, request)

    @activity.defn
    async def purge_backups(self, request: PlatformActionInput) -> PlatformActionResult:
        return await self._each(PlatformAction.PURGE_BACKUPS, request)

    @activity.defn
    async def restore_service(self, request: PlatformActionInput) -> PlatformActionResult:
        return await self._each(PlatformAction.RESTORE, request)

    @activity.defn
    async def change_plan(self, request: PlatformActionInput) -> PlatformActionResult:
        """Switch the plan (limits, disk, CPUs); for a VPS the resize is ops' platform action."""
        return await self._each(PlatformAction.CHANGE_PLAN, request)

    @activity.defn
    async def restore_mail(self, request: RestoreMailInput) -> PlatformActionResult:
        """One mail domain at a time (`<onto>:<domain>`), each idempotent, so a retry redoes none twice."""
        action = PlatformActionInput(
            idempotency_key=request.idempotency_key,
            service_id=request.onto_service_id,
            product="mail",
            reason=f"mail restore from provider backup {request.backup_label} of {request.service_id}",
        )
        targets = [f"{request.onto_service_id}:{domain}" for domain in request.domains]
        changed = False
        for target in targets:
            changed = await self.platform.apply(PlatformAction.RESTORE_MAIL, target, action) or changed
        activity.logger.info("mail restored", extra={"targets": targets, "from": request.service_id})
        return PlatformActionResult(action=PlatformAction.RESTORE_MAIL, targets=targets, changed=changed)

"""VpsBackupsWorkflow: the customer's backups of one VPS (SPEC §5), id `vps-backups-<service_id>`.

Once a day at the configured local time it records what the backup space holds (the billing basis,
query `usage`) and, while automatic backup is on, takes `daily-<day>` (the node snapshots a running
server first) and then rotates, so exactly 3 or 7 automatic backups remain. Manual backups are
kept until the customer deletes them or the VPS is deleted. Switching automatic backup off removes
the automatic ones. The signal `vps_deleted` removes every backup and ends the workflow.

Backup storage is billed (SPEC §5): the daily measurement (bytes the backups hold) adds up over a
calendar month; when the month ends (the first tick of the next one, or the VPS's deletion) it is
charged to the customer's credit at `price_per_gib_month`, pro rata by day (`policy.storage`).
A charge the credit does not cover is told to the customer and carried into the next month's.

All hypervisor work runs on the node's task queue (`hypervisor-<node>`). A daily backup gives up
after a day of retrying a node that is down (flagged, the next day tries again); a customer's
request or the final removal waits for the node as long as it takes. History stays bounded: the
workflow continues as new every `days_per_run` days, carrying its whole state.
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.hypervisor import (
        COPY_TIMEOUTS,
        BackupKind,
        HypervisorActivities,
        RotateVmBackupsInput,
        VmBackupInput,
        node_task_queue,
    )
    from activities.vps_storage import (
        ChargeBackupStorageInput,
        VpsStorageActivities,
        WarnBackupStorageInput,
    )
    from policy.clock import Clock
    from policy.pricing import round_money
    from policy.storage import backup_storage_charge, month_start
    from workflows.models import JournalEntry
    from workflows.vps_models import (
        AutomaticBackupSettings,
        BackupCommandResult,
        BackupRecord,
        BackupUsageDay,
        DeleteBackupRequest,
        ManualBackupRequest,
        StorageCharge,
        VpsBackupsInput,
        VpsBackupsResult,
        VpsBackupsState,
        VpsBackupsStatus,
        VpsDeleted,
    )

JOURNAL_LIMIT = 200
USAGE_LIMIT = 400

BACKUP_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(minutes=30),
    "heartbeat_timeout": COPY_TIMEOUTS.heartbeat,  # a beat per disk copied: a hung node is noticed
    "retry_policy": RetryPolicy(
        maximum_interval=timedelta(minutes=10), non_retryable_error_types=["VmNotFound", "InvalidRequest"]
    ),
}
DAILY_OPTIONS: dict[str, Any] = {**BACKUP_OPTIONS, "schedule_to_close_timeout": timedelta(hours=20)}
CHARGE_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(
        maximum_interval=timedelta(minutes=5), non_retryable_error_types=["InsufficientCredit"]
    ),
}
"""A node down all day skips that day's backup instead of delaying every later one."""


def _vm_gone(exc: ActivityError) -> bool:
    return isinstance(exc.cause, ApplicationError) and exc.cause.type == "VmNotFound"


@workflow.defn
class VpsBackupsWorkflow:
    @workflow.init
    def __init__(self, start: VpsBackupsInput) -> None:
        if start.state is not None:
            self.state = start.state
        elif start.config is not None:
            self.state = VpsBackupsState(config=start.config, rotation=start.rotation)
        else:
            raise ValueError("VpsBackupsInput needs config or state")
        self.lock = asyncio.Lock()
        self.woken = False
        self.deleting: VpsDeleted | None = None
        self.ticks = 0

    # ---------------------------------------------------------------- run

    @workflow.run
    async def run(self, start: VpsBackupsInput) -> VpsBackupsResult:
        if start.state is None:
            self._record("started", {"rotation": self.state.rotation})
        self._details()
        while self.deleting is None and not self.state.deleted:
            day, at = self._next_tick()
            if await self._sleep_until(at):
                continue
            async with self.lock:
                if self.deleting is not None:
                    break
                await self._daily(day)
                self._details()
            self.ticks += 1
            if self.ticks >= self.state.config.days_per_run or workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                if self.deleting is None:
                    self._continue_as_new()
        await workflow.wait_condition(workflow.all_handlers_finished)
        async with self.lock:
            removed = await self._remove_all(self.deleting or VpsDeleted())
        return VpsBackupsResult(
            service_id=self.state.config.service_id, removed=removed, usage_days=len(self.state.usage)
        )

    def _continue_as_new(self) -> None:
        state = self.state
        state.journal = state.journal[-JOURNAL_LIMIT:]
        state.usage = state.usage[-USAGE_LIMIT:]
        state.runs += 1
        workflow.continue_as_new(VpsBackupsInput(state=state))

    @property
    def clock(self) -> Clock:
        return self.state.config.clock

    def _today(self) -> date:
        return self.clock.today(workflow.now())

    def _next_tick(self) -> tuple[date, datetime]:
        """The next daily backup: today's if it is still ahead (or overdue and not done), else tomorrow's."""
        now = workflow.now()
        today = self.clock.today(now)
        last = self.state.last_tick
        if last is None:
            day = (
                today
                if self.clock.instant(today, self.state.config.backup_time) > now
                else today + timedelta(1)
            )
        else:
            day = max(last + timedelta(days=1), today)
        return day, self.clock.instant(day, self.state.config.backup_time)

    async def _sleep_until(self, at: datetime) -> bool:
        """Sleep until `at`; True when a message woke us first (settings changed or VPS deleted)."""
        delay = at - workflow.now()
        if delay <= timedelta(0):
            return False
        self.woken = False
        try:
            await workflow.wait_condition(
                lambda: self.woken or self.deleting is not None,
                timeout=delay,
                timeout_summary=f"next backup tick {at.isoformat()}",
            )
        except TimeoutError:
            return False
        return True

    # ---------------------------------------------------------------- the daily tick

    async def _daily(self, day: date) -> None:
        state = self.state
        state.last_tick = day
        if state.rotation > 0:
            label = f"daily-{day.isoformat()}"
            try:
                await self._create(label, BackupKind.AUTOMATIC, day, DAILY_OPTIONS)
                await self._rotate(state.rotation, DAILY_OPTIONS)
            except ActivityError as exc:
                self._failed("daily backup", exc)
        manual = [b.label for b in state.backups if b.kind is BackupKind.MANUAL]
        automatic = [b.label for b in state.backups if b.kind is BackupKind.AUTOMATIC]
        if state.usage and state.usage[-1].day == day:
            state.usage.pop()  # a second tick the same day (time moved later): the later contents count
        size = sum(b.size_bytes for b in state.backups)
        state.usage.append(
            BackupUsageDay(
                day=day,
                automatic=len(automatic),
                manual=len(manual),
                labels=automatic + manual,
                size_bytes=size,
            )
        )
        if self._bills_storage():
            if state.storage_month is not None and month_start(day) != state.storage_month:
                await self._charge_storage()
            if state.storage_month is None:
                state.storage_month = month_start(day)
            state.storage_byte_days += size
        if len(state.usage) > 2 * USAGE_LIMIT:
            state.usage = state.usage[-USAGE_LIMIT:]

    # ---------------------------------------------------------------- hypervisor calls

    def _backup_input(self, label: str, kind: BackupKind, action: str) -> VmBackupInput:
        config = self.state.config
        return VmBackupInput(
            idempotency_key=f"{workflow.info().workflow_id}:{action}:{label}",
            service_id=config.service_id,
            node=config.node,
            vm_name=config.vm_name,
            label=label,
            kind=kind,
        )

    async def _create(self, label: str, kind: BackupKind, day: date, options: dict[str, Any]) -> None:
        config = self.state.config
        result = await workflow.execute_activity_method(
            HypervisorActivities.create_vm_backup,
            self._backup_input(label, kind, "create"),
            task_queue=node_task_queue(config.node),
            summary=f"{kind.value} backup {label} of VPS {config.service_id} on {config.node}",
            **options,
        )
        if not any(b.label == label for b in self.state.backups):
            self.state.backups.append(
                BackupRecord(
                    label=label, kind=kind, day=day, taken_at=workflow.now(), size_bytes=result.size_bytes
                )
            )
        self._record("backup_created", {"label": label, "kind": kind.value})

    async def _rotate(self, keep: int, options: dict[str, Any]) -> list[str]:
        config = self.state.config
        result = await workflow.execute_activity_method(
            HypervisorActivities.rotate_vm_backups,
            RotateVmBackupsInput(
                idempotency_key=f"{workflow.info().workflow_id}:rotate:{self._today()}:{keep}",
                service_id=config.service_id,
                node=config.node,
                vm_name=config.vm_name,
                keep=keep,
            ),
            task_queue=node_task_queue(config.node),
            summary=f"keep {keep} automatic backups of VPS {config.service_id}",
            **options,
        )
        self._forget(result.deleted)
        if result.deleted:
            self._record("backups_rotated", {"keep": keep, "deleted": result.deleted})
        return list(result.deleted)

    async def _delete(self, label: str) -> None:
        config = self.state.config
        await workflow.execute_activity_method(
            HypervisorActivities.delete_vm_backup,
            self._backup_input(label, BackupKind.MANUAL, "delete"),
            task_queue=node_task_queue(config.node),
            summary=f"delete backup {label} of VPS {config.service_id}",
            **BACKUP_OPTIONS,
        )
        self._forget([label])
        self._record("backup_deleted", {"label": label})

    def _forget(self, labels: list[str]) -> None:
        self.state.backups = [b for b in self.state.backups if b.label not in labels]

    async def _remove_all(self, deleted: VpsDeleted) -> list[str]:
        """Every backup goes with the VPS. A VM already deleted took its backups with it."""
        state = self.state
        removed = [b.label for b in state.backups]
        try:
            await self._rotate(0, BACKUP_OPTIONS)
            for backup in [b for b in state.backups if b.kind is BackupKind.MANUAL]:
                await self._delete(backup.label)
        except ActivityError as exc:
            if not _vm_gone(exc):
                self._failed("remove backups", exc)
        state.backups = []
        state.rotation = 0
        if self._bills_storage() and state.storage_month is not None:
            await self._charge_storage()  # the month so far: storage ends with the VPS
        state.deleted = True
        self._record("vps_deleted", {"reason": deleted.reason, "removed": removed})
        workflow.logger.info("vps backups removed", extra={"service_id": state.config.service_id})
        self._details()
        return removed

    # ---------------------------------------------------------------- backup storage billing

    def _bills_storage(self) -> bool:
        config = self.state.config
        return (
            config.price_per_gib_month > 0
            and bool(config.customer_id)
            and workflow.patched("vps-backup-storage-billing")
        )

    async def _charge_storage(self) -> None:
        """Charge the month measured so far (plus any debt) to the credit, then start a new month."""
        state = self.state
        config = state.config
        month = state.storage_month
        assert month is not None
        byte_days = state.storage_byte_days
        amount = round_money(
            backup_storage_charge(byte_days, config.price_per_gib_month, month) + state.storage_debt
        )
        state.storage_month, state.storage_byte_days = None, 0
        if amount <= 0:
            return
        key = f"{workflow.info().workflow_id}:storage:{month.isoformat()}"
        try:
            await workflow.execute_activity_method(
                VpsStorageActivities.charge_backup_storage,
                ChargeBackupStorageInput(
                    idempotency_key=key,
                    customer_id=config.customer_id,
                    service_id=config.service_id,
                    month=month,
                    byte_days=byte_days,
                    amount=amount,
                ),
                summary=f"charge {amount} for backup storage of VPS {config.service_id} in {month:%Y-%m}",
                **CHARGE_OPTIONS,
            )
        except ActivityError as exc:
            state.storage_debt = amount
            state.storage_charged.append(
                StorageCharge(month=month, byte_days=byte_days, amount=amount, paid=False)
            )
            self._failed("backup storage charge", exc)
            try:
                await workflow.execute_activity_method(
                    VpsStorageActivities.warn_backup_storage_unpaid,
                    WarnBackupStorageInput(
                        idempotency_key=f"{key}:warn",
                        customer_id=config.customer_id,
                        service_id=config.service_id,
                        amount=amount,
                    ),
                    **CHARGE_OPTIONS,
                )
            except ActivityError as warn_exc:
                self._failed("backup storage warning", warn_exc)
            return
        state.storage_debt = Decimal("0.00")
        state.storage_charged.append(
            StorageCharge(month=month, byte_days=byte_days, amount=amount, paid=True)
        )
        self._record(
            "storage_charged", {"month": month.isoformat(), "byte_days": byte_days, "amount": str(amount)}
        )

    def _failed(self, what: str, exc: ActivityError) -> None:
        state = self.state
        state.failures += 1
        state.last_error = f"{what} failed: {exc.cause or exc}"
        self._record("backup_failed", {"what": what, "error": str(exc.cause or exc)})
        workflow.logger.warning(
            "vps backup failed", extra={"service_id": state.config.service_id, "what": what}
        )

    # ---------------------------------------------------------------- messages

    @workflow.update
    async def configure_automatic(self, settings: AutomaticBackupSettings) -> BackupCommandResult:
        """Switch automatic backup on (3 or 7 kept), off (all automatic ones go) or move its time."""
        async with self.lock:
            state = self.state
            state.rotation = settings.rotation
            if settings.backup_time is not None:
                state.config = state.config.model_copy(update={"backup_time": settings.backup_time})
            today = self._today()
            if (
                state.last_tick == today
                and self.clock.instant(today, state.config.backup_time) > workflow.now()
            ):
                state.last_tick = today - timedelta(days=1)  # today's new time is still ahead: tick again
            self._record(
                "settings",
                {"rotation": settings.rotation, "backup_time": state.config.backup_time.isoformat()},
            )
            removed = await self._rotate(settings.rotation, BACKUP_OPTIONS)
            self._details()
        self.woken = True
        state_text = f"{settings.rotation}-day rotation" if settings.rotation else "off"
        return BackupCommandResult(
            message=f"automatic backup {state_text} at {state.config.backup_time:%H:%M}", removed=removed
        )

    @configure_automatic.validator
    def _validate_configure(self, settings: AutomaticBackupSettings) -> None:
        self._refuse_if_deleted()

    @workflow.update
    async def take_manual_backup(self, request: ManualBackupRequest) -> BackupCommandResult:
        async with self.lock:
            state = self.state
            state.manual_taken += 1
            day = self._today()
            label = f"manual-{day:%Y%m%d}-{state.manual_taken}"
            await self._create(label, BackupKind.MANUAL, day, BACKUP_OPTIONS)
            self._details()
        return BackupCommandResult(message=f"manual backup {label} taken", label=label)

    @take_manual_backup.validator
    def _validate_manual(self, request: ManualBackupRequest) -> None:
        self._refuse_if_deleted()

    @workflow.update
    async def delete_manual_backup(self, request: DeleteBackupRequest) -> BackupCommandResult:
        async with self.lock:
            await self._delete(request.label)
            self._details()
        return BackupCommandResult(message=f"backup {request.label} deleted", removed=[request.label])

    @delete_manual_backup.validator
    def _validate_delete(self, request: DeleteBackupRequest) -> None:
        self._refuse_if_deleted()
        found = next((b for b in self.state.backups if b.label == request.label), None)
        if found is None:
            raise ValueError(f"no backup {request.label}")
        if found.kind is not BackupKind.MANUAL:
            raise ValueError(f"{request.label} is automatic: it goes with rotation or when switched off")

    @workflow.signal
    def vps_deleted(self, fact: VpsDeleted) -> None:
        """The VPS is gone: remove every backup and finish (a signal, so a workflow can send it)."""
        if self.deleting is None:
            self.deleting = fact

    def _refuse_if_deleted(self) -> None:
        if self.state.deleted or self.deleting is not None:
            raise ValueError("the VPS was deleted; its backups are gone")

    # ---------------------------------------------------------------- queries and audit

    @workflow.query
    def backups(self) -> list[BackupRecord]:
        return list(self.state.backups)

    @workflow.query
    def usage(self, since: date | None = None) -> list[BackupUsageDay]:
        """Daily contents of the backup space, for billing backup storage per day."""
        return [u for u in self.state.usage if since is None or u.day >= since]

    @workflow.query
    def status(self) -> VpsBackupsStatus:
        state = self.state
        done = state.deleted or self.deleting is not None
        return VpsBackupsStatus(
            service_id=state.config.service_id,
            node=state.config.node,
            vm_name=state.config.vm_name,
            rotation=state.rotation,
            backup_time=state.config.backup_time,
            next_backup_at=None if done or state.rotation == 0 else self._next_tick()[1],
            backups=list(state.backups),
            deleted=state.deleted,
            failures=state.failures,
            last_error=state.last_error,
            runs=state.runs,
            storage_charged=list(state.storage_charged),
            storage_debt=state.storage_debt,
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
        if len(state.journal) > 2 * JOURNAL_LIMIT:
            state.journal = state.journal[-JOURNAL_LIMIT:]

    def _details(self) -> None:
        """One line for ops in the Web UI."""
        state = self.state
        automatic = sum(b.kind is BackupKind.AUTOMATIC for b in state.backups)
        manual = len(state.backups) - automatic
        if state.deleted:
            text = "VPS deleted — backups removed"
        else:
            mode = (
                f"{state.rotation}-day rotation at {state.config.backup_time:%H:%M}"
                if state.rotation
                else "off"
            )
            text = f"automatic backup {mode} — {automatic} automatic, {manual} manual"
            if state.last_error:
                text += f" — last error: {state.last_error}"
        workflow.set_current_details(text)

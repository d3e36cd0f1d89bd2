"""VpsBackupsWorkflow on the time-skipping server against a libvirt test-driver node (SPEC §5).

Daily automatic backups in 3- or 7-day rotation, manual backups kept until deleted, switching off,
and the VPS deleted; every check compares the workflow's view with what is on the node.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.hypervisor import BackupKind
from policy.clock import Clock
from tests.workflows.vps_lab import Node, VpsLab, vps_lab
from workflows.vps_backups import VpsBackupsWorkflow
from workflows.vps_models import (
    AutomaticBackupSettings,
    DeleteBackupRequest,
    ManualBackupRequest,
    VpsBackupsConfig,
    VpsBackupsInput,
    VpsDeleted,
    vps_backups_workflow_id,
)

Handle = WorkflowHandle[VpsBackupsWorkflow, Any]
CLOCK = Clock()
BACKUP_TIME = time(3, 0)


@contextlib.asynccontextmanager
async def backups(v: VpsLab, node: Node, rotation: int, days_per_run: int = 4) -> AsyncIterator[Handle]:
    service_id = f"vps-{uuid.uuid4().hex[:8]}"
    config = VpsBackupsConfig(
        service_id=service_id,
        node=node.name,
        vm_name="vps-a",
        clock=CLOCK,
        backup_time=BACKUP_TIME,
        days_per_run=days_per_run,
    )
    handle = await v.env.client.start_workflow(
        VpsBackupsWorkflow.run,
        VpsBackupsInput(config=config, rotation=rotation),
        id=vps_backups_workflow_id(service_id),
        task_queue=v.vps_task_queue,
    )
    try:
        yield handle
    finally:
        with contextlib.suppress(RPCError):
            await handle.terminate(reason="test finished")


async def today(v: VpsLab) -> date:
    return CLOCK.today(await v.env.get_current_time())


async def until(v: VpsLab, day: date, at: time = time(12, 0)) -> None:
    delta = CLOCK.instant(day, at) - await v.env.get_current_time()
    if delta > timedelta(0):
        await v.env.sleep(delta)


def on_node(node: Node) -> list[tuple[str, BackupKind]]:
    return [(b.label, b.kind) for b in node.hypervisor.list_backups("vps-a")]


def backup_volumes(node: Node) -> set[str]:
    return {name for name in node.volumes() if name.startswith("vps-a.backup.")}


def first_tick(start: datetime) -> date:
    day = CLOCK.today(start)
    return day if CLOCK.instant(day, BACKUP_TIME) > start else day + timedelta(days=1)


@pytest.mark.parametrize("rotation", [3, 7])
async def test_rotation_over_ten_days_keeps_exactly_n_automatic_and_every_manual_backup(
    env: WorkflowEnvironment, tmp_path: Path, rotation: int
) -> None:
    async with vps_lab(env, tmp_path) as v:
        node = next(iter(v.nodes.values()))
        async with backups(v, node, rotation) as handle:
            start = await v.env.get_current_time()
            manual = await handle.execute_update(VpsBackupsWorkflow.take_manual_backup, ManualBackupRequest())
            assert manual.label is not None
            first = first_tick(start)
            last = first + timedelta(days=9)
            await until(v, last)

            days = [first + timedelta(days=i) for i in range(10)]
            expected = [f"daily-{d.isoformat()}" for d in days[-rotation:]]
            status = await handle.query(VpsBackupsWorkflow.status)
            assert [b.label for b in status.backups if b.kind is BackupKind.AUTOMATIC] == expected
            assert [b.label for b in status.backups if b.kind is BackupKind.MANUAL] == [manual.label]
            assert status.runs >= 3  # continued as new every 4 days, state carried over
            assert status.failures == 0

            # The node holds exactly the same: the manual one first, then the newest automatic ones.
            assert on_node(node) == [(manual.label, BackupKind.MANUAL)] + [
                (label, BackupKind.AUTOMATIC) for label in expected
            ]
            assert backup_volumes(node) == {
                f"vps-a.backup.{label}.vda" for label in [manual.label, *expected]
            }
            # vps-a was running: each backup has its snapshot, taken first and kept with it.
            snapshots = set(node.domain("vps-a").snapshotListNames())
            assert snapshots == {f"backup-{label}" for label in [manual.label, *expected]}

            # Billing basis: one line a day, what the backup space held after that day's backup.
            usage = await handle.query(VpsBackupsWorkflow.usage, None)
            assert [(u.day, u.automatic, u.manual) for u in usage] == [
                (d, min(i + 1, rotation), 1) for i, d in enumerate(days)
            ]
            later = await handle.query(VpsBackupsWorkflow.usage, days[-2])
            assert [u.day for u in later] == days[-2:]


async def test_switching_automatic_backup_off_removes_the_automatic_ones_only(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with vps_lab(env, tmp_path) as v:
        node = next(iter(v.nodes.values()))
        async with backups(v, node, rotation=3) as handle:
            first = first_tick(await v.env.get_current_time())
            await until(v, first + timedelta(days=4))
            manual = await handle.execute_update(VpsBackupsWorkflow.take_manual_backup, ManualBackupRequest())
            assert len(on_node(node)) == 4

            result = await handle.execute_update(
                VpsBackupsWorkflow.configure_automatic, AutomaticBackupSettings(rotation=0)
            )
            assert result.removed == [f"daily-{first + timedelta(days=i)}" for i in (2, 3, 4)]
            assert on_node(node) == [(manual.label, BackupKind.MANUAL)]
            assert backup_volumes(node) == {f"vps-a.backup.{manual.label}.vda"}

            # Off means off: days pass, nothing new is taken, the manual backup is still billed.
            await until(v, first + timedelta(days=7))
            status = await handle.query(VpsBackupsWorkflow.status)
            assert [b.label for b in status.backups] == [manual.label]
            assert status.next_backup_at is None
            usage = await handle.query(VpsBackupsWorkflow.usage, first + timedelta(days=5))
            assert [(u.automatic, u.manual) for u in usage] == [(0, 1)] * 3

            # On again at noon, at 22:00: the first backup is tonight, not tomorrow.
            await handle.execute_update(
                VpsBackupsWorkflow.configure_automatic,
                AutomaticBackupSettings(rotation=7, backup_time=time(22, 0)),
            )
            status = await handle.query(VpsBackupsWorkflow.status)
            assert status.next_backup_at == CLOCK.instant(first + timedelta(days=7), time(22, 0))
            await until(v, first + timedelta(days=7), time(23, 0))
            assert on_node(node) == [
                (manual.label, BackupKind.MANUAL),
                (f"daily-{first + timedelta(days=7)}", BackupKind.AUTOMATIC),
            ]
            usage = await handle.query(VpsBackupsWorkflow.usage, first + timedelta(days=7))
            assert [(u.day, u.automatic, u.manual) for u in usage] == [(first + timedelta(days=7), 1, 1)]


async def test_customer_deletes_a_manual_backup_but_not_an_automatic_one(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with vps_lab(env, tmp_path) as v:
        node = next(iter(v.nodes.values()))
        async with backups(v, node, rotation=3) as handle:
            first = first_tick(await v.env.get_current_time())
            one = await handle.execute_update(VpsBackupsWorkflow.take_manual_backup, ManualBackupRequest())
            two = await handle.execute_update(VpsBackupsWorkflow.take_manual_backup, ManualBackupRequest())
            assert one.label != two.label
            await until(v, first)
            assert one.label is not None and two.label is not None

            await handle.execute_update(
                VpsBackupsWorkflow.delete_manual_backup, DeleteBackupRequest(label=one.label)
            )
            assert on_node(node) == [(two.label, BackupKind.MANUAL), (f"daily-{first}", BackupKind.AUTOMATIC)]

            for label in (f"daily-{first}", one.label, "no-such-backup"):
                with pytest.raises(WorkflowUpdateFailedError):
                    await handle.execute_update(
                        VpsBackupsWorkflow.delete_manual_backup, DeleteBackupRequest(label=label)
                    )
            assert len(on_node(node)) == 2  # refused requests changed nothing


async def test_vps_deleted_removes_every_backup_and_ends(env: WorkflowEnvironment, tmp_path: Path) -> None:
    async with vps_lab(env, tmp_path) as v:
        node = next(iter(v.nodes.values()))
        async with backups(v, node, rotation=7) as handle:
            first = first_tick(await v.env.get_current_time())
            manual = await handle.execute_update(VpsBackupsWorkflow.take_manual_backup, ManualBackupRequest())
            await until(v, first + timedelta(days=2))
            assert len(on_node(node)) == 4

            await handle.signal(VpsBackupsWorkflow.vps_deleted, VpsDeleted(reason="unpaid"))
            result = await handle.result()
            assert manual.label is not None
            assert sorted(result.removed) == sorted(
                [manual.label, *(f"daily-{first + timedelta(days=i)}" for i in range(3))]
            )
            assert result.usage_days == 3
            assert on_node(node) == []
            assert backup_volumes(node) == set()
            assert node.domain("vps-a").snapshotListNames() == []
            assert "vps-a" in node.defined()  # the VM itself is the subscription's to delete
            journal = await handle.query(VpsBackupsWorkflow.journal, 0)
            assert journal[-1].kind == "vps_deleted"
            assert journal[-1].data["reason"] == "unpaid"

"""Whole VPS lifecycles on libvirt's test driver (real libvirt API calls, no daemon), through the
time-skipping server: block → powered off, payment → on, unpaid → deleted (domain undefined,
volumes gone, backups removed); parking keeps the domain as it was; a node that is down holds up
only its own services and catches up when it is back; ISO images live while their storage is paid.
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from datetime import time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import libvirt
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.hypervisor import BackupKind, provider_backup_label
from policy.clock import Clock
from tests.workflows.vps_lab import Handle, Node, VpsLab, at_day, eventually, vps_lab, vps_service
from workflows.iso_images import IsoImageWorkflow
from workflows.models import JournalEntry, PaymentRequest
from workflows.subscription import SubscriptionWorkflow
from workflows.vps_backups import VpsBackupsWorkflow
from workflows.vps_models import (
    AutomaticBackupSettings,
    DeleteIsoImageRequest,
    IsoImageConfig,
    IsoImageInput,
    ManualBackupRequest,
    VpsBackupsConfig,
    VpsBackupsInput,
    iso_image_workflow_id,
    vps_backups_workflow_id,
)

VPS_A_VOLUMES = {"vps-a-root.qcow2", "vps-a-mail", "vps-a-backup"}


async def pay_open_invoice(handle: Handle) -> None:
    status = await handle.query(SubscriptionWorkflow.status)
    invoice = status.open_invoice
    assert invoice is not None, status.details
    outcome = await handle.execute_update(
        SubscriptionWorkflow.submit_payment,
        PaymentRequest(
            payment_id=f"pay-{uuid.uuid4().hex[:8]}",
            variable_symbol=invoice.variable_symbol,
            amount=invoice.amount,
        ),
    )
    assert outcome.result == "applied", outcome


def hypervisor_actions(journal: list[JournalEntry]) -> list[str]:
    return [str(e.data["action"]) for e in journal if e.kind == "hypervisor"]


def inactive_xml(node: Node, vm_name: str) -> str:
    """The persistent definition, canonical (the driver re-formats <metadata> whitespace)."""
    xml = node.domain(vm_name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    return ET.canonicalize(re.sub(r" id='\d+'", "", xml), strip_text=True)


async def start_backups(v: VpsLab, node: Node, service_id: str, rotation: int) -> WorkflowHandle[Any, Any]:
    return await v.env.client.start_workflow(
        VpsBackupsWorkflow.run,
        VpsBackupsInput(
            config=VpsBackupsConfig(service_id=service_id, node=node.name, vm_name="vps-a"),
            rotation=rotation,
        ),
        id=vps_backups_workflow_id(service_id),
        task_queue=v.vps_task_queue,
    )


async def test_block_pay_then_unpaid_deletes_the_domain_its_volumes_and_backups(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with vps_lab(env, tmp_path) as v:
        node = next(iter(v.nodes.values()))
        async with vps_service(v, node) as handle:
            status = await handle.query(SubscriptionWorkflow.status)
            service_id, d = status.service_id, status.expires_on
            assert node.running("vps-a")

            await at_day(v, d, 1)
            assert (await handle.query(SubscriptionWorkflow.status)).state == "blocked"
            assert not node.running("vps-a")
            await at_day(v, d, 5)
            await pay_open_invoice(handle)
            status = await eventually(
                lambda: handle.query(SubscriptionWorkflow.status), lambda s: s.state == "active"
            )
            assert status.state == "active"
            assert node.running("vps-a")

            # The next year goes unpaid; the customer has backups on the node by then.
            d2 = status.expires_on
            await at_day(v, d2, -3)
            backups = await start_backups(v, node, service_id, rotation=3)
            await backups.execute_update(VpsBackupsWorkflow.take_manual_backup, ManualBackupRequest())
            await at_day(v, d2, 1)
            assert not node.running("vps-a")
            kinds = [b.kind for b in node.hypervisor.list_backups("vps-a")]
            assert kinds == [BackupKind.MANUAL] + [BackupKind.AUTOMATIC] * 3  # D2-2 went in rotation
            await at_day(v, d2, 31, time(0, 30))  # deleted at 00:00, before the 03:00 backup
            status = await handle.query(SubscriptionWorkflow.status)
            assert status.state == "deleted"
            assert "vps-a" not in node.defined()
            assert "vps-b" in node.defined()  # a neighbour on the node is untouched
            volumes = node.volumes()
            assert not VPS_A_VOLUMES & volumes
            assert not {name for name in volumes if name.startswith("vps-a.backup.")}
            assert {"vps-b-root.qcow2", "debian-12.qcow2", "rescue.iso"} <= volumes
            label = provider_backup_label(service_id)
            # The provider backup (disk and mail space, never the backup space) outlives the VM.
            assert {name for name in volumes if name.startswith("provider.")} == {
                f"provider.{label}.vda",
                f"provider.{label}.mail",
            }
            journal = await handle.query(SubscriptionWorkflow.journal, 0)
            assert hypervisor_actions(journal) == [
                "power_off",
                "power_on",
                "power_off",
                "keep_provider_backup",
                "delete",
            ]
            assert status.backup_until == d2 + timedelta(days=31 + 14)

            # The subscription told the backups workflow on deletion: it ends cleanly.
            with v.env.auto_time_skipping_disabled():  # the subscription's purge timer stays put
                result = await backups.result()
            assert len(result.removed) == 4
            status_b = await backups.query(VpsBackupsWorkflow.status)
            assert (status_b.deleted, status_b.failures) == (True, 0)

            # ~14 days later the purge timer removes the provider backup and closes the service.
            await at_day(v, d2, 31 + 13)
            assert {name for name in node.volumes() if name.startswith("provider.")}
            await at_day(v, d2, 31 + 15)  # purged at 00:00 on D2+46, 14 days after deletion
            with v.env.auto_time_skipping_disabled():
                result = await handle.result()
            assert result.final_state == "closed"
            assert not {name for name in node.volumes() if name.startswith("provider.")}
            journal = await handle.query(SubscriptionWorkflow.journal, 0)
            assert hypervisor_actions(journal)[-1] == "purge_provider_backup"
            assert [e for e in journal if e.kind == "action_failed"] == []


async def test_parking_keeps_the_domain_exactly_and_bills_the_parking_price(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with vps_lab(env, tmp_path) as v:
        node = next(iter(v.nodes.values()))
        node.domain("vps-a").setAutostart(1)
        before = inactive_xml(node, "vps-a")
        async with vps_service(v, node, parking_price=Decimal("300.00")) as handle:
            d = (await handle.query(SubscriptionWorkflow.status)).expires_on
            await at_day(v, d, -35)
            await handle.execute_update(SubscriptionWorkflow.park)
            dom = node.domain("vps-a")
            assert (dom.isActive(), dom.autostart()) == (False, False)
            assert "hostlife" in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)  # the park mark

            await at_day(v, d, -30)  # the next period is invoiced at the parking price
            status = await handle.query(SubscriptionWorkflow.status)
            assert status.state == "parked"
            assert status.open_invoice is not None and status.open_invoice.amount == Decimal("300.00")
            assert not node.running("vps-a")

            await at_day(v, d, -28)
            await handle.execute_update(SubscriptionWorkflow.unpark)
            dom = node.domain("vps-a")
            assert (dom.isActive(), dom.autostart()) == (True, True)
            assert inactive_xml(node, "vps-a") == before  # disks, MAC, network (so the IP): all kept
            journal = await handle.query(SubscriptionWorkflow.journal, 0)
            assert hypervisor_actions(journal) == ["park", "unpark"]


async def test_a_node_that_is_down_holds_up_only_its_own_vps_and_catches_up(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with vps_lab(env, tmp_path, nodes=2, down=(1,)) as v:
        up, down = v.nodes.values()
        async with vps_service(v, up) as on_up, vps_service(v, down) as on_down:
            d = (await on_up.query(SubscriptionWorkflow.status)).expires_on
            assert (await on_down.query(SubscriptionWorkflow.status)).expires_on == d

            await at_day(v, d, 1)
            assert not up.running("vps-a")  # the healthy node's VPS is blocked on time
            assert (await on_down.query(SubscriptionWorkflow.status)).state == "blocked"

            # Ops see the waiting power-off in the Web UI: a pending activity, retrying, with why.
            described = await on_down.describe()
            pending = described.raw_description.pending_activities
            assert [p.activity_type.name for p in pending] == ["power_off_vm"]
            assert pending[0].attempt > 1
            assert "cannot connect" in pending[0].last_failure.message

            down.bring_up()  # the node is back, its VPS still running
            assert down.running("vps-a")
            await v.env.sleep(timedelta(minutes=15))  # the next retry (at most 10 minutes apart)
            assert not down.running("vps-a")
            journal = await on_down.query(SubscriptionWorkflow.journal, 0)
            assert hypervisor_actions(journal) == ["power_off"]

            # And its life goes on: a payment switches it back on.
            await pay_open_invoice(on_down)
            await eventually(
                lambda: on_down.query(SubscriptionWorkflow.status), lambda s: s.state == "active"
            )
            assert down.running("vps-a")
            assert not up.running("vps-a")


async def test_daily_backup_skips_a_day_the_node_is_down_then_resumes(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with vps_lab(env, tmp_path, nodes=1, down=(0,)) as v:
        node = next(iter(v.nodes.values()))
        clock = Clock()
        backups = await start_backups(v, node, f"vps-{uuid.uuid4().hex[:8]}", rotation=3)
        try:
            today = clock.today(await v.env.get_current_time())
            await v.lab.sleep_until(today + timedelta(days=2), time(0, 30))
            status = await backups.query(VpsBackupsWorkflow.status)
            assert status.failures == 1  # gave up on the day's backup after retrying all day
            assert status.last_error is not None and "daily backup failed" in status.last_error
            assert status.backups == []

            node.bring_up()
            await v.lab.sleep_until(today + timedelta(days=3), time(12, 0))
            status = await backups.query(VpsBackupsWorkflow.status)
            assert [(b.label, b.kind) for b in status.backups] == [
                (f"daily-{today + timedelta(days=days)}", BackupKind.AUTOMATIC) for days in (2, 3)
            ]
            assert [b.label for b in node.hypervisor.list_backups("vps-a")] == [
                b.label for b in status.backups
            ]
            # Switching off while it works again removes what was taken.
            await backups.execute_update(
                VpsBackupsWorkflow.configure_automatic, AutomaticBackupSettings(rotation=0)
            )
            assert node.hypervisor.list_backups("vps-a") == []
        finally:
            await backups.terminate(reason="test finished")


async def test_iso_image_is_kept_while_credit_covers_it_then_deleted_after_a_warning(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with vps_lab(env, tmp_path) as v:
        node = next(iter(v.nodes.values()))
        clock = Clock()
        v.storage.balances["c1"] = Decimal("100.00")
        image_id = f"iso-{uuid.uuid4().hex[:8]}"
        config = IsoImageConfig(
            image_id=image_id,
            customer_id="c1",
            node=node.name,
            volume="rescue.iso",
            size_gib=Decimal("0.6"),
            price_per_gib_month=Decimal("50.00"),
            grace_days=14,
            periods_per_run=2,
        )
        handle = await v.env.client.start_workflow(
            IsoImageWorkflow.run,
            IsoImageInput(config=config),
            id=iso_image_workflow_id(image_id),
            task_queue=v.vps_task_queue,
        )
        start = clock.today(await v.env.get_current_time())
        status = await eventually(lambda: handle.query(IsoImageWorkflow.status), lambda s: bool(s.charges))
        assert status.monthly_amount == Decimal("30.00")

        # Three months are covered (90 of 100); the fourth is refused, warned, retried daily.
        fourth = status.charges[0].period_start
        for _ in range(3):
            fourth = fourth.replace(month=fourth.month % 12 + 1, year=fourth.year + (fourth.month == 12))
        await v.lab.sleep_until(fourth + timedelta(days=2))
        status = await handle.query(IsoImageWorkflow.status)
        assert [c.amount for c in status.charges] == [Decimal("30.00")] * 3
        assert (status.unpaid_since, status.delete_on) == (fourth, fourth + timedelta(days=14))
        assert v.storage.balances["c1"] == Decimal("10.00")
        assert [w[1] for w in v.storage.warnings] == ["c1"]
        assert "rescue.iso" in node.volumes()

        await v.lab.sleep_until(fourth + timedelta(days=15))
        result = await handle.result()
        assert (result.deleted_on, result.reason) == (
            fourth + timedelta(days=14),
            f"storage unpaid since {fourth}",
        )
        assert "rescue.iso" not in node.volumes()
        assert len(v.storage.warnings) == 1  # warned once, not every retry
        assert start <= fourth


async def test_iso_image_survives_a_top_up_and_goes_when_the_customer_deletes_it(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with vps_lab(env, tmp_path) as v:
        node = next(iter(v.nodes.values()))
        v.storage.balances["c2"] = Decimal("0.00")
        image_id = f"iso-{uuid.uuid4().hex[:8]}"
        handle = await v.env.client.start_workflow(
            IsoImageWorkflow.run,
            IsoImageInput(
                config=IsoImageConfig(
                    image_id=image_id,
                    customer_id="c2",
                    node=node.name,
                    volume="rescue.iso",
                    size_gib=Decimal("1"),
                    price_per_gib_month=Decimal("20.00"),
                )
            ),
            id=iso_image_workflow_id(image_id),
            task_queue=v.vps_task_queue,
        )
        status = await eventually(
            lambda: handle.query(IsoImageWorkflow.status), lambda s: s.unpaid_since is not None
        )
        assert status.delete_on is not None and status.charges == []
        v.storage.balances["c2"] = Decimal("50.00")
        await handle.signal(IsoImageWorkflow.credit_topped_up)
        status = await eventually(lambda: handle.query(IsoImageWorkflow.status), lambda s: bool(s.charges))
        assert (status.unpaid_since, status.delete_on, v.storage.balances["c2"]) == (
            None,
            None,
            Decimal("30.00"),
        )

        deleted = await handle.execute_update(IsoImageWorkflow.delete_image, DeleteIsoImageRequest())
        assert deleted.deleted_on is not None
        assert (await handle.result()).reason == "deleted by the customer"
        assert "rescue.iso" not in node.volumes()

"""After a VPS is deleted (SPEC §4, VPS row), on libvirt's test driver through whole lifecycles:
its node keeps a provider backup ~14 days (catalog), which a durable timer purges; it is restored
only onto a newly ordered and paid VPS on a plan of the same or a higher tier (policy/plans.toml)
for the 500 CZK fee; its mail is restored for 500 CZK per domain; a lower plan tier, unpaid target
or an expired backup are refused.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import libvirt
import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.billing import PaymentReceived
from activities.hypervisor import provider_backup_label
from activities.libvirt_node import RESTORE_NAMESPACE
from policy.payments import InvoicePurpose
from starter.vps_restore import (
    RestoreRefused,
    request_mail_restore,
    request_vps_restore,
    restore_target,
    restore_target_for,
)
from tests.workflows.vps_lab import Handle, Node, VpsLab, at_day, eventually, vps_lab, vps_service
from workflows.models import (
    CancelRequest,
    JournalEntry,
    RestoreRequest,
    RestoreTarget,
    ServiceState,
    ServiceStatus,
    SuspendRequest,
)
from workflows.subscription import SubscriptionWorkflow

GIB = 2**30


def provision(node: Node, vm_name: str, gib: int, running: bool = True) -> None:
    """Ops set up the newly ordered server on the node: a root volume of `gib` GiB and the domain."""
    conn = node.hypervisor.connection()
    conn.storagePoolLookupByName("default").createXML(
        f"<volume><name>{vm_name}-root.qcow2</name><capacity unit='GiB'>{gib}</capacity>"
        "<allocation>0</allocation><target><format type='qcow2'/></target></volume>",
        0,
    )
    dom = conn.defineXML(
        f"<domain type='test'><name>{vm_name}</name><memory unit='MiB'>1024</memory>"
        "<os><type>hvm</type></os><devices><disk type='volume' device='disk'>"
        f"<source pool='default' volume='{vm_name}-root.qcow2'/><target dev='vda' bus='virtio'/>"
        "</disk></devices></domain>"
    )
    if running:
        dom.create()


def provider_volumes(node: Node) -> set[str]:
    return {name for name in node.volumes() if name.startswith("provider.")}


async def status(handle: Handle) -> ServiceStatus:
    return await handle.query(SubscriptionWorkflow.status)


async def journal(handle: Handle) -> list[JournalEntry]:
    return await handle.query(SubscriptionWorkflow.journal, 0)


async def pay_by_signal(v: VpsLab, handle: Handle, purpose: InvoicePurpose) -> None:
    invoice = next(
        i for i in (await status(handle)).invoices if i.purpose is purpose and i.status.value == "open"
    )
    await handle.signal(
        SubscriptionWorkflow.payment_received,
        PaymentReceived(
            payment_id=f"pay-{uuid.uuid4().hex[:8]}",
            variable_symbol=invoice.variable_symbol,
            amount=invoice.amount,
            received_at=await v.lab.now(),
        ),
    )


async def deleted_vps(v: VpsLab, node: Node, handle: Handle) -> date:
    """Let the VPS go unpaid until it is deleted (D+31); returns D."""
    d = (await status(handle)).expires_on
    await at_day(v, d, 32)
    assert (await status(handle)).state == "deleted"
    return d


async def test_restore_onto_a_new_higher_plan_vps_then_mail_then_the_backup_is_purged(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with vps_lab(env, tmp_path) as v:
        node = next(iter(v.nodes.values()))
        client = v.env.client
        async with vps_service(v, node, "vps-a", plan="vps-m") as old:
            old_id = (await status(old)).service_id
            d = await deleted_vps(v, node, old)
            label = provider_backup_label(old_id)
            assert provider_volumes(node) == {f"provider.{label}.vda", f"provider.{label}.mail"}
            assert "vps-a" not in node.defined()
            assert (await status(old)).backup_until == d + timedelta(days=31 + 14)

            # The customer orders a new server: vps-c (plan vps-l, 40 GiB) on the same node, paid.
            provision(node, "vps-c", gib=40)
            async with (
                vps_service(v, node, "vps-c", plan="vps-l", expires_in_days=365) as new,
                vps_service(v, node, "vps-b", plan="vps-s", expires_in_days=365) as small,
            ):
                new_id, small_id = (await status(new)).service_id, (await status(small)).service_id

                with pytest.raises(
                    RestoreRefused,
                    match=r"is on plan vps-s \(tier 1\), lower than the deleted server's vps-m \(tier 2\)",
                ):
                    await request_vps_restore(client, old_id, small_id)
                target = await restore_target_for(client, old_id, new_id)
                assert (target.plan, target.plan_tier, target.from_plan, target.from_plan_tier) == (
                    "vps-l",
                    3,
                    "vps-m",
                    2,
                )
                with pytest.raises(RestoreRefused, match="no service no-such-service"):
                    await request_vps_restore(client, old_id, "no-such-service")

                answer = await request_vps_restore(client, old_id, new_id)
                assert answer.amount == Decimal("500.00")  # the fee only: the new VPS is paid by its order
                assert "no plan tier check" not in answer.message
                invoice = (await status(old)).open_invoice
                assert invoice is not None and invoice.purpose is InvoicePurpose.RESTORE
                assert (invoice.amount, invoice.due_on) == (Decimal("500.00"), d + timedelta(days=31 + 14))
                again = await request_vps_restore(client, old_id, new_id)
                assert again.variable_symbol == invoice.variable_symbol  # one open invoice, not two

                await pay_by_signal(v, old, InvoicePurpose.RESTORE)
                done = await eventually(lambda: status(old), lambda s: s.restored_onto is not None)
                assert done.restored_onto == new_id and done.state == "deleted"
                dom = node.domain("vps-c")
                assert dom.isActive()  # it was running: back up after the copy
                mark = ET.fromstring(
                    dom.metadata(
                        libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                        RESTORE_NAMESPACE,
                        libvirt.VIR_DOMAIN_AFFECT_CONFIG,
                    )
                )
                assert (mark.get("label"), mark.get("done")) == (label, "1")
                root = (
                    node.hypervisor.connection()
                    .storagePoolLookupByName("default")
                    .storageVolLookupByName("vps-c-root.qcow2")
                )
                assert root.info()[1] == 40 * GIB  # the new plan's disk size is kept
                new_journal = await eventually(
                    lambda: journal(new), lambda j: any(e.kind == "restored_from_backup" for e in j)
                )
                assert [e.data for e in new_journal if e.kind == "restored_from_backup"] == [
                    {"from": old_id, "label": label}
                ]
                old_journal = await journal(old)
                assert [e for e in old_journal if e.kind == "action_failed"] == []
                assert [e.data["action"] for e in old_journal if e.kind == "hypervisor"][-1] == (
                    "restore_provider_backup"
                )
                with pytest.raises(RestoreRefused, match=f"already restored onto {new_id}"):
                    await request_vps_restore(client, old_id, new_id)

                # Mail: 500 CZK per domain, restored by the mail platform once paid.
                with pytest.raises(RestoreRefused, match="not domain names"):
                    await request_mail_restore(client, old_id, ["Not A Domain"], onto=new_id)
                mail = await request_mail_restore(
                    client, old_id, ["example.cz", "shop.example.cz"], onto=new_id
                )
                assert mail.amount == Decimal("1000.00")
                await pay_by_signal(v, old, InvoicePurpose.MAIL_RESTORE)
                await eventually(lambda: journal(old), lambda j: any(e.kind == "mail_restored" for e in j))
                assert [t for a, t in v.lab.platform.calls if a == "restore_mail"] == [
                    f"{new_id}:example.cz",
                    f"{new_id}:shop.example.cz",
                ]

                # The retention timer runs out: the provider backup is purged, the old service closes.
                await at_day(v, d, 31 + 13)
                assert provider_volumes(node)
                await at_day(v, d, 31 + 15)  # purged at 00:00 on D+46, 14 days after deletion
                with v.env.auto_time_skipping_disabled():  # awaiting a result must not move the clock
                    result = await old.result()
                assert result.final_state == "closed"
                assert provider_volumes(node) == set()
                assert node.running("vps-c")  # the restored server lives on


def test_a_restore_target_plan_goes_with_its_tier() -> None:
    """The starter sends each plan with its tier from policy/plans.toml; one without the other is refused."""
    fields = {
        "service_id": "vps-new",
        "customer_id": "c1",
        "product": "vps",
        "node": "node-1",
        "vm_name": "vps-new",
        "state": ServiceState.ACTIVE,
        "expires_on": date(2027, 1, 1),
    }
    assert RestoreTarget.model_validate({**fields, "plan": "vps-m", "plan_tier": 2}).plan_tier == 2
    with pytest.raises(ValueError, match="plan and plan_tier go together"):
        RestoreTarget.model_validate({**fields, "plan": "vps-m"})
    with pytest.raises(ValueError, match="from_plan and from_plan_tier go together"):
        RestoreTarget.model_validate({**fields, "from_plan_tier": 2})
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        RestoreTarget.model_validate({**fields, "plan": "vps-m", "plan_tier": 0})


async def test_restore_is_refused_unpaid_target_missing_target_and_after_the_purge(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with vps_lab(env, tmp_path) as v:
        node = next(iter(v.nodes.values()))
        client = v.env.client
        async with (
            vps_service(v, node, "vps-a", plan="vps-m") as old,
            vps_service(v, node, "vps-b", plan="vps-m") as other,
        ):
            d = await deleted_vps(v, node, old)
            old_id = (await status(old)).service_id
            # vps-b went unpaid on the same D: deleted too, so not a paid target.
            target = await restore_target_for(client, old_id, (await status(other)).service_id)
            assert target.state == "deleted"
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await old.execute_update(SubscriptionWorkflow.restore, RestoreRequest(onto=target))
            assert "is not paid and active" in str(refused.value.cause)
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await old.execute_update(SubscriptionWorkflow.restore, RestoreRequest())
            assert "newly ordered and paid server" in str(refused.value.cause)
            paid = target.model_copy(update={"state": "active", "expires_on": d + timedelta(days=400)})
            elsewhere = paid.model_copy(update={"node": "node-elsewhere"})
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await old.execute_update(SubscriptionWorkflow.restore, RestoreRequest(onto=elsewhere))
            assert f"order it on {node.name}" in str(refused.value.cause)
            # The deleted VPS has a plan: a target without one, or tiers resolved for another plan
            # than the one it is on, cannot be compared and are refused.
            planless = paid.model_copy(update={"plan": None, "plan_tier": None})
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await old.execute_update(SubscriptionWorkflow.restore, RestoreRequest(onto=planless))
            assert "has no plan on record; the deleted server is on vps-m" in str(refused.value.cause)
            stale = paid.model_copy(update={"from_plan": "vps-s", "from_plan_tier": 1})
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await old.execute_update(SubscriptionWorkflow.restore, RestoreRequest(onto=stale))
            assert "the deleted server is on plan vps-m, the request resolved vps-s" in str(
                refused.value.cause
            )
            unresolved = await restore_target(client, target.service_id)  # no source: no from_plan
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await old.execute_update(SubscriptionWorkflow.restore, RestoreRequest(onto=unresolved))
            assert "the request resolved no plan" in str(refused.value.cause)

            # Asked but never paid: the purge cancels the invoice and closes the service.
            answer = await old.execute_update(SubscriptionWorkflow.restore, RestoreRequest(onto=paid))
            assert answer.amount == Decimal("500.00")
            await at_day(v, d, 31 + 15)
            with v.env.auto_time_skipping_disabled():
                assert (await old.result()).final_state == "closed"
            final = await status(old)
            assert [i.status.value for i in final.invoices if i.purpose is InvoicePurpose.RESTORE] == [
                "cancelled"
            ]
            assert (
                provider_volumes(node)
                - {
                    f"provider.{provider_backup_label(target.service_id)}.vda",
                    f"provider.{provider_backup_label(target.service_id)}.mail",
                }
                == set()
            )
            with pytest.raises((WorkflowUpdateFailedError, RPCError)):  # closed: nothing to restore
                await old.execute_update(SubscriptionWorkflow.restore, RestoreRequest(onto=paid))


async def test_a_cancelled_vps_keeps_its_provider_backup_a_severe_abuse_deletion_does_not(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with vps_lab(env, tmp_path) as v:
        node = next(iter(v.nodes.values()))
        async with vps_service(v, node, "vps-a") as cancelled, vps_service(v, node, "vps-b") as abusive:
            cancelled_id = (await status(cancelled)).service_id
            d = (await status(cancelled)).expires_on
            await cancelled.execute_update(
                SubscriptionWorkflow.cancel, CancelRequest(on=d - timedelta(days=20))
            )
            await abusive.execute_update(
                SubscriptionWorkflow.suspend_for_abuse, SuspendRequest(reason="botnet", severe=True)
            )
            # Deleted at once with nothing kept, so closed straight after (no retention to wait for).
            gone = await eventually(lambda: status(abusive), lambda s: s.state == "closed")
            assert gone.state == "closed"
            assert "vps-b" not in node.defined()
            assert provider_volumes(node) == set()  # a severe violation: nothing to restore
            assert "keep_provider_backup" not in [
                e.data["action"] for e in await journal(abusive) if e.kind == "hypervisor"
            ]

            upcoming = [(u.kind, (u.on - d).days) for u in (await status(cancelled)).upcoming]
            assert upcoming == [("cancel", -19), ("delete", -19), ("purge", -5)]  # ended the day after `on`
            await at_day(v, d, -18)
            assert (await status(cancelled)).state == "deleted"
            label = provider_backup_label(cancelled_id)
            assert provider_volumes(node) == {f"provider.{label}.vda", f"provider.{label}.mail"}
            actions = [e.data["action"] for e in await journal(cancelled) if e.kind == "hypervisor"]
            assert actions[-2:] == ["keep_provider_backup", "delete"]
            await at_day(v, d, -4)  # 14 days after the deletion the purge timer removes it
            assert (await status(cancelled)).state == "closed"
            assert provider_volumes(node) == set()

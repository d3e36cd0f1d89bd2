"""Every product of SPEC §4 (profile `default`) and hostico (§6), left unpaid until it is gone.

Each service starts 40 days before its expiry date D; the tables give the calendar day, relative
to D, of every state the service passes through and of every action on the systems that run it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from policy.periods import add_period
from tests.workflows.harness import lab
from tests.workflows.lifecycle import entries, offsets, service

START = -40  # the service is handed to hostlife 40 days before D


@dataclass(frozen=True)
class Unpaid:
    product: str
    states: list[tuple[str, int]]
    """(state, day relative to D) after `active` on D-40."""
    actions: list[tuple[str, int]]
    """(action, day relative to D) on the platform or the hypervisor, as the journal records it."""
    restore_offer: bool
    spec: dict[str, Any] = field(default_factory=dict)
    profile: str = "default"

    @property
    def deleted(self) -> int:
        return dict(self.states)["deleted"]


def _platform(block: int, delete: int, purge: int) -> list[tuple[str, int]]:
    return [("block", block), ("delete", delete), ("purge_backups", purge)]


def _lifecycle(block_days: int, retention: int) -> list[tuple[str, int]]:
    delete = block_days + 1
    return [("blocked", 1), ("deleted", delete), ("closed", delete + retention)]


CASES = [
    # SPEC §4: block days 60, restore from backup (500 CZK): a backup survives, then closed.
    Unpaid("hosting", _lifecycle(60, 14), _platform(1, 61, 75), restore_offer=True),
    Unpaid(
        "multihosting",
        _lifecycle(60, 14),
        _platform(1, 61, 75),
        restore_offer=True,
        spec={"subservers": ["sub-a", "sub-b"]},
    ),
    Unpaid("mnw", _lifecycle(60, 14), _platform(1, 61, 75), restore_offer=True),
    # "Moje stránky": no restore, so nothing is kept: closed the day it is deleted.
    Unpaid("moje-stranky", _lifecycle(60, 0), _platform(1, 61, 61), restore_offer=False),
    Unpaid("email", _lifecycle(14, 0), _platform(1, 15, 15), restore_offer=False),
    Unpaid("eshop", _lifecycle(60, 0), _platform(1, 61, 61), restore_offer=False),
    Unpaid("extra-mail", _lifecycle(60, 14), _platform(1, 61, 75), restore_offer=True),
    Unpaid("exchange", _lifecycle(14, 0), _platform(1, 15, 15), restore_offer=False),
    Unpaid(
        "vms",
        _lifecycle(30, 14),
        _platform(1, 31, 45),
        restore_offer=True,
        spec={"subservers": ["vm-a", "vm-b", "vm-c"]},
    ),
    # VPS/APS: powered off while blocked, deleted on the node on D+31 after its provider backup is
    # copied there, which is purged on the node ~14 days later.
    Unpaid(
        "vps",
        _lifecycle(30, 14),
        [("power_off", 1), ("keep_provider_backup", 31), ("delete", 31), ("purge_provider_backup", 45)],
        restore_offer=True,
    ),
    Unpaid(
        "aps",
        _lifecycle(30, 14),
        [("power_off", 1), ("keep_provider_backup", 31), ("delete", 31), ("purge_provider_backup", 45)],
        restore_offer=True,
    ),
    Unpaid("dns", _lifecycle(60, 14), _platform(1, 61, 75), restore_offer=True),
    Unpaid("system-updates", _lifecycle(365, 0), _platform(1, 366, 366), restore_offer=False),
    Unpaid(
        "vip-support",
        _lifecycle(30, 0),
        _platform(1, 31, 31),
        restore_offer=False,
        spec={"period": "P1M", "price": Decimal("990.00")},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.product for c in CASES])
async def test_unpaid_product_runs_its_course(env: WorkflowEnvironment, case: Unpaid) -> None:
    async with lab(env) as l, service(l, product=case.product, expires_in_days=40, **case.spec) as handle:
        d = (await l.status(handle)).expires_on
        result = await handle.result()
        journal = await l.journal(handle)

        assert result.final_state == "closed"
        assert result.renewals == 0
        assert offsets(journal, l, d) == [("active", START), *case.states]
        # SPEC §3.2: the renewal invoice 30 days before D; cancelled when the service is deleted.
        invoices = offsets(journal, l, d, "invoice", "action")
        assert invoices == [("issued", -30), ("cancelled", case.deleted)]
        # Default reminders 14 and 3 days before D and on D+1; a last warning 7 days before deletion.
        mails = offsets(journal, l, d, "mail", "template")
        reminders = [day for template, day in mails if template == "reminder"]
        assert reminders == [-14, -3, 1]
        assert ("deletion_warning", case.deleted - 7) in mails
        assert ("service_blocked", 1) in mails
        assert ("service_deleted", case.deleted) in mails
        assert (("restore_offer", case.deleted) in mails) is case.restore_offer

        actions = offsets(journal, l, d, "hypervisor", "action") + offsets(
            journal, l, d, "platform", "action"
        )
        assert sorted(actions, key=lambda a: a[1]) == case.actions
        # SPEC §1: a milestone "on day D+n" happens at 00:00 local time that day.
        for entry in journal[1:]:
            local = l.clock.local(entry.at)
            assert (local.hour, local.minute) == (0, 0), (entry.kind, entry.data, local)


@pytest.mark.parametrize(("product", "bounces"), [("hosting", True), ("email", True), ("exchange", False)])
async def test_blocked_mail_bounces_except_on_exchange(
    env: WorkflowEnvironment, product: str, bounces: bool
) -> None:
    """SPEC §4: mail to a blocked mailbox bounces; Exchange Online keeps delivering it."""
    async with lab(env) as l, service(l, product=product) as handle:
        d = (await l.status(handle)).expires_on
        await l.sleep_until(d + timedelta(days=2))
        history = await handle.fetch_history()
        blocks = [
            json.loads(e.activity_task_scheduled_event_attributes.input.payloads[0].data)
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            and e.activity_task_scheduled_event_attributes.activity_type.name == "block_service"
        ]
        assert [b["mail_bounces"] for b in blocks] == [bounces]


async def test_customers_own_invoice_lead(env: WorkflowEnvironment) -> None:
    """SPEC §3.2: the customer may choose a different schedule: here the invoice 60 days before D."""
    async with lab(env) as l, service(l, expires_in_days=90, invoice_lead_days=60) as handle:
        d = (await l.status(handle)).expires_on
        await l.sleep_until(d - timedelta(days=59))
        journal = await l.journal(handle)
        assert offsets(journal, l, d, "invoice", "action") == [("issued", -60)]


async def test_cascading_products_act_on_every_subserver(env: WorkflowEnvironment) -> None:
    """Multihosting: blocking and deletion cascade to every subserver (SPEC §4)."""
    async with lab(env) as l, service(l, product="multihosting", subservers=["sub-a", "sub-b"]) as handle:
        await handle.result()
        main = (await l.status(handle)).service_id
        for action in ("block", "delete", "purge_backups"):
            targets = sorted(target for act, target in l.platform.calls if act == action)
            assert targets == sorted([main, "sub-a", "sub-b"]), action
        assert all(l.platform.state[t] == "purged" for t in (main, "sub-a", "sub-b"))


async def test_vps_is_powered_off_then_deleted_on_its_node(env: WorkflowEnvironment) -> None:
    async with lab(env) as l, service(l, product="vps", name="vps-web") as handle:
        d = (await l.status(handle)).expires_on
        await l.sleep_until(d + timedelta(days=1))
        assert l.hypervisor.calls == [("power_off", "vps-web")]
        assert l.hypervisor.running["vps-web"] is False
        assert (await l.status(handle)).state == "blocked"
        await l.sleep_until(d + timedelta(days=31))
        assert l.hypervisor.calls == [
            ("power_off", "vps-web"),
            ("keep_provider_backup", "vps-web"),
            ("delete", "vps-web"),
        ]
        assert "vps-web" in l.hypervisor.deleted
        assert (await l.status(handle)).state == "deleted"
        journal = await l.journal(handle)
        assert {e.data["node"] for e in entries(journal, "hypervisor")} == {l.node}


async def test_system_updates_first_licence_has_three_free_months(env: WorkflowEnvironment) -> None:
    """SPEC §7: the first 3 months after the first licence are free: D moves 3 months on."""
    async with lab(env) as l, service(l, product="system-updates", first_licence=True) as handle:
        status = await l.status(handle)
        today = l.clock.today(await l.now())
        assert status.expires_on == add_period(today + timedelta(days=40), "P3M")
        assert [u.kind for u in status.upcoming][:1] == ["issue_invoice"]
        assert status.upcoming[0].on == status.expires_on - timedelta(days=30)


async def test_hostico_hosting_expires_blocks_and_deletes(env: WorkflowEnvironment) -> None:
    """SPEC §6: active 7 days after the due date, suspended on D+8, account and data deleted on D+31."""
    async with lab(env) as l, service(l, product="hosting", profile="hostico") as handle:
        d = (await l.status(handle)).expires_on
        result = await handle.result()
        journal = await l.journal(handle)
        states = offsets(journal, l, d)
        assert states[:4] == [("active", START), ("expired", 1), ("blocked", 8), ("deleted", 31)]
        assert states[4:5] == [("closed", states[4][1])] and states[4][1] >= 31
        assert result.final_state == "closed"
        actions = offsets(journal, l, d, "platform", "action")
        assert actions[:2] == [("block", 8), ("delete", 31)]

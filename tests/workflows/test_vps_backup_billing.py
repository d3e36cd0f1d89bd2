"""Backup storage is billed (SPEC §5), on the time-skipping server against a libvirt test-driver
node: each backup of vps-a holds its disk's 256 MiB, a month of measurements is charged to the
customer's credit at 2.00 CZK per GiB and month pro rata by day, a charge the credit cannot cover
is told to the customer and carried into the next month's, and the VPS's deletion charges the month
so far. Amounts to the heller."""

from __future__ import annotations

import uuid
from datetime import date, time, timedelta
from decimal import Decimal
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from policy.clock import Clock
from policy.storage import days_in_month
from tests.workflows.vps_lab import vps_lab
from workflows.vps_backups import VpsBackupsWorkflow
from workflows.vps_models import VpsBackupsConfig, VpsBackupsInput, VpsDeleted, vps_backups_workflow_id

CLOCK = Clock()
MIB_256 = 2**28


def next_month(day: date) -> date:
    return (day.replace(day=1) + timedelta(days=32)).replace(day=1)


async def test_a_month_of_backups_is_charged_unpaid_carried_and_the_last_month_charged_on_deletion(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with vps_lab(env, tmp_path) as v:
        node = next(iter(v.nodes.values()))
        customer, service_id = f"c-{uuid.uuid4().hex[:6]}", f"vps-{uuid.uuid4().hex[:8]}"
        v.storage.balances[customer] = Decimal("100.00")

        async def until(day: date, at: time = time(12, 0)) -> None:
            delta = CLOCK.instant(day, at) - await v.env.get_current_time()
            if delta > timedelta(0):
                await v.env.sleep(delta)

        m1 = next_month(CLOCK.today(await v.env.get_current_time()))
        m2, m3 = next_month(m1), next_month(next_month(m1))
        await until(m1, time(0, 0))
        handle = await v.env.client.start_workflow(
            VpsBackupsWorkflow.run,
            VpsBackupsInput(
                config=VpsBackupsConfig(
                    service_id=service_id,
                    node=node.name,
                    vm_name="vps-a",
                    clock=CLOCK,
                    customer_id=customer,
                    price_per_gib_month=Decimal("2.00"),
                ),
                rotation=3,
            ),
            id=vps_backups_workflow_id(service_id),
            task_queue=v.vps_task_queue,
        )
        # Month 1, from its first day: 1, 2, then 3 backups of 256 MiB a day.
        await until(m2)
        usage = await handle.query(VpsBackupsWorkflow.usage, None)
        n1 = days_in_month(m1)
        assert [(u.day, u.size_bytes) for u in usage if u.day < m2] == [
            (m1 + timedelta(days=i), min(i + 1, 3) * MIB_256) for i in range(n1)
        ]
        # (1 + 2 + 3 x (n1 - 2)) / 4 GiB-days x 2.00 / n1 days: 1.45 in a month of 28 to 31 days.
        assert [(c[1], c[2]) for c in v.storage.charges] == [(customer, Decimal("1.45"))]
        assert f"{m1:%Y-%m}" in v.storage.charges[0][3]

        # Month 2: the credit is empty when it is charged (0.75 GiB all month = 1.50).
        v.storage.balances[customer] = Decimal("0.00")
        await until(m3)
        status = await handle.query(VpsBackupsWorkflow.status)
        assert status.storage_debt == Decimal("1.50")
        assert [(c.month, c.amount, c.paid) for c in status.storage_charged] == [
            (m1, Decimal("1.45"), True),
            (m2, Decimal("1.50"), False),
        ]
        assert [(w[1], "1.50" in w[2]) for w in v.storage.warnings] == [(customer, True)]
        assert len(v.storage.charges) == 1

        # Month 3: topped up; the VPS is deleted on day 10, which charges 10 days plus the debt.
        v.storage.balances[customer] = Decimal("100.00")
        await until(m3 + timedelta(days=9))
        await handle.signal(VpsBackupsWorkflow.vps_deleted, VpsDeleted(reason="unpaid"))
        with v.env.auto_time_skipping_disabled():
            await handle.result()
        n3 = days_in_month(m3)
        expected = (Decimal("7.5") * 2 / n3 + Decimal("1.50")).quantize(Decimal("0.01"))
        # 0.75 GiB x 10 days x 2.00 / n3 + 1.50 of debt, rounded once.
        assert (
            expected
            == {28: Decimal("2.04"), 29: Decimal("2.02"), 30: Decimal("2.00"), 31: Decimal("1.98")}[n3]
        )
        assert [(c[1], c[2]) for c in v.storage.charges] == [
            (customer, Decimal("1.45")),
            (customer, expected),
        ]
        assert v.storage.balances[customer] == Decimal("100.00") - expected
        final = await handle.query(VpsBackupsWorkflow.status)
        assert final.storage_debt == Decimal("0.00")

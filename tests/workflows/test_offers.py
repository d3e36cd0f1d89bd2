"""Coupons, price changes and usage notices (SPEC §6, hostico) through whole lifecycles on the
time-skipping server, amounts checked to the heller."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from policy.commerce import Coupon, CouponKind
from starter.services import CouponNotApplied, start_service
from tests.workflows.harness import Lab, finish, lab
from tests.workflows.lifecycle import at_day, czk, entries, eventually, open_invoice, pay, service, unique
from workflows.coupon import CouponWorkflow
from workflows.models import Customer, ResolveRequest, ServiceSpec, ServiceState
from workflows.offers_models import (
    ApplyCoupon,
    CouponInput,
    CouponStatus,
    PriceAnnouncement,
    UsageReport,
    coupon_workflow_id,
)
from workflows.subscription import SubscriptionWorkflow


async def create_coupon(client: Client, task_queue: str, **fields: Any) -> WorkflowHandle[Any, Any]:
    coupon = Coupon(**{"code": f"C{uuid.uuid4().hex[:8].upper()}", **fields})
    return await client.start_workflow(
        CouponWorkflow.run,
        CouponInput(coupon=coupon),
        id=coupon_workflow_id(coupon.code),
        task_queue=task_queue,
    )


async def weekly(l: Lab, **fields: Any) -> str:
    now = await l.now()
    values: dict[str, Any] = {
        "kind": CouponKind.WEEKLY,
        "percent_off": Decimal("20"),
        "valid_from": now - timedelta(hours=1),
        "valid_until": now + timedelta(days=6),
    }
    handle = await create_coupon(l.env.client, l.task_queue, **{**values, **fields})
    status: CouponStatus = await handle.query(CouponWorkflow.details)
    return status.coupon.code


def new_order(l: Lab, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "profile": "hostico",
        "new_order": True,
        "new_customer": True,
        "expires_in_days": 0,
    }
    fields.update(overrides)
    return fields


async def settled_invoice(l: Lab, handle: Any) -> Any:
    """The open invoice once the workflow has issued it (a query can land mid-issue)."""
    status = await eventually(lambda: l.status(handle), lambda s: s.open_invoice is not None)
    assert status.open_invoice is not None, status.details
    return status.open_invoice


async def replays(l: Lab, handle: Any) -> None:
    """The run's history (coupon, price change, usage messages and all) replays on this code."""
    history = await handle.fetch_history()
    await Replayer(workflows=[SubscriptionWorkflow], data_converter=l.env.client.data_converter).replay_workflow(
        history
    )


async def refusal(handle: Any, code: str) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(SubscriptionWorkflow.apply_coupon, ApplyCoupon(code=code))
    return str(refused.value.cause)


# ---------------------------------------------------------------------------- coupons


async def test_a_coupon_at_start_discounts_the_first_period_only(env: WorkflowEnvironment) -> None:
    async with lab(env) as l:
        code = await weekly(l)
        today = l.today(await l.now())
        spec = ServiceSpec(
            service_id=unique("web"),
            customer=Customer(id=unique("cust"), email="nova@example.cz"),
            product="hosting",
            profile="hostico",
            price=Decimal("1199.90"),
            expires_on=today,
            new_order=True,
            new_customer=True,
        )
        answers = []
        handle = await start_service(
            l.env.client, spec, task_queue=l.task_queue, clock=l.clock, coupon=code, on_coupon=answers.append
        )
        assert "239.98" in answers[0].message  # 20 % of 1199.90, rounded once
        first = await settled_invoice(l, handle)
        assert czk(first) == Decimal("959.92")
        await pay(handle, first)
        status = await l.status(handle)
        assert status.expires_on.year == today.year + 1
        offers = await handle.query(SubscriptionWorkflow.offers)
        assert offers.coupon is not None and offers.coupon.used
        # The renewal a year later is at the full price.
        await at_day(l, status.expires_on, -29)
        renewal = await open_invoice(l, handle)
        assert czk(renewal) == Decimal("1199.90")
        coupon = await l.env.client.get_workflow_handle(coupon_workflow_id(code)).query(
            CouponWorkflow.details
        )
        assert coupon.uses == 1 and coupon.redemptions[0].discount == Decimal("239.98")
        await finish(handle)


async def test_coupon_apply_reissues_the_open_first_invoice(env: WorkflowEnvironment) -> None:
    async with lab(env) as l:
        code = await weekly(l, percent_off=None, amount_off=Decimal("300.00"))
        async with service(l, **new_order(l)) as handle:
            first = await settled_invoice(l, handle)
            assert czk(first) == Decimal("1200.00")
            result = await handle.execute_update(
                SubscriptionWorkflow.apply_coupon, ApplyCoupon(code=code.lower())
            )
            status = await l.status(handle)
            assert status.open_invoice is not None and czk(status.open_invoice) == Decimal("900.00")
            assert result.amount == status.open_invoice.amount
            cancelled = [i for i in status.invoices if i.variable_symbol == first.variable_symbol]
            assert cancelled[0].status.value == "cancelled"
            # Not combinable with another coupon; the same one twice is refused by the validator.
            other = await weekly(l)
            assert "not_combinable" in await refusal(handle, other)
            assert "already applied" in await refusal(handle, code)
            # Paid: a coupon now would be retroactive.
            await pay(handle, status.open_invoice)
            assert "not_retroactive" in await refusal(handle, await weekly(l))
            await replays(l, handle)


@pytest.mark.parametrize(
    ("overrides", "rule"),
    [
        ({"new_customer": False}, "new_customers_only"),
        ({"new_order": False, "expires_in_days": 20}, "first_period_only"),
        ({"product": "vps", "period": "P1M", "price": Decimal("300.00")}, "min_period"),
        (
            {"profile": "default", "product": "domain", "name": "nova.cz", "new_order": False},
            "not_for_domain_renewals",
        ),
    ],
)
async def test_a_refused_coupon_names_its_rule(
    env: WorkflowEnvironment, overrides: dict[str, Any], rule: str
) -> None:
    async with lab(env) as l:
        code = await weekly(l, min_period_months=12)
        async with service(l, **new_order(l, **overrides)) as handle:
            message = await refusal(handle, code)
            assert message.endswith(f"(rule {rule})"), message
            journal = await l.journal(handle)
            assert entries(journal, "coupon", action="refused", rule=rule)
        details = await l.env.client.get_workflow_handle(coupon_workflow_id(code)).query(
            CouponWorkflow.details
        )
        assert details.uses == 0 and details.refusals == 1


async def test_unknown_and_expired_flash_coupons_are_refused(env: WorkflowEnvironment) -> None:
    async with lab(env) as l:
        now = await l.now()
        flash = await create_coupon(
            l.env.client,
            l.task_queue,
            kind=CouponKind.FLASH,
            percent_off=Decimal("50"),
            valid_from=now,
            valid_until=now + timedelta(hours=24),
        )
        code = (await flash.query(CouponWorkflow.details)).coupon.code
        async with service(l, **new_order(l, expires_in_days=35)) as handle:
            assert "(rule unknown_coupon)" in await refusal(handle, "NOSUCHCODE")
            await l.env.sleep(timedelta(hours=25))
            assert "(rule expired)" in await refusal(handle, code)


async def test_a_limited_coupon_is_never_redeemed_more_often_than_allowed(env: WorkflowEnvironment) -> None:
    async with lab(env) as l:
        handle = await create_coupon(
            l.env.client, l.task_queue, kind=CouponKind.LIMITED, amount_off=Decimal("100.00"), max_uses=3
        )
        code = (await handle.query(CouponWorkflow.details)).coupon.code
        today = l.today(await l.now())

        async def order(n: int) -> str:
            spec = ServiceSpec(
                service_id=unique(f"race{n}"),
                customer=Customer(id=unique("cust"), email="a@example.cz"),
                product="hosting",
                profile="hostico",
                price=Decimal("1200.00"),
                expires_on=today,
                new_order=True,
                new_customer=True,
            )
            try:
                started = await start_service(
                    l.env.client, spec, task_queue=l.task_queue, clock=l.clock, coupon=code
                )
                invoice = await settled_invoice(l, started)
                assert czk(invoice) == Decimal("1100.00")
                result = "applied"
            except CouponNotApplied as exc:
                assert "used_up" in exc.reason, exc.reason
                started = l.env.client.get_workflow_handle(f"service-{spec.service_id}")
                invoice = await settled_invoice(l, started)
                assert czk(invoice) == Decimal("1200.00")
                result = "refused"
            handles.append(started)
            return result

        handles: list[Any] = []
        results = await asyncio.gather(*(order(n) for n in range(8)))
        assert sorted(results).count("applied") == 3
        # Let every service finish mailing its invoice before it is terminated (no task left in flight).
        await eventually(lambda: asyncio.sleep(0, l.mails()), lambda m: m.count("invoice_issued") == 8)
        for started in handles:
            await started.query(SubscriptionWorkflow.status)
            await started.terminate(reason="test finished")
        details = await handle.query(CouponWorkflow.details)
        assert details.uses == 3 and details.remaining == 0 and details.refusals == 5


# ---------------------------------------------------------------------------- price changes


async def test_a_new_price_applies_from_the_next_renewal_after_notice(env: WorkflowEnvironment) -> None:
    async with lab(env) as l, service(l, profile="hostico", expires_in_days=45) as handle:
        d = (await l.status(handle)).expires_on
        today = l.today(await l.now())
        with pytest.raises(WorkflowUpdateFailedError) as early:
            await handle.execute_update(
                SubscriptionWorkflow.announce_price,
                PriceAnnouncement(
                    product="hosting", price=Decimal("1500.00"), effective_on=today + timedelta(days=29)
                ),
            )
        assert "less than 30 days" in str(early.value.cause)
        with pytest.raises(WorkflowUpdateFailedError) as other:
            await handle.execute_update(
                SubscriptionWorkflow.announce_price,
                PriceAnnouncement(
                    product="vps", price=Decimal("1500.00"), effective_on=today + timedelta(days=40)
                ),
            )
        assert "not affected" in str(other.value.cause)
        result = await handle.execute_update(
            SubscriptionWorkflow.announce_price,
            PriceAnnouncement(
                product="hosting", price=Decimal("1499.99"), effective_on=today + timedelta(days=30)
            ),
        )
        assert f"from {d + timedelta(days=1)}" in result.message
        assert "price_change" in l.mails()
        await at_day(l, d, -29)
        renewal = await open_invoice(l, handle)
        assert czk(renewal) == Decimal("1499.99")
        await replays(l, handle)
        await pay(handle, renewal)
        status = await l.status(handle)
        assert status.price == Decimal("1499.99")
        await at_day(l, status.expires_on, -29)
        assert czk(await open_invoice(l, handle)) == Decimal("1499.99")


async def test_a_prepaid_period_keeps_its_price(env: WorkflowEnvironment) -> None:
    """Effective inside the next period: that period is still billed at the old price."""
    async with (
        lab(env) as l,
        service(
            l, profile="hostico", product="vps", period="P1M", price=Decimal("300.00"), expires_in_days=35
        ) as handle,
    ):
        d = (await l.status(handle)).expires_on
        result = await handle.execute_update(
            SubscriptionWorkflow.announce_price,
            PriceAnnouncement(product="vps", price=Decimal("3600.00"), effective_on=d + timedelta(days=10)),
        )
        assert "330.00" in result.message  # 3600 / 12 + 10 % monthly surcharge
        await at_day(l, d, -29)
        first = await settled_invoice(l, handle)
        assert czk(first) == Decimal("300.00")
        await pay(handle, first)
        d2 = (await l.status(handle)).expires_on
        await at_day(l, d2, -29)
        second = await open_invoice(l, handle)
        assert czk(second) == Decimal("330.00")
        journal = await l.journal(handle)
        assert (
            entries(journal, "price_announced")[0].data["applies_from"]
            == (d2 + timedelta(days=1)).isoformat()
        )


# ---------------------------------------------------------------------------- usage notices


async def report(handle: Any, at: datetime, **fields: Any) -> None:
    values: dict[str, Any] = {"measured_at": at, "managed": True, "shared_resources": True}
    values.update(fields)
    await handle.signal(SubscriptionWorkflow.usage_report, UsageReport(**values))


LOW_DISK = {"disk_bytes": 100 * 2**30, "free_disk_bytes": 2**30 - 1}


async def test_ignored_usage_notices_suspend_a_managed_vps(env: WorkflowEnvironment) -> None:
    async with (
        lab(env) as l,
        service(l, profile="hostico", product="vps", price=Decimal("3600.00"), expires_in_days=200) as handle,
    ):

        async def warnings() -> int:
            return l.mails().count("usage_warning")

        await report(handle, await l.now(), disk_bytes=100 * 2**30, free_disk_bytes=2 * 2**30)
        await report(handle, await l.now() + timedelta(seconds=1), **LOW_DISK)
        assert await eventually(warnings, lambda n: n == 1) == 1
        await l.env.sleep(timedelta(hours=1))
        await report(handle, await l.now(), **LOW_DISK)  # within the re-notify interval: wait
        for notice in (2, 3):
            await l.env.sleep(timedelta(hours=24))
            await report(handle, await l.now(), **LOW_DISK)
            assert await eventually(warnings, lambda n, k=notice: n == k) == notice
        await l.env.sleep(timedelta(hours=24))
        await report(handle, await l.now(), **LOW_DISK)
        status = await eventually(lambda: l.status(handle), lambda s: s.state is ServiceState.SUSPENDED)
        assert status.state is ServiceState.SUSPENDED
        assert status.suspension is not None and status.suspension.reason == "usage: disk_low"
        mails = await eventually(lambda: asyncio.sleep(0, l.mails()), lambda m: m[-1] == "suspended")
        assert mails[-1] == "suspended" and mails.count("usage_warning") == 3
        assert any("off" in action for action, _ in l.hypervisor.calls), l.hypervisor.calls
        result = await handle.execute_update(SubscriptionWorkflow.resolve_abuse, ResolveRequest())
        assert result.message == "suspension lifted"
        assert (await l.status(handle)).state is ServiceState.ACTIVE
        await replays(l, handle)


async def test_a_clean_measurement_resets_the_count_and_cpu_counts_only_on_shared_vps(
    env: WorkflowEnvironment,
) -> None:
    async with (
        lab(env) as l,
        service(l, profile="hostico", product="vps", price=Decimal("3600.00"), expires_in_days=200) as handle,
    ):
        now = await l.now()
        await report(handle, now, cpu_full_minutes=30)
        await report(handle, now + timedelta(seconds=1), cpu_full_minutes=45, shared_resources=False)
        await report(handle, now + timedelta(seconds=2), cpu_full_minutes=31)
        offers = await eventually(
            lambda: handle.query(SubscriptionWorkflow.offers), lambda o: o.usage_notices == 1
        )
        assert offers.usage_notices == 1 and [b.value for b in offers.usage_breaches] == ["cpu_saturated"]
        await report(handle, now + timedelta(seconds=3), cpu_full_minutes=0)
        offers = await eventually(
            lambda: handle.query(SubscriptionWorkflow.offers), lambda o: o.usage_notices == 0
        )
        assert offers.usage_notices == 0
        await report(handle, now + timedelta(seconds=4), cpu_full_minutes=31)
        await report(handle, now, cpu_full_minutes=31)  # older than the last: ignored
        journal = await eventually(lambda: l.journal(handle), lambda j: len(entries(j, "usage_ignored")) == 1)
        assert len(entries(journal, "usage_resolved")) == 1
        assert l.mails().count("usage_warning") == 2  # a fresh breach is notified again


async def test_usage_reports_are_ignored_where_the_profile_has_no_usage_rules(
    env: WorkflowEnvironment,
) -> None:
    async with (
        lab(env) as l,
        service(l, product="vps", price=Decimal("3600.00"), expires_in_days=200) as handle,
    ):
        await report(handle, await l.now(), **LOW_DISK)
        journal = await eventually(lambda: l.journal(handle), lambda j: bool(entries(j, "usage_ignored")))
        assert "no usage rules" in entries(journal, "usage_ignored")[0].data["reason"]
        assert "usage_warning" not in l.mails()

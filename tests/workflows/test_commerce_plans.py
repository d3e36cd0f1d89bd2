"""SPEC §6 (hostico) on the time-skipping server: upgrades, downgrades, refunds, provider deletion.

Amounts are worked out by hand beside each assertion. They are CZK, the price currency the rules
are stated in; Hostico invoices are in RON, so `czk()` checks each invoice's CZK price and that its
RON amount is that price × the recorded rate, rounded once (tests run at the fixed development rate
0.2000 RON/CZK + 2 % = 0.204). The credit account is in EUR (development rate 0.04 EUR/CZK). The server runs on the real calendar, so a
prepaid year has 365 days unless it spans a 29 February; the tests that depend on it say both.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from policy.commerce import PlanChangeKind
from policy.payments import InvoicePurpose
from policy.periods import add_months
from policy.pricing import round_money
from starter.accounts import balance
from starter.commerce import change_plan_request, provider_deletion_request, refund_request
from starter.vps_restore import plan_tier
from tests.workflows.harness import Lab, lab
from tests.workflows.lifecycle import (
    Handle,
    at_day,
    czk,
    entries,
    eventually,
    open_invoice,
    pay,
    service,
    unique,
)
from workflows.commerce_models import PlanQuoteView, ProviderDeletionCancel
from workflows.models import BillingDetailsChanged, Customer, ServiceState
from workflows.subscription import SubscriptionWorkflow

UP, DOWN = PlanChangeKind.UPGRADE, PlanChangeKind.DOWNGRADE


def hostico(plan: str, price: str, expires_in_days: int, **more: Any) -> dict[str, Any]:
    return {
        "profile": "hostico",
        "plan": plan,
        "price": Decimal(price),
        "expires_in_days": expires_in_days,
        "customer": Customer(id=unique("cust"), email="ana@example.si", language="en"),
        **more,
    }


async def change(handle: Handle, plan: str, kind: PlanChangeKind, product: str = "hosting", **kw: Any) -> Any:
    return await handle.execute_update(
        SubscriptionWorkflow.change_plan, change_plan_request("hostico", product, plan, kind, **kw)
    )


async def commerce(handle: Handle) -> PlanQuoteView:
    return await handle.query(SubscriptionWorkflow.commerce)


async def refused(handle: Handle, update: Any, argument: Any) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as failure:
        await handle.execute_update(update, argument)
    return str(failure.value.cause)


def year_days(d: date) -> int:
    """Days of the prepaid year that ends on D."""
    return (d - add_months(d, -12)).days


def ron(amount_czk: str) -> Decimal:
    """A CZK price on a Hostico invoice at the development rate 0.2000 RON/CZK + 2 %, rounded once."""
    return round_money(Decimal(amount_czk) * Decimal("0.204"))


def eur(amount_czk: str) -> Decimal:
    """A CZK amount on the Hostico credit account (EUR) at the development ČNB rate 0.04 EUR/CZK."""
    return round_money(Decimal(amount_czk) * Decimal("0.04"))


async def first_invoice(l: Lab, handle: Handle) -> Any:
    """D is less than 30 days away: the renewal invoice goes out at once (after the first task)."""
    await eventually(lambda: l.status(handle), lambda s: s.open_invoice is not None)
    return await open_invoice(l, handle, InvoicePurpose.RENEWAL)


# ---------------------------------------------------------------- upgrades


async def test_an_upgrade_is_invoiced_to_the_day_and_switches_the_plan_when_paid(
    env: WorkflowEnvironment,
) -> None:
    """1200 → 2400 a year with 73 days left (today through D): 1200 × 73 / 365 = 240.00."""
    async with lab(env) as l, service(l, **hostico("hosting-start", "1200.00", 72)) as handle:
        d = await l.day0(handle)
        today = d - timedelta(days=72)
        result = await change(handle, "hosting-standard", UP)
        expected = Decimal("240.00") if year_days(d) == 365 else Decimal("239.34")  # 1200 × 73 / 366
        invoice = await open_invoice(l, handle, InvoicePurpose.UPGRADE)
        assert (czk(invoice), invoice.currency, invoice.due_on) == (
            expected,
            "RON",
            today + timedelta(days=6),
        )
        # 240.00 × 0.204 = 48.96 RON (239.34 × 0.204 = 48.825… → 48.83): what the customer is asked to pay.
        assert result.amount == invoice.amount == ron(str(expected))
        assert f"pay {invoice.amount} RON ({expected} CZK)" in result.message
        view = await commerce(handle)
        assert view.pending_upgrade is not None and view.pending_upgrade.void_on == today + timedelta(days=7)
        assert view.plan == "hosting-start" and (await l.status(handle)).price == Decimal("1200.00")

        await at_day(l, d, -69)
        outcome = await pay(handle, invoice)
        assert outcome.result == "applied"
        status = await l.status(handle)
        assert (status.price, status.expires_on, status.state) == (Decimal("2400.00"), d, ServiceState.ACTIVE)
        view = await commerce(handle)
        assert view.plan == "hosting-standard" and view.pending_upgrade is None
        assert [(c.kind, c.from_plan, c.to_plan, c.amount) for c in view.changes] == [
            (UP, "hosting-start", "hosting-standard", expected)
        ]
        assert l.platform.plans[status.service_id] == "hosting-standard"
        assert "plan_changed" in l.mails()

        # The next renewal is priced at the new plan; the expiry date never moved.
        await at_day(l, d, -29)
        renewal = await open_invoice(l, handle, InvoicePurpose.RENEWAL)
        assert czk(renewal) == Decimal("2400.00") and renewal.amount == Decimal("489.60")
        # The void day passed long ago with the invoice paid: nothing was cancelled.
        assert entries(await l.journal(handle), "plan_change", action="voided") == []


async def test_an_unpaid_upgrade_is_voided_after_7_days_and_the_plan_stays(env: WorkflowEnvironment) -> None:
    async with lab(env) as l, service(l, **hostico("hosting-start", "1200.00", 100)) as handle:
        d = await l.day0(handle)
        today = d - timedelta(days=100)
        await change(handle, "hosting-premium", UP)
        invoice = await open_invoice(l, handle, InvoicePurpose.UPGRADE)
        # 2400 × 101 / 365 = 664.109… → 664.11 (366 days: 662.295… → 662.30)
        expected = Decimal("664.11") if year_days(d) == 365 else Decimal("662.30")
        assert czk(invoice) == expected and invoice.amount == ron(str(expected))  # 135.48 RON

        await at_day(l, d, -94)  # day 6: still open
        assert (await commerce(handle)).pending_upgrade is not None
        await at_day(l, d, -92)  # day 8: voided at local midnight of day 7
        view = await commerce(handle)
        assert view.pending_upgrade is None and view.plan == "hosting-start"
        status = await l.status(handle)
        assert status.price == Decimal("1200.00") and status.expires_on == d
        voided = next(i for i in status.invoices if i.variable_symbol == invoice.variable_symbol)
        assert (voided.status, voided.cancel_reason) == ("cancelled", "upgrade not paid in time")
        [line] = entries(await l.journal(handle), "plan_change", action="voided")
        assert l.clock.today(line.at) == today + timedelta(days=7)
        assert "upgrade_voided" in l.mails()
        # The notice names the amount in the currency of the cancelled invoice, never RON called CZK.
        [voided_mail] = [m for m in l.mailer.sent if m["X-Hostlife-Template"] == "upgrade_voided"]
        text = voided_mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert str(invoice.amount) in text and "RON" in text and "CZK" not in text, text
        # Paying the voided invoice now switches nothing: the payment is held for the billing department.
        outcome = await pay(handle, invoice)
        assert outcome.result == "held"
        assert (await commerce(handle)).plan == "hosting-start"


async def test_a_renewal_paid_while_an_upgrade_waits_voids_the_upgrade(env: WorkflowEnvironment) -> None:
    """The upgrade's price covered the period that just ended; the renewed year was paid at the old
    price. The upgrade's watcher sees the new expiry and voids it at once (in the same run, or in the
    next one if the renewal continued as new: the watcher restarts with the run)."""
    async with lab(env) as l, service(l, **hostico("hosting-start", "1200.00", 20)) as handle:
        d = await l.day0(handle)
        renewal = await first_invoice(l, handle)
        await change(handle, "hosting-standard", UP)
        upgrade = await open_invoice(l, handle, InvoicePurpose.UPGRADE)
        # The plan has not switched yet, so the renewal invoice stays at the old price.
        assert czk(renewal) == Decimal("1200.00")
        await pay(handle, renewal)
        await eventually(lambda: commerce(handle), lambda v: v.pending_upgrade is None)
        status = await l.status(handle)
        assert status.renewals == 1 and status.price == Decimal("1200.00")
        voided = next(i for i in status.invoices if i.variable_symbol == upgrade.variable_symbol)
        assert (voided.status, voided.cancel_reason) == (
            "cancelled",
            "the service renewed before the upgrade was paid",
        )
        [line] = entries(await l.journal(handle), "plan_change", action="voided")
        assert l.clock.today(line.at) == d - timedelta(days=20)
        assert (await commerce(handle)).plan == "hosting-start"
        # Asked again, the difference covers the whole renewed year: 1200 × (20 + 365 or 366 days) / …
        result = await change(handle, "hosting-standard", UP)
        quote = (await commerce(handle)).pending_upgrade
        assert quote is not None and quote.quote.expires_on == status.expires_on
        again = await open_invoice(l, handle, InvoicePurpose.UPGRADE)
        assert czk(again) == round_money(
            Decimal(1200) * quote.quote.days_remaining / quote.quote.days_in_period
        )
        assert result.amount == again.amount


async def test_upgrade_paid_inside_the_invoice_window_reprices_the_open_renewal(
    env: WorkflowEnvironment,
) -> None:
    """With the renewal invoice already out, the switch re-issues it at the new plan's price."""
    async with lab(env) as l, service(l, **hostico("hosting-start", "1200.00", 20)) as handle:
        renewal = await first_invoice(l, handle)
        await change(handle, "hosting-standard", UP)
        await pay(handle, await open_invoice(l, handle, InvoicePurpose.UPGRADE))
        reissued = await open_invoice(l, handle, InvoicePurpose.RENEWAL)
        assert reissued.variable_symbol != renewal.variable_symbol
        assert (czk(reissued), reissued.due_on) == (Decimal("2400.00"), renewal.due_on)
        assert reissued.amount == Decimal("489.60")  # 2400.00 × 0.204


# ---------------------------------------------------------------- downgrades and the 60-day window


async def test_a_downgrade_credits_whole_months_and_a_second_change_pays_the_support_hour(
    env: WorkflowEnvironment,
) -> None:
    """3600 → 2400 with 72 days to D: 2 whole months (never 3: those are at least 89 days).
    Credit 2 × (3600 − 2400) / 12 = 200.00 CZK, on the EUR credit account 200.00 × 0.04 = 8.00 EUR.
    A second change within 60 days: fee 1 h × 600.00 CZK."""
    spec = hostico("hosting-premium", "3600.00", 72)
    async with lab(env) as l, service(l, **spec) as handle:
        d = await l.day0(handle)
        result = await change(handle, "hosting-standard", DOWN)
        assert result.amount == Decimal("200.00")  # the rule's figure, in the price currency
        assert "8.00 EUR (200.00 CZK at fixed " in result.message and "2 whole month" in result.message
        status = await l.status(handle)
        assert (status.price, status.expires_on) == (Decimal("2400.00"), d)
        found = await balance(env.client, spec["customer"].id)
        assert found is not None and (found.balance, found.currency) == (eur("200.00"), "EUR")
        [credited] = entries(await l.journal(handle), "plan_change", action="credited")
        assert (credited.data["amount"], credited.data["currency"]) == ("8.00", "EUR")
        assert str(credited.data["converted"]).startswith("200.00 CZK at fixed ")
        assert l.platform.plans[status.service_id] == "hosting-standard"

        await at_day(l, d, -41)  # 31 days later: inside the 60-day window
        # Upgrade back: 1200 × 42 / 365 = 138.082… plus the 600.00 fee, rounded once: 738.08.
        result = await change(handle, "hosting-premium", UP)
        upgrade = await open_invoice(l, handle, InvoicePurpose.UPGRADE)
        expected = Decimal("738.08") if year_days(d) == 365 else Decimal("737.70")
        assert czk(upgrade) == expected and result.amount == upgrade.amount == ron(str(expected))
        assert "with the plan-change fee 600.00 CZK" in result.message
        await pay(handle, upgrade)
        assert (await l.status(handle)).price == Decimal("3600.00")

        await at_day(l, d, -20)  # 21 days after the last change: a downgrade now also pays the fee
        result = await change(handle, "hosting-start", DOWN)
        # Less than a whole month left: no credit. The fee is its own invoice, not netted.
        fee = await open_invoice(l, handle, InvoicePurpose.PLAN_CHANGE_FEE)
        assert (czk(fee), result.variable_symbol) == (Decimal("600.00"), fee.variable_symbol)
        assert result.amount == fee.amount == Decimal("122.40")  # 600.00 × 0.204 RON
        assert "plan-change fee 600.00 CZK: pay 122.40 RON (600.00 CZK)" in result.message
        found = await balance(env.client, spec["customer"].id)
        assert found is not None and found.balance == eur("200.00")
        # Paying the fee renews nothing.
        await pay(handle, fee)
        status = await l.status(handle)
        assert (status.expires_on, status.renewals, status.price) == (d, 0, Decimal("1200.00"))
        renewal = await open_invoice(l, handle, InvoicePurpose.RENEWAL)
        assert czk(renewal) == Decimal("1200.00")
        # The plan records are in CZK whatever the invoice currency: the credit, then what the upgrade cost.
        view = await commerce(handle)
        assert [(c.kind, c.amount, c.fee) for c in view.changes] == [
            (DOWN, Decimal("200.00"), Decimal("0.00")),
            (UP, expected, Decimal("600.00")),
            (DOWN, Decimal("0.00"), Decimal("600.00")),
        ]


async def test_a_change_60_days_after_the_last_is_free_again(env: WorkflowEnvironment) -> None:
    async with lab(env) as l, service(l, **hostico("hosting-standard", "2400.00", 200)) as handle:
        d = await l.day0(handle)
        await change(handle, "hosting-start", DOWN)
        await at_day(l, d, -140)  # 60 days later
        result = await change(handle, "hosting-standard", UP)
        invoice = await open_invoice(l, handle, InvoicePurpose.UPGRADE)
        # 1200 × 141 / 365 = 463.561… → 463.56, no fee (366 days: 462.295… → 462.30)
        expected = Decimal("463.56") if year_days(d) == 365 else Decimal("462.30")
        assert czk(invoice) == expected and invoice.amount == result.amount == ron(str(expected))
        assert "plan-change fee" not in result.message


async def test_a_vps_plan_change_resizes_the_vm_and_tells_the_platform(env: WorkflowEnvironment) -> None:
    """Monthly VPS: 3600/12 × 1.1 = 330.00 a month on vps-s, 660.00 on vps-m; a month has 28-31 days."""
    spec = hostico("vps-s", "330.00", 20, product="vps", period="P1M")
    async with lab(env) as l, service(l, **spec) as handle:
        d = await l.day0(handle)
        assert (await l.status(handle)).plan == "vps-s"
        await change(handle, "vps-m", UP, product="vps")
        invoice = await open_invoice(l, handle, InvoicePurpose.UPGRADE)
        days = (await commerce(handle)).pending_upgrade
        assert days is not None
        quote = days.quote
        assert (quote.old_price, quote.new_price, quote.days_remaining) == (
            Decimal("330.00"),
            Decimal("660.00"),
            21,
        )
        assert czk(invoice) == round_money(Decimal(330) * 21 / quote.days_in_period)
        await pay(handle, invoice)
        status = await l.status(handle)
        assert (status.price, status.expires_on) == (Decimal("660.00"), d)
        assert l.platform.plans[status.service_id] == "vps-m"
        # The current plan, not the one it started on, is what a restore of its backup compares.
        assert (status.plan, plan_tier(status)) == ("vps-m", 2)
        assert ("change_plan", status.service_id) in l.platform.calls
        # vps-m: 2 vCPUs and 4096 MiB on the node, through the node's own task queue.
        assert l.hypervisor.sizes[status.service_id] == (2, 4096)
        [resize] = entries(await l.journal(handle), "hypervisor", action="resize")
        assert (resize.data["vcpus"], resize.data["memory_mb"]) == (2, 4096)


async def test_plan_changes_refused_with_the_reason(env: WorkflowEnvironment) -> None:
    async with lab(env) as l, service(l, **hostico("hosting-standard", "2400.00", 100)) as handle:
        update = SubscriptionWorkflow.change_plan
        assert "already on plan hosting-standard" in await refused(
            handle, update, change_plan_request("hostico", "hosting", "hosting-standard", UP)
        )
        assert "that is a downgrade" in await refused(
            handle, update, change_plan_request("hostico", "hosting", "hosting-start", UP)
        )
        bad = change_plan_request("hostico", "vps", "vps-l", UP)
        assert "stays within the product" in await refused(handle, update, bad)
        with pytest.raises(ValueError, match="vps-l is a plan of vps"):
            change_plan_request("hostico", "hosting", "vps-l", UP)
        wrong_profile = change_plan_request("default", "hosting", "hosting-premium", UP)
        assert "profile 'default'" in await refused(handle, update, wrong_profile)
        await change(handle, "hosting-premium", UP)
        assert "waits for payment" in await refused(
            handle, update, change_plan_request("hostico", "hosting", "hosting-start", DOWN)
        )
        assert (
            entries(await l.journal(handle), "plan_change", action="requested")[-1].data["to"]
            == "hosting-premium"
        )

    async with lab(env) as l, service(l, product="hosting", plan="hosting-start") as handle:
        assert "not offered in profile 'default'" in await refused(
            handle,
            SubscriptionWorkflow.change_plan,
            change_plan_request("default", "hosting", "hosting-standard", UP),
        )

    async with lab(env) as l, service(l, **hostico(None, "1200.00", 100)) as handle:  # type: ignore[arg-type]
        assert "no plan on record" in await refused(
            handle,
            SubscriptionWorkflow.change_plan,
            change_plan_request("hostico", "hosting", "hosting-standard", UP),
        )
        result = await change(handle, "hosting-standard", UP, current_plan="hosting-start")
        assert result.variable_symbol is not None


# ---------------------------------------------------------------- refunds


async def test_a_full_refund_within_30_days_minus_migration_hours_ends_the_service(
    env: WorkflowEnvironment,
) -> None:
    """Activated today, asked on day 10: 1200.00 − 1 h × 600.00 of migration = 600.00."""
    async with lab(env) as l, service(l, **hostico("hosting-start", "1200.00", 200)) as handle:
        d = await l.day0(handle)
        await at_day(l, d, -190)
        dry = await handle.execute_update(
            SubscriptionWorkflow.request_refund, refund_request("hostico", Decimal("1"), dry_run=True)
        )
        assert dry.amount == Decimal("600.00") and (await l.status(handle)).state is ServiceState.ACTIVE
        result = await handle.execute_update(
            SubscriptionWorkflow.request_refund, refund_request("hostico", Decimal("1"))
        )
        assert result.amount == Decimal("600.00")
        [refund] = l.billing.customer_refunds()
        assert (refund.amount, refund.service_id, refund.currency) == (
            Decimal("600.00"),
            (await l.status(handle)).service_id,
            "CZK",
        )
        assert refund.pay_by is not None and refund.pay_by >= l.clock.today(await l.now()) + timedelta(
            days=15
        )
        [line] = entries(await l.journal(handle), "refund")
        assert (line.data["full"], line.data["gross"], line.data["migration"]) == (True, "1200.00", "600.00")
        status = await eventually(lambda: l.status(handle), lambda s: s.state is ServiceState.CLOSED)
        assert status.state is ServiceState.CLOSED
        assert {"refund_granted", "service_deleted"} <= set(l.mails())
        assert "restore_offer" not in l.mails()


async def test_a_service_handed_over_keeps_its_activation_day(env: WorkflowEnvironment) -> None:
    """Activated 40 days before hostlife got it: no full refund, the whole months left instead.
    D is 100 days away (101 with today): 3 whole months (at most 92 days) of 1200.00 = 300.00."""
    async with lab(env) as l:
        today = l.today(await l.now())
        spec = hostico("hosting-start", "1200.00", 100, activated_on=today - timedelta(days=40))
        async with service(l, **spec) as handle:
            dry = await handle.execute_update(
                SubscriptionWorkflow.request_refund, refund_request("hostico", dry_run=True)
            )
            assert dry.amount == Decimal("300.00") and "3 remaining whole prepaid month(s)" in dry.message
            assert (await commerce(handle)).activated_on == today - timedelta(days=40)


async def test_billing_details_changed_reissues_a_waiting_upgrade_and_the_new_vs_switches(
    env: WorkflowEnvironment,
) -> None:
    async with lab(env) as l, service(l, **hostico("hosting-start", "1200.00", 100)) as handle:
        await change(handle, "hosting-standard", UP)
        old = await open_invoice(l, handle, InvoicePurpose.UPGRADE)
        await handle.execute_update(SubscriptionWorkflow.billing_details_changed, BillingDetailsChanged())
        new = await open_invoice(l, handle, InvoicePurpose.UPGRADE)
        assert new.variable_symbol != old.variable_symbol and new.amount == old.amount
        pending = (await commerce(handle)).pending_upgrade
        assert pending is not None and pending.variable_symbol == new.variable_symbol
        assert (await pay(handle, old)).result == "held"
        assert (await pay(handle, new)).result == "applied"
        assert (await commerce(handle)).plan == "hosting-standard"


async def test_a_refund_of_a_period_paid_in_ron_is_paid_out_in_ron_at_the_rate_paid(
    env: WorkflowEnvironment,
) -> None:
    """A new Hostico order paid by its RON invoice, refunded in full: exactly the RON paid returns."""
    async with lab(env) as l, service(l, **hostico("hosting-start", "1200.00", 0, new_order=True)) as handle:
        first = await first_invoice(l, handle)
        assert (first.currency, first.amount, czk(first)) == ("RON", ron("1200.00"), Decimal("1200.00"))
        assert (await pay(handle, first)).result == "applied"
        result = await handle.execute_update(SubscriptionWorkflow.request_refund, refund_request("hostico"))
        assert result.amount == Decimal("1200.00")  # the rule's figure, in the price currency
        assert f"({first.amount} RON, at the rate the customer paid)" in result.message
        [refund] = l.billing.customer_refunds()
        assert (refund.amount, refund.currency) == (first.amount, "RON")
        [line] = entries(await l.journal(handle), "refund")
        assert (line.data["amount"], line.data["paid_out"]) == ("1200.00", f"{first.amount} RON")


async def test_a_later_refund_pays_the_whole_months_left_minus_unpaid_proformas(
    env: WorkflowEnvironment,
) -> None:
    """Day 60 of the service, 71 days to D (with today): 2 whole months (3 need at least 89 days) of
    1200.00 a year = 200.00. An open plan-change fee of 600.00 is deducted first, which leaves nothing
    (refused, saying why); once the fee is paid the refund is 200.00. The renewal invoice is not
    deducted: its period never comes."""
    spec = hostico("hosting-premium", "3600.00", 130)
    async with lab(env) as l, service(l, **spec) as handle:
        d = await l.day0(handle)
        await change(handle, "hosting-standard", DOWN)  # free; credit months × 100
        await at_day(l, d, -91)  # day 39
        await change(handle, "hosting-start", DOWN)  # second within 60 days: fee 600.00 open
        fee = await open_invoice(l, handle, InvoicePurpose.PLAN_CHANGE_FEE)
        # The fee is deducted at its CZK price, never at its RON amount (122.40 would leave 77.60).
        assert czk(fee) == Decimal("600.00") and fee.amount == Decimal("122.40")
        today = await at_day(l, d, -70)  # day 60: outside the full-refund window
        assert (d - today).days + 1 == 71
        quote = await handle.execute_update(
            SubscriptionWorkflow.request_refund, refund_request("hostico", dry_run=True)
        )
        # 2 × 1200 / 12 = 200.00 − 600.00 fee: the deductions exceed the refund.
        assert quote.message.startswith("no refund: deductions 600.00 exceed the refund 200.00")
        assert "no refund: deductions" in await refused(
            handle, SubscriptionWorkflow.request_refund, refund_request("hostico")
        )
        await pay(handle, fee)
        result = await handle.execute_update(SubscriptionWorkflow.request_refund, refund_request("hostico"))
        assert result.amount == Decimal("200.00")
        status = await l.status(handle)
        assert status.state in (ServiceState.DELETED, ServiceState.CLOSED)
        [line] = entries(await l.journal(handle), "refund")
        assert (line.data["full"], line.data["months"], line.data["proformas"]) == (False, 2, "0.00")


async def test_refunds_refused_for_domains_tos_suspensions_and_other_profiles(
    env: WorkflowEnvironment,
) -> None:
    async with lab(env) as l:
        async with service(l, **hostico("hosting-start", "1200.00", 100)) as handle:
            from workflows.models import SuspendRequest

            await handle.execute_update(SubscriptionWorkflow.suspend_for_abuse, SuspendRequest(reason="tos"))
            assert "breach of the terms" in await refused(
                handle, SubscriptionWorkflow.request_refund, refund_request("hostico")
            )
        async with service(
            l, product="domain", name=f"{unique('d')}.com", profile="hostico", price=Decimal("300.00")
        ) as handle:
            assert "never refunded" in await refused(
                handle, SubscriptionWorkflow.request_refund, refund_request("hostico")
            )
        async with service(l, product="hosting") as handle:
            assert "not offered in profile 'default'" in await refused(
                handle, SubscriptionWorkflow.request_refund, refund_request("default")
            )
        assert l.billing.customer_refunds() == []


# ---------------------------------------------------------------- provider deletion


async def test_provider_deletion_after_15_days_notice(env: WorkflowEnvironment) -> None:
    async with lab(env) as l, service(l, **hostico("hosting-start", "1200.00", 200)) as handle:
        d = await l.day0(handle)
        today = d - timedelta(days=200)
        result = await handle.execute_update(
            SubscriptionWorkflow.schedule_provider_deletion, provider_deletion_request("hostico", "tos")
        )
        assert str(today + timedelta(days=15)) in result.message
        assert "provider_deletion_notice" in l.mails()
        assert "already announced" in await refused(
            handle,
            SubscriptionWorkflow.schedule_provider_deletion,
            provider_deletion_request("hostico", "again"),
        )
        await at_day(l, d, -186)  # day 14
        assert (await l.status(handle)).state is ServiceState.ACTIVE
        await at_day(l, d, -184)  # day 16
        status = await l.status(handle)
        assert status.state in (ServiceState.DELETED, ServiceState.CLOSED)
        [line] = entries(await l.journal(handle), "provider_deletion", action="deleted")
        assert l.clock.today(line.at) == today + timedelta(days=15)
        assert "service_deleted" in l.mails()


async def test_ops_can_withdraw_the_notice(env: WorkflowEnvironment) -> None:
    async with lab(env) as l, service(l, **hostico("hosting-start", "1200.00", 200)) as handle:
        d = await l.day0(handle)
        await handle.execute_update(
            SubscriptionWorkflow.schedule_provider_deletion, provider_deletion_request("hostico", "tos")
        )
        await at_day(l, d, -195)
        await handle.execute_update(SubscriptionWorkflow.cancel_provider_deletion, ProviderDeletionCancel())
        assert "no deletion is announced" in await refused(
            handle, SubscriptionWorkflow.cancel_provider_deletion, ProviderDeletionCancel()
        )
        await at_day(l, d, -180)
        assert (await l.status(handle)).state is ServiceState.ACTIVE
        assert "provider_deletion_cancelled" in l.mails()
        assert (await commerce(handle)).provider_deletion is None
    async with lab(env) as l, service(l, product="hosting") as handle:
        assert "does not delete accounts on notice" in await refused(
            handle, SubscriptionWorkflow.schedule_provider_deletion, provider_deletion_request("default", "x")
        )

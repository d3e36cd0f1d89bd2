"""`hostlife upgrade|downgrade|refund|account` against the session's dev server (real clock).

The dev server cannot skip days, so these test what the commands send and print and that a
refusal is one line; the timers (void after 7 days, deletion after 15) are tested on the
time-skipping server in tests/workflows/test_commerce_plans.py.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

from policy.pricing import round_money
from tests.starter.conftest import DevStack
from tests.starter.test_cli import as_json, error_line, eventually, hostlife, ok
from workflows.commerce_models import PlanQuoteView
from workflows.models import Customer, ServiceState
from workflows.subscription import SubscriptionWorkflow


def hostico(stack: DevStack, plan: str | None, price: str, days: int = 100, **more: Any) -> str:
    return stack.start(days, profile="hostico", plan=plan, price=Decimal(price), **more)


def view(stack: DevStack, service_id: str) -> PlanQuoteView:
    return stack.run(stack.handle(service_id).query(SubscriptionWorkflow.commerce))


def test_upgrade_invoices_the_difference_and_pay_switches_the_plan(dev_stack: DevStack) -> None:
    service = hostico(dev_stack, "hosting-start", "1200.00")
    answer = as_json(dev_stack, "upgrade", service, "hosting-standard")
    pending = view(dev_stack, service).pending_upgrade
    assert pending is not None
    # 1200 × 101 days / the days of the prepaid year, rounded once: the CZK price of the invoice.
    days = pending.quote
    expected = round_money(Decimal(1200) * days.days_remaining / days.days_in_period)
    assert days.amount_due == expected
    # Hostico invoices in RON: that price × (0.2000 + 2 %) development rate, rounded once, is what is paid.
    payable = round_money(expected * Decimal("0.204"))
    assert Decimal(str(answer["amount"])) == payable == pending.amount
    assert answer["variable_symbol"] == pending.variable_symbol
    assert f"pay {payable} RON ({expected} CZK)" in answer["message"]
    assert "the plan switches on payment" in answer["message"]
    paid = as_json(
        dev_stack, "pay", service, "--vs", pending.variable_symbol, "--amount", str(pending.amount)
    )
    assert paid["result"] == "applied"
    assert view(dev_stack, service).plan == "hosting-standard"
    assert dev_stack.status(service).price == Decimal("2400.00")


def test_downgrade_credits_whole_months(dev_stack: DevStack) -> None:
    service = hostico(dev_stack, "hosting-premium", "3600.00", days=72)
    out = ok(dev_stack, "downgrade", service, "hosting-standard").stdout
    # 73 days with today: 2 whole months × (3600 − 2400) / 12 = 200.00 CZK; the Hostico credit
    # account is in EUR: 200.00 × 0.04 (development ČNB rate) = 8.00 EUR.
    assert f"{service}: downgraded to hosting-standard from today" in out
    assert "; 8.00 EUR (200.00 CZK at fixed " in out and " credited for 2 whole month(s)" in out
    assert dev_stack.status(service).price == Decimal("2400.00")


def test_plan_change_refusals_are_one_line(dev_stack: DevStack) -> None:
    service = hostico(dev_stack, "hosting-standard", "2400.00")
    assert "that is a downgrade" in error_line(hostlife(dev_stack, "upgrade", service, "hosting-start"))
    line = error_line(hostlife(dev_stack, "upgrade", service, "hosting-gold"), 2)
    assert "hosting has no plan 'hosting-gold'; its plans: hosting-start, hosting-standard" in line
    assert "vps-l is a plan of vps" in error_line(hostlife(dev_stack, "upgrade", service, "vps-l"), 2)
    plain = dev_stack.start(100, plan="hosting-start")  # default profile: no plan changes
    assert "not offered in profile 'default'" in error_line(
        hostlife(dev_stack, "upgrade", plain, "hosting-premium")
    )
    bare = hostico(dev_stack, None, "1200.00")
    assert "--current-plan" in error_line(hostlife(dev_stack, "upgrade", bare, "hosting-standard"))
    assert (
        "VS" in ok(dev_stack, "upgrade", bare, "hosting-standard", "--current-plan", "hosting-start").stdout
    )
    assert "unknown service" in error_line(
        hostlife(dev_stack, "downgrade", "no-such-service", "hosting-start")
    )


def test_service_start_takes_a_plan_and_refuses_an_unknown_one(dev_stack: DevStack) -> None:
    sid = f"cli-plan-{uuid.uuid4().hex[:6]}"
    expires = (dev_stack.today() + timedelta(days=100)).isoformat()
    args = [
        "service", "start", "--id", sid, "--customer", "c-plan", "--email", "ana@example.si",
        "--product", "vps", "--price", "3600.00", "--expires-on", expires, "--profile", "hostico",
    ]  # fmt: skip
    assert "vps has no plan 'vps-xl'" in error_line(hostlife(dev_stack, *args, "--plan", "vps-xl"), 2)
    ok(dev_stack, *args, "--plan", "vps-s", "--node", dev_stack.node)
    assert view(dev_stack, sid).plan == "vps-s"


def test_refund_dry_run_then_refund_ends_the_service(dev_stack: DevStack) -> None:
    service = hostico(dev_stack, "hosting-start", "1200.00", days=200)
    dry = ok(dev_stack, "refund", service, "--migration-hours", "1.5", "--dry-run").stdout
    # Activated today: full refund, 1200.00 − 1.5 h × 600.00 = 300.00.
    assert "refund 300.00 (full refund within 30 days of activation" in dry
    assert dev_stack.status(service).state is ServiceState.ACTIVE
    assert "bad --migration-hours" in error_line(
        hostlife(dev_stack, "refund", service, "--migration-hours", "x"), 2
    )
    answer = as_json(dev_stack, "refund", service, "--migration-hours", "1.5")
    assert Decimal(str(answer["amount"])) == Decimal("300.00")
    refunds = [r for r in dev_stack.billing.customer_refunds() if r.service_id == service]
    assert [r.amount for r in refunds] == [Decimal("300.00")]
    listed = [
        r for r in as_json(dev_stack, "held-payments", "customer-refunds") if r["service_id"] == service
    ]
    assert [(r["amount"], r["refund_id"]) for r in listed] == [("300.00", refunds[0].refund_id)]
    eventually(lambda: dev_stack.status(service).state is ServiceState.CLOSED)
    assert "has ended" in error_line(hostlife(dev_stack, "refund", service))
    plain = dev_stack.start(100)
    assert "not offered in profile 'default'" in error_line(hostlife(dev_stack, "refund", plain))


def test_account_delete_gives_notice_to_every_service_and_keep_withdraws_it(dev_stack: DevStack) -> None:
    customer = Customer(id=f"c-del-{uuid.uuid4().hex[:6]}", email="ana@example.si", language="en")
    first = hostico(dev_stack, "hosting-start", "1200.00", customer=customer)
    second = hostico(dev_stack, "hosting-standard", "2400.00", customer=customer)

    def visible() -> bool:
        rows = as_json(dev_stack, "service", "list", "--customer", customer.id)
        return {row["service_id"] for row in rows} == {first, second}

    eventually(visible)
    assert "--reason is required" in error_line(hostlife(dev_stack, "account", "delete", customer.id), 2)
    assert "not both" in error_line(
        hostlife(dev_stack, "account", "delete", customer.id, "--service", first, "--reason", "x"), 2
    )
    out = ok(dev_stack, "account", "delete", customer.id, "--reason", "tos").stdout
    for sid in (first, second):
        assert f"{sid}: notice sent; the service is deleted on" in out
        scheduled = view(dev_stack, sid).provider_deletion
        assert scheduled is not None and (scheduled.delete_on - scheduled.notified_on).days == 15
    again = hostlife(dev_stack, "account", "delete", customer.id, "--reason", "tos")
    assert again.exit_code == 1 and again.stdout.count("refused: deletion already announced") == 2
    kept = ok(dev_stack, "account", "keep", "--service", first).stdout
    assert f"{first}: deletion of" in kept and "cancelled" in kept
    assert view(dev_stack, first).provider_deletion is None
    body = as_json(dev_stack, "service", "show", second)
    assert body["commerce"]["provider_deletion"]["reason"] == "tos"
    assert view(dev_stack, second).provider_deletion is not None
    assert "no running services" in error_line(hostlife(dev_stack, "account", "keep", "c-nobody-here"))

"""`hostlife coupon|price|usage` and `service start --coupon` against the session's dev stack."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from starter.services import usage_sink
from tests.starter.conftest import DevStack
from tests.starter.test_cli import as_json, error_line, hostlife, ok
from workflows.offers_models import UsageReport
from workflows.subscription import SubscriptionWorkflow


def code() -> str:
    return f"SPRING-{uuid.uuid4().hex[:6].upper()}"


def weekly(stack: DevStack, percent: str = "20") -> str:
    name = code()
    today = stack.today()
    ok(
        stack,
        "coupon", "create", name.lower(), "--kind", "weekly", "--percent", percent,
        "--from", (today - timedelta(days=1)).isoformat(), "--until", (today + timedelta(days=6)).isoformat(),
    )  # fmt: skip
    return name


def start(stack: DevStack, service_id: str, customer: str, *extra: str) -> str:
    return ok(
        stack,
        "service", "start", "--id", service_id, "--customer", customer, "--email", "nova@example.cz",
        "--product", "hosting", "--price", "1200.00", "--profile", "hostico",
        "--expires-on", stack.today().isoformat(), *extra,
    ).stdout  # fmt: skip


def test_coupon_create_show_list_and_bad_coupons(dev_stack: DevStack) -> None:
    name = weekly(dev_stack)
    shown = as_json(dev_stack, "coupon", "show", name.lower())
    assert shown["coupon"]["code"] == name and shown["coupon"]["percent_off"] == "20"
    assert shown["uses"] == 0 and shown["remaining"] is None
    assert f"coupon {name}: weekly, 20 % off" in ok(dev_stack, "coupon", "show", name).stdout
    assert error_line(hostlife(dev_stack, "coupon", "create", name, "--kind", "limited", "--percent", "5",
                               "--max-uses", "3")) == f"error: coupon {name} already exists"  # fmt: skip
    flash = error_line(
        hostlife(
            dev_stack,
            "coupon",
            "create",
            code(),
            "--kind",
            "flash",
            "--percent",
            "50",
            "--from",
            "2027-03-01",
            "--until",
            "2027-03-03",
        ),
        2,
    )
    assert "flash coupon is valid for at most 1 day" in flash
    both = error_line(
        hostlife(
            dev_stack,
            "coupon",
            "create",
            code(),
            "--kind",
            "limited",
            "--percent",
            "5",
            "--amount",
            "100.00",
            "--max-uses",
            "1",
        ),
        2,
    )
    assert "exactly one of percent_off and amount_off" in both
    assert "bad coupon code" in error_line(hostlife(dev_stack, "coupon", "show", "no spaces!"), 2)
    assert (
        error_line(hostlife(dev_stack, "coupon", "show", "never-made")) == "error: unknown coupon NEVER-MADE"
    )
    deadline = time.monotonic() + 30
    while name not in [c["coupon"]["code"] for c in as_json(dev_stack, "coupon", "list")]:
        assert time.monotonic() < deadline, "coupon never listed"
        time.sleep(0.3)
    retired = as_json(dev_stack, "coupon", "retire", name, "--reason", "campaign ended")
    assert retired["retired"] == "campaign ended"


def test_service_start_with_a_coupon_for_new_customers_only(dev_stack: DevStack) -> None:
    name = weekly(dev_stack)
    customer = f"c-{uuid.uuid4().hex[:6]}"
    first = f"cp-{uuid.uuid4().hex[:6]}"
    out = start(dev_stack, first, customer, "--coupon", name)
    assert f"coupon {name} applied: 240.00 CZK off the first period" in out
    status = dev_stack.wait_for(first, lambda s: s.open_invoice is not None)
    assert status.open_invoice is not None and status.open_invoice.price_amount == Decimal("960.00")
    # The same customer orders again: no longer new (hostlife knows their first service).
    dev_stack.wait_visible(f"HostlifeCustomerId = '{customer}'")
    second = f"cp-{uuid.uuid4().hex[:6]}"
    refused = error_line(
        hostlife(
            dev_stack,
            "service",
            "start",
            "--id",
            second,
            "--customer",
            customer,
            "--email",
            "nova@example.cz",
            "--product",
            "hosting",
            "--price",
            "1200.00",
            "--profile",
            "hostico",
            "--expires-on",
            dev_stack.today().isoformat(),
            "--coupon",
            name,
        )
    )
    assert refused == (
        f"error: service {second} started at the full price; coupon {name}: only for new customers "
        "(rule new_customers_only)"
    )
    status = dev_stack.wait_for(second, lambda s: s.open_invoice is not None)
    assert status.open_invoice is not None and status.open_invoice.price_amount == Decimal("1200.00")
    assert as_json(dev_stack, "coupon", "show", name)["uses"] == 1


def test_coupon_apply_to_an_open_first_invoice_and_not_after_payment(dev_stack: DevStack) -> None:
    name = weekly(dev_stack, percent="12.5")
    service = f"ca-{uuid.uuid4().hex[:6]}"
    start(dev_stack, service, f"c-{uuid.uuid4().hex[:6]}", "--new-order", "--new-customer")
    dev_stack.wait_for(service, lambda s: s.open_invoice is not None)
    applied = as_json(dev_stack, "coupon", "apply", service, name)
    # Hostico invoices are in RON: 1050.00 CZK at the development rate 0.2000 + 2 %.
    assert "150.00 CZK off" in applied["message"] and "re-issued as VS" in applied["message"]
    assert applied["amount"] == "214.20" and applied["message"].endswith("214.20 RON")
    ok(dev_stack, "pay", service)
    late = weekly(dev_stack)
    line = error_line(hostlife(dev_stack, "coupon", "apply", service, late))
    assert line.startswith("error: refused: ") and line.endswith("(rule not_retroactive)")


def test_price_announce_tells_the_affected_services_only(dev_stack: DevStack) -> None:
    # Plans are validated against policy/plans.toml, so both are real; other tests' services on the
    # same plan (the dev server is shared by the session) are told too, which is right.
    plan = "hosting-premium"
    affected = dev_stack.start(100, profile="hostico", plan=plan, price=Decimal("3600.00"))
    other = dev_stack.start(100, profile="hostico", plan="hosting-start")
    dev_stack.wait_visible(f"HostlifeServiceId = '{affected}'")
    dev_stack.wait_visible(f"HostlifeServiceId = '{other}'")
    soon = (dev_stack.today() + timedelta(days=20)).isoformat()
    line = error_line(
        hostlife(
            dev_stack, "price", "announce", "--product", "hosting", "--price", "1500.00", "--effective", soon
        ),
        2,
    )
    assert "less than 30 days ahead" in line
    effective = dev_stack.today() + timedelta(days=40)
    results = as_json(
        dev_stack,
        "price", "announce", "--product", "hosting", "--profile", "hostico", "--plan", plan,
        "--price", "1500.00", "--effective", effective.isoformat(), "--reference", "2027 list",
    )  # fmt: skip
    by_id = {r["service_id"]: r for r in results}
    assert by_id[affected]["result"] == "announced"
    expires_on = dev_stack.status(affected).expires_on
    assert (
        f"new price 1500.00 CZK per P1Y from {expires_on + timedelta(days=1)}" in by_id[affected]["message"]
    )
    assert by_id[other]["result"] == "not affected"
    assert "the service's plan is hosting-start, not hosting-premium" in by_id[other]["message"]
    # Nothing live is refused; a service another test has just deleted may still be listed as running.
    refused = [r for r in results if r["result"] == "refused"]
    assert all(re.fullmatch(r"service \S+ is (deleted|closed|released)", r["message"]) for r in refused), (
        refused
    )
    assert affected not in {r["service_id"] for r in refused}


def test_usage_report_notifies_and_refuses_bad_input(dev_stack: DevStack) -> None:
    vps = dev_stack.start(100, profile="hostico", product="vps", price=Decimal("330.00"), period="P1M")
    before = sum(1 for m in dev_stack.mailer.sent if m["X-Hostlife-Template"] == "usage_warning")
    out = ok(dev_stack, "usage", "report", vps, "--disk", str(100 * 2**30), "--free-disk", str(2**29)).stdout
    assert f"{vps}: usage reported" in out
    deadline = time.monotonic() + 30
    while sum(1 for m in dev_stack.mailer.sent if m["X-Hostlife-Template"] == "usage_warning") == before:
        assert time.monotonic() < deadline, "no usage warning mailed"
        time.sleep(0.2)
    offers = dev_stack.run(dev_stack.handle(vps).query(SubscriptionWorkflow.offers))
    assert offers.usage_notices == 1 and [b.value for b in offers.usage_breaches] == ["disk_low"]
    # The ingress's sink delivers the same signal; a service nobody started is answered as such.
    sink = usage_sink(dev_stack.client)
    clean = UsageReport(
        measured_at=datetime.now(UTC), managed=True, shared_resources=True, cpu_full_minutes=0
    )
    assert dev_stack.run(sink(vps, clean)) == "delivered"
    assert dev_stack.run(sink("never-started", clean)) == "unknown service"
    assert "give --disk and --free-disk together" in error_line(
        hostlife(dev_stack, "usage", "report", vps, "--disk", "100"), 2
    )
    assert "nothing to report" in error_line(hostlife(dev_stack, "usage", "report", vps), 2)
    future = (datetime.now(UTC) + timedelta(minutes=1)).replace(tzinfo=None).isoformat()
    assert "time zone offset" in error_line(
        hostlife(dev_stack, "usage", "report", vps, "--cpu-full-minutes", "5", "--measured-at", future), 2
    )

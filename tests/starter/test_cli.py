"""Every `hostlife` command against the session's dev server and worker, error paths included.

The CLI runs in-process (`typer.testing.CliRunner`) with HOSTLIFE_* variables pointing at the
dev stack of `conftest.py`. The dev server runs on the real clock, so a service whose expiry
date lies in the past catches up at once: D-2 is blocked within a second, D-70 deleted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from starter.cli import app
from starter.services import start_service
from tests.starter.conftest import DevStack, free_port
from workflows.models import Customer, ServiceSpec, ServiceState

runner = CliRunner()


def hostlife(stack: DevStack, *args: str, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, list(args), env={**stack.env(), **(env or {})})


def ok(stack: DevStack, *args: str) -> Result:
    result = hostlife(stack, *args)
    assert result.exit_code == 0, f"{args}: {result.output}"
    assert result.stderr == ""
    return result


def as_json(stack: DevStack, *args: str) -> Any:
    return json.loads(ok(stack, *args, "--json").stdout)


def error_line(result: Result, code: int = 1) -> str:
    """The one line a failing command prints: on stderr, `error: ...`, and a non-zero status."""
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return lines[0]


def eventually(check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition never held")
        time.sleep(0.3)


def blocked_service(stack: DevStack, **overrides: Any) -> str:
    service_id = stack.start(-2, **overrides)
    stack.wait_for(service_id, lambda s: s.state is ServiceState.BLOCKED)
    return service_id


# ---------------------------------------------------------------------------- service start / show


def test_service_start_from_flags_and_show_what_comes_next(dev_stack: DevStack) -> None:
    expires_on = dev_stack.today() + timedelta(days=10)
    result = ok(
        dev_stack,
        "service", "start", "--id", "cli-web-1", "--customer", "c-cli", "--email", "jana@example.cz",
        "--product", "hosting", "--price", "1200.00", "--expires-on", expires_on.isoformat(),
    )  # fmt: skip
    assert "started service-cli-web-1" in result.stdout
    # D is 10 days away: the invoice (D-30) is overdue and issued at once.
    dev_stack.wait_for("cli-web-1", lambda s: s.open_invoice is not None)

    shown = as_json(dev_stack, "service", "show", "cli-web-1")
    assert shown["state"] == "active"
    assert shown["expires_on"] == expires_on.isoformat()
    assert shown["open_invoice"]["amount"] == "1200.00"
    assert [item["kind"] for item in shown["upcoming"]][:2] == ["reminder", "reminder"]
    assert all(item["on"] >= dev_stack.today().isoformat() for item in shown["upcoming"])
    kinds = [event["kind"] for event in shown["events"]]
    assert kinds[0] == "state" and "invoice" in kinds

    human = ok(dev_stack, "service", "show", "cli-web-1").stdout
    vs = shown["open_invoice"]["variable_symbol"]
    assert f"VS {vs}: 1200.00 (renewal), due {expires_on}" in human
    assert "timeline" in human and "block" in human
    assert f"invoice VS {vs} issued: 1200.00" in human
    assert "state → active (service started)" in human


def test_service_start_refuses_bad_input_in_one_line(dev_stack: DevStack) -> None:
    base = ["service", "start", "--id", "cli-bad-1", "--customer", "c", "--email", "a@example.cz"]
    dated = [*base, "--price", "100.00", "--expires-on", "2030-01-01"]
    assert "unknown product" in error_line(hostlife(dev_stack, *dated, "--product", "teapot"), 2).lower()
    assert "--product" in error_line(hostlife(dev_stack, *base, "--price", "1.00"), 2)
    assert "--expires-on" in error_line(
        hostlife(dev_stack, *base, "--product", "hosting", "--price", "1.00", "--expires-on", "31.12.2030"), 2
    )
    assert "bad price" in error_line(
        hostlife(dev_stack, *base, "--product", "hosting", "--price", "1.001", "--expires-on", "2030-01-01"),
        2,
    )
    assert "P1M" in error_line(hostlife(dev_stack, *dated, "--product", "hosting", "--period", "P1M"), 2)
    running = dev_stack.start(40)
    line = error_line(
        hostlife(
            dev_stack,
            *["service", "start", "--id", running, "--customer", "c", "--email", "a@example.cz"],
            *["--product", "hosting", "--price", "100.00", "--expires-on", "2030-01-01"],
        )
    )
    assert line == f"error: service {running} is already running"


def test_service_start_many_from_json_and_csv_files(dev_stack: DevStack, tmp_path: Path) -> None:
    day = (dev_stack.today() + timedelta(days=200)).isoformat()
    json_file = tmp_path / "services.json"
    json_file.write_text(
        json.dumps(
            {
                "services": [
                    {"id": "bulk-j1", "customer": {"id": "c-bulk", "email": "b@example.cz"}, "product": "hosting",
                     "price": "1200.00", "expires_on": day},
                    {"id": "bulk-j2", "customer": "c-bulk", "email": "b@example.cz", "product": "domain",
                     "name": "bulk-example.cz", "price": "250.00", "expires_on": day},
                ]
            }
        )
    )  # fmt: skip
    csv_file = tmp_path / "services.csv"
    csv_file.write_text(
        "id,customer,email,product,price,period,expires_on,node\n"
        f"bulk-c1,c-bulk,b@example.cz,vps,330.00,P1M,{day},{dev_stack.node}\n"
        f"bulk-c2,c-bulk,b@example.cz,multihosting,900.00,P1Y,{day},\n"
    )
    assert "started 2 of 2 services" in ok(dev_stack, "service", "start", "--file", str(json_file)).stdout
    started = as_json(dev_stack, "service", "start", "--file", str(csv_file))
    assert [(r["service_id"], r["result"]) for r in started] == [
        ("bulk-c1", "started"),
        ("bulk-c2", "started"),
    ]
    assert dev_stack.status("bulk-c1").period == "P1M"
    assert dev_stack.status("bulk-j2").product == "domain"

    again = ok(dev_stack, "service", "start", "--file", str(json_file)).stdout
    assert "started 0 of 2 services; already running: bulk-j1, bulk-j2" in again


def test_a_bad_services_file_starts_nothing(dev_stack: DevStack, tmp_path: Path) -> None:
    day = (dev_stack.today() + timedelta(days=200)).isoformat()
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "id,customer,email,product,price,expires_on\n"
        f"bulk-ok,c-bulk,b@example.cz,hosting,1200.00,{day}\n"
        f"bulk-bad,c-bulk,b@example.cz,hosting,12.345,{day}\n"
    )
    line = error_line(hostlife(dev_stack, "service", "start", "--file", str(bad)), 2)
    assert "service 2" in line and "12.345" in line
    assert error_line(hostlife(dev_stack, "service", "show", "bulk-ok")) == "error: unknown service bulk-ok"

    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps([{"id": "x", "customer": "c", "email": "e@x.cz", "product": "hosting",
                                 "price": "1.00", "expires_on": day, "expires": day}]))  # fmt: skip
    assert "unknown field(s) expires" in error_line(
        hostlife(dev_stack, "service", "start", "-f", str(typo)), 2
    )
    missing = tmp_path / "missing.json"
    assert "cannot read" in error_line(hostlife(dev_stack, "service", "start", "-f", str(missing)), 2)


# ---------------------------------------------------------------------------- service list


def test_service_list_filters_by_search_attributes(dev_stack: DevStack) -> None:
    customer = Customer(id="c-list", email="list@example.cz")
    blocked = blocked_service(dev_stack, customer=customer)
    vps = dev_stack.start(100, customer=customer, product="vps", price=Decimal("330.00"))
    later = dev_stack.start(300, customer=customer)

    def listed(*filters: str) -> list[str]:
        return [
            row["service_id"]
            for row in as_json(dev_stack, "service", "list", "--customer", "c-list", *filters)
        ]

    eventually(lambda: set(listed()) == {blocked, vps, later})
    eventually(lambda: listed("--state", "blocked") == [blocked])
    assert listed("--product", "vps") == [vps]
    before = (dev_stack.today() + timedelta(days=101)).isoformat()
    assert set(listed("--expiring-before", before)) == {blocked, vps}
    # D itself is not "before D": the attribute is local midnight, compared as an instant.
    on_vps_day = (dev_stack.today() + timedelta(days=100)).isoformat()
    assert listed("--expiring-before", on_vps_day) == [blocked]
    rows = as_json(dev_stack, "service", "list", "--customer", "c-list", "--state", "blocked")
    assert rows[0]["expires_on"] == (dev_stack.today() - timedelta(days=2)).isoformat()
    assert rows[0]["product"] == "hosting" and rows[0]["workflow_id"] == f"service-{blocked}"

    vs = dev_stack.status(blocked).open_invoice
    assert vs is not None
    assert [r["service_id"] for r in as_json(dev_stack, "service", "list", "--vs", vs.variable_symbol)] == [
        blocked
    ]
    assert listed("--attention") == []  # the server accepts the query; nothing here failed

    human = ok(dev_stack, "service", "list", "--customer", "c-list", "--product", "vps").stdout
    assert vps in human and "1 service(s)" in human

    assert "unknown state" in error_line(hostlife(dev_stack, "service", "list", "--state", "sleeping"), 2)
    assert "bad --customer" in error_line(
        hostlife(dev_stack, "service", "list", "--customer", "x' OR 1=1"), 2
    )
    assert "YYYY-MM-DD" in error_line(hostlife(dev_stack, "service", "list", "--expiring-before", "soon"), 2)


# ---------------------------------------------------------------------------- payments and the ledger


def test_pay_the_open_invoice_unblocks_and_a_duplicate_is_applied_once(dev_stack: DevStack) -> None:
    service = blocked_service(dev_stack)
    invoice = dev_stack.status(service).open_invoice
    assert invoice is not None
    paid = as_json(dev_stack, "pay", service, "--payment-id", f"bank-{service}")
    assert paid["result"] == "applied" and paid["variable_symbol"] == invoice.variable_symbol
    status = dev_stack.status(service)
    assert status.state is ServiceState.ACTIVE
    assert status.expires_on == dev_stack.today() - timedelta(days=2) + timedelta(days=365)
    again = ok(
        dev_stack, "pay", service, "--payment-id", f"bank-{service}",
        "--vs", invoice.variable_symbol, "--amount", str(invoice.amount),
    ).stdout  # fmt: skip
    assert f"payment bank-{service}" in again and ": duplicate" in again
    # No open invoice now (renewed, next one issued 30 days before the new D): say what is needed.
    line = error_line(hostlife(dev_stack, "pay", service))
    assert line == f"error: service {service} has no open invoice; give --vs and --amount"
    assert "bad amount" in error_line(hostlife(dev_stack, "pay", service, "--amount", "ten", "--vs", "1"), 2)
    assert "variable symbol" in error_line(
        hostlife(dev_stack, "pay", service, "--amount", "1.00", "--vs", "12ab")
    )


def test_a_stale_payment_is_held_and_resolved_through_the_ledger(dev_stack: DevStack) -> None:
    service = dev_stack.start(10)
    old = dev_stack.wait_for(service, lambda s: s.open_invoice is not None).open_invoice
    assert old is not None
    changed = as_json(dev_stack, "billing-changed", service)
    assert changed["variable_symbol"] != old.variable_symbol
    payment_id = f"stale-{service}"
    held = ok(
        dev_stack, "pay", service, "--vs", old.variable_symbol, "--amount", str(old.amount),
        "--payment-id", payment_id,
    ).stdout  # fmt: skip
    assert ": held (" in held

    listed = as_json(dev_stack, "held-payments", "list")
    mine = [h for h in listed["held_payments"] if h["payment"]["payment_id"] == payment_id]
    assert mine and mine[0]["service_id"] == service and mine[0]["resolved"] is False
    human = ok(dev_stack, "held-payments", "list").stdout
    assert payment_id in human and "held payment(s)" in human

    resolved = ok(dev_stack, "held-payments", "resolve", payment_id, "--note", "returned by bank transfer")
    assert f"held payment {payment_id} resolved" in resolved.stdout
    assert payment_id not in json.dumps(as_json(dev_stack, "held-payments", "list")["held_payments"])
    everything = as_json(dev_stack, "held-payments", "list", "--all")["held_payments"]
    assert any(h["resolution"] == "returned by bank transfer" for h in everything)

    again = hostlife(dev_stack, "held-payments", "resolve", payment_id, "--note", "twice")
    assert "already resolved: returned by bank transfer" in error_line(again)
    assert error_line(hostlife(dev_stack, "held-payments", "resolve", "nope", "--note", "x")) == (
        "error: no held payment nope"
    )


def test_held_payments_need_the_ledger(dev_stack: DevStack, tmp_path: Path) -> None:
    result = hostlife(
        dev_stack, "held-payments", "list", env={"HOSTLIFE_DATA_DIR": str(tmp_path / "nowhere")}
    )
    assert "no billing ledger at" in error_line(result)
    assert not (tmp_path / "nowhere").exists()


def test_billing_changed_for_every_service_of_a_customer(dev_stack: DevStack) -> None:
    customer = Customer(id="c-billing", email="billing@example.cz")
    first, second = dev_stack.start(5, customer=customer), dev_stack.start(6, customer=customer)
    before = {
        sid: dev_stack.wait_for(sid, lambda s: s.open_invoice is not None).open_invoice
        for sid in (first, second)
    }

    def both_visible() -> bool:
        rows = as_json(dev_stack, "service", "list", "--customer", "c-billing")
        return {row["service_id"] for row in rows} == {first, second}

    eventually(both_visible)
    out = ok(dev_stack, "billing-changed", "--customer", "c-billing").stdout
    for sid in (first, second):
        old = before[sid]
        new = dev_stack.status(sid).open_invoice
        assert old is not None and new is not None
        assert new.variable_symbol != old.variable_symbol
        assert (
            f"{sid}: invoice VS {old.variable_symbol} cancelled, re-issued as VS {new.variable_symbol}" in out
        )
    assert "not both" in error_line(hostlife(dev_stack, "billing-changed"), 2)
    assert "no running services" in error_line(
        hostlife(dev_stack, "billing-changed", "--customer", "c-nobody")
    )


# ---------------------------------------------------------------------------- commands


def test_suspend_and_resolve_with_validator_refusals(dev_stack: DevStack) -> None:
    service = dev_stack.start(100)
    assert "suspended; first case, free" in ok(dev_stack, "suspend", service, "--reason", "spam").stdout
    assert dev_stack.status(service).state is ServiceState.SUSPENDED
    refused = error_line(hostlife(dev_stack, "suspend", service, "--reason", "phishing"))
    assert (
        refused.startswith("error: refused: ") and "already suspended since" in refused and "spam" in refused
    )
    assert as_json(dev_stack, "resolve", service)["message"] == "suspension lifted"
    assert dev_stack.status(service).state is ServiceState.ACTIVE
    assert (
        error_line(hostlife(dev_stack, "resolve", service)) == "error: refused: the service is not suspended"
    )


def test_park_and_unpark_a_vps(dev_stack: DevStack) -> None:
    vps = dev_stack.start(100, product="vps", price=Decimal("330.00"), period="P1M")
    assert ok(dev_stack, "park", vps).stdout.strip() == f"{vps}: parked"
    assert dev_stack.status(vps).state is ServiceState.PARKED
    assert error_line(hostlife(dev_stack, "park", vps)) == "error: refused: already parked"
    assert as_json(dev_stack, "unpark", vps)["message"] == "unparked"
    assert dev_stack.status(vps).state is ServiceState.ACTIVE
    assert error_line(hostlife(dev_stack, "unpark", vps)) == "error: refused: the service is not parked"
    hosting = dev_stack.start(100)
    assert "cannot be parked" in error_line(hostlife(dev_stack, "park", hosting))


def test_cancel_and_change_period(dev_stack: DevStack) -> None:
    vps = dev_stack.start(100, product="vps", price=Decimal("3600.00"), period="P1Y")
    result = as_json(dev_stack, "change-period", vps, "P1M")
    assert result["message"].startswith("next period P1M from ")
    assert "already billed for P1M" in error_line(hostlife(dev_stack, "change-period", vps, "P1M"))
    hosting = dev_stack.start(100)
    assert "cannot be billed for P1M" in error_line(hostlife(dev_stack, "change-period", hosting, "P1M"))

    yesterday = (dev_stack.today() - timedelta(days=1)).isoformat()
    assert "that day has passed" in error_line(hostlife(dev_stack, "cancel", hosting, "--on", yesterday))
    expires_on = dev_stack.status(hosting).expires_on
    assert ok(dev_stack, "cancel", hosting).stdout.strip() == (
        f"{hosting}: service ends after {expires_on}, then it is deleted"
    )
    assert dev_stack.status(hosting).cancel_effective_on == expires_on
    assert "YYYY-MM-DD" in error_line(hostlife(dev_stack, "cancel", hosting, "--on", "tomorrow"), 2)


def test_a_payment_after_deletion_is_returned_and_restore_brings_it_back(dev_stack: DevStack) -> None:
    service = dev_stack.start(-70)
    dev_stack.wait_for(service, lambda s: s.state is ServiceState.DELETED)
    returned = as_json(
        dev_stack, "pay", service, "--vs", "99", "--amount", "1200.00", "--payment-id", f"late-{service}"
    )
    assert returned["result"] == "returned"
    refunds = as_json(dev_stack, "held-payments", "refunds")
    assert any(r["payment"]["payment_id"] == f"late-{service}" for r in refunds)
    assert f"late-{service}" in ok(dev_stack, "held-payments", "refunds").stdout

    ordered = as_json(dev_stack, "restore", service)
    assert ordered["message"].startswith("restore invoice issued; pay by ")
    assert Decimal(ordered["amount"]) == Decimal("1700.00")  # price + 500 CZK restore fee
    assert "already open" in as_json(dev_stack, "restore", service)["message"]
    assert as_json(dev_stack, "pay", service)["result"] == "applied"
    assert dev_stack.status(service).state is ServiceState.ACTIVE
    assert "only a deleted service can be restored" in error_line(hostlife(dev_stack, "restore", service))


def test_defer_is_refused_where_the_profile_has_none(dev_stack: DevStack) -> None:
    service = dev_stack.start(5)
    dev_stack.wait_for(service, lambda s: s.open_invoice is not None)
    assert "has no payment deferral" in error_line(hostlife(dev_stack, "defer", service, "5"))
    hostico = dev_stack.start(-2, profile="hostico")
    dev_stack.wait_for(hostico, lambda s: s.open_invoice is not None)
    assert "payment deferred until" in ok(dev_stack, "defer", hostico, "10").stdout
    assert "between 1 and 365" in error_line(hostlife(dev_stack, "defer", hostico, "0"), 2)


def test_a_closed_service_still_shows_and_refuses_commands(dev_stack: DevStack) -> None:
    service = dev_stack.start(100)
    out = ok(dev_stack, "suspend", service, "--reason", "phishing kit", "--severe").stdout
    assert "deleted without suspension" in out

    def closed() -> bool:
        description = dev_stack.run(dev_stack.handle(service).describe())
        return description.status is not None and description.status.name == "COMPLETED"

    eventually(closed)
    assert as_json(dev_stack, "service", "show", service)["state"] == "closed"
    line = error_line(hostlife(dev_stack, "cancel", service))
    assert line == f"error: service {service} has ended (closed): nothing can change it now"


# ---------------------------------------------------------------------------- errors met out there


@pytest.mark.parametrize(
    "args",
    [
        ["service", "show", "nope-1"],
        ["pay", "nope-1", "--vs", "1", "--amount", "1.00"],
        ["pay", "nope-1"],
        ["cancel", "nope-1"],
        ["suspend", "nope-1", "--reason", "spam"],
        ["resolve", "nope-1"],
        ["park", "nope-1"],
        ["unpark", "nope-1"],
        ["restore", "nope-1"],
        ["change-period", "nope-1", "P1M"],
        ["billing-changed", "nope-1"],
        ["defer", "nope-1", "3"],
    ],
    ids=lambda args: "-".join(args[:2]),
)
def test_an_unknown_service_is_one_line(dev_stack: DevStack, args: list[str]) -> None:
    assert error_line(hostlife(dev_stack, *args)) == "error: unknown service nope-1"


@pytest.mark.parametrize(
    "args",
    [
        ["service", "show", "x"],
        ["service", "list"],
        ["pay", "x"],
        ["park", "x"],
        ["service", "start", "-f", "-"],
    ],
)
def test_an_unreachable_server_is_one_line(dev_stack: DevStack, args: list[str], tmp_path: Path) -> None:
    if args[-1] == "-":
        services = tmp_path / "one.json"
        services.write_text(
            json.dumps([{"id": "u1", "customer": "c", "email": "e@x.cz", "product": "hosting",
                         "price": "1.00", "expires_on": "2030-01-01"}])
        )  # fmt: skip
        args = [*args[:-1], str(services)]
    address = f"127.0.0.1:{free_port()}"
    line = error_line(hostlife(dev_stack, *args, env={"HOSTLIFE_TEMPORAL_ADDRESS": address}))
    assert line.startswith(f"error: Temporal server unreachable at {address}: ")


def test_no_worker_means_a_timeout_not_a_hang(dev_stack: DevStack) -> None:
    spec = ServiceSpec(
        service_id="orphan-1",
        customer=Customer(id="c-orphan", email="o@example.cz"),
        product="hosting",
        price=Decimal("1.00"),
        expires_on=dev_stack.today() + timedelta(days=100),
    )
    dev_stack.run(start_service(dev_stack.client, spec, task_queue="nobody-polls-this"))
    started = time.monotonic()
    line = error_line(hostlife(dev_stack, "--timeout", "2", "park", "orphan-1"))
    assert "no answer within 2s" in line and "worker" in line
    assert time.monotonic() - started < 20
    dev_stack.run(dev_stack.handle("orphan-1").terminate("test done"))


def test_usage_errors_are_one_line_too(dev_stack: DevStack) -> None:
    assert "Missing argument" in error_line(hostlife(dev_stack, "pay"), 2)
    assert "No such option: --bogus" in error_line(hostlife(dev_stack, "park", "x", "--bogus"), 2)
    assert "--file cannot be combined" in error_line(
        hostlife(dev_stack, "service", "start", "--file", "x.json", "--id", "y"), 2
    )

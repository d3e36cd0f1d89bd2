"""`hostlife vps ...` against the session's dev server and worker (recording hypervisor node):
support actions on an authorised request, manual backups, restore of a deleted VPS onto a new one
and its mail, with every refusal as one `error:` line."""

from __future__ import annotations

from decimal import Decimal

import pytest

from policy.catalog import default_catalog
from starter.cli_services import spec_from_row
from tests.starter.conftest import DevStack
from tests.starter.test_cli import as_json, error_line, eventually, hostlife, ok
from workflows.models import Customer, ServiceState

AUTHORISED = ("--requested-by", "jana@example.cz (customer)")


def test_support_actions_on_an_authorised_request(dev_stack: DevStack) -> None:
    vps = dev_stack.start(100, product="vps", price=Decimal("330.00"), period="P1M")
    vm = dev_stack.hypervisor
    stopped = ok(dev_stack, "vps", "stop", vps, *AUTHORISED, "--ticket", f"T-{vps}-1").stdout
    assert (
        stopped.strip()
        == f"{vps}: stop done on {dev_stack.node} (ticket T-{vps}-1, for jana@example.cz (customer))"
    )
    assert vm.running[vps] is False
    assert "start done" in ok(dev_stack, "vps", "start", vps, *AUTHORISED, "--ticket", f"T-{vps}-2").stdout
    assert vm.running[vps] is True
    assert (
        "restart done" in ok(dev_stack, "vps", "restart", vps, *AUTHORISED, "--ticket", f"T-{vps}-3").stdout
    )
    reinstalled = ok(
        dev_stack,
        "vps",
        "reinstall",
        vps,
        "--image",
        "debian-12.qcow2",
        *AUTHORISED,
        "--ticket",
        f"T-{vps}-4",
    )
    assert "reinstall done" in reinstalled.stdout
    assert vm.images[vps] == "debian-12.qcow2"
    # The same ticket runs once: asking again answers with the first run's result.
    again = ok(dev_stack, "vps", "stop", vps, *AUTHORISED, "--ticket", f"T-{vps}-1").stdout
    assert "stop done" in again and vm.running[vps] is True

    # No authorisation, no action (usage error, status 2).
    missing = hostlife(dev_stack, "vps", "stop", vps, "--ticket", "T-x")
    assert missing.exit_code == 2 and "--requested-by" in missing.output
    assert "must name who" in error_line(
        hostlife(dev_stack, "vps", "stop", vps, "--requested-by", " ", "--ticket", "T-y"), 2
    )
    hosting = dev_stack.start(100)
    assert "not a server on a hypervisor" in error_line(
        hostlife(dev_stack, "vps", "stop", hosting, *AUTHORISED, "--ticket", "T-z")
    )


def test_support_cannot_start_what_the_lifecycle_blocked(dev_stack: DevStack) -> None:
    vps = dev_stack.start(-2, product="vps", price=Decimal("330.00"), period="P1M")
    dev_stack.wait_for(vps, lambda s: s.state is ServiceState.BLOCKED)
    line = error_line(hostlife(dev_stack, "vps", "start", vps, *AUTHORISED, "--ticket", f"T-{vps}"))
    assert line.startswith(f"error: refused: service {vps} is blocked: start refused")
    assert dev_stack.hypervisor.running[vps] is False


def test_manual_backups_create_list_delete(dev_stack: DevStack) -> None:
    vps = dev_stack.start(100, product="vps", price=Decimal("330.00"), period="P1M", backup_rotation=3)
    created = as_json(dev_stack, "vps", "backup", "create", vps)
    label = created["label"]
    assert label.startswith("manual-") and created["message"] == f"manual backup {label} taken"
    listed = as_json(dev_stack, "vps", "backup", "list", vps)
    assert [(b["label"], b["kind"]) for b in listed] == [(label, "manual")]
    assert "1 backup(s)" in ok(dev_stack, "vps", "backup", "list", vps).stdout
    assert f"backup {label} deleted" in ok(dev_stack, "vps", "backup", "delete", vps, label).stdout
    assert as_json(dev_stack, "vps", "backup", "list", vps) == []
    assert error_line(hostlife(dev_stack, "vps", "backup", "delete", vps, label)) == (
        f"error: refused: no backup {label}"
    )
    no_backups = dev_stack.start(100, product="vps", price=Decimal("330.00"), period="P1M")
    assert error_line(hostlife(dev_stack, "vps", "backup", "list", no_backups)) == (
        f"error: refused: VPS {no_backups} has no backups workflow"
    )


def test_restore_a_deleted_vps_onto_a_new_one_and_its_mail(dev_stack: DevStack) -> None:
    owner = Customer(id=f"c-restore-{dev_stack.node}", email="jana@example.cz", language="en")
    old = dev_stack.start(
        -40, customer=owner, product="vps", price=Decimal("330.00"), period="P1M", plan="vps-m"
    )
    dev_stack.wait_for(old, lambda s: s.state is ServiceState.DELETED and s.backup_until is not None)
    new = dev_stack.start(
        300, customer=owner, product="vps", price=Decimal("330.00"), period="P1M", plan="vps-l"
    )
    small = dev_stack.start(
        300, customer=owner, product="vps", price=Decimal("330.00"), period="P1M", plan="vps-s"
    )

    assert "lower than the deleted server's vps-m (tier 2)" in error_line(
        hostlife(dev_stack, "vps", "restore", old, "--onto", small)
    )
    assert "restore goes onto a newly ordered server" in error_line(
        hostlife(dev_stack, "vps", "restore", old, "--onto", old)
    )
    assert error_line(hostlife(dev_stack, "vps", "restore", old, "--onto", "nope")) == (
        "error: refused: no service nope in hostlife"
    )
    answer = as_json(dev_stack, "vps", "restore", old, "--onto", new)
    assert answer["amount"] == "500.00" and new in answer["message"]
    status = dev_stack.status(old)
    assert status.open_invoice is not None and status.open_invoice.amount == Decimal("500.00")

    mail = as_json(dev_stack, "vps", "restore-mail", old, "example.cz", "example.sk", "--onto", new)
    assert mail["amount"] == "1000.00"
    assert "not domain names" in error_line(
        hostlife(dev_stack, "vps", "restore-mail", old, "Bad Domain", "--onto", new)
    )
    stranger = dev_stack.start(300, product="vps", price=Decimal("330.00"), period="P1M", plan="vps-l")
    assert error_line(hostlife(dev_stack, "vps", "restore-mail", old, "example.cz", "--onto", stranger)) == (
        f"error: refused: {stranger} belongs to another customer"
    )
    assert f"{stranger} belongs to another customer" in error_line(
        hostlife(dev_stack, "vps", "restore", old, "--onto", stranger)
    )
    eventually(lambda: len([i for i in dev_stack.status(old).invoices if i.status.value == "open"]) == 2)


def test_service_start_takes_a_vps_plan_and_refuses_an_unknown_one_or_a_tier(dev_stack: DevStack) -> None:
    """A VPS's size is its plan (policy/plans.toml); the catalog's S/M/L/XL tiers are gone."""
    common = ("service", "start", "--customer", "c-plan", "--email", "jana@example.cz", "--product", "vps")
    common += ("--price", "3600.00", "--expires-on", "2031-01-31", "--node", dev_stack.node)
    ok(dev_stack, *common, "--id", f"plan-{dev_stack.node}", "--plan", "vps-l")
    assert dev_stack.status(f"plan-{dev_stack.node}").plan == "vps-l"
    line = error_line(
        hostlife(dev_stack, *common, "--id", f"plan-x-{dev_stack.node}", "--plan", "vps-xxl"), 2
    )
    assert "vps has no plan 'vps-xxl'; its plans: vps-s, vps-m, vps-l" in line
    result = hostlife(dev_stack, *common, "--id", f"plan-t-{dev_stack.node}", "--tier", "L")
    assert result.exit_code == 2 and "--tier" in result.output


def test_a_services_file_with_a_tier_is_refused_pointing_to_the_plan() -> None:
    row = {
        "id": "vps-file",
        "customer": "c-file",
        "email": "jana@example.cz",
        "product": "vps",
        "price": "330.00",
        "period": "P1M",
        "expires_on": "2031-01-31",
    }
    with pytest.raises(ValueError, match=r"unknown field\(s\) tier \(a VPS's size is its plan: give plan"):
        spec_from_row({**row, "tier": "M"}, default_catalog())
    assert spec_from_row({**row, "plan": "vps-m"}, default_catalog()).plan == "vps-m"

"""`hostlife simulate` with the SPEC §6 events: upgrade, downgrade, refund, provider_delete/keep."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from policy.periods import add_months
from policy.pricing import round_money
from tests.starter.test_simulate import ROOT, lines_of, simulate

EXAMPLE = ROOT / "examples" / "hostico-plan-changes.json"


def of(lines: list[dict[str, Any]], service: str, kind: str, **match: Any) -> list[dict[str, Any]]:
    return [
        line
        for line in lines
        if line.get("service") == service
        and line["kind"] == kind
        and all(line.get(k) == v for k, v in match.items())
    ]


RON_PER_CZK = Decimal("0.204000")
"""The fixed development rate the simulator uses: 0.2000 RON/CZK (worker.DEVELOPMENT_RATES) + 2 %."""
EUR_PER_CZK = Decimal("0.04")
"""The fixed development ČNB rate for the EUR credit account."""


def assert_in_ron(invoice: dict[str, Any], price_czk: Decimal) -> None:
    """A Hostico invoice line: its CZK price, and its RON amount that price × the rate, rounded once."""
    assert (invoice["currency"], invoice["rate"], invoice["price_amount"]) == (
        "RON",
        str(RON_PER_CZK),
        str(price_czk),
    ), invoice
    assert invoice["amount"] == str(round_money(price_czk * RON_PER_CZK)), invoice


def test_the_plan_changes_example_to_the_heller() -> None:
    result = simulate(EXAMPLE)
    assert result.returncode == 0, result.stderr
    lines = lines_of(result)
    day0 = date.fromisoformat(lines[0]["at"][:10])
    d = date.fromordinal(day0.toordinal() + 100)
    year = (d - add_months(d, -12)).days  # 365, or 366 across a 29 February

    # web-up: 1200 → 2400 on day 2, 99 days left with the day itself; paid on day 5, switched then.
    [invoice] = of(lines, "web-up", "invoice", action="issued")
    assert invoice["purpose"] == "upgrade"
    assert_in_ron(invoice, round_money(Decimal(1200) * 99 / year))  # 325.48 CZK → 66.40 RON
    [paid] = of(lines, "web-up", "payment", result="applied")
    assert (paid["day"], paid["amount"]) == (5, invoice["amount"])
    [switched] = of(lines, "web-up", "plan_change", action="switched")
    assert (switched["day"], switched["to"], switched["price"]) == (5, "hosting-standard", "2400.00")

    # web-down: 3600 → 2400 on day 3, 98 days = 3 whole months × 100.00 = 300.00 CZK credit, on the
    # EUR credit account 300.00 × 0.04 = 12.00 EUR; an upgrade back on day 20 is within 60 days:
    # 1200 × 81 / year + 600.00 fee, never paid, voided on day 27.
    [credited] = of(lines, "web-down", "plan_change", action="credited")
    credit_eur = str(round_money(Decimal("300.00") * EUR_PER_CZK))
    assert (credited["amount"], credited["currency"]) == (credit_eur, "EUR") == ("12.00", "EUR")
    assert credited["converted"].startswith("300.00 CZK at fixed ")
    assert of(lines, "web-down", "credit") == []  # the account's own line, not the service's, shows it
    [account] = [line for line in lines if line.get("customer") == "c5" and line["kind"] == "credit"]
    assert (account["action"], account["amount"], account["balance"]) == ("refund", credit_eur, credit_eur)
    [fee_upgrade] = of(lines, "web-down", "invoice", action="issued")
    assert_in_ron(fee_upgrade, round_money(Decimal(1200) * 81 / year + 600))
    [voided] = of(lines, "web-down", "plan_change", action="voided")
    assert voided["day"] == 27

    # web-refund: full refund on day 10, minus one support hour of migration: 600.00; closed at once.
    [refund] = of(lines, "web-refund", "refund")
    assert (refund["day"], refund["amount"], refund["full"], refund["migration"]) == (
        10,
        "600.00",
        True,
        "600.00",
    )
    assert [line["state"] for line in of(lines, "web-refund", "state")] == ["active", "deleted", "closed"]

    # web-notice: notice on day 1, deleted 15 days later at midnight.
    [deleted] = of(lines, "web-notice", "provider_deletion", action="deleted")
    assert deleted["day"] == 16
    summary = lines[-1]
    assert summary["services"]["web-notice"]["state"] == "closed"
    assert summary["customers"]["c5"]["credit"] == credit_eur


SERVICE = '{"id": "s", "customer": "c", "product": "hosting", "expires_in_days": 50, "price": "1200.00"'


@pytest.mark.parametrize(
    ("service", "event", "message"),
    [
        (SERVICE + ', "plan": "gold"}', None, "hosting has no plan 'gold'"),
        (SERVICE + "}", '{"day": 1, "type": "upgrade", "service": "s"}', "needs 'plan'"),
        (
            SERVICE + "}",
            '{"day": 1, "type": "upgrade", "service": "s", "plan": "vps-l"}',
            "vps-l is a plan of vps",
        ),
        (SERVICE + "}", '{"day": 1, "type": "provider_delete", "service": "s"}', "needs 'reason'"),
        (SERVICE + "}", '{"day": 1, "type": "provider_keep"}', "needs 'service' or 'customer'"),
        (SERVICE + "}", '{"day": 1, "type": "refund", "service": "s", "hours": "-1"}', "hours must be"),
    ],
)
def test_bad_commerce_scenarios_are_one_line(
    tmp_path: Path, service: str, event: str | None, message: str
) -> None:
    scenario = {
        "profile": "hostico",
        "customers": [{"id": "c", "email": "a@b.si"}],
        "services": [json.loads(service)],
        "events": [json.loads(event)] if event else [],
        "until_day": 10,
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(scenario), encoding="utf-8")
    result = simulate(path)
    assert result.returncode == 2, result.stdout
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr

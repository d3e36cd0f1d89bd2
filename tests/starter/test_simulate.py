"""`hostlife simulate`: the SIMULATOR.md contract, through the real command."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.json"))
HOSTLIFE = [sys.executable, "-m", "starter.cli"]


def simulate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HOSTLIFE, "simulate", str(path)], capture_output=True, text=True, timeout=120, cwd=ROOT, check=False
    )


def lines_of(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_runs_and_follows_the_contract(example: Path) -> None:
    result = simulate(example)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = lines_of(result)
    assert lines[-1]["kind"] == "summary"
    stamps = [(line["at"], line["day"]) for line in lines]
    assert [s[0] for s in stamps] == sorted(s[0] for s in stamps), "lines come in time order"
    day0 = date.fromisoformat(lines[0]["at"][:10])
    for line in lines:
        assert {"at", "day", "kind"} <= line.keys()
        assert "service" in line or "customer" in line or line["kind"] == "summary"
        assert date.fromisoformat(line["at"][:10]) == day0 + timedelta(days=line["day"])
        assert line["at"][19:] in ("+01:00", "+02:00"), "Europe/Prague offsets"
        if line["kind"] == "state":
            assert line["state"] in {
                "active", "expired", "blocked", "suspended", "parked", "cancelled",
                "deleted", "closed", "outzone", "redemption", "quarantine", "released",
            }  # fmt: skip
        if line["kind"] == "payment":
            assert line["result"] in {"applied", "returned", "held", "duplicate"}
            assert {"reason", "vs", "amount", "payment_id"} <= line.keys()


def test_paid_late_while_blocked_renews_from_the_expiry_date() -> None:
    lines = lines_of(simulate(ROOT / "examples" / "hosting-paid-late-while-blocked.json"))
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_kind.setdefault(line["kind"], []).append(line)
    states = [(line["day"], line["state"]) for line in by_kind["state"]]
    assert states == [(0, "active"), (41, "blocked"), (45, "active")]
    invoice = by_kind["invoice"][0]
    assert (invoice["day"], invoice["action"], invoice["amount"], invoice["due"]) == (
        10,
        "issued",
        "1200.00",
        (date.fromisoformat(lines[0]["at"][:10]) + timedelta(days=40)).isoformat(),
    )
    renewed = by_kind["renewed"][0]
    d = date.fromisoformat(invoice["due"])
    assert renewed["expires_on"] == d.replace(year=d.year + 1).isoformat()
    assert lines[-1]["services"]["web-1"] == {"state": "active", "expires_on": renewed["expires_on"]}


def test_vps_never_paid_is_closed_on_schedule() -> None:
    lines = lines_of(simulate(ROOT / "examples" / "vps-never-paid-until-closed.json"))
    states = [(line["day"], line["state"]) for line in lines if line["kind"] == "state"]
    # D = day 20: blocked D+1, deleted D+31, backup purged 14 days later.
    assert states == [(0, "active"), (21, "blocked"), (51, "deleted"), (65, "closed")]
    hypervisor = [(line["day"], line["action"]) for line in lines if line["kind"] == "hypervisor"]
    # The provider backup is copied on the node before the delete and purged there 14 days later.
    assert hypervisor == [
        (21, "power_off"),
        (51, "keep_provider_backup"),
        (51, "delete"),
        (65, "purge_provider_backup"),
    ]


def test_stale_and_wrong_payments_are_held_and_a_duplicate_is_applied_once() -> None:
    lines = lines_of(simulate(ROOT / "examples" / "stale-vs-payment.json"))
    payments = [
        (line["day"], line["payment_id"], line["result"]) for line in lines if line["kind"] == "payment"
    ]
    assert payments == [
        (12, "bank-881", "held"),
        (14, "bank-882", "held"),
        (20, "bank-883", "applied"),
        (21, "bank-883", "duplicate"),
        (22, "bank-884", "held"),
    ]
    assert len([line for line in lines if line["kind"] == "renewed"]) == 1


def test_hostico_deferral_keeps_the_service_running_past_d_plus_8() -> None:
    lines = lines_of(simulate(ROOT / "examples" / "hostico-deferral.json"))
    states = [(line["day"], line["state"]) for line in lines if line["kind"] == "state"]
    # D = day 31: expired D+1 (grace), block would be D+8 = day 39 but the deferral holds it; paid day 44.
    assert states == [(0, "active"), (32, "expired"), (44, "active")]


@pytest.mark.parametrize(
    ("scenario", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"services": [], "until_day": 10}', "services"),
        (
            '{"customers": [{"id": "c", "email": "a@b.cz"}], "services": [{"id": "s", "customer": "c", '
            '"product": "toaster", "expires_in_days": 5, "price": "1.00"}], "until_day": 10}',
            "unknown product 'toaster'",
        ),
        (
            '{"customers": [{"id": "c", "email": "a@b.cz"}], "services": [{"id": "s", "customer": "c", '
            '"product": "hosting", "expires_in_days": 5, "price": "1.001"}], "until_day": 10}',
            "more than 2 decimal places",
        ),
        (
            '{"customers": [{"id": "c", "email": "a@b.cz"}], "services": [{"id": "s", "customer": "c", '
            '"product": "hosting", "expires_in_days": 5, "price": "1.00"}], '
            '"events": [{"day": 3, "type": "explode", "service": "s"}], "until_day": 10}',
            "events.0.type",
        ),
        (
            '{"customers": [{"id": "c", "email": "a@b.cz"}], "services": [{"id": "s", "customer": "c", '
            '"product": "domain", "name": "example.zz", "expires_in_days": 5, "price": "1.00"}], "until_day": 10}',
            "TLD .zz",
        ),
        (
            '{"customers": [{"id": "c", "email": "a@b.cz"}], "services": [{"id": "s", "customer": "c", '
            '"product": "hosting", "expires_in_days": 5, "price": "1.00"}], '
            '"events": [{"day": 3, "type": "pay", "service": "nope"}], "until_day": 10}',
            "unknown service 'nope'",
        ),
    ],
)
def test_a_bad_scenario_is_one_line_on_stderr(tmp_path: Path, scenario: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(scenario, encoding="utf-8")
    result = simulate(path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr


def test_simulate_exits_cleanly_twenty_times_in_a_row() -> None:
    example = ROOT / "examples" / "hosting-paid-late-while-blocked.json"
    for attempt in range(20):
        result = simulate(example)
        assert result.returncode == 0, f"run {attempt + 1}: exit {result.returncode}: {result.stderr[-500:]}"
        assert lines_of(result)[-1]["kind"] == "summary"


def test_automatic_renewal_from_credit_shows_top_ups_debits_and_the_balance() -> None:
    lines = lines_of(simulate(ROOT / "examples" / "auto-renew-from-credit.json"))
    credit = [
        (line["day"], line.get("service"), line["action"], line["balance"])
        for line in lines
        if line["kind"] == "credit"
    ]
    assert credit[0] == (0, None, "top_up", "500.00")
    assert (10, "vps-5", "debit", "170.00") in credit, "VPS (D = day 40) renewed from credit on D-30"
    assert (15, "web-5", "debit_failed", "170.00") in credit, "hosting (D = day 45) short on D-30"
    assert (20, None, "top_up", "1170.00") in credit
    assert not [line for line in lines if line["kind"] == "invoice" and line["day"] < 46], (
        "no invoice while credit is tried"
    )
    web_states = [
        (line["day"], line["state"])
        for line in lines
        if line["kind"] == "state" and line["service"] == "web-5"
    ]
    assert web_states == [(0, "active"), (46, "blocked")], "still short on D: expires like an unpaid service"
    summary = lines[-1]
    assert summary["customers"]["c5"]["credit"] == credit[-1][3]


def test_a_deleted_vps_is_restored_onto_a_new_one_for_the_fee() -> None:
    lines = lines_of(simulate(ROOT / "examples" / "vps-restore-onto-new.json"))
    old = [
        (line["day"], line["kind"], line.get("action") or line.get("state"))
        for line in lines
        if line.get("service") == "vps-8"
    ]
    assert (36, "hypervisor", "keep_provider_backup") in old and (36, "state", "deleted") in old
    rejected = [line for line in lines if line["kind"] == "command"]
    assert [(r["day"], r["result"], r["reason"]) for r in rejected] == [
        (38, "rejected", "no service vps-404 in hostlife"),
        (
            39,
            "rejected",
            "vps-10 is on plan vps-s (tier 1), lower than the deleted server's vps-m (tier 2): "
            "restore needs the same or a higher plan tier",
        ),
    ]
    fee = [line for line in lines if line["kind"] == "invoice" and line.get("purpose") == "restore"]
    assert [(f["day"], f["amount"]) for f in fee] == [(40, "500.00")]
    assert [
        (line["day"], line["onto"]) for line in lines if line.get("action") == "restore_provider_backup"
    ] == [(41, "vps-9")]
    assert [
        (line["day"], line["service"], line["from"])
        for line in lines
        if line["kind"] == "restored_from_backup"
    ] == [(41, "vps-9", "vps-8")]
    assert (50, "state", "closed") in old  # the provider backup is purged 14 days after deletion
    assert lines[-1]["services"]["vps-9"]["state"] == "active"

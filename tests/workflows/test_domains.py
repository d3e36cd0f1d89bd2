"""Domains follow their registry's rules (SPEC §4, TLD table), not the product table.

Every check is the calendar day relative to D of a state or a registrar action, through whole
lifecycles on the time-skipping server.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from policy.payments import InvoicePurpose
from policy.periods import add_period
from tests.workflows.harness import lab
from tests.workflows.lifecycle import at_day, entries, offsets, open_invoice, pay, service, unique

PRICE = Decimal("250.00")


@dataclass(frozen=True)
class Registry:
    tld: str
    states: list[tuple[str, int]]
    registrar: list[tuple[str, int]]
    last_renewable_day: int | None
    """Last day relative to D on which the original invoice still renews the domain."""
    paid_restore_fee: Decimal | None
    """Registry restore fee of the redemption/quarantine invoice, where there is one."""


TLDS = [
    # .cz: works through D+30, out of the zone D+31, renewable through D+60, released D+61.
    Registry(
        "cz",
        [("expired", 1), ("outzone", 31), ("released", 61)],
        [("zone_remove", 31), ("release", 61)],
        60,
        None,
    ),
    # .sk: protective period (not working) from D+1, renewable through D+40, deleted D+41.
    Registry("sk", [("outzone", 1), ("released", 41)], [("zone_remove", 1), ("release", 41)], 40, None),
    # .eu: quarantine from D itself, only a paid release (40 days), then released.
    Registry("eu", [("quarantine", 0), ("released", 40)], [("release", 40)], None, Decimal("1500.00")),
    # gTLD: out of the zone D+1, original conditions through D+30, redemption D+31, released D+61.
    Registry(
        "com",
        [("outzone", 1), ("redemption", 31), ("released", 61)],
        [("zone_remove", 1), ("release", 61)],
        30,
        Decimal("2500.00"),
    ),
]


def _domain(tld: str) -> dict[str, object]:
    return {"product": "domain", "name": f"{unique('example')}.{tld}", "price": PRICE}


@pytest.mark.parametrize("rules", TLDS, ids=[r.tld for r in TLDS])
async def test_unpaid_domain_is_released_on_its_registry_days(
    env: WorkflowEnvironment, rules: Registry
) -> None:
    async with lab(env) as l, service(l, expires_in_days=40, **_domain(rules.tld)) as handle:
        d = (await l.status(handle)).expires_on
        result = await handle.result()
        journal = await l.journal(handle)

        assert result.final_state == "released"
        assert offsets(journal, l, d) == [("active", -40), *rules.states]
        assert offsets(journal, l, d, "registrar", "action") == rules.registrar
        assert l.registrar.calls == []  # nothing is renewed at the registry without a payment
        renewal = [e for e in entries(journal, "invoice") if e.data.get("purpose") == "renewal"]
        assert [(e.data["action"], (l.clock.today(e.at) - d).days) for e in renewal] == [("issued", -30)]
        paid_restore = [
            e for e in entries(journal, "invoice", action="issued") if e.data["purpose"] == "redemption"
        ]
        if rules.paid_restore_fee is None:
            assert paid_restore == []
        else:
            first_paid_restore_day = rules.states[-2][1]
            assert [(e.data["amount"], (l.clock.today(e.at) - d).days) for e in paid_restore] == [
                (str(PRICE + rules.paid_restore_fee), first_paid_restore_day)
            ]
        # Whatever is still open when the registry releases the domain is cancelled that day.
        cancelled = offsets(journal, l, d, "invoice", "action")
        assert cancelled[-1] == ("cancelled", rules.states[-1][1])


RENEWABLE = [r for r in TLDS if r.last_renewable_day is not None]


@pytest.mark.parametrize("rules", RENEWABLE, ids=[r.tld for r in RENEWABLE])
async def test_original_invoice_renews_through_the_last_renewable_day(
    env: WorkflowEnvironment, rules: Registry
) -> None:
    assert rules.last_renewable_day is not None
    async with lab(env) as l, service(l, expires_in_days=40, **_domain(rules.tld)) as handle:
        d = (await l.status(handle)).expires_on
        await at_day(l, d, -30)
        invoice = await open_invoice(l, handle)
        paid_on = await at_day(l, d, rules.last_renewable_day)
        outcome = await pay(handle, invoice)
        assert outcome.result == "applied", outcome.reason

        status = await l.status(handle)
        assert status.state == "active"
        assert status.expires_on == add_period(d, "P1Y")
        journal = await l.journal(handle)
        renewed = [c for c in l.registrar.calls if c[0] == "renew"]
        assert len(renewed) == 1
        assert l.registrar.expiries[renewed[0][1]] == add_period(d, "P1Y")
        registrar = [(e.data["action"], l.clock.today(e.at)) for e in entries(journal, "registrar")]
        assert ("renew", paid_on) in registrar
        assert ("zone_restore", paid_on) in registrar  # it was out of the zone
        assert offsets(journal, l, d)[-1] == ("active", rules.last_renewable_day)


@pytest.mark.parametrize("rules", RENEWABLE, ids=[r.tld for r in RENEWABLE])
async def test_original_invoice_no_longer_renews_the_day_after(
    env: WorkflowEnvironment, rules: Registry
) -> None:
    """The day after the last renewable day the domain is in redemption (payment held) or released
    (the service's workflow has ended; late payments are the payment router's to queue)."""
    assert rules.last_renewable_day is not None
    day_after = rules.last_renewable_day + 1
    async with lab(env) as l, service(l, expires_in_days=40, **_domain(rules.tld)) as handle:
        d = (await l.status(handle)).expires_on
        await at_day(l, d, -30)
        invoice = await open_invoice(l, handle)
        await at_day(l, d, day_after)
        if dict(rules.states).get("redemption") == day_after:
            outcome = await pay(handle, invoice)
            assert outcome.result == "held", outcome
            assert [p.payment.payment_id for p in l.billing.held_payments()] == [outcome.payment_id]
            status = await l.status(handle)
            assert (status.state, status.expires_on) == ("redemption", d)
        else:
            assert dict(rules.states)["released"] == day_after
            result = await handle.result()
            assert (result.final_state, result.expires_on, result.renewals) == ("released", d, 0)
            described = await handle.describe()
            assert described.status == WorkflowExecutionStatus.COMPLETED
        assert not [c for c in l.registrar.calls if c[0] == "renew"]


async def test_cz_paid_during_outzone_is_renewed_and_back_in_the_zone(env: WorkflowEnvironment) -> None:
    async with lab(env) as l, service(l, expires_in_days=40, **_domain("cz")) as handle:
        d = (await l.status(handle)).expires_on
        await at_day(l, d, 35)
        assert (await l.status(handle)).state == "outzone"
        invoice = await open_invoice(l, handle)
        before = (await l.journal(handle))[-1].sequence
        assert (await pay(handle, invoice)).result == "applied"
        journal = [e for e in await l.journal(handle) if e.sequence > before]
        registrar = [e.data["action"] for e in entries(journal, "registrar")]
        assert registrar == ["renew", "zone_restore"]
        assert [e.data for e in entries(journal, "renewed")] == [
            {"expires_on": add_period(d, "P1Y").isoformat(), "period": "P1Y"}
        ]
        assert offsets(journal, l, d) == [("active", 35)]
        # The next cycle runs from the new D: invoice 30 days before it, nothing released.
        status = await l.status(handle)
        assert status.upcoming[0].kind == "issue_invoice"
        assert status.upcoming[0].on == add_period(d, "P1Y") - timedelta(days=30)


async def test_com_in_redemption_is_restored_by_the_redemption_invoice(env: WorkflowEnvironment) -> None:
    async with lab(env) as l, service(l, expires_in_days=40, **_domain("com")) as handle:
        d = (await l.status(handle)).expires_on
        await at_day(l, d, -30)
        renewal = await open_invoice(l, handle)
        await at_day(l, d, 35)
        status = await l.status(handle)
        assert status.state == "redemption"
        journal = await l.journal(handle)
        cancelled = entries(journal, "invoice", action="cancelled", vs=renewal.variable_symbol)
        assert [(l.clock.today(e.at) - d).days for e in cancelled] == [31]
        redemption = await open_invoice(l, handle, InvoicePurpose.REDEMPTION)
        assert redemption.amount == PRICE + Decimal("2500.00")
        assert redemption.variable_symbol != renewal.variable_symbol
        assert redemption.issued_on == d + timedelta(days=31)

        # The cancelled renewal VS no longer renews: held for the billing department.
        stale = await pay(handle, renewal)
        assert stale.result == "held"
        assert "cancelled" in stale.reason
        assert (await l.status(handle)).state == "redemption"

        paid = await pay(handle, redemption)
        assert paid.result == "applied", paid.reason
        status = await l.status(handle)
        assert status.state == "active"
        assert status.expires_on == add_period(d, "P1Y")
        actions = [a for a, _ in l.registrar.calls]
        assert actions == ["redemption_restore", "renew"]
        journal = await l.journal(handle)
        restored = [(e.data["action"], (l.clock.today(e.at) - d).days) for e in entries(journal, "registrar")]
        assert restored[-2:] == [("redemption_restore", 35), ("renew", 35)]


async def test_eu_in_quarantine_only_the_paid_release_renews(env: WorkflowEnvironment) -> None:
    async with lab(env) as l, service(l, expires_in_days=40, **_domain("eu")) as handle:
        d = (await l.status(handle)).expires_on
        await at_day(l, d, -30)
        renewal = await open_invoice(l, handle)
        await at_day(l, d, 0)
        assert (await l.status(handle)).state == "quarantine"
        assert (await pay(handle, renewal)).result == "held"
        release = await open_invoice(l, handle, InvoicePurpose.REDEMPTION)
        assert release.amount == PRICE + Decimal("1500.00")
        assert (await pay(handle, release)).result == "applied"
        status = await l.status(handle)
        assert (status.state, status.expires_on) == ("active", add_period(d, "P1Y"))

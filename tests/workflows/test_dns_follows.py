"""SPEC §4: DNS hosting follows its domain — blocked (records resolve, not editable) while the domain
is out of the zone, back with it when it is paid, deleted when the registry releases it."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from temporalio.testing import WorkflowEnvironment

from policy.payments import InvoicePurpose
from tests.workflows.harness import lab
from tests.workflows.lifecycle import at_day, eventually, offsets, open_invoice, pay, service, unique


async def test_dns_hosting_follows_its_domain_through_outzone_payment_and_release(
    env: WorkflowEnvironment,
) -> None:
    async with lab(env) as l:
        domain_name = f"{unique('firma')}.cz"
        async with service(
            l, product="domain", name=domain_name, price=Decimal("250.00"), expires_in_days=20
        ) as domain:
            domain_id = domain.id.removeprefix("service-")
            async with service(
                l,
                product="dns",
                name=domain_name,
                price=Decimal("120.00"),
                expires_in_days=20,
                follows=domain_id,
            ) as dns:
                dns_id = dns.id.removeprefix("service-")
                d = (await l.status(domain)).expires_on
                await at_day(l, d, 32)
                assert (await l.status(domain)).state == "outzone"
                status = await eventually(lambda: l.status(dns), lambda s: s.state == "blocked")
                assert status.state == "blocked"
                assert ("block", dns_id) in l.platform.calls
                assert offsets(await l.journal(dns), l, d)[-1] == ("blocked", 31), (
                    "blocked the day the domain left the zone"
                )

                assert (
                    await pay(domain, await open_invoice(l, domain, InvoicePurpose.RENEWAL))
                ).result == "applied"
                # Active as soon as the domain says so; switched on when the platform has done it.
                status = await eventually(
                    lambda: l.status(dns),
                    lambda s: s.state == "active" and ("unblock", dns_id) in l.platform.calls,
                )
                assert status.state == "active"
                assert ("unblock", dns_id) in l.platform.calls
                assert status.expires_on == d.replace(year=d.year + 1), "it takes the domain's new expiry"

                # Next year nobody pays: the registry releases the domain on D+61, the zone goes with it.
                d2 = status.expires_on
                await at_day(l, d2, 62)
                assert (await l.status(domain)).state == "released"
                status = await eventually(lambda: l.status(dns), lambda s: s.state == "deleted")
                assert status.state == "deleted"
                assert ("delete", dns_id) in l.platform.calls
                assert status.backup_until == d2 + timedelta(days=61 + 14), (
                    "records history kept for a restore"
                )


async def test_a_dns_hosting_without_its_domain_is_flagged(env: WorkflowEnvironment) -> None:
    async with (
        lab(env) as l,
        service(
            l,
            product="dns",
            name="nowhere.cz",
            price=Decimal("120.00"),
            expires_in_days=20,
            follows="no-such-domain",
        ) as dns,
    ):
        journal = await eventually(
            lambda: l.journal(dns), lambda j: any(e.kind == "action_failed" for e in j)
        )
        assert [e.data["action"] for e in journal if e.kind == "action_failed"] == ["follow domain"]
        assert (await l.status(dns)).state == "active"

"""kill -9 the worker in the middle of a side effect, start another, count the effect at the peer.

Each case pauses one side effect *after* the peer did the work and before the worker could report
it: the ledger has written the invoice, the mail catcher has stored the notice, the registry has
renewed the domain, libvirt has powered the VPS off. The worker process is then SIGKILLed (no
shutdown, no completion), the pause is lifted and a fresh worker process is started. Temporal
retries the activity once its start-to-close timeout runs out; the retry carries the same
idempotency key, and the peers must show the effect exactly once:

| case | peer | counted |
|---|---|---|
| invoice | SQLite ledger | invoices of the service (the retry returns the same VS) |
| notice | SMTP catcher | stored messages of that notice (retry re-sent the same Message-ID) |
| domain renewal | EPP registry (TLS) | executed `<domain:renew>`s (the retry's stale curExpDate is refused) |
| VPS power-off | libvirt test driver | power-offs that changed the VM |

A retry comes only once Temporal notices the dead worker: at the start-to-close timeout for the
activities that finish in seconds (30 s billing, 60 s + 10 s backoff mail), at the heartbeat
timeout for the long ones (activities/liveness.py: 30 s registrar, 1 min hypervisor; before
heartbeats these waited out 2 and 10 minutes). The second test's deadlines (2 and 3 minutes)
fail if heartbeats stop working.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHandle, WorkflowUpdateStage

from activities.billing import PaymentReceived
from activities.registrar import renewed_expiry
from policy.clock import Clock
from starter.services import start_service
from tests.reliability.crash_lab import CrashLab, crash_lab, eventually, wait_until
from workflows.models import Customer, ServiceSpec, SuspendRequest
from workflows.subscription import SubscriptionWorkflow

Handle = WorkflowHandle[SubscriptionWorkflow, Any]


async def start(lab: CrashLab, product: str, expires_in_days: int, **fields: Any) -> Handle:
    today = Clock().today(datetime.now(UTC))
    spec = ServiceSpec(
        service_id=fields.pop("service_id", f"crash-{product}-{uuid.uuid4().hex[:8]}"),
        customer=Customer(id="c-crash", email="crash@example.cz", language="en"),
        product=product,
        price=fields.pop("price", Decimal("1200.00")),
        expires_on=today + timedelta(days=expires_in_days),
        **fields,
    )
    return await start_service(lab.env.client, spec, task_queue=lab.settings.task_queue)


async def journal_kinds(handle: Handle) -> list[tuple[str, dict[str, Any]]]:
    return [(e.kind, e.data) for e in await handle.query(SubscriptionWorkflow.journal, 0)]


async def test_kill_9_mid_invoice_and_mid_notice_issues_and_mails_exactly_once(tmp_path: Path) -> None:
    async with crash_lab(tmp_path) as lab:
        invoice_service = f"crash-invoice-{uuid.uuid4().hex[:6]}"
        mail_service = f"crash-mail-{uuid.uuid4().hex[:6]}"
        invoice_reached = lab.block("issue_invoice", invoice_service)
        mail_reached = lab.store.hold_first(mail_service, "invoice_issued")
        first = await lab.spawn_worker()
        # D in 20 days: the invoice (D-30) is overdue, so each service issues it and mails it at once.
        invoicing = await start(lab, "hosting", 20, service_id=invoice_service)
        mailing = await start(lab, "hosting", 20, service_id=mail_service)

        await wait_until(lambda: invoice_reached.exists() and mail_reached.is_set(), 60, "both side effects")
        assert len([i for i in lab.ledger().invoices() if i.service_id == invoice_service]) == 1
        assert len(lab.mails(mail_service, "invoice_issued")) == 1
        await lab.kill(first)
        lab.unblock_all()
        await lab.spawn_worker()

        async def mailed(handle: Handle) -> bool:
            return ("mail", {"template": "invoice_issued", "to": "crash@example.cz"}) in await journal_kinds(
                handle
            )

        await eventually(lambda: mailed(invoicing), 150, "the invoice notice after the crash")
        await eventually(lambda: mailed(mailing), 150, "the held notice after the crash")

        # The ledger: one invoice for the service, although issue_invoice ran in both processes.
        invoices = [i for i in lab.ledger().invoices() if i.service_id == invoice_service]
        assert len(invoices) == 1
        calls = [c for c in lab.calls() if c["call"] == "issue_invoice" and c["subject"] == invoice_service]
        assert len({c["pid"] for c in calls}) == 2 and len({c["key"] for c in calls}) == 1
        assert [c["changed"] for c in calls] == [True, False]
        status = await invoicing.query(SubscriptionWorkflow.status)
        assert status.open_invoice is not None
        assert status.open_invoice.variable_symbol == invoices[0].variable_symbol
        [invoice_mail] = lab.mails(invoice_service, "invoice_issued")
        assert invoices[0].variable_symbol in invoice_mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]

        # The SMTP peer: the retry delivered again (same Message-ID), the catcher stored it once.
        assert lab.store.deliveries[(mail_service, "invoice_issued")] == 2
        assert len(lab.mails(mail_service, "invoice_issued")) == 1
        mail_journal = [d for k, d in await journal_kinds(mailing) if k in ("mail", "mail_failed")]
        assert [d["template"] for d in mail_journal] == ["invoice_issued"]
        assert len([i for i in lab.ledger().invoices() if i.service_id == mail_service]) == 1


async def test_kill_9_mid_domain_renewal_and_mid_vps_power_off_does_each_once(tmp_path: Path) -> None:
    async with crash_lab(tmp_path, libvirt=True) as lab:
        domain = f"crash-{uuid.uuid4().hex[:8]}.com"
        today = Clock().today(datetime.now(UTC))
        lab.registry.add_domain(domain, today + timedelta(days=20))
        lab.registry.hold_renew = True
        vps_reached = lab.block("power_off", "vps-a")
        first = await lab.spawn_worker()
        renewing = await start(lab, "domain", 20, name=domain, price=Decimal("290.00"))
        vps = await start(lab, "vps", 200, name="vps-a", node="node-a", price=Decimal("3600.00"))

        async def open_invoice() -> Any:
            return (await renewing.query(SubscriptionWorkflow.status)).open_invoice

        invoice = await eventually(open_invoice, 60, "the domain's renewal invoice")
        await renewing.signal(
            SubscriptionWorkflow.payment_received,
            PaymentReceived(
                payment_id=f"crash-pay-{uuid.uuid4().hex[:6]}",
                variable_symbol=invoice.variable_symbol,
                amount=invoice.amount,
                received_at=datetime.now(UTC),
            ),
        )
        await vps.start_update(
            SubscriptionWorkflow.suspend_for_abuse,
            SuspendRequest(reason="spam"),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )
        await wait_until(
            lambda: lab.registry.renew_reached.is_set() and vps_reached.exists(), 60, "both effects"
        )
        assert lab.registry.count("renew", domain) == 1
        await lab.kill(first)
        lab.unblock_all()
        await lab.spawn_worker()

        async def renewed() -> bool:
            return (await renewing.query(SubscriptionWorkflow.status)).renewals == 1

        async def powered_off() -> bool:
            return any(k == "hypervisor" for k, _ in await journal_kinds(vps))

        # Heartbeat timeouts (30 s, 1 min), not start-to-close (2 min, 10 min), bring the retries.
        await eventually(renewed, 120, "the domain renewal after the crash", interval=2)
        await eventually(powered_off, 180, "the VPS power-off after the crash", interval=2)

        # The registry: one renew executed; the retry's curExpDate was stale and read back as done.
        assert lab.registry.count("renew", domain) == 1
        expiry = today + timedelta(days=20)
        assert lab.registry.domains[domain].expires_on == renewed_expiry(expiry, 1)
        status = await renewing.query(SubscriptionWorkflow.status)
        assert status.expires_on == lab.registry.domains[domain].expires_on
        assert [k for k, d in await journal_kinds(renewing) if k == "renewed"] == ["renewed"]

        # libvirt: power_off ran in both processes under one activity, and changed the VM once.
        offs = [c for c in lab.calls() if c["call"] == "power_off" and c["subject"] == "vps-a"]
        assert len({c["pid"] for c in offs}) == 2 and len({c["activity_id"] for c in offs}) == 1
        assert [c["changed"] for c in offs] == [True, False]
        assert [d["action"] for k, d in await journal_kinds(vps) if k == "hypervisor"] == ["power_off"]

"""The payment path (workflows/payment_path.py): a paid VPS is back on before its receipt is mailed.

The payment's update answers once the power-on is done; the receipt mail runs beside it, so a slow
mail relay no longer holds the ingress's HTTP answer. The journal still reads power-on, then mail.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from email.message import EmailMessage

from temporalio.testing import WorkflowEnvironment

from activities.mailer import RecordingMailer
from tests.workflows.harness import lab
from tests.workflows.lifecycle import at_day, entries, eventually, open_invoice, pay, service


class SlowRelayMailer(RecordingMailer):
    """A relay that takes payment receipts only when the test lets it (everything else at once)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.waiting = 0

    async def deliver(self, message: EmailMessage) -> None:
        if str(message["X-Hostlife-Template"]) == "payment_received":
            self.waiting += 1
            await self.release.wait()
        await super().deliver(message)


async def test_the_payment_answers_when_the_vps_is_on_without_waiting_for_the_receipt(
    env: WorkflowEnvironment,
) -> None:
    mailer = SlowRelayMailer()
    async with (
        lab(env, mailer=mailer) as l,
        service(l, product="vps", period="P1M", price=Decimal("330.00"), expires_in_days=20) as handle,
    ):
        d = (await l.status(handle)).expires_on
        await at_day(l, d, 3)
        status = await l.status(handle)
        assert status.state == "blocked"
        vm = status.vm_name
        assert vm is not None and l.hypervisor.running[vm] is False

        invoice = await open_invoice(l, handle)
        # Before the change the update waited for the receipt, i.e. for ever with this relay.
        outcome = await asyncio.wait_for(pay(handle, invoice), timeout=30)

        assert outcome.result == "applied"
        assert l.hypervisor.running[vm] is True, "the answer comes after the power-on"
        assert mailer.waiting == 1 and "payment_received" not in l.mails(), "the receipt is still out"
        journal = await l.journal(handle)
        assert entries(journal, "hypervisor", action="power_on")
        assert not entries(journal, "mail", template="payment_received")
        assert (await l.status(handle)).state == "active"

        mailer.release.set()
        journal = await eventually(
            lambda: l.journal(handle), lambda j: bool(entries(j, "mail", template="payment_received"))
        )
        power_on = entries(journal, "hypervisor", action="power_on")[-1]
        receipt = entries(journal, "mail", template="payment_received")[-1]
        assert receipt.sequence > power_on.sequence, "the journal reads power-on, then the receipt"
        assert l.mails().count("payment_received") == 1

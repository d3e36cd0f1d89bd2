"""Money in without a bank transfer, through whole lifecycles on the time-skipping server:
a stored card charged on invoice (SPEC §6), invoices in RON and credit in EUR (Hostico), by calendar day."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Response
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from activities.card_gateway import (
    CardChargeResult,
    ChargeCardInput,
    ChargeLedger,
    ComGateGateway,
    GatewayUnavailable,
    RecordingCardGateway,
)
from activities.exchange_rates import BnrRates, CnbRates, ExchangeRates
from policy.catalog import default_catalog
from starter.accounts import balance, top_up
from tests.comgate_peer import MERCHANT, SECRET, ComGatePeer
from tests.http_server import running
from tests.workflows.harness import lab
from tests.workflows.lifecycle import at_day, entries, offsets, open_invoice, pay, service, unique
from workflows.models import Customer
from workflows.money_models import StoredCard, StoredCardSetting
from workflows.subscription import SubscriptionWorkflow

RATES = Path(__file__).parent.parent / "fixtures" / "rates"
HOSTICO = default_catalog().profile("hostico").terms("hosting")
CARD = StoredCardSetting(card=StoredCard(token="INIT-0001", label="Visa •••• 4242"))


# ---------------------------------------------------------------- stored card


async def test_a_stored_card_pays_the_invoice_the_day_it_is_issued(env: WorkflowEnvironment) -> None:
    gateway = RecordingCardGateway()
    async with lab(env, card_gateway=gateway) as l, service(l, expires_in_days=40) as handle:
        d = (await l.status(handle)).expires_on
        await handle.execute_update(SubscriptionWorkflow.set_stored_card, CARD)
        await at_day(l, d, -30)
        status = await l.status(handle)
        assert status.expires_on == d.replace(year=d.year + 1), "renewed from D on the invoice day"
        [invoice] = status.invoices
        assert (invoice.status, invoice.amount) == ("paid", Decimal("1200.00"))
        [charged] = gateway.charges
        assert (charged.amount, charged.currency, charged.token) == (Decimal("1200.00"), "CZK", "INIT-0001")
        assert f":card:{invoice.variable_symbol}:" in charged.idempotency_key
        journal = await l.journal(handle)
        assert offsets(journal, l, d, "card", "action") == [("stored", -40), ("charged", -30)]
        [payment] = entries(journal, "payment")
        assert payment.data["result"] == "applied" and payment.data["payment_id"] == "card:card-000001"
        assert l.mails()[-2:] == ["invoice_issued", "payment_received"]
        assert l.billing.get_invoice(invoice.variable_symbol).status == "paid"
        # The next cycle is charged again, once, with its own key.
        await at_day(l, d.replace(year=d.year + 1), -30)
        assert len(gateway.charges) == 2
        assert gateway.charges[1].idempotency_key != charged.idempotency_key


class LostAnswerGateway(RecordingCardGateway):
    """Charges the card, then the answer is lost (a worker crash, a timeout): the activity retries."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def charge(self, request: ChargeCardInput) -> CardChargeResult:
        self.calls += 1
        result = await super().charge(request)
        if self.calls == 1:
            raise GatewayUnavailable("connection reset after the charge")
        return result


async def test_a_retry_after_a_lost_answer_finds_the_card_already_charged(env: WorkflowEnvironment) -> None:
    gateway = LostAnswerGateway()
    async with lab(env, card_gateway=gateway) as l, service(l, expires_in_days=40) as handle:
        d = (await l.status(handle)).expires_on
        await handle.execute_update(SubscriptionWorkflow.set_stored_card, CARD)
        await at_day(l, d, -29)
        status = await l.status(handle)
        assert gateway.calls == 2 and len(gateway.charges) == 1, "retried once, charged once"
        assert status.expires_on == d.replace(year=d.year + 1) and status.invoices[0].status == "paid"
        assert len(entries(await l.journal(handle), "payment", result="applied")) == 1


async def test_a_declined_card_leaves_the_invoice_open_and_tells_the_customer(
    env: WorkflowEnvironment,
) -> None:
    gateway = RecordingCardGateway(declined={"INIT-0001": "card expired"})
    async with lab(env, card_gateway=gateway) as l, service(l, expires_in_days=40) as handle:
        d = (await l.status(handle)).expires_on
        await handle.execute_update(SubscriptionWorkflow.set_stored_card, CARD)
        await at_day(l, d, -20)
        invoice = await open_invoice(l, handle)
        assert gateway.charges == []
        journal = await l.journal(handle)
        assert offsets(journal, l, d, "card", "action")[-1] == ("declined", -30)
        assert entries(journal, "card", action="declined")[0].data["reason"] == "card expired"
        assert "card_declined" in l.mails()
        declined = next(m for m in l.mailer.sent if m["X-Hostlife-Template"] == "card_declined")
        assert invoice.variable_symbol in str(declined["Subject"])
        # Nothing else changed: an ordinary bank payment renews it.
        assert (await pay(handle, invoice)).result == "applied"
        assert (await l.status(handle)).expires_on == d.replace(year=d.year + 1)


async def test_a_new_card_pays_the_invoice_the_old_one_could_not(env: WorkflowEnvironment) -> None:
    gateway = RecordingCardGateway(declined={"INIT-0001": "insufficient funds"})
    async with lab(env, card_gateway=gateway) as l, service(l, expires_in_days=40) as handle:
        d = (await l.status(handle)).expires_on
        await handle.execute_update(SubscriptionWorkflow.set_stored_card, CARD)
        await at_day(l, d, -25)
        invoice = await open_invoice(l, handle)
        # The same declined card stored again is not charged again for this invoice.
        again = await handle.execute_update(SubscriptionWorkflow.set_stored_card, CARD)
        assert "declined" in again.message
        assert (await l.status(handle)).open_invoice == invoice
        new_card = StoredCardSetting(card=StoredCard(token="INIT-0002", label="Mastercard •••• 5555"))
        answer = await handle.execute_update(SubscriptionWorkflow.set_stored_card, new_card)
        assert "paid" in answer.message
        status = await l.status(handle)
        assert status.expires_on == d.replace(year=d.year + 1) and status.invoices[0].status == "paid"
        assert [c.token for c in gateway.charges] == ["INIT-0002"]
        journal = await l.journal(handle)
        assert offsets(journal, l, d, "card", "action") == [
            ("stored", -40),
            ("declined", -30),
            ("stored", -25),
            ("stored", -25),
            ("charged", -25),
        ]


async def test_the_card_is_charged_through_comgate_exactly_once(env: WorkflowEnvironment) -> None:
    peer = ComGatePeer()
    with running(peer.app()) as peer_client:
        async with httpx.AsyncClient(timeout=10) as http:
            gateway = ComGateGateway(
                http, MERCHANT, SECRET, ChargeLedger(), base_url=str(peer_client.base_url), poll_interval=0.01
            )
            async with lab(env, card_gateway=gateway) as l, service(l, expires_in_days=40) as handle:
                d = (await l.status(handle)).expires_on
                await handle.execute_update(SubscriptionWorkflow.set_stored_card, CARD)
                await at_day(l, d, -29)
                status = await l.status(handle)
                assert status.expires_on == d.replace(year=d.year + 1)
                [payment] = peer.payments
                assert (payment.price, payment.curr, payment.init_recurring_id) == (
                    "120000",
                    "CZK",
                    "INIT-0001",
                )
                assert f":card:{status.invoices[0].variable_symbol}:" in payment.ref_id


async def test_removing_a_card_that_was_never_stored_is_refused(env: WorkflowEnvironment) -> None:
    async with lab(env) as l, service(l) as handle:
        with pytest.raises(WorkflowUpdateFailedError) as caught:
            await handle.execute_update(SubscriptionWorkflow.set_stored_card, StoredCardSetting(card=None))
        assert "no card is stored" in str(caught.value.cause)
        await handle.execute_update(SubscriptionWorkflow.set_stored_card, CARD)
        answer = await handle.execute_update(SubscriptionWorkflow.set_stored_card, StoredCardSetting())
        assert "removed" in answer.message


# ---------------------------------------------------------------- currency (Hostico)


@contextmanager
def central_banks() -> Iterator[str]:
    """ČNB's daily file and BNR's yearly archives, served from fixtures by a local HTTP peer."""
    app = FastAPI()
    cnb = (RATES / "cnb_denni_kurz_2025-01-03.txt").read_bytes()
    bnr = (RATES / "bnr_nbrfxrates2025_excerpt.xml").read_bytes()

    @app.get("/denni_kurz.txt")
    def daily() -> Response:
        return Response(content=cnb, media_type="text/plain")

    @app.get("/files/xml/years/{name}")
    def yearly(name: str) -> Response:
        return Response(content=bnr, media_type="application/xml")

    with running(app) as client:
        yield str(client.base_url)


def sources(http: httpx.AsyncClient, base: str) -> dict[str, ExchangeRates]:
    return {"CZK": CnbRates(http, url=f"{base}/denni_kurz.txt"), "RON": BnrRates(http, base_url=base)}


async def test_hostico_invoices_are_in_ron_at_the_bnr_rate_plus_two_percent(env: WorkflowEnvironment) -> None:
    with central_banks() as base:
        async with (
            httpx.AsyncClient(timeout=10) as http,
            lab(env, exchange_rates=sources(http, base)) as l,
            service(l, profile="hostico", price=Decimal("1200.00")) as handle,
        ):
            d = (await l.status(handle)).expires_on
            await at_day(l, d, -30)
            invoice = await open_invoice(l, handle)
            # BNR 2025-01-07: 0.1979 RON per CZK; + 2 % = 0.201858; 1200 × 0.201858 = 242.2296.
            assert (invoice.amount, invoice.currency) == (Decimal("242.23"), "RON")
            assert invoice.exchange_rate == Decimal("0.201858")
            assert invoice.price_amount == Decimal("1200.00")
            assert invoice.rate_source is not None and invoice.rate_source.startswith("BNR 2025-01-07 0.1979")
            ledger = l.billing.get_invoice(invoice.variable_symbol)
            assert (ledger.amount, ledger.currency, ledger.exchange_rate) == (
                Decimal("242.23"),
                "RON",
                Decimal("0.201858"),
            )
            issued = next(m for m in l.mailer.sent if m["X-Hostlife-Template"] == "invoice_issued")
            text = issued.get_body(("plain",)).get_content()  # type: ignore[union-attr]
            assert "242,23\xa0RON" in text, text  # Czech format, in the invoice's currency
            # The CZK price is not the amount: only the exact RON amount renews.
            assert (await pay(handle, invoice, amount=Decimal("1200.00"))).result == "held"
            # The exact number in the wrong currency is not the money either (a CZK transfer).
            wrong = await pay(handle, invoice, currency="CZK")
            assert (wrong.result, wrong.reason) == ("held", "payment in CZK for an invoice in RON")
            assert (await pay(handle, invoice, currency="RON", payment_id="ron-1")).result == "applied"
            assert (await l.status(handle)).expires_on == d.replace(year=d.year + 1)


async def test_a_ron_invoice_paid_without_a_stated_currency_is_paid_in_ron(env: WorkflowEnvironment) -> None:
    with central_banks() as base:
        async with (
            httpx.AsyncClient(timeout=10) as http,
            lab(env, exchange_rates=sources(http, base)) as l,
            service(l, profile="hostico", price=Decimal("1200.00")) as handle,
        ):
            d = (await l.status(handle)).expires_on
            await at_day(l, d, -30)
            invoice = await open_invoice(l, handle)
            assert (await pay(handle, invoice)).result == "applied"
            assert (await l.status(handle)).expires_on == d.replace(year=d.year + 1)


async def test_hostico_automatic_renewal_debits_eur_at_the_cnb_rate(env: WorkflowEnvironment) -> None:
    with central_banks() as base:
        async with httpx.AsyncClient(timeout=10) as http, lab(env, exchange_rates=sources(http, base)) as l:
            customer = Customer(id=unique("cust"), email="ana@example.ro")
            await top_up(
                env.client, customer.id, Decimal("100.00"), unique("top"), HOSTICO, task_queue=l.task_queue
            )
            async with service(
                l, profile="hostico", customer=customer, auto_renew=True, price=Decimal("1200.00")
            ) as handle:
                d = (await l.status(handle)).expires_on
                await at_day(l, d, -29)
                status = await l.status(handle)
                assert status.expires_on == d.replace(year=d.year + 1)
                assert status.invoices == []
                [debit] = entries(await l.journal(handle), "credit", action="debit")
                # ČNB 2025-01-03: 25.205 CZK per EUR; 1200 / 25.205 = 47.6096… EUR.
                assert (debit.data["amount"], debit.data["currency"]) == ("47.61", "EUR")
                assert "ČNB 2025-01-03" in debit.data["converted"]
            found = await balance(env.client, customer.id)
            assert found is not None and found.balance == Decimal("52.39")

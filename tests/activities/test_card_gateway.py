"""The ComGate adapter against a local ComGate peer over real HTTP: exactly one charge per key."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.card_gateway import (
    CardActivities,
    ChargeCardInput,
    ChargeLedger,
    ChargePending,
    ChargeUncertain,
    ComGateGateway,
    GatewayUnavailable,
    RecordingCardGateway,
    UnconfiguredCardGateway,
    to_minor_units,
)
from tests.comgate_peer import MERCHANT, SECRET, ComGatePeer
from tests.http_server import running


def charge(key: str = "service-s1:card:2026000001", token: str = "INIT-0001") -> ChargeCardInput:
    return ChargeCardInput(
        idempotency_key=key,
        token=token,
        amount=Decimal("1234.50"),
        currency="CZK",
        label="VS 2026000001",
        email="jana@example.cz",
        service_id="s1",
        variable_symbol="2026000001",
    )


@contextmanager
def peer_url(peer: ComGatePeer) -> Iterator[str]:
    with running(peer.app()) as client:
        yield str(client.base_url)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def gateway(http: httpx.AsyncClient, url: str, ledger: ChargeLedger | None = None) -> ComGateGateway:
    return ComGateGateway(
        http, MERCHANT, SECRET, ledger or ChargeLedger(), base_url=url, test=True, poll_interval=0.01
    )


async def test_a_charge_sends_the_documented_recurring_request_and_reads_paid(
    http: httpx.AsyncClient,
) -> None:
    peer = ComGatePeer()
    with peer_url(peer) as url:
        result = await gateway(http, url).charge(charge())
    assert result.paid and result.transaction_id == "AB12-CD34-0001" and not result.repeated
    method, form = peer.requests[0]
    assert method == "recurring"
    assert form == {
        "merchant": MERCHANT,
        "secret": SECRET,
        "test": "true",
        "price": "123450",
        "curr": "CZK",
        "label": "VS 2026000001",
        "refId": "service-s1:card:2026000001",
        "email": "jana@example.cz",
        "prepareOnly": "true",
        "initRecurringId": "INIT-0001",
    }
    assert peer.requests[1] == (
        "status",
        {"merchant": MERCHANT, "secret": SECRET, "transId": "AB12-CD34-0001"},
    )


async def test_a_retried_key_only_reads_the_status_and_never_charges_again(http: httpx.AsyncClient) -> None:
    peer = ComGatePeer()
    ledger = ChargeLedger()
    with peer_url(peer) as url:
        first = await gateway(http, url, ledger).charge(charge())
        # A new worker process with the same ledger file, e.g. after a crash.
        again = await gateway(http, url, ledger).charge(charge())
    assert len(peer.payments) == 1
    assert again.paid and again.repeated and again.transaction_id == first.transaction_id


async def test_a_declined_card_is_an_answer_not_an_error_and_is_not_charged_again(
    http: httpx.AsyncClient,
) -> None:
    peer = ComGatePeer(declined_tokens={"INIT-EXPIRED"})
    ledger = ChargeLedger()
    with peer_url(peer) as url:
        result = await gateway(http, url, ledger).charge(charge(token="INIT-EXPIRED"))
        again = await gateway(http, url, ledger).charge(charge(token="INIT-EXPIRED"))
    assert not result.paid and result.message
    assert not again.paid and again.repeated
    assert len(peer.payments) == 1


async def test_a_request_comgate_refuses_creates_nothing_so_a_later_attempt_may_charge(
    http: httpx.AsyncClient,
) -> None:
    peer = ComGatePeer(refused_tokens={"INIT-GONE"})
    ledger = ChargeLedger()
    with peer_url(peer) as url:
        refused = await gateway(http, url, ledger).charge(charge(token="INIT-GONE"))
        assert not refused.paid and "1400" in refused.message
        peer.refused_tokens.clear()
        paid = await gateway(http, url, ledger).charge(charge(token="INIT-GONE"))
    assert paid.paid and len(peer.payments) == 1


async def test_a_lost_answer_is_never_charged_twice(http: httpx.AsyncClient) -> None:
    peer = ComGatePeer(fail_after_create=1)
    ledger = ChargeLedger()
    with peer_url(peer) as url:
        with pytest.raises(GatewayUnavailable):
            await gateway(http, url, ledger).charge(charge())
        with pytest.raises(ChargeUncertain, match="ComGate portal"):
            await gateway(http, url, ledger).charge(charge())
    assert len(peer.payments) == 1, "the first attempt did charge; the retry must not"


async def test_an_unreachable_gateway_charged_nothing_and_the_next_attempt_may(
    http: httpx.AsyncClient,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    ledger = ChargeLedger()
    with pytest.raises(GatewayUnavailable) as caught:
        await gateway(http, closed, ledger).charge(charge())
    assert caught.value.created_nothing
    peer = ComGatePeer()
    with peer_url(peer) as url:
        assert (await gateway(http, url, ledger).charge(charge())).paid
    assert len(peer.payments) == 1


async def test_a_pending_payment_is_polled_until_decided_then_left_pending(http: httpx.AsyncClient) -> None:
    peer = ComGatePeer(pending_polls=2)
    ledger = ChargeLedger()
    with peer_url(peer) as url:
        assert (await gateway(http, url, ledger).charge(charge())).paid
        peer.pending_polls = 50
        with pytest.raises(ChargePending):
            await gateway(http, url, ledger).charge(charge(key="other-key"))
        # The retry of the pending one asks only its status.
        with pytest.raises(ChargePending):
            await gateway(http, url, ledger).charge(charge(key="other-key"))
    assert len(peer.payments) == 2


def test_prices_are_sent_in_minor_units_and_sub_heller_amounts_are_refused() -> None:
    assert to_minor_units(Decimal("1200.00")) == "120000"
    assert to_minor_units(Decimal("0.10")) == "10"
    with pytest.raises(ValueError):
        to_minor_units(Decimal("1.005"))


async def test_the_ledger_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "charges.sqlite"
    ledger = ChargeLedger(path)
    assert ledger.begin("k") == (True, None)
    ledger.record("k", "T-1")
    assert ChargeLedger(path).begin("k") == (False, "T-1")


async def test_the_activity_tells_temporal_what_to_retry() -> None:
    env = ActivityEnvironment()
    with pytest.raises(ApplicationError) as caught:
        await env.run(CardActivities(UnconfiguredCardGateway()).charge_stored_card, charge())
    assert caught.value.type == "ChargeUncertain" and caught.value.non_retryable
    recording = RecordingCardGateway(declined={"INIT-X": "card expired"})
    activities = CardActivities(recording)
    assert (await env.run(activities.charge_stored_card, charge())).paid
    assert (await env.run(activities.charge_stored_card, charge())).repeated
    declined = await env.run(activities.charge_stored_card, charge(key="k2", token="INIT-X"))
    assert not declined.paid and declined.message == "card expired"
    assert len(recording.charges) == 1

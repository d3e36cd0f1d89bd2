"""Card gateway: charging a customer's stored card (recurring payment) for an invoice.

    CardGatewayError
     ├── GatewayUnavailable   (network, HTTP error, the gateway's own 1100/1200/1500: retried)
     ├── ChargePending        (the gateway has not decided yet: retried, only the status is asked again)
     └── ChargeUncertain      (an earlier attempt died mid-request: not retried, ops look it up by refId)

A decline is not an error: `charge` answers `CardChargeResult(paid=False, message=...)`, the invoice
stays open for an ordinary payment and the customer is told.

`ComGateGateway` speaks ComGate's HTTP API (apidoc.comgate.cz): `POST /v1.0/recurring` with the
merchant id and secret, `price` in hellers/cents, `curr`, `label`, `refId`, `email`,
`prepareOnly=true` and `initRecurringId` (the transaction id of the customer's first, card-storing
payment: the "stored card token"); the answer is form-encoded `code=0&message=OK&transId=...`.
`POST /v1.0/status` with `transId` answers the payment's `status` (`PAID`, `CANCELLED`, `PENDING`,
`AUTHORIZED`).

ComGate does not deduplicate on `refId` (several payments may share one), so exactly-once is ours:
a `ChargeLedger` remembers, per idempotency key, that a charge was started and which `transId` the
gateway gave it. A retried or re-run activity with a known `transId` only asks its status ("already
paid" is success); one whose earlier attempt died between sending and recording cannot know whether
the card was charged, so it refuses (`ChargeUncertain`) instead of charging twice. The idempotency key
is also sent as `refId`, so ops find the payment in the ComGate portal.

`RecordingCardGateway` is the test and simulator double: it remembers every charge by key, so a
repeated key answers the first result without charging again, and declines the tokens it is told to.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from decimal import Decimal
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs

import httpx
from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from policy.money import Money

COMGATE_URL = "https://payments.comgate.cz"
RETRYABLE_CODES = frozenset({"1100", "1200", "1500"})
"""ComGate's unknown error, database error and unexpected error: worth another attempt."""


class CardGatewayError(Exception):
    """Root of the card gateway adapter's errors."""


class GatewayUnavailable(CardGatewayError):
    """The gateway could not be reached or failed on its side.

    `created_nothing`: the request surely created no payment (never connected, or a 4xx refusal).
    """

    def __init__(self, message: str, *, created_nothing: bool = False) -> None:
        super().__init__(message)
        self.created_nothing = created_nothing


class ChargePending(CardGatewayError):
    """The gateway accepted the charge but has not decided it yet."""


class ChargeUncertain(CardGatewayError):
    """An earlier attempt under this key died mid-request; charging again might charge twice."""


class ChargeCardInput(BaseModel):
    idempotency_key: str = Field(min_length=1, max_length=200)
    """Built by the workflow from the invoice (never random); sent to the gateway as `refId`."""
    token: str = Field(min_length=1)
    """The stored card: ComGate's `initRecurringId`."""
    amount: Money
    currency: str = Field(default="CZK", pattern=r"^[A-Z]{3}$")
    label: str = Field(default="renewal", min_length=1)
    email: str
    service_id: str
    variable_symbol: str


class CardChargeResult(BaseModel):
    """`paid`: the card was charged (`transaction_id`); otherwise declined with the gateway's `message`."""

    paid: bool
    transaction_id: str | None = None
    message: str = ""
    repeated: bool = False
    """True when the key had been charged before and only its status was read."""


class CardGateway(Protocol):
    async def charge(self, request: ChargeCardInput) -> CardChargeResult: ...


# ----------------------------------------------------------------------------- ledger


class ChargeLedger:
    """Per idempotency key: started, and the gateway's `transId` once known (SQLite, `:memory:` in tests)."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS charges (idempotency_key TEXT PRIMARY KEY, transaction_id TEXT)"
        )

    def begin(self, key: str) -> tuple[bool, str | None]:
        """(True, None) when this call may charge; else (False, transId or None if it died mid-request)."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO charges (idempotency_key, transaction_id) VALUES (?, NULL)", (key,)
            )
            if cursor.rowcount == 1:
                return True, None
            row = self._db.execute(
                "SELECT transaction_id FROM charges WHERE idempotency_key = ?", (key,)
            ).fetchone()
        return False, row[0]

    def record(self, key: str, transaction_id: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE charges SET transaction_id = ? WHERE idempotency_key = ?", (transaction_id, key)
            )

    def forget(self, key: str) -> None:
        """The gateway refused the request outright (nothing was created): a later attempt may charge."""
        with self._lock:
            self._db.execute("DELETE FROM charges WHERE idempotency_key = ?", (key,))


# ----------------------------------------------------------------------------- ComGate


def to_minor_units(amount: Decimal) -> str:
    """ComGate's `price`: the amount in hellers/cents, an integer."""
    minor = amount * 100
    if minor != minor.to_integral_value() or minor <= 0:
        raise ValueError(f"{amount} is not a positive amount with at most 2 decimals")
    return str(int(minor))


def _form(response: httpx.Response) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(response.text, keep_blank_values=True).items()}


class ComGateGateway:
    """ComGate's recurring payments over HTTP, exactly once per idempotency key (see the module doc)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        merchant: str,
        secret: str,
        ledger: ChargeLedger,
        *,
        base_url: str = COMGATE_URL,
        test: bool = False,
        status_polls: int = 5,
        poll_interval: float = 1.0,
    ) -> None:
        self.client = client
        self.merchant = merchant
        self.secret = secret
        self.ledger = ledger
        self.base_url = base_url.rstrip("/")
        self.test = test
        self.status_polls = status_polls
        self.poll_interval = poll_interval

    async def _post(self, method: str, fields: dict[str, str]) -> dict[str, str]:
        body = {"merchant": self.merchant, "secret": self.secret, **fields}
        try:
            response = await self.client.post(f"{self.base_url}/v1.0/{method}", data=body)
            response.raise_for_status()
        except httpx.HTTPStatusError as exc:
            status = exc.response.status_code
            raise GatewayUnavailable(
                f"ComGate {method}: HTTP {status}", created_nothing=400 <= status < 500
            ) from None
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise GatewayUnavailable(
                f"ComGate {method}: {type(exc).__name__}: {exc}", created_nothing=True
            ) from None
        except httpx.HTTPError as exc:
            raise GatewayUnavailable(f"ComGate {method}: {type(exc).__name__}: {exc}") from None
        answer = _form(response)
        if "code" not in answer:
            raise GatewayUnavailable(f"ComGate {method}: answer without a code: {response.text[:200]!r}")
        return answer

    async def charge(self, request: ChargeCardInput) -> CardChargeResult:
        may_charge, transaction_id = self.ledger.begin(request.idempotency_key)
        if not may_charge:
            if transaction_id is None:
                raise ChargeUncertain(
                    f"an earlier charge under refId {request.idempotency_key} died before ComGate answered; "
                    "look it up in the ComGate portal before charging again"
                )
            return await self._settle(transaction_id, repeated=True)
        try:
            answer = await self._post(
                "recurring",
                {
                    "test": "true" if self.test else "false",
                    "price": to_minor_units(request.amount),
                    "curr": request.currency,
                    "label": request.label[:16],
                    "refId": request.idempotency_key,
                    "email": request.email,
                    "prepareOnly": "true",
                    "initRecurringId": request.token,
                },
            )
        except GatewayUnavailable as exc:
            # Never sent, or refused as a bad request: nothing was created and the next attempt may
            # charge. Sent and lost (a timeout mid-request): the key stays started, see ChargeUncertain.
            if exc.created_nothing:
                self.ledger.forget(request.idempotency_key)
            raise
        code = answer["code"]
        if code != "0":
            # The gateway refused the request itself: nothing was created, so a later attempt is safe.
            self.ledger.forget(request.idempotency_key)
            message = answer.get("message", "")
            if code in RETRYABLE_CODES:
                raise GatewayUnavailable(f"ComGate recurring: code {code}: {message}")
            return CardChargeResult(paid=False, message=f"ComGate code {code}: {message}")
        transaction_id = answer.get("transId", "")
        if not transaction_id:
            raise GatewayUnavailable("ComGate recurring answered code 0 without a transId")
        self.ledger.record(request.idempotency_key, transaction_id)
        return await self._settle(transaction_id, repeated=False)

    async def _settle(self, transaction_id: str, repeated: bool) -> CardChargeResult:
        """Ask the payment's status until it is decided (a card payment is, within seconds)."""
        for attempt in range(self.status_polls):
            answer = await self._post("status", {"transId": transaction_id})
            code = answer["code"]
            if code != "0":
                raise GatewayUnavailable(
                    f"ComGate status of {transaction_id}: code {code}: {answer.get('message')}"
                )
            status = answer.get("status", "")
            if status == "PAID":
                return CardChargeResult(paid=True, transaction_id=transaction_id, repeated=repeated)
            if status == "CANCELLED":
                return CardChargeResult(
                    paid=False,
                    transaction_id=transaction_id,
                    message=answer.get("message") or "the card payment was declined",
                    repeated=repeated,
                )
            if attempt + 1 < self.status_polls:
                await asyncio.sleep(self.poll_interval)
        raise ChargePending(f"ComGate payment {transaction_id} is still {status or 'undecided'}")


# ----------------------------------------------------------------------------- recording


class RecordingCardGateway:
    """Charges nothing; remembers every charge by key and declines the tokens in `declined`."""

    def __init__(self, declined: dict[str, str] | None = None) -> None:
        self.declined: dict[str, str] = dict(declined or {})
        """token → the decline message the gateway gives."""
        self.charges: list[ChargeCardInput] = []
        """Every charge that reached the card (at most one per key)."""
        self._results: dict[str, CardChargeResult] = {}

    async def charge(self, request: ChargeCardInput) -> CardChargeResult:
        previous = self._results.get(request.idempotency_key)
        if previous is not None:
            return previous.model_copy(update={"repeated": True})
        if request.token in self.declined:
            result = CardChargeResult(paid=False, message=self.declined[request.token])
        else:
            self.charges.append(request)
            result = CardChargeResult(paid=True, transaction_id=f"card-{len(self.charges):06d}")
        self._results[request.idempotency_key] = result
        return result


class UnconfiguredCardGateway:
    """No gateway configured: a charge is refused as a gateway failure, never reported paid or declined."""

    async def charge(self, request: ChargeCardInput) -> CardChargeResult:
        raise ChargeUncertain(
            "no card gateway is configured (HOSTLIFE_COMGATE_MERCHANT/_SECRET); the card was not charged"
        )


# ----------------------------------------------------------------------------- activity


class CardActivities:
    def __init__(self, gateway: CardGateway) -> None:
        self.gateway = gateway

    @activity.defn
    async def charge_stored_card(self, request: ChargeCardInput) -> CardChargeResult:
        try:
            result = await self.gateway.charge(request)
        except ChargeUncertain as exc:
            raise ApplicationError(str(exc), type="ChargeUncertain", non_retryable=True) from exc
        except ChargePending as exc:
            raise ApplicationError(str(exc), type="ChargePending") from exc
        except GatewayUnavailable as exc:
            raise ApplicationError(str(exc), type="GatewayUnavailable") from exc
        activity.logger.info(
            "card charge answered",
            extra={
                "service_id": request.service_id,
                "variable_symbol": request.variable_symbol,
                "paid": result.paid,
                "repeated": result.repeated,
            },
        )
        return result

"""What the payment ingress hands on, and the interface of whoever routes it.

The ingress (starter/ingress.py) only authenticates, parses and validates; deciding what a payment
means for a service belongs to a `PaymentRouter`, which finds the service that issued the variable
symbol and signals its workflow. Keeping the seam this small lets the HTTP layer be tested against
an in-memory router and lets the Temporal-backed router be written and tested on its own.

Every line a payment system sends ends in exactly one `RoutingResult`; a line that could not even
become a `PaymentReceived` is still handed over, as a `RejectedLine`, so the billing department sees
it (SPEC §3.6: nothing a payment system sends may be lost).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel

from activities.billing import PaymentReceived


class PaymentOutcome(StrEnum):
    """What became of one payment, as the payment system's caller is told."""

    APPLIED = "applied"  # matched the open invoice of a running service and was signalled to it
    HELD = "held"  # VS matched a service but something (amount, stale VS) did not: linked, not applied
    RETURNED = "returned"  # the service is gone; the payment goes back to the payer
    DUPLICATE = "duplicate"  # this payment id was seen before; acknowledged, not applied again
    QUEUED = "queued"  # nobody issued the VS, or the workflow is closed: billing department's queue
    REJECTED = "rejected"  # the line was unusable (malformed); recorded for the billing department


class RoutingResult(BaseModel):
    """The outcome for one payment or rejected line, with the reason a person can read."""

    payment_id: str
    outcome: PaymentOutcome
    reason: str = ""
    service_id: str | None = None
    variable_symbol: str | None = None


class RejectedLine(BaseModel):
    """A line that could not be turned into a `PaymentReceived`, kept whole for a person to read.

    `line_id` is deterministic (the bank's or gateway's id when one could be read, else a hash of the
    raw text), so a statement or webhook delivered twice yields the same id and the queue can
    deduplicate it.
    """

    line_id: str
    source: str  # "card", "camt053" or "gpc"
    raw: str
    reason: str
    location: str | None = None  # where in the file: "entry 3", "line 7"
    variable_symbol: str | None = None  # as found, not normalised (it may be what is wrong)


class PaymentRouter(Protocol):
    """Delivers payments to the workflows that issued their variable symbols.

    Implementations must be idempotent by `payment_id` / `line_id`: payment systems redeliver, and
    a statement may be imported twice. Raising means "could not decide now, try again"; the ingress
    answers 503 so the caller retries.
    """

    async def route(self, payment: PaymentReceived) -> RoutingResult: ...

    async def reject(self, raw: RejectedLine) -> RoutingResult: ...

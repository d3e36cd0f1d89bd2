"""Reconciliation: did every payment a payment system sent end somewhere, once, to the heller?

SPEC §3.6 promises that nothing a payment system sends is lost: each payment ends applied (it paid
an invoice), held (the billing department's queue: stale or unknown VS, wrong amount) or returned
(a refund), and a duplicate delivery is applied once. This module checks that promise from the
outside, against the billing ledger the activities wrote (`SqliteBilling`), so it does not trust
the workflows it checks:

    received deliveries  = unique payments + duplicate deliveries
    unique payments      = applied + held + returned           (per currency, exact Decimal)

A unique payment is *applied* when the invoice its VS names is paid and the amounts agree, *held*
when the ledger holds it, *returned* when the ledger refunded it; anything else is *missing* and
a discrepancy. Optional routing results (what the ingress answered, `RoutingResult`) are
cross-checked: a redelivery that was not answered `duplicate`, or an answer that contradicts the
ledger, is a warning (the money is right, the answer was not).

Pure apart from reading the ledger: `reconcile()` takes plain lists, `reconcile_ledger()` reads
them from a `SqliteBilling`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel

from activities.billing import HeldPayment, Invoice, InvoiceStatus, PaymentReceived, Refund, SqliteBilling
from policy.money import normalize_variable_symbol
from starter.payment_routing import PaymentOutcome, RoutingResult


class Outcome(StrEnum):
    """Where a unique payment ended, as the ledger shows it."""

    APPLIED = "applied"
    HELD = "held"
    RETURNED = "returned"
    MISSING = "missing"


class Total(BaseModel):
    """A count and the sum per currency (exact Decimal, never float)."""

    count: int = 0
    amounts: dict[str, Decimal] = {}

    def add(self, amount: Decimal, currency: str) -> None:
        self.count += 1
        self.amounts[currency] = self.amounts.get(currency, Decimal("0.00")) + amount

    def amount(self, currency: str) -> Decimal:
        return self.amounts.get(currency, Decimal("0.00"))


class Finding(BaseModel):
    """One thing a person must look at; `kind` is a stable code, `detail` the explanation."""

    kind: str
    detail: str
    payment_id: str | None = None


class PaymentLine(BaseModel):
    """One unique payment and where it ended."""

    payment_id: str
    variable_symbol: str
    amount: Decimal
    currency: str
    outcome: Outcome
    deliveries: int = 1
    service_id: str | None = None
    reason: str = ""
    answers: list[str] = []
    """What the ingress answered for each delivery (when routing results were given)."""


class ReconciliationReport(BaseModel):
    received: Total
    """Every delivery, duplicates included."""
    unique: Total
    duplicates: Total
    applied: Total
    held: Total
    returned: Total
    missing: Total
    rejected_lines: int = 0
    """Lines that never became a payment (unreadable); kept whole in the ledger for a person."""
    currencies: list[str] = []
    balanced: bool
    discrepancies: list[Finding] = []
    """Money problems: a payment missing, in two places, or with a changed amount."""
    warnings: list[Finding] = []
    """Answer problems: the ledger is right but what a sender was told was not."""
    lines: list[PaymentLine] = []

    def summary(self) -> str:
        """One line per currency: the identity the report checks, with the numbers in it."""
        parts = []
        for currency in self.currencies or ["CZK"]:
            parts.append(
                f"{currency}: received {self.received.amount(currency)} ({self.received.count}) = "
                f"applied {self.applied.amount(currency)} ({self.applied.count}) + "
                f"held {self.held.amount(currency)} ({self.held.count}) + "
                f"returned {self.returned.amount(currency)} ({self.returned.count}) + "
                f"duplicates {self.duplicates.amount(currency)} ({self.duplicates.count})"
                + (
                    f" + MISSING {self.missing.amount(currency)} ({self.missing.count})"
                    if self.missing.count
                    else ""
                )
            )
        verdict = "balanced" if self.balanced else f"NOT balanced: {len(self.discrepancies)} discrepancy(ies)"
        return "; ".join(parts) + f" — {verdict}"


def _vs(text: str) -> str:
    try:
        return normalize_variable_symbol(text)
    except ValueError:
        return text


_ANSWER_FOR: dict[Outcome, frozenset[PaymentOutcome]] = {
    Outcome.APPLIED: frozenset({PaymentOutcome.APPLIED}),
    Outcome.HELD: frozenset({PaymentOutcome.HELD, PaymentOutcome.QUEUED}),
    Outcome.RETURNED: frozenset({PaymentOutcome.RETURNED}),
    Outcome.MISSING: frozenset(),
}


def reconcile(
    invoices: Sequence[Invoice],
    held: Sequence[HeldPayment],
    refunds: Sequence[Refund],
    received: Sequence[PaymentReceived] | None = None,
    results: Sequence[RoutingResult] = (),
    rejected_lines: int = 0,
) -> ReconciliationReport:
    """Reconcile what was received against what the ledger shows.

    Without `received` (no bank export at hand) the ledger is reconciled with itself: every held,
    refunded and paid-invoice entry is taken as one received payment, so only conflicts (a payment
    both held and refunded) can show.
    """
    discrepancies: list[Finding] = []
    warnings: list[Finding] = []
    held_by_id = {h.payment.payment_id: h for h in held}
    refund_by_id = {r.payment.payment_id: r for r in refunds}
    invoice_by_vs = {_vs(i.variable_symbol): i for i in invoices}

    if received is None:
        received = [h.payment for h in held] + [
            r.payment for r in refunds if r.payment.payment_id not in held_by_id
        ]
        synthetic_applied = [i for i in invoices if i.status is InvoiceStatus.PAID]
    else:
        synthetic_applied = []

    total_received, unique_total, duplicates = Total(), Total(), Total()
    first: dict[str, PaymentReceived] = {}
    deliveries: dict[str, int] = defaultdict(int)
    for payment in received:
        total_received.add(payment.amount, payment.currency)
        deliveries[payment.payment_id] += 1
        original = first.get(payment.payment_id)
        if original is None:
            first[payment.payment_id] = payment
            unique_total.add(payment.amount, payment.currency)
            continue
        duplicates.add(payment.amount, payment.currency)
        if (original.amount, original.currency, _vs(original.variable_symbol)) != (
            payment.amount,
            payment.currency,
            _vs(payment.variable_symbol),
        ):
            discrepancies.append(
                Finding(
                    kind="conflicting_redelivery",
                    payment_id=payment.payment_id,
                    detail=f"redelivered as {payment.amount} {payment.currency} VS {payment.variable_symbol}, "
                    f"first seen as {original.amount} {original.currency} VS {original.variable_symbol}",
                )
            )

    answers: dict[str, list[PaymentOutcome]] = defaultdict(list)
    for result in results:
        answers[result.payment_id].append(result.outcome)

    totals = {outcome: Total() for outcome in Outcome}
    claimed: dict[str, str] = {}
    lines: list[PaymentLine] = []
    for payment_id, payment in first.items():
        vs = _vs(payment.variable_symbol)
        in_held, in_refunds = held_by_id.get(payment_id), refund_by_id.get(payment_id)
        service_id: str | None = None
        reason = ""
        if in_held is not None and in_refunds is not None:
            discrepancies.append(
                Finding(
                    kind="held_and_returned",
                    payment_id=payment_id,
                    detail="the ledger both holds and refunded this payment",
                )
            )
        if in_refunds is not None:
            outcome, service_id, reason = Outcome.RETURNED, in_refunds.service_id, in_refunds.reason
            ledger_amount = in_refunds.payment.amount
        elif in_held is not None:
            outcome, service_id, reason = Outcome.HELD, in_held.service_id, in_held.reason
            ledger_amount = in_held.payment.amount
        else:
            invoice = invoice_by_vs.get(vs)
            ledger_amount = payment.amount
            if invoice is None:
                outcome, reason = Outcome.MISSING, f"VS {vs} issued by nobody, and the payment is not held"
            elif invoice.status is not InvoiceStatus.PAID:
                outcome, service_id = Outcome.MISSING, invoice.service_id
                reason = (
                    f"invoice {vs} is {invoice.status.value}, and the payment is neither held nor returned"
                )
            elif invoice.amount != payment.amount or invoice.currency != payment.currency:
                outcome, service_id = Outcome.MISSING, invoice.service_id
                reason = (
                    f"invoice {vs} is paid but is {invoice.amount} {invoice.currency}, "
                    f"the payment {payment.amount} {payment.currency}"
                )
            elif vs in claimed:
                outcome, service_id = Outcome.MISSING, invoice.service_id
                reason = f"invoice {vs} is already accounted for by payment {claimed[vs]}"
            else:
                outcome, service_id, reason = Outcome.APPLIED, invoice.service_id, f"paid invoice {vs}"
                claimed[vs] = payment_id
        if outcome is Outcome.MISSING:
            discrepancies.append(Finding(kind="missing", payment_id=payment_id, detail=reason))
        elif ledger_amount != payment.amount:
            discrepancies.append(
                Finding(
                    kind="amount_changed",
                    payment_id=payment_id,
                    detail=f"received {payment.amount}, the ledger {outcome.value} {ledger_amount}",
                )
            )
        totals[outcome].add(payment.amount, payment.currency)
        seen = answers.get(payment_id, [])
        if results:
            _check_answers(payment_id, outcome, deliveries[payment_id], seen, warnings)
        lines.append(
            PaymentLine(
                payment_id=payment_id,
                variable_symbol=payment.variable_symbol,
                amount=payment.amount,
                currency=payment.currency,
                outcome=outcome,
                deliveries=deliveries[payment_id],
                service_id=service_id,
                reason=reason,
                answers=[a.value for a in seen],
            )
        )

    for invoice in synthetic_applied:
        totals[Outcome.APPLIED].add(invoice.amount, invoice.currency)
        total_received.add(invoice.amount, invoice.currency)
        unique_total.add(invoice.amount, invoice.currency)

    currencies = sorted(set(total_received.amounts) | set(unique_total.amounts))
    balanced = not discrepancies
    for currency in currencies:
        accounted = sum(
            (totals[o].amount(currency) for o in (Outcome.APPLIED, Outcome.HELD, Outcome.RETURNED)),
            Decimal("0.00"),
        )
        if unique_total.amount(currency) != accounted:
            balanced = False
        if total_received.amount(currency) != unique_total.amount(currency) + duplicates.amount(currency):
            balanced = False  # cannot happen by construction; kept as the identity the report states

    rejected = rejected_lines or sum(1 for r in results if r.outcome is PaymentOutcome.REJECTED)
    return ReconciliationReport(
        received=total_received,
        unique=unique_total,
        duplicates=duplicates,
        applied=totals[Outcome.APPLIED],
        held=totals[Outcome.HELD],
        returned=totals[Outcome.RETURNED],
        missing=totals[Outcome.MISSING],
        rejected_lines=rejected,
        currencies=currencies,
        balanced=balanced,
        discrepancies=discrepancies,
        warnings=warnings,
        lines=lines,
    )


def _check_answers(
    payment_id: str,
    outcome: Outcome,
    deliveries: int,
    answers: Sequence[PaymentOutcome],
    warnings: list[Finding],
) -> None:
    """Each delivery should have one answer: the ledger's outcome once, `duplicate` for the rest."""
    if not answers:
        warnings.append(
            Finding(kind="no_answer", payment_id=payment_id, detail="no routing result was given")
        )
        return
    decisive = [a for a in answers if a is not PaymentOutcome.DUPLICATE]
    expected = _ANSWER_FOR[outcome]
    wrong = [a.value for a in decisive if a not in expected]
    if wrong:
        warnings.append(
            Finding(
                kind="answer_contradicts_ledger",
                payment_id=payment_id,
                detail=f"answered {', '.join(wrong)} but the ledger shows {outcome.value}",
            )
        )
    if len(decisive) > 1:
        warnings.append(
            Finding(
                kind="redelivery_not_flagged",
                payment_id=payment_id,
                detail=f"{deliveries} deliveries answered {', '.join(a.value for a in answers)}; "
                "only the first should be decisive, the rest `duplicate`",
            )
        )
    if not decisive and outcome is not Outcome.MISSING:
        warnings.append(
            Finding(
                kind="only_duplicates",
                payment_id=payment_id,
                detail="every delivery was answered `duplicate`; the first was never acknowledged",
            )
        )


def reconcile_ledger(
    ledger: SqliteBilling,
    received: Sequence[PaymentReceived] | None = None,
    results: Iterable[RoutingResult] = (),
) -> ReconciliationReport:
    """Read invoices, held payments (resolved ones too), refunds and unreadable lines, and reconcile."""
    return reconcile(
        ledger.invoices(),
        ledger.held_payments(include_resolved=True),
        ledger.refunds(),
        received=received,
        results=list(results),
        rejected_lines=len(ledger.unreadable_lines(include_resolved=True)),
    )

"""Routing payments by variable symbol to the workflow of the service that issued it.

The billing ledger knows which service issued every VS (it allocated them), so routing needs no
search: VS → invoice → service → `submit_payment` update, which answers with the outcome. What
cannot reach a running workflow still ends somewhere visible:

| case | outcome |
|---|---|
| VS nobody issued | held in the billing department's queue (`queued`) |
| the service's workflow is over (closed, released) | returned to the payer (`returned`) |
| a line that is not a payment at all | kept as an unreadable line (`rejected`) |
| the same payment id again | `duplicate`, applied once |
"""

from __future__ import annotations

import structlog
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from activities.billing import (
    HoldPaymentInput,
    InvoiceNotFound,
    PaymentReceived,
    ReturnPaymentInput,
    SqliteBilling,
    UnreadableLine,
)
from starter.payment_routing import PaymentOutcome, RejectedLine, RoutingResult
from workflows import service_workflow_id
from workflows.models import PaymentRequest
from workflows.subscription import SubscriptionWorkflow

log = structlog.get_logger("hostlife.payments")


class TemporalPaymentRouter:
    def __init__(self, client: Client, billing: SqliteBilling) -> None:
        self.client = client
        self.billing = billing

    async def route(self, payment: PaymentReceived) -> RoutingResult:
        vs = payment.variable_symbol
        try:
            invoice = self.billing.get_invoice(vs)
        except InvoiceNotFound:
            return self._queue(payment, f"no service issued variable symbol {vs}")
        handle = self.client.get_workflow_handle_for(
            SubscriptionWorkflow.run, service_workflow_id(invoice.service_id)
        )
        request = PaymentRequest(
            payment_id=payment.payment_id,
            variable_symbol=vs,
            amount=payment.amount,
            received_at=payment.received_at,
        )
        try:
            outcome = await handle.execute_update(SubscriptionWorkflow.submit_payment, request)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise  # cannot decide now: the ingress answers 503 and the sender retries
            return self._return(payment, invoice.service_id, "the service is closed")
        except WorkflowUpdateFailedError as exc:
            reason = str(getattr(exc.cause, "message", exc.cause))
            return self._queue(
                payment, f"refused by service {invoice.service_id}: {reason}", invoice.service_id
            )
        log.info(
            "payment routed", payment_id=payment.payment_id, variable_symbol=vs, result=outcome.result.value
        )
        return RoutingResult(
            payment_id=payment.payment_id,
            outcome=PaymentOutcome(outcome.result.value),
            reason=outcome.reason,
            service_id=invoice.service_id,
            variable_symbol=vs,
        )

    def _queue(self, payment: PaymentReceived, reason: str, service_id: str | None = None) -> RoutingResult:
        seen = self.billing.is_held(payment.payment_id)
        self.billing.hold_payment(HoldPaymentInput(payment=payment, reason=reason, service_id=service_id))
        log.info("payment queued for billing", payment_id=payment.payment_id, reason=reason)
        return RoutingResult(
            payment_id=payment.payment_id,
            outcome=PaymentOutcome.DUPLICATE if seen else PaymentOutcome.QUEUED,
            reason=reason,
            service_id=service_id,
            variable_symbol=payment.variable_symbol,
        )

    def _return(self, payment: PaymentReceived, service_id: str, reason: str) -> RoutingResult:
        refund = self.billing.return_payment(
            ReturnPaymentInput(
                payment=payment, reason=f"{reason}: payment returned to the payer", service_id=service_id
            )
        )
        return RoutingResult(
            payment_id=payment.payment_id,
            outcome=PaymentOutcome.RETURNED,
            reason=refund.reason,
            service_id=service_id,
            variable_symbol=payment.variable_symbol,
        )

    async def reject(self, raw: RejectedLine) -> RoutingResult:
        line, new = self.billing.keep_unreadable_line(
            UnreadableLine(
                line_id=raw.line_id, source=raw.source, raw=raw.raw, reason=raw.reason, location=raw.location
            )
        )
        return RoutingResult(
            payment_id=line.line_id,
            outcome=PaymentOutcome.REJECTED if new else PaymentOutcome.DUPLICATE,
            reason=raw.reason,
            variable_symbol=raw.variable_symbol,
        )

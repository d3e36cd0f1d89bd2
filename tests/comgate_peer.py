"""A local ComGate peer: `/v1.0/recurring` and `/v1.0/status` as apidoc.comgate.cz describes them.

Form-encoded requests with `merchant` and `secret`, form-encoded answers with `code` and `message`.
Like ComGate it keeps every payment it creates (several may share a `refId`), so a test can count
how many times a card was really charged. Knobs make it misbehave the ways a gateway does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode

from fastapi import FastAPI, Request, Response

MERCHANT = "123456"
SECRET = "s3cret"


@dataclass
class Payment:
    trans_id: str
    ref_id: str
    price: str
    curr: str
    init_recurring_id: str
    status: str
    pending_polls: int = 0


@dataclass
class ComGatePeer:
    declined_tokens: set[str] = field(default_factory=set)
    """Cards whose payment ends CANCELLED (declined by the issuer)."""
    refused_tokens: set[str] = field(default_factory=set)
    """initRecurringIds ComGate itself refuses (code 1400): no payment is created."""
    fail_after_create: int = 0
    """This many next recurring calls create the payment and then answer HTTP 500 (a lost answer)."""
    pending_polls: int = 0
    """Status calls that answer PENDING before a payment is decided."""
    payments: list[Payment] = field(default_factory=list)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1.0/recurring")
        async def recurring(request: Request) -> Response:
            form = await _form(request)
            self.requests.append(("recurring", form))
            if form.get("merchant") != MERCHANT or form.get("secret") != SECRET:
                return _answer(code="1400", message="Neplatný požadavek / wrong merchant or secret")
            if form.get("prepareOnly") != "true":
                return _answer(code="1309", message="prepareOnly must be true")
            token = form.get("initRecurringId", "")
            if token in self.refused_tokens:
                return _answer(code="1400", message="initial recurring payment not found")
            payment = Payment(
                trans_id=f"AB12-CD34-{len(self.payments) + 1:04d}",
                ref_id=form.get("refId", ""),
                price=form.get("price", ""),
                curr=form.get("curr", ""),
                init_recurring_id=token,
                status="CANCELLED" if token in self.declined_tokens else "PAID",
                pending_polls=self.pending_polls,
            )
            self.payments.append(payment)
            if self.fail_after_create:
                self.fail_after_create -= 1
                return Response(status_code=500, content="internal error")
            return _answer(code="0", message="OK", transId=payment.trans_id)

        @app.post("/v1.0/status")
        async def status(request: Request) -> Response:
            form = await _form(request)
            self.requests.append(("status", form))
            if form.get("merchant") != MERCHANT or form.get("secret") != SECRET:
                return _answer(code="1400", message="wrong merchant or secret")
            payment = next((p for p in self.payments if p.trans_id == form.get("transId")), None)
            if payment is None:
                return _answer(code="1400", message="payment not found")
            shown = payment.status
            if payment.pending_polls > 0:
                payment.pending_polls -= 1
                shown = "PENDING"
            return _answer(
                code="0",
                message="OK",
                merchant=MERCHANT,
                test="true",
                price=payment.price,
                curr=payment.curr,
                refId=payment.ref_id,
                transId=payment.trans_id,
                status=shown,
            )

        return app


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body()).decode()
    return {key: values[0] for key, values in parse_qs(body, keep_blank_values=True).items()}


def _answer(**fields: str) -> Response:
    return Response(content=urlencode(fields), media_type="application/x-www-form-urlencoded")

"""Payment ingress: the HTTP door through which payment systems report money (issue 6).

    POST /payments/card            card gateway webhook, JSON, HMAC-SHA256 signed
    POST /payments/bank-statement  CAMT.053 XML or GPC text statement, bearer API key
    POST /usage-reports            monitoring's measurements of servers (SPEC §6), JSON, bearer
                                   monitoring API key; 503 when no key or no sink is configured
    GET  /healthz                  liveness, no authentication

The ingress authenticates, parses and validates; what a payment means is the `PaymentRouter`'s
decision (starter/payment_routing.py). Every answer has one JSON shape, `IngressAnswer`, whose
`results` holds one `RoutingResult` per payment or line. Status codes:

    200  every payment/line has an outcome (applied, held, returned, duplicate, queued, rejected)
    400  the webhook body is not JSON, or a multipart upload is broken
    401  missing or bad signature, timestamp outside the tolerance (replay), missing or bad API key
    413  body larger than `max_body_bytes`
    415  a content type the endpoint does not read
    422  a signed webhook that is not a valid payment (float or 3-decimal amount, 11-digit VS...),
         or a statement that is unreadable as a whole; a signed but invalid webhook is still
         handed to the router as a `RejectedLine`, so it reaches the billing department
    503  the router failed; routing is idempotent by payment id, so the sender may simply retry

Amounts in the webhook must be JSON strings ("1200.00"): a JSON number, even an integer, is refused
with 422, because a number has passed through some sender's float before it reaches us.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from email import policy as email_policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import structlog
import uvicorn
from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from activities.billing import PaymentReceived
from policy.money import normalize_variable_symbol
from starter.bank_statements import (
    DEFAULT_MAX_AMOUNT,
    ParsedLine,
    StatementError,
    checked_amount,
    parse_statement,
)
from starter.payment_routing import PaymentRouter, RejectedLine, RoutingResult
from workflows.offers_models import UsageDelivery, UsageReport

log = structlog.get_logger(__name__)

TIMESTAMP_HEADER = "X-Hostlife-Timestamp"
SIGNATURE_HEADER = "X-Hostlife-Signature"
_ENV_PREFIX = "HOSTLIFE_INGRESS_"


# ---------------------------------------------------------------------------------------------
# settings


class IngressSettings(BaseModel):
    """How the ingress authenticates and what it accepts; `from_env` reads `HOSTLIFE_INGRESS_*`."""

    model_config = ConfigDict(frozen=True)

    webhook_secret: SecretStr = Field(min_length=16)  # shared with the card gateway
    api_key: SecretStr = Field(min_length=16)  # bearer key of the statement importer
    monitoring_api_key: SecretStr | None = Field(default=None, min_length=16)  # bearer key of monitoring
    tolerance_seconds: int = Field(default=300, gt=0)  # older (or newer) webhooks are replays
    host: str = "127.0.0.1"
    port: int = Field(default=8400, ge=0, le=65535)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    max_amount: Decimal = Field(default=DEFAULT_MAX_AMOUNT, gt=0)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> IngressSettings:
        """Read the environment; a secret may come from `NAME_FILE` instead (container secrets).

        Variables: HOSTLIFE_INGRESS_WEBHOOK_SECRET[_FILE], HOSTLIFE_INGRESS_API_KEY[_FILE],
        HOSTLIFE_INGRESS_MONITORING_API_KEY[_FILE],
        HOSTLIFE_INGRESS_TOLERANCE_SECONDS, HOSTLIFE_INGRESS_HOST, HOSTLIFE_INGRESS_PORT,
        HOSTLIFE_INGRESS_MAX_BODY_BYTES, HOSTLIFE_INGRESS_MAX_AMOUNT.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in ("webhook_secret", "api_key", "monitoring_api_key"):
            name = _ENV_PREFIX + field.upper()
            direct, from_file = env.get(name), env.get(name + "_FILE")
            if direct is not None and from_file is not None:
                raise ValueError(f"set {name} or {name}_FILE, not both")
            if from_file is not None:
                values[field] = Path(from_file).read_text(encoding="utf-8").rstrip("\r\n")
            elif direct is not None:
                values[field] = direct
        for field in ("tolerance_seconds", "host", "port", "max_body_bytes", "max_amount"):
            name = _ENV_PREFIX + field.upper()
            if name in env:
                values[field] = env[name]
        return cls.model_validate(values)


# ---------------------------------------------------------------------------------------------
# wire models


class CardPaymentNotice(BaseModel):
    """The card gateway's webhook body. Strings only for money and VS, so nothing is rounded."""

    model_config = ConfigDict(extra="ignore")

    payment_id: StrictStr = Field(min_length=1, max_length=200)
    variable_symbol: StrictStr  # a string, so "0012345678" keeps its zeros on the way
    amount: StrictStr  # "1200.00"; a JSON number is refused
    currency: StrictStr = Field(pattern=r"^[A-Z]{3}$")
    received_at: AwareDatetime
    payer: StrictStr | None = Field(default=None, max_length=500)

    @field_validator("variable_symbol")
    @classmethod
    def _variable_symbol(cls, value: str) -> str:
        return normalize_variable_symbol(value)

    @field_validator("amount")
    @classmethod
    def _amount(cls, value: str, info: ValidationInfo) -> str:
        limit = (info.context or {}).get("max_amount", DEFAULT_MAX_AMOUNT)
        return str(checked_amount(value, limit))


class UsageReportLine(UsageReport):
    """One measurement as monitoring posts it: the service and `UsageReport`'s fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    service_id: StrictStr = Field(min_length=1, max_length=200)
    measured_at: AwareDatetime


class UsageReportBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reports: list[UsageReportLine] = Field(min_length=1, max_length=1000)


class UsageOutcome(BaseModel):
    service_id: str
    result: UsageDelivery


UsageSink = Callable[[str, UsageReport], Awaitable[UsageDelivery]]
"""Hands one measurement to its service (`starter.services.usage_sink` signals the workflow)."""


class IngressAnswer(BaseModel):
    """Every answer of the ingress, success or not, so callers parse one shape."""

    results: list[RoutingResult] = []
    usage: list[UsageOutcome] = []
    detail: str | None = None
    errors: list[dict[str, Any]] = []
    format: str | None = None  # "camt053" or "gpc" for statements


def sign_webhook(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-Hostlife-Signature` value for a body: `sha256=<hex HMAC(secret, "{ts}.{body}")>`.

    The timestamp is inside the MAC, so a captured delivery cannot be replayed with a new time.
    """
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


# ---------------------------------------------------------------------------------------------
# helpers


class _Refusal(Exception):
    """An answer that stops the request; raised from helpers, turned into a JSON response."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        results: list[RoutingResult] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers
        self.errors, self.results = errors or [], results or []


def _answer(status: int, answer: IngressAnswer, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=answer.model_dump(mode="json"), headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    """Read at most `limit` bytes, so a huge upload cannot exhaust memory."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _Refusal(413, f"body larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _Refusal(413, f"body larger than {limit} bytes")
    return bytes(body)


def _check_timestamp(header: str | None, now: float, tolerance: int) -> str:
    if not header:
        raise _Refusal(401, f"missing {TIMESTAMP_HEADER} header")
    text = header.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 12):
        raise _Refusal(401, f"{TIMESTAMP_HEADER} must be unix seconds")
    if abs(now - int(text)) > tolerance:
        raise _Refusal(401, f"{TIMESTAMP_HEADER} is outside the {tolerance} s tolerance (replay?)")
    return text


def _check_signature(secret: SecretStr, timestamp: str, header: str | None, body: bytes) -> None:
    """Constant-time compare against each `sha256=` value given (a gateway may send two in rotation)."""
    if not header:
        raise _Refusal(401, f"missing {SIGNATURE_HEADER} header")
    expected = sign_webhook(secret.get_secret_value(), int(timestamp), body).encode()
    offered = [part.strip().encode("latin-1", "replace") for part in header.split(",")]
    if not any(hmac.compare_digest(expected, value) for value in offered):
        raise _Refusal(401, "bad signature")


def _check_api_key(credentials: HTTPAuthorizationCredentials | None, api_key: SecretStr) -> None:
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise _Refusal(401, "missing bearer API key (Authorization: Bearer ...)", headers=challenge)
    offered = credentials.credentials.encode("latin-1", "replace")
    if not hmac.compare_digest(offered, api_key.get_secret_value().encode()):
        raise _Refusal(401, "bad API key", headers=challenge)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]}
        for error in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


def _upload(content_type: str, body: bytes) -> bytes:
    """The statement bytes of a request: the `file` part of a multipart form, or the raw body.

    Multipart is read with the standard library's MIME parser, so no extra dependency is needed.
    """
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "multipart/form-data":
        header = b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n"
        message = BytesParser(policy=email_policy.HTTP).parsebytes(header + body)
        if not isinstance(message, EmailMessage) or not message.is_multipart():
            raise _Refusal(400, "malformed multipart body")
        parts = list(message.iter_parts())
        named = [p for p in parts if p.get_param("name", header="content-disposition") == "file"]
        files = named or [p for p in parts if p.get_filename()]
        if not files:
            raise _Refusal(422, "multipart body has no 'file' field")
        payload = files[0].get_payload(decode=True)
        if not isinstance(payload, bytes):
            raise _Refusal(400, "malformed multipart file part")
        return payload
    if media_type in ("", "application/xml", "text/xml", "text/plain", "application/octet-stream"):
        return body
    raise _Refusal(
        415,
        f"unsupported content type {media_type!r}: send multipart/form-data with a 'file' field, "
        "application/xml (CAMT.053) or text/plain (GPC)",
    )


async def _deliver(router: PaymentRouter, items: list[ParsedLine]) -> list[RoutingResult]:
    """Hand each line to the router in order; if the router fails, answer 503 with what was done.

    The router is idempotent by payment id, so the sender re-sending the whole delivery is safe.
    """
    results: list[RoutingResult] = []
    for item in items:
        try:
            if isinstance(item, RejectedLine):
                result = await router.reject(item)
            else:
                result = await router.route(item)
        except Exception as exc:
            item_id = item.line_id if isinstance(item, RejectedLine) else item.payment_id
            log.exception("payment router failed", payment_id=item_id)
            raise _Refusal(
                503,
                f"payment router failed at {item_id}: {exc.__class__.__name__}; "
                f"{len(results)} of {len(items)} done; re-sending is safe",
                results=results,
            ) from exc
        if isinstance(item, RejectedLine):
            log.warning("payment line rejected", line_id=item.line_id, source=item.source, reason=item.reason)
        else:
            log.info("payment routed", payment_id=item.payment_id, outcome=str(result.outcome))
        results.append(result)
    return results


_REFUSALS: dict[int | str, dict[str, Any]] = {
    code: {"model": IngressAnswer, "description": text}
    for code, text in {
        400: "not JSON / broken upload",
        401: "authentication failed",
        413: "body too large",
        415: "unsupported content type",
        422: "invalid payment or unreadable statement",
        503: "router unavailable; safe to retry",
    }.items()
}


# ---------------------------------------------------------------------------------------------
# the app


def create_app(
    router: PaymentRouter,
    settings: IngressSettings,
    *,
    clock: Callable[[], float] = time.time,
    usage: UsageSink | None = None,
) -> FastAPI:
    """The ingress app; `clock` (unix seconds) is injectable so replay checks can be tested."""
    app = FastAPI(
        title="hostlife payment ingress",
        version="1",
        description=__doc__ or "",
    )
    bearer = HTTPBearer(auto_error=False, description="the statement importer's API key")

    @app.exception_handler(_Refusal)
    async def _refused(request: Request, exc: _Refusal) -> JSONResponse:
        answer = IngressAnswer(detail=exc.detail, errors=exc.errors, results=exc.results)
        return _answer(exc.status, answer, exc.headers)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(
        "/payments/card",
        response_model=IngressAnswer,
        responses=_REFUSALS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": CardPaymentNotice.model_json_schema()}},
            }
        },
    )
    async def card_payment(
        request: Request,
        x_hostlife_timestamp: str | None = Header(default=None, description="unix seconds"),
        x_hostlife_signature: str | None = Header(
            default=None, description='sha256=<hex HMAC-SHA256(secret, "{timestamp}.{raw body}")>'
        ),
    ) -> JSONResponse:
        """Card gateway webhook: one payment per delivery; a redelivery is answered `duplicate`."""
        timestamp = _check_timestamp(x_hostlife_timestamp, clock(), settings.tolerance_seconds)
        body = await _read_body(request, settings.max_body_bytes)
        _check_signature(settings.webhook_secret, timestamp, x_hostlife_signature, body)

        # From here the body is authentic: whatever is wrong with it, the billing department hears.
        raw = body.decode("utf-8", errors="replace")
        body_id = f"card:{hashlib.sha256(body).hexdigest()[:24]}"
        try:
            data = json.loads(body, parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as exc:
            line = RejectedLine(line_id=body_id, source="card", raw=raw, reason=f"malformed JSON: {exc}")
            results = await _deliver(router, [line])
            return _answer(400, IngressAnswer(results=results, detail=line.reason))
        try:
            notice = CardPaymentNotice.model_validate(data, context={"max_amount": settings.max_amount})
            payment = PaymentReceived(**notice.model_dump(), source="card")
        except ValidationError as exc:
            errors = _validation_errors(exc)
            reason = "invalid payment: " + "; ".join(
                f"{'.'.join(str(part) for part in e['loc']) or 'body'}: {e['msg']}" for e in errors
            )
            given = data if isinstance(data, dict) else {}
            given_id, given_vs = given.get("payment_id"), given.get("variable_symbol")
            line = RejectedLine(
                line_id=given_id if isinstance(given_id, str) and 0 < len(given_id) <= 200 else body_id,
                source="card",
                raw=raw,
                reason=reason,
                variable_symbol=given_vs if isinstance(given_vs, str) else None,
            )
            results = await _deliver(router, [line])
            return _answer(422, IngressAnswer(results=results, detail=reason, errors=errors))
        return _answer(200, IngressAnswer(results=await _deliver(router, [payment])))

    @app.post(
        "/payments/bank-statement",
        response_model=IngressAnswer,
        responses=_REFUSALS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {"file": {"type": "string", "format": "binary"}},
                            "required": ["file"],
                        }
                    },
                    "application/xml": {"schema": {"type": "string", "description": "CAMT.053"}},
                    "text/plain": {"schema": {"type": "string", "description": "GPC/ABO"}},
                },
            }
        },
    )
    async def bank_statement(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> JSONResponse:
        """Import a statement; the format is detected from the content, not the label."""
        _check_api_key(credentials, settings.api_key)
        body = await _read_body(request, settings.max_body_bytes)
        statement = _upload(request.headers.get("content-type", ""), body)
        if not statement.strip():
            raise _Refusal(422, "empty statement")
        try:
            kind, lines = parse_statement(statement, max_amount=settings.max_amount)
        except StatementError as exc:
            raise _Refusal(422, str(exc)) from exc
        log.info("bank statement received", format=kind, lines=len(lines))
        results = await _deliver(router, lines)
        return _answer(200, IngressAnswer(results=results, format=kind))

    @app.post(
        "/usage-reports",
        response_model=IngressAnswer,
        responses=_REFUSALS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": UsageReportBatch.model_json_schema()}},
            }
        },
    )
    async def usage_reports(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> JSONResponse:
        """Monitoring's measurements: each goes to its service, which notifies and, if ignored, suspends."""
        if usage is None or settings.monitoring_api_key is None:
            raise _Refusal(503, "usage reports are not configured (HOSTLIFE_INGRESS_MONITORING_API_KEY)")
        _check_api_key(credentials, settings.monitoring_api_key)
        body = await _read_body(request, settings.max_body_bytes)
        try:
            data = json.loads(body, parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as exc:
            raise _Refusal(400, f"malformed JSON: {exc}") from None
        try:
            batch = UsageReportBatch.model_validate(data)
        except ValidationError as exc:
            raise _Refusal(422, "invalid usage report", errors=_validation_errors(exc)) from None
        outcomes: list[UsageOutcome] = []
        for line in batch.reports:
            report = UsageReport.model_validate(line.model_dump(exclude={"service_id"}))
            try:
                result = await usage(line.service_id, report)
            except (
                Exception
            ) as exc:  # Temporal unreachable: the sender retries; signals are idempotent enough
                log.warning("usage report not delivered", service_id=line.service_id, error=str(exc))
                answer = IngressAnswer(
                    usage=outcomes, detail=f"could not deliver to {line.service_id}: {exc}"
                )
                return _answer(503, answer)
            outcomes.append(UsageOutcome(service_id=line.service_id, result=result))
        log.info("usage reports received", reports=len(outcomes))
        return _answer(200, IngressAnswer(usage=outcomes))

    return app


async def serve(router: PaymentRouter, settings: IngressSettings, usage: UsageSink | None = None) -> None:
    """Run the ingress with uvicorn on `settings.host:port` until cancelled."""
    config = uvicorn.Config(
        create_app(router, settings, usage=usage), host=settings.host, port=settings.port, log_config=None
    )
    await uvicorn.Server(config).serve()


async def run_from_env() -> None:
    """The compose `ingress` service: settings, secrets and the Temporal connection from the environment.

    The client connects lazily, so the ingress answers /healthz and authenticates callers while
    Temporal is still starting; a payment that cannot be routed yet gets 503 and the sender retries.
    """
    from temporalio.client import Client

    from activities.billing import SqliteBilling
    from starter.codec import data_converter_from_env
    from starter.config import Settings
    from starter.local_codec import keys_environ
    from starter.payment_router import TemporalPaymentRouter
    from starter.temporal_connection import connect_options_from_env

    settings = Settings.from_env()
    ingress = IngressSettings.from_env()
    options = connect_options_from_env()
    options["namespace"] = settings.namespace
    client = await Client.connect(
        settings.temporal_address,
        data_converter=data_converter_from_env(keys_environ(settings.data_dir)),
        lazy=True,
        **options,
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    billing = SqliteBilling(settings.data_dir / "billing.sqlite")
    log.info("ingress starting", host=ingress.host, port=ingress.port, temporal=settings.temporal_address)
    await serve(TemporalPaymentRouter(client, billing), ingress)


def main(argv: list[str] | None = None) -> None:
    import argparse
    import asyncio
    import contextlib

    from starter.logging import configure_logging

    parser = argparse.ArgumentParser(
        prog="python -m starter.ingress",
        description="Payment ingress: card webhooks and bank statements into the service workflows. "
        "Configured by HOSTLIFE_INGRESS_* (secrets also as *_FILE), HOSTLIFE_TEMPORAL_*, "
        "HOSTLIFE_NAMESPACE, HOSTLIFE_DATA_DIR (the billing ledger) and HOSTLIFE_CODEC_KEYS[_FILE].",
    )
    parser.parse_args(argv)
    configure_logging(os.environ.get("HOSTLIFE_LOG_LEVEL", "INFO"))
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run_from_env())
    except (ValueError, OSError) as exc:  # bad settings or secrets: one line, no traceback
        raise SystemExit(f"ingress: {exc}") from exc


if __name__ == "__main__":
    main()

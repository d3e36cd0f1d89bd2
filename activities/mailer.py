"""Customer notices by e-mail.

    MailError
     ├── MailTemporaryError   (retried: connection refused, 4xx reply)
     └── MailPermanentError   (not retried: 5xx reply such as an unknown recipient)

`send_notice` renders a notice and hands it to a `Mailer`. Its Message-ID is derived from the
idempotency key the workflow built, so a retry after a timeout re-sends the very same message and
a receiving server (or our own catcher) can recognise the duplicate.
"""

from __future__ import annotations

import hashlib
from datetime import date
from email.message import EmailMessage
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel
from temporalio import activity

from policy.money import Money


class NoticeKind(StrEnum):
    INVOICE_ISSUED = "invoice_issued"
    REMINDER = "reminder"
    SERVICE_EXPIRED = "service_expired"
    SERVICE_BLOCKED = "service_blocked"
    DELETION_WARNING = "deletion_warning"
    SERVICE_DELETED = "service_deleted"
    SERVICE_CLOSED = "service_closed"
    PAYMENT_RECEIVED = "payment_received"
    PAYMENT_HELD = "payment_held"
    PAYMENT_RETURNED = "payment_returned"
    AUTO_RENEW_FAILED = "auto_renew_failed"
    SUSPENDED = "suspended"
    SUSPENSION_LIFTED = "suspension_lifted"
    PARKED = "parked"
    UNPARKED = "unparked"
    RESTORE_OFFER = "restore_offer"
    RESTORED = "restored"
    CANCELLED = "cancelled"
    INVOICE_CANCELLED = "invoice_cancelled"
    DEFERRAL_GRANTED = "deferral_granted"


class NoticeFacts(BaseModel):
    """What a template may print. Every field is optional; a template uses those its notice has."""

    service_name: str = ""
    product: str = ""
    expires_on: date | None = None
    variable_symbol: str | None = None
    amount: Money | None = None
    currency: str = "CZK"
    due_on: date | None = None
    block_on: date | None = None
    deletion_on: date | None = None
    backup_until: date | None = None
    reason: str | None = None
    payment_id: str | None = None
    fee: Money | None = None
    days_before: int | None = None


class SendNoticeInput(BaseModel):
    idempotency_key: str
    service_id: str
    customer_id: str
    to: str
    language: str = "cs"
    template: NoticeKind
    facts: NoticeFacts = NoticeFacts()


class SendNoticeResult(BaseModel):
    message_id: str
    delivered: bool = True


class MailError(Exception):
    """Root of the mailer's errors."""


class MailTemporaryError(MailError):
    """The relay may accept the message later."""


class MailPermanentError(MailError):
    """The relay will never accept this message."""


class Mailer(Protocol):
    async def deliver(self, message: EmailMessage) -> None: ...


def message_id_for(idempotency_key: str, domain: str = "hostlife.invalid") -> str:
    """A stable Message-ID: the same notice always carries the same one, whatever the attempt."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    return f"<{digest}@{domain}>"


class RecordingMailer:
    """Keeps every delivered message; what the simulator and workflow tests use."""

    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []

    async def deliver(self, message: EmailMessage) -> None:
        if any(m["Message-ID"] == message["Message-ID"] for m in self.sent):
            return
        self.sent.append(message)


def render_notice(notice: SendNoticeInput, sender: str) -> EmailMessage:
    """Plain rendering; replaced by the Jinja2 templates of the mail issue."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = notice.to
    message["Subject"] = f"{notice.template.value}: {notice.facts.service_name or notice.service_id}"
    message["Message-ID"] = message_id_for(notice.idempotency_key)
    message["X-Hostlife-Template"] = notice.template.value
    message["X-Hostlife-Service"] = notice.service_id
    message.set_content(notice.model_dump_json(indent=2))
    return message


class MailActivities:
    def __init__(self, mailer: Mailer, sender: str = "billing@hostlife.invalid") -> None:
        self.mailer = mailer
        self.sender = sender

    @activity.defn
    async def send_notice(self, notice: SendNoticeInput) -> SendNoticeResult:
        message = render_notice(notice, self.sender)
        try:
            await self.mailer.deliver(message)
        except MailPermanentError as exc:
            from temporalio.exceptions import ApplicationError

            raise ApplicationError(str(exc), type="MailPermanentError", non_retryable=True) from exc
        return SendNoticeResult(message_id=str(message["Message-ID"]))


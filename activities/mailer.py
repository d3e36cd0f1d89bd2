"""Customer notices by e-mail.

    MailError
     ├── MailTemporaryError   (retried: connection refused or dropped, timeout, 4xx reply)
     └── MailPermanentError   (not retried: 5xx reply such as an unknown recipient)
          └── NoticeRenderError   (not retried: a notice lacks a fact its template needs)

`send_notice` renders a notice from the Jinja2 templates under `activities/templates/mail/` and hands
it to a `Mailer`. Its Message-ID is derived from the idempotency key the workflow built (service,
invoice, milestone), so a retry after a timeout re-sends the very same message and a receiving server
(or our own catcher, `starter.mailcatcher`) can recognise the duplicate.

Each notice has one template per language, `<notice>.<language>.j2`, that is rendered twice: once
into the plain-text layout and once, with autoescaping, into the HTML one. The two parts therefore
always say the same thing.
"""

from __future__ import annotations

import hashlib
import os
import re
import textwrap
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from enum import StrEnum
from typing import Any, Protocol

import aiosmtplib
from babel.dates import format_date
from babel.numbers import format_currency
from babel.units import format_unit
from jinja2 import Environment, PackageLoader, StrictUndefined, TemplateError, pass_context
from jinja2.runtime import Context
from pydantic import BaseModel, SecretStr
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.env_secrets import secret_from_env
from activities.liveness import deadline_for, watched
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
    CARD_DECLINED = "card_declined"
    PRICE_CHANGE = "price_change"
    USAGE_WARNING = "usage_warning"
    PLAN_CHANGED = "plan_changed"
    UPGRADE_VOIDED = "upgrade_voided"
    REFUND_GRANTED = "refund_granted"
    PROVIDER_DELETION_NOTICE = "provider_deletion_notice"
    PROVIDER_DELETION_CANCELLED = "provider_deletion_cancelled"


class NoticeFacts(BaseModel):
    """What a template may print. Every field is optional; a template uses those its notice has.

    `REQUIRED_FACTS` says which ones each notice cannot do without; the rest are printed when set.
    `reason` may be one of the codes in `_strings.<language>.j2` (translated) or free text.
    """

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
    remedy: str | None = None
    respond_by: date | None = None
    effective_on: date | None = None
    previous_amount: Money | None = None
    """A price change: the price per period until `effective_on` (`amount` is the new one)."""
    period: str | None = None
    notice_number: int | None = None
    notices_before_suspension: int | None = None
    plan: str | None = None
    """The plan a change switched to (or would have)."""
    purpose: str | None = None
    """What an invoice is for (`policy.payments.InvoicePurpose`); None or `renewal` for a renewal."""


REQUIRED_FACTS: dict[NoticeKind, frozenset[str]] = {
    NoticeKind.INVOICE_ISSUED: frozenset({"variable_symbol", "amount", "due_on", "expires_on"}),
    NoticeKind.REMINDER: frozenset({"variable_symbol", "amount", "expires_on", "days_before"}),
    NoticeKind.SERVICE_EXPIRED: frozenset({"expires_on"}),
    NoticeKind.SERVICE_BLOCKED: frozenset({"expires_on"}),
    NoticeKind.DELETION_WARNING: frozenset({"deletion_on"}),
    NoticeKind.SERVICE_DELETED: frozenset(),
    NoticeKind.SERVICE_CLOSED: frozenset(),
    NoticeKind.PAYMENT_RECEIVED: frozenset({"amount", "expires_on"}),
    NoticeKind.PAYMENT_HELD: frozenset({"amount", "reason"}),
    NoticeKind.PAYMENT_RETURNED: frozenset({"amount", "reason"}),
    NoticeKind.AUTO_RENEW_FAILED: frozenset({"amount", "expires_on"}),
    NoticeKind.SUSPENDED: frozenset({"reason"}),
    NoticeKind.SUSPENSION_LIFTED: frozenset(),
    NoticeKind.PARKED: frozenset(),
    NoticeKind.UNPARKED: frozenset(),
    NoticeKind.RESTORE_OFFER: frozenset({"fee"}),
    NoticeKind.RESTORED: frozenset(),
    NoticeKind.CANCELLED: frozenset(),
    NoticeKind.INVOICE_CANCELLED: frozenset({"variable_symbol"}),
    NoticeKind.DEFERRAL_GRANTED: frozenset({"due_on"}),
    NoticeKind.CARD_DECLINED: frozenset({"variable_symbol", "amount", "reason", "expires_on"}),
    NoticeKind.PRICE_CHANGE: frozenset({"amount", "previous_amount", "effective_on", "period"}),
    NoticeKind.USAGE_WARNING: frozenset({"reason", "notice_number", "notices_before_suspension"}),
    NoticeKind.PLAN_CHANGED: frozenset({"plan", "effective_on"}),
    NoticeKind.UPGRADE_VOIDED: frozenset({"plan", "variable_symbol"}),
    NoticeKind.REFUND_GRANTED: frozenset({"amount", "due_on"}),
    NoticeKind.PROVIDER_DELETION_NOTICE: frozenset({"deletion_on", "reason"}),
    NoticeKind.PROVIDER_DELETION_CANCELLED: frozenset(),
}
"""Facts each notice must carry; a notice without them fails at once rather than mail a blank."""


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


class NoticeRenderError(MailPermanentError):
    """The notice cannot be written: a required fact is missing or a template is broken."""


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
        self._seen: set[str] = set()

    async def deliver(self, message: EmailMessage) -> None:
        message_id = str(message["Message-ID"])
        if message_id in self._seen:  # a retried send of the same notice is the same message
            return
        self._seen.add(message_id)
        self.sent.append(message)


# --- SMTP --------------------------------------------------------------------------------------


def _env_flag(value: str | None) -> bool | None:
    """'1/true/yes/on' → True, '0/false/no/off' → False, unset or 'auto' → None (decide per server)."""
    if value is None or value.strip().lower() in ("", "auto"):
        return None
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r} (use true, false or auto)")


class SmtpSettings(BaseModel):
    """Where the worker relays mail. The defaults point at `starter.mailcatcher` of `make run`."""

    host: str = "localhost"
    port: int = 2525
    username: str | None = None
    password: SecretStr | None = None  # kept out of reprs and logs
    start_tls: bool | None = None  # None: use STARTTLS when the server offers it
    use_tls: bool = False  # implicit TLS from the first byte (usually port 465)
    timeout: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SmtpSettings:
        """Read HOSTLIFE_SMTP_HOST/PORT/USER/PASSWORD[_FILE]/STARTTLS/TLS/TIMEOUT; unset ones keep the default."""
        env = os.environ if env is None else env
        password = secret_from_env(env, "HOSTLIFE_SMTP_PASSWORD")
        defaults = cls()
        return cls(
            host=env.get("HOSTLIFE_SMTP_HOST") or defaults.host,
            port=int(env.get("HOSTLIFE_SMTP_PORT") or defaults.port),
            username=env.get("HOSTLIFE_SMTP_USER") or None,
            password=SecretStr(password) if password else None,
            start_tls=_env_flag(env.get("HOSTLIFE_SMTP_STARTTLS")),
            use_tls=bool(_env_flag(env.get("HOSTLIFE_SMTP_TLS"))),
            timeout=float(env.get("HOSTLIFE_SMTP_TIMEOUT") or defaults.timeout),
        )


def _is_permanent(code: int) -> bool:
    return 500 <= code < 600


def classify_smtp_error(exc: Exception) -> MailError:
    """Translate an aiosmtplib error: a 5xx reply or a relay lacking what we asked for is permanent.

    A dropped connection or a timeout may come after the server took the message; it is still
    temporary, because the retry carries the same Message-ID and the duplicate is recognised.
    """
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [refused.code for refused in exc.recipients]
        if codes and all(_is_permanent(code) for code in codes):
            return MailPermanentError(f"recipients refused: {exc}")
        return MailTemporaryError(f"recipients deferred: {exc}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if _is_permanent(exc.code):
            return MailPermanentError(f"{exc.code} {exc.message}")
        return MailTemporaryError(f"{exc.code} {exc.message}")
    if isinstance(exc, OSError):  # refused, dropped, timed out, TLS failed; aiosmtplib's are OSErrors too
        return MailTemporaryError(f"{type(exc).__name__}: {exc}")
    # What remains is the relay and our settings disagreeing (STARTTLS or AUTH asked for but not
    # offered, SMTPUTF8 missing): no retry can fix that, only the operator.
    return MailPermanentError(f"relay and settings disagree: {exc}")


class SmtpMailer:
    """Delivers through an SMTP relay with aiosmtplib, one connection per message."""

    def __init__(self, settings: SmtpSettings | None = None) -> None:
        self.settings = settings or SmtpSettings()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SmtpMailer:
        return cls(SmtpSettings.from_env(env))

    async def deliver(self, message: EmailMessage) -> None:
        s = self.settings
        try:
            await aiosmtplib.send(
                message,
                hostname=s.host,
                port=s.port,
                username=s.username,
                password=s.password.get_secret_value() if s.password else None,
                use_tls=s.use_tls,
                start_tls=s.start_tls,
                timeout=s.timeout,
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise classify_smtp_error(exc) from exc


# --- Rendering ---------------------------------------------------------------------------------

LOCALES: dict[str, str] = {"cs": "cs_CZ", "en": "en_GB"}
"""Languages we write notices in, with the locale their amounts and dates are formatted for."""

FALLBACK_LANGUAGE = "en"
NBSP = "\u00a0"
DEFAULT_SENDER = "billing@hostlife.invalid"
DEFAULT_SENDER_NAME = "hostlife"
DEFAULT_BANK_ACCOUNT = "2400123456/2010"


def notice_language(language: str) -> str:
    """'cs', 'cs-CZ' and 'cs_CZ' are Czech; a language we do not write in gets English."""
    primary = language.strip().replace("_", "-").split("-")[0].lower()
    return primary if primary in LOCALES else FALLBACK_LANGUAGE


def _require(value: Any, what: str) -> Any:
    if value is None:
        raise ValueError(f"a notice printed {what} that it does not have")
    return value


@pass_context
def _money_filter(context: Context, amount: Decimal | None, currency: str | None = None) -> str:
    text = format_currency(
        _require(amount, "an amount"), currency or context["currency"], locale=context["locale"]
    )
    # CLDR puts a space between a currency code and the digits; Babel does not ("CZK1,200.00").
    return re.sub(r"^([A-Z]{3})(?=\d)", "\\1" + NBSP, text)


@pass_context
def _date_filter(context: Context, day: date | None) -> str:
    # Non-breaking spaces keep "15. května 2025" on one line when the text part is wrapped.
    return format_date(_require(day, "a date"), format="long", locale=context["locale"]).replace(" ", NBSP)


@pass_context
def _days_filter(context: Context, days: int | None) -> str:
    return format_unit(abs(_require(days, "a number of days")), "duration-day", locale=context["locale"])


def _wrap(text: str, width: int = 76) -> str:
    """Wrap a plain-text paragraph without splitting long tokens (account numbers, addresses)."""
    flowing = re.sub(r"[ \t\r\n]+", " ", text).strip()  # not str.split(): that eats no-break spaces
    return textwrap.fill(flowing, width=width, break_long_words=False, break_on_hyphens=False)


def _environment(html: bool) -> Environment:
    env = Environment(
        loader=PackageLoader("activities", "templates"),
        undefined=StrictUndefined,
        autoescape=html,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters.update(money=_money_filter, date=_date_filter, days=_days_filter, wrap=_wrap)
    return env


class RenderedNotice(BaseModel):
    subject: str
    text: str
    html: str
    language: str


class NoticeRenderer:
    """Jinja2 over `activities/templates/mail/`; StrictUndefined: a typo fails instead of mailing blanks."""

    def __init__(self, bank_account: str = DEFAULT_BANK_ACCOUNT, sender_name: str = DEFAULT_SENDER_NAME):
        self.bank_account = bank_account
        self.sender_name = sender_name
        self._text = _environment(html=False)
        self._html = _environment(html=True)

    def render(self, notice: SendNoticeInput) -> RenderedNotice:
        """Subject, text and HTML of one notice, in the customer's language."""
        missing = sorted(
            name for name in REQUIRED_FACTS[notice.template] if getattr(notice.facts, name) in (None, "")
        )
        if missing:
            raise NoticeRenderError(f"{notice.template.value} needs {', '.join(missing)}")
        language = notice_language(notice.language)
        name = f"mail/{notice.template.value}.{language}.j2"
        context = {
            **notice.facts.model_dump(),
            "service_name": notice.facts.service_name or notice.service_id,
            "service_id": notice.service_id,
            "customer_id": notice.customer_id,
            "language": language,
            "locale": LOCALES[language],
            "bank_account": self.bank_account,
            "sender_name": self.sender_name,
            "strings": f"mail/_strings.{language}.j2",
        }
        try:
            text_template = self._text.get_template(name)
            subject = "".join(text_template.blocks["subject"](text_template.new_context(context)))
            text = text_template.render(**context, layout="mail/_layout.txt.j2", macros="mail/_macros.txt.j2")
            html = self._html.get_template(name).render(
                **context, layout="mail/_layout.html.j2", macros="mail/_macros.html.j2"
            )
        except (TemplateError, ValueError, KeyError) as exc:
            raise NoticeRenderError(f"{name}: {exc}") from exc
        return RenderedNotice(
            subject=" ".join(subject.split()),  # one line, ordinary spaces (no-break ones are for wrapping)
            text=re.sub(r"\n{3,}", "\n\n", text).strip(),
            html=html.strip(),
            language=language,
        )


def compose_message(
    notice: SendNoticeInput,
    rendered: RenderedNotice,
    sender: str,
    sender_name: str = DEFAULT_SENDER_NAME,
    sent_at: datetime | None = None,
) -> EmailMessage:
    """A multipart/alternative message whose Message-ID depends only on the idempotency key."""
    message = EmailMessage()
    message["From"] = formataddr((sender_name, sender))
    message["To"] = notice.to
    message["Subject"] = rendered.subject
    message["Date"] = format_datetime(sent_at or datetime.now(UTC))
    message["Message-ID"] = message_id_for(notice.idempotency_key, domain=sender.rpartition("@")[2])
    message["Auto-Submitted"] = "auto-generated"
    message["X-Hostlife-Template"] = notice.template.value
    message["X-Hostlife-Service"] = notice.service_id
    message["X-Hostlife-Customer"] = notice.customer_id
    message.set_content(rendered.text + "\n")
    message.add_alternative(rendered.html + "\n", subtype="html")
    message["Content-Language"] = rendered.language  # after the parts: set_content drops Content-*
    # A boundary from the key instead of a random one, so a retry produces the very same bytes; "=_"
    # never occurs in base64 or quoted-printable bodies and the digest not in our templates' text.
    message.set_boundary("=_" + hashlib.sha256(notice.idempotency_key.encode()).hexdigest()[:32])
    return message


_default_renderer: NoticeRenderer | None = None


def render_notice(
    notice: SendNoticeInput,
    sender: str = DEFAULT_SENDER,
    bank_account: str = DEFAULT_BANK_ACCOUNT,
    sent_at: datetime | None = None,
) -> EmailMessage:
    """Render and compose one notice with default settings; `MailActivities` does the same with its own."""
    global _default_renderer
    if bank_account != DEFAULT_BANK_ACCOUNT:
        renderer = NoticeRenderer(bank_account=bank_account)
    else:
        _default_renderer = _default_renderer or NoticeRenderer()
        renderer = _default_renderer
    return compose_message(notice, renderer.render(notice), sender, renderer.sender_name, sent_at)


# --- Activity ----------------------------------------------------------------------------------


def _scheduled_time() -> datetime | None:
    """When Temporal first scheduled this activity: the same on every retry, so each attempt is identical."""
    try:
        return activity.info().scheduled_time
    except RuntimeError:  # called outside an activity
        return None


class MailActivities:
    """Sends notices; delivery errors come out as retryable or non-retryable `ApplicationError`s."""

    def __init__(
        self,
        mailer: Mailer,
        sender: str = DEFAULT_SENDER,
        bank_account: str = DEFAULT_BANK_ACCOUNT,
        sender_name: str = DEFAULT_SENDER_NAME,
    ) -> None:
        self.mailer = mailer
        self.sender = sender
        self.renderer = NoticeRenderer(bank_account=bank_account, sender_name=sender_name)

    @classmethod
    def from_env(cls, mailer: Mailer | None = None, env: Mapping[str, str] | None = None) -> MailActivities:
        """Sender and bank account from HOSTLIFE_SMTP_SENDER(_NAME) and HOSTLIFE_BANK_ACCOUNT; relay too."""
        env = os.environ if env is None else env
        return cls(
            mailer if mailer is not None else SmtpMailer.from_env(env),
            sender=env.get("HOSTLIFE_SMTP_SENDER") or DEFAULT_SENDER,
            bank_account=env.get("HOSTLIFE_BANK_ACCOUNT") or DEFAULT_BANK_ACCOUNT,
            sender_name=env.get("HOSTLIFE_SMTP_SENDER_NAME") or DEFAULT_SENDER_NAME,
        )

    @activity.defn
    async def send_notice(self, notice: SendNoticeInput) -> SendNoticeResult:
        try:
            rendered = self.renderer.render(notice)
        except NoticeRenderError as exc:
            raise ApplicationError(str(exc), type="NoticeRenderError", non_retryable=True) from exc
        message = compose_message(notice, rendered, self.sender, self.renderer.sender_name, _scheduled_time())
        message_id = str(message["Message-ID"])
        try:
            await watched(
                self.mailer.deliver(message),
                what=f"deliver {notice.template} to the mail relay",
                deadline=deadline_for("mail"),
            )
        except MailPermanentError as exc:
            activity.logger.warning(
                "notice refused", extra={"message_id": message_id, "service_id": notice.service_id}
            )
            raise ApplicationError(str(exc), type="MailPermanentError", non_retryable=True) from exc
        except MailTemporaryError as exc:
            activity.logger.info(
                "notice deferred", extra={"message_id": message_id, "service_id": notice.service_id}
            )
            raise ApplicationError(str(exc), type="MailTemporaryError") from exc
        activity.logger.info(
            "notice sent",
            extra={"message_id": message_id, "service_id": notice.service_id, "template": notice.template},
        )
        return SendNoticeResult(message_id=message_id)

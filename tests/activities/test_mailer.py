"""Notices rendered from the real templates and delivered to a real aiosmtpd server on loopback."""

from __future__ import annotations

import asyncio
import sysconfig
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from pydantic import SecretStr
from temporalio import workflow
from temporalio.client import WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

from activities.mailer import (
    REQUIRED_FACTS,
    MailActivities,
    MailPermanentError,
    MailTemporaryError,
    NoticeFacts,
    NoticeKind,
    NoticeRenderer,
    NoticeRenderError,
    SendNoticeInput,
    SendNoticeResult,
    SmtpMailer,
    SmtpSettings,
    message_id_for,
    render_notice,
)
from starter.mailcatcher import MailCatcher, MailStore

NBSP = "\u00a0"


def nb(text: str) -> str:
    """Dates are printed with no-break spaces, so they never break across lines."""
    return text.replace(" ", NBSP)


SAMPLE: dict[str, Any] = {
    "expires_on": date(2025, 5, 15),
    "variable_symbol": "2025000042",
    "amount": "1234.50",
    "due_on": date(2025, 5, 1),
    "block_on": date(2025, 5, 16),
    "deletion_on": date(2025, 7, 15),
    "backup_until": date(2025, 7, 29),
    "reason": "stale_variable_symbol",
    "payment_id": "BANK-77",
    "fee": "500.00",
    "days_before": 3,
    "remedy": "Remove the mass-mailing script and confirm it to abuse@hostlife.invalid.",
    "respond_by": date(2025, 5, 20),
    "effective_on": date(2025, 6, 30),
    "previous_amount": "1100.00",
    "period": "P1Y",
    "notice_number": 2,
    "notices_before_suspension": 3,
    "plan": "vps-l",
}
"""A value for every optional fact, so a template can be rendered with any subset of them."""


def notice(
    kind: NoticeKind, language: str = "cs", key: str = "service-42:invoice:2025", **facts: Any
) -> SendNoticeInput:
    return SendNoticeInput(
        idempotency_key=key,
        service_id="42",
        customer_id="c-7",
        to="jana@example.cz",
        language=language,
        template=kind,
        facts=NoticeFacts(service_name="example.cz", **facts),
    )


def minimal(kind: NoticeKind, language: str = "cs", **extra: Any) -> SendNoticeInput:
    """Only the facts the notice requires: proves the templates print nothing they were not given."""
    return notice(kind, language, **{name: SAMPLE[name] for name in REQUIRED_FACTS[kind]}, **extra)


def parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    return str(text.get_content()), str(html.get_content())


# --- Rendering ---------------------------------------------------------------------------------

renderer = NoticeRenderer()
ALL = [(kind, language) for kind in NoticeKind for language in ("cs", "en")]


@pytest.mark.parametrize(("kind", "language"), ALL)
def test_every_notice_renders_with_only_its_required_facts(kind: NoticeKind, language: str) -> None:
    rendered = renderer.render(minimal(kind, language))
    greeting = "Dobrý den," if language == "cs" else "Hello,"
    assert rendered.subject and "\n" not in rendered.subject
    assert rendered.text.startswith(greeting)
    assert rendered.html.startswith("<!DOCTYPE html>") and f'<html lang="{language}">' in rendered.html
    assert greeting in rendered.html and "example.cz" in rendered.html
    for part in (rendered.subject, rendered.text, rendered.html):
        assert "None" not in part and "{{" not in part and "{%" not in part
    assert "<" not in rendered.text


@pytest.mark.parametrize(("kind", "language"), ALL)
def test_every_notice_renders_with_every_fact(kind: NoticeKind, language: str) -> None:
    rendered = renderer.render(notice(kind, language, **SAMPLE))
    assert "None" not in rendered.text and "None" not in rendered.html


@pytest.mark.parametrize(
    ("kind", "fact"), [(kind, fact) for kind in NoticeKind for fact in sorted(REQUIRED_FACTS[kind])]
)
def test_a_missing_required_fact_is_refused_not_mailed_blank(kind: NoticeKind, fact: str) -> None:
    facts = {name: SAMPLE[name] for name in REQUIRED_FACTS[kind] if name != fact}
    with pytest.raises(NoticeRenderError, match=fact):
        renderer.render(notice(kind, **facts))


def test_czech_and_english_templates_say_different_things_for_every_notice() -> None:
    for kind in NoticeKind:
        cs, en = renderer.render(minimal(kind, "cs")), renderer.render(minimal(kind, "en"))
        assert cs.subject != en.subject, kind
        assert cs.text.split("\n\n")[1] != en.text.split("\n\n")[1], kind


@pytest.mark.parametrize(
    ("language", "amount", "due", "expires"),
    [
        ("cs", f"1{NBSP}234,50{NBSP}Kč", nb("1. května 2025"), nb("15. května 2025")),
        ("en", f"CZK{NBSP}1,234.50", nb("1 May 2025"), nb("15 May 2025")),
    ],
)
def test_invoice_carries_payment_details_formatted_for_the_locale(
    language: str, amount: str, due: str, expires: str
) -> None:
    rendered = NoticeRenderer(bank_account="19-2000145399/0800").render(
        minimal(NoticeKind.INVOICE_ISSUED, language)
    )
    for part in (rendered.text, rendered.html):
        assert amount in part
        assert due in part and expires in part
        assert "2025000042" in part
        assert "19-2000145399/0800" in part
    assert "2025000042" in rendered.subject


def test_reminder_wording_follows_the_days_before_expiry() -> None:
    before = renderer.render(notice(NoticeKind.REMINDER, "en", **{**SAMPLE, "days_before": 14})).text
    today = renderer.render(notice(NoticeKind.REMINDER, "en", **{**SAMPLE, "days_before": 0})).text
    after = renderer.render(notice(NoticeKind.REMINDER, "en", **{**SAMPLE, "days_before": -1})).text
    assert "in 14 days" in before
    assert "expires today" in today
    assert nb("expired on 15 May 2025") in after.replace(" ", NBSP)
    assert "za 3 dny" in renderer.render(minimal(NoticeKind.REMINDER, "cs")).text


def test_wrapping_the_text_part_never_splits_an_amount_or_a_date() -> None:
    text = renderer.render(notice(NoticeKind.SUSPENDED, "cs", reason="spam", fee="1000.00")).text
    assert f"1{NBSP}000,00{NBSP}Kč" in text
    lines = renderer.render(minimal(NoticeKind.SERVICE_BLOCKED, "cs", deletion_on=SAMPLE["deletion_on"])).text
    assert nb("15. července 2025") in lines
    assert all(len(line) <= 76 for line in lines.splitlines())


def test_reason_codes_are_translated_and_free_text_is_kept() -> None:
    coded = renderer.render(minimal(NoticeKind.PAYMENT_HELD, "cs")).text
    free = renderer.render(
        notice(NoticeKind.PAYMENT_RETURNED, "en", amount="10.00", reason="payer asked")
    ).text
    assert "variabilní symbol zrušené nebo starší výzvy" in " ".join(coded.split())
    assert "Reason: payer asked." in free


def test_html_part_escapes_facts_the_text_part_prints_verbatim() -> None:
    rendered = renderer.render(
        notice(NoticeKind.SUSPENDED, "en", reason="spam", remedy="Delete <script> & tell us")
    )
    assert "Delete <script> & tell us" in rendered.text
    assert "Delete &lt;script&gt; &amp; tell us" in rendered.html
    assert "<script>" not in rendered.html


def test_suspension_names_the_given_remedy_or_the_standard_one() -> None:
    standard = renderer.render(notice(NoticeKind.SUSPENDED, "en", reason="abuse")).text
    given = renderer.render(
        notice(NoticeKind.SUSPENDED, "en", reason="abuse", remedy="Patch WordPress.")
    ).text
    assert "Reason: abuse of the service." in standard
    assert "by replying to this e-mail" in " ".join(standard.split())
    assert "How to lift the suspension: Patch WordPress." in given
    assert "Patch WordPress." not in standard and "by replying" not in given


@pytest.mark.parametrize(("asked", "written"), [("cs-CZ", "cs"), ("cs_CZ", "cs"), ("EN", "en"), ("de", "en")])
def test_language_tags_are_normalised_and_unknown_ones_get_english(asked: str, written: str) -> None:
    message = render_notice(minimal(NoticeKind.SERVICE_BLOCKED, asked))
    assert message["Content-Language"] == written


def test_a_retried_render_produces_the_same_bytes() -> None:
    """Date comes from the activity's first scheduling and the MIME boundary from the key."""
    sent_at = datetime(2025, 5, 12, 6, 0, tzinfo=UTC)
    first = render_notice(minimal(NoticeKind.REMINDER, key="k"), sent_at=sent_at)
    again = render_notice(minimal(NoticeKind.REMINDER, key="k"), sent_at=sent_at)
    assert first.as_bytes() == again.as_bytes()
    assert first["Date"] == "Mon, 12 May 2025 06:00:00 +0000"


def test_message_id_depends_only_on_the_idempotency_key() -> None:
    first = render_notice(minimal(NoticeKind.REMINDER, key="service-42:reminder:2025-05-12"))
    again = render_notice(minimal(NoticeKind.REMINDER, key="service-42:reminder:2025-05-12"))
    other = render_notice(minimal(NoticeKind.REMINDER, key="service-42:reminder:2025-05-16"))
    assert first["Message-ID"] == again["Message-ID"] == message_id_for("service-42:reminder:2025-05-12")
    assert first["Message-ID"] != other["Message-ID"]


def test_smtp_settings_read_the_environment_with_documented_defaults() -> None:
    assert SmtpSettings.from_env({}) == SmtpSettings(host="localhost", port=2525, start_tls=None)
    settings = SmtpSettings.from_env(
        {
            "HOSTLIFE_SMTP_HOST": "smtp.example.net",
            "HOSTLIFE_SMTP_PORT": "587",
            "HOSTLIFE_SMTP_USER": "hostlife",
            "HOSTLIFE_SMTP_PASSWORD": "secret",
            "HOSTLIFE_SMTP_STARTTLS": "true",
            "HOSTLIFE_SMTP_TIMEOUT": "10",
        }
    )
    assert (settings.host, settings.port, settings.username) == ("smtp.example.net", 587, "hostlife")
    assert settings.password is not None and settings.password.get_secret_value() == "secret"
    assert "secret" not in repr(settings)
    assert settings.start_tls is True and settings.use_tls is False and settings.timeout == 10
    assert (
        SmtpSettings.from_env({"HOSTLIFE_SMTP_STARTTLS": "no", "HOSTLIFE_SMTP_TLS": "1"}).start_tls is False
    )
    assert SmtpSettings.from_env({"HOSTLIFE_SMTP_TLS": "1"}).use_tls is True
    with pytest.raises(ValueError, match="boolean"):
        SmtpSettings.from_env({"HOSTLIFE_SMTP_STARTTLS": "maybe"})


def test_mail_activities_take_sender_and_bank_account_from_the_environment() -> None:
    activities = MailActivities.from_env(
        env={"HOSTLIFE_SMTP_SENDER": "fakturace@example.cz", "HOSTLIFE_BANK_ACCOUNT": "123/0100"}
    )
    assert isinstance(activities.mailer, SmtpMailer)
    assert activities.sender == "fakturace@example.cz"
    assert activities.renderer.bank_account == "123/0100"
    assert MailActivities.from_env(env={}).renderer.bank_account == "2400123456/2010"


# --- Delivery to a real SMTP server ------------------------------------------------------------


class FlakyStore(MailStore):
    """The catcher's store with one fault on the first DATA: refuse it, or take it and then fail."""

    def __init__(self, directory: Path, fault: str | None = None) -> None:
        super().__init__(directory)
        self.fault = fault
        self.attempts = 0
        self.release = asyncio.Event()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.attempts += 1
        first = self.attempts == 1
        if first and self.fault == "refuse":
            return "451 4.3.0 Try again later"
        reply = await super().handle_DATA(server, session, envelope)
        if first and self.fault == "drop":
            assert server.transport is not None
            server.transport.close()  # accepted, but the client never hears it
        if first and self.fault == "stall":
            await self.release.wait()  # accepted, but the reply comes after the client gave up
        return reply

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 No such user"
        if address.startswith("full@"):
            return "452 4.2.2 Mailbox full"
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
async def catcher(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[MailCatcher]:
    fault = getattr(request, "param", None)
    store = FlakyStore(tmp_path / "mail", fault)
    async with MailCatcher(host="127.0.0.1", port=0, store=store) as running:
        yield running
        store.release.set()


def smtp(catcher: MailCatcher, timeout: float = 5.0, **settings: Any) -> SmtpMailer:
    return SmtpMailer(SmtpSettings(host=catcher.host, port=catcher.port, timeout=timeout, **settings))


async def test_sent_notice_arrives_with_headers_and_both_parts_in_the_customers_language(
    catcher: MailCatcher,
) -> None:
    activities = MailActivities(smtp(catcher), sender="fakturace@hostlife.invalid", bank_account="123/0100")
    result = await ActivityEnvironment().run(
        activities.send_notice, minimal(NoticeKind.INVOICE_ISSUED, "cs", key="service-42:invoice:2025-04-15")
    )

    [message] = catcher.messages()
    assert message["Message-ID"] == result.message_id
    assert result.message_id == message_id_for("service-42:invoice:2025-04-15", "hostlife.invalid")
    assert message["From"] == "hostlife <fakturace@hostlife.invalid>"
    assert message["To"] == "jana@example.cz"
    assert message["X-Envelope-To"] == "jana@example.cz"
    assert message["Subject"] == "Výzva k úhradě: example.cz, VS 2025000042"
    assert message["Content-Language"] == "cs"
    assert message["X-Hostlife-Template"] == "invoice_issued"
    assert message["X-Hostlife-Service"] == "42"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Date"] is not None
    assert message.get_content_type() == "multipart/alternative"
    text, html = parts(message)
    assert text.startswith("Dobrý den,") and "<p>Dobrý den,</p>" in html
    for part in (text, html):
        assert f"1{NBSP}234,50{NBSP}Kč" in part and "2025000042" in part and "123/0100" in part


async def test_english_customer_gets_english_mail(catcher: MailCatcher) -> None:
    await smtp(catcher).deliver(render_notice(minimal(NoticeKind.SERVICE_BLOCKED, "en")))
    [message] = catcher.messages()
    text, html = parts(message)
    assert message["Subject"] == "Service blocked: example.cz"
    assert message["Content-Language"] == "en"
    assert "We have blocked your service example.cz" in text
    assert "We have blocked your service example.cz" in html


async def test_the_same_notice_sent_twice_is_stored_once(catcher: MailCatcher) -> None:
    mailer = smtp(catcher)
    await mailer.deliver(render_notice(minimal(NoticeKind.REMINDER, key="k1")))
    await mailer.deliver(render_notice(minimal(NoticeKind.REMINDER, key="k1")))
    await mailer.deliver(render_notice(minimal(NoticeKind.REMINDER, key="k2")))
    assert catcher.store.received == 3
    assert len(catcher.messages()) == 2


@pytest.mark.parametrize(
    ("to", "error"),
    [("nobody@example.cz", MailPermanentError), ("full@example.cz", MailTemporaryError)],
)
async def test_refused_recipient_is_permanent_on_5xx_and_temporary_on_4xx(
    catcher: MailCatcher, to: str, error: type[Exception]
) -> None:
    message = render_notice(minimal(NoticeKind.REMINDER))
    message.replace_header("To", to)
    with pytest.raises(error):
        await smtp(catcher).deliver(message)
    assert catcher.messages() == []


@pytest.mark.parametrize("catcher", ["refuse"], indirect=True)
async def test_4xx_on_data_is_temporary(catcher: MailCatcher) -> None:
    with pytest.raises(MailTemporaryError, match="451"):
        await smtp(catcher).deliver(render_notice(minimal(NoticeKind.REMINDER)))


async def test_no_server_listening_is_temporary(tmp_path: Path) -> None:
    async with MailCatcher(tmp_path, port=0) as stopped:
        port = stopped.port
    mailer = SmtpMailer(SmtpSettings(host="127.0.0.1", port=port, timeout=2))
    with pytest.raises(MailTemporaryError):
        await mailer.deliver(render_notice(minimal(NoticeKind.REMINDER)))


async def test_starttls_demanded_from_a_relay_without_it_is_permanent(catcher: MailCatcher) -> None:
    with pytest.raises(MailPermanentError, match="STARTTLS"):
        await smtp(catcher, start_tls=True).deliver(render_notice(minimal(NoticeKind.REMINDER)))


@pytest.fixture
async def auth_server(tmp_path: Path) -> AsyncIterator[tuple[MailStore, int]]:
    """A relay that requires AUTH PLAIN/LOGIN as hostlife/secret (no TLS, loopback only)."""

    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"hostlife", b"secret")
        return AuthResult(success=ok, handled=False)  # handled=True would mean we sent the reply

    store = MailStore(tmp_path)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            store, hostname="relay", authenticator=authenticate, auth_required=True, auth_require_tls=False
        ),
        "127.0.0.1",
        0,
    )
    yield store, server.sockets[0].getsockname()[1]
    server.close()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_relay_login_uses_the_configured_credentials(auth_server: tuple[MailStore, int]) -> None:
    store, port = auth_server
    message = render_notice(minimal(NoticeKind.REMINDER))
    wrong = SmtpMailer(
        SmtpSettings(host="127.0.0.1", port=port, username="hostlife", password=SecretStr("nope"))
    )
    with pytest.raises(MailPermanentError, match="535"):
        await wrong.deliver(message)
    right = SmtpMailer(
        SmtpSettings(host="127.0.0.1", port=port, username="hostlife", password=SecretStr("secret"))
    )
    await right.deliver(message)
    assert [m["Message-ID"] for m in store.messages()] == [message["Message-ID"]]


async def test_activity_reports_temporary_errors_as_retryable_and_permanent_ones_as_not(
    catcher: MailCatcher,
) -> None:
    activities = MailActivities(smtp(catcher))
    env = ActivityEnvironment()
    with pytest.raises(ApplicationError) as temporary:
        await env.run(
            activities.send_notice,
            notice(NoticeKind.REMINDER, **SAMPLE).model_copy(update={"to": "full@example.cz"}),
        )
    assert temporary.value.type == "MailTemporaryError" and not temporary.value.non_retryable
    with pytest.raises(ApplicationError) as permanent:
        await env.run(
            activities.send_notice,
            notice(NoticeKind.REMINDER, **SAMPLE).model_copy(update={"to": "nobody@example.cz"}),
        )
    assert permanent.value.type == "MailPermanentError" and permanent.value.non_retryable
    with pytest.raises(ApplicationError) as unrenderable:
        await env.run(activities.send_notice, notice(NoticeKind.REMINDER))
    assert unrenderable.value.type == "NoticeRenderError" and unrenderable.value.non_retryable


# --- Exactly once, with Temporal retrying the activity -----------------------------------------


@workflow.defn(sandboxed=False)
class SendOneNotice:
    """Stands in for the lifecycle workflow: one notice with a bounded retry policy."""

    @workflow.run
    async def run(self, notice: SendNoticeInput) -> SendNoticeResult:
        return await workflow.execute_activity_method(
            MailActivities.send_notice,
            notice,
            start_to_close_timeout=timedelta(seconds=20),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=3),
        )


@pytest.fixture(scope="module")
async def temporal() -> AsyncIterator[WorkflowEnvironment]:
    server = Path(sysconfig.get_path("scripts"), "temporal-test-server")
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(server), data_converter=pydantic_data_converter
    ) as env:
        yield env


async def run_send(
    temporal: WorkflowEnvironment, mailer: SmtpMailer, item: SendNoticeInput
) -> SendNoticeResult:
    task_queue = str(uuid.uuid4())
    async with Worker(
        temporal.client,
        task_queue=task_queue,
        workflows=[SendOneNotice],
        activities=[MailActivities(mailer).send_notice],
    ):
        return await temporal.client.execute_workflow(
            SendOneNotice.run, item, id=f"mail-test-{uuid.uuid4()}", task_queue=task_queue
        )


@pytest.mark.parametrize("catcher", ["refuse", "drop", "stall"], indirect=True)
async def test_a_retry_after_a_failed_first_attempt_delivers_exactly_one_message(
    temporal: WorkflowEnvironment, catcher: MailCatcher
) -> None:
    """refuse: 451 on the first DATA. drop/stall: the server took the message, the client never saw it."""
    item = minimal(NoticeKind.DELETION_WARNING, "en", key="service-42:deletion_warning:2025-07-08")
    result = await run_send(temporal, smtp(catcher, timeout=1.0), item)

    store = catcher.store
    assert isinstance(store, FlakyStore)
    assert store.attempts == 2
    [message] = catcher.messages()
    assert message["Message-ID"] == result.message_id == message_id_for(item.idempotency_key)
    assert message["Subject"] == "Final notice: example.cz will be deleted on 15 July 2025"  # plain spaces
    text, _ = parts(message)
    assert "This is the final notice." in text


async def test_a_permanent_refusal_is_not_retried(
    temporal: WorkflowEnvironment, catcher: MailCatcher
) -> None:
    item = minimal(NoticeKind.REMINDER).model_copy(update={"to": "nobody@example.cz"})
    with pytest.raises(WorkflowFailureError) as failed:
        await run_send(temporal, smtp(catcher), item)
    activity_error = failed.value.cause
    assert isinstance(activity_error, ActivityError)
    assert isinstance(activity_error.cause, ApplicationError)
    assert activity_error.cause.type == "MailPermanentError"
    assert (
        activity_error.retry_state is not None and activity_error.retry_state.name == "NON_RETRYABLE_FAILURE"
    )
    assert catcher.messages() == []

"""EppRegistrar against a local EPP registry over TLS on a free loopback port (tests/eppserver.py)."""

from __future__ import annotations

import asyncio
import struct
import sysconfig
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

from activities.epp import EppConfig, frame
from activities.registrar import (
    AcknowledgeRegistryMessageInput,
    EppRegistrar,
    ReadDomainInput,
    ReadRegistryMessageInput,
    RegistrarActivities,
    RegistrarRefused,
    RegistrarUnavailable,
    RenewDomainInput,
    RenewDomainResult,
    RestoreDomainInput,
)
from tests.eppserver import FRED_OBJECTS, EppServer, Notice, Tls

EXPIRY = date(2026, 3, 10)


@pytest.fixture(scope="session")
def tls() -> Iterator[Tls]:
    yield Tls()


@pytest.fixture
async def server(tls: Tls) -> AsyncIterator[EppServer]:
    registry = EppServer(tls)
    await registry.start()
    yield registry
    await registry.stop()


@pytest.fixture
async def fred(tls: Tls) -> AsyncIterator[EppServer]:
    registry = EppServer(tls, dialect="fred")
    await registry.start()
    yield registry
    await registry.stop()


def config(tls: Tls, server: EppServer, **overrides: object) -> EppConfig:
    values: dict[str, object] = dict(
        host="127.0.0.1", port=server.port, client_id="REG-HOSTLIFE", password="secret-pw",
        dialect=server.dialect, ca_file=tls.ca_file, command_timeout=2.0,
    )
    values.update(overrides)
    return EppConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
async def registrar(tls: Tls, server: EppServer) -> AsyncIterator[EppRegistrar]:
    adapter = EppRegistrar(config(tls, server))
    yield adapter
    await adapter.close()


def renewal(name: str, current_expiry: date = EXPIRY, years: int = 1) -> RenewDomainInput:
    return RenewDomainInput(idempotency_key=f"service-1:renew:{current_expiry}", service_id="1",
                            domain_name=name, current_expiry=current_expiry, years=years)


async def run_activity_error(coroutine_function: object, request: object) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(coroutine_function, request)  # type: ignore[arg-type]
    return caught.value


# --- framing and session --------------------------------------------------------------------


def test_frame_length_counts_header_and_utf8_bytes() -> None:
    payload = "<name>příklad.cz</name>".encode()
    framed = frame(payload)
    assert struct.unpack("!I", framed[:4])[0] == len(payload) + 4 == len(framed)


async def test_login_announces_services_from_greeting_and_hello_keeps_session(
    server: EppServer, registrar: EppRegistrar
) -> None:
    server.add_domain("example.com", EXPIRY)
    info = await registrar.read_domain("example.com")
    assert info.expires_on == EXPIRY
    assert server.logins == [[
        "urn:ietf:params:xml:ns:domain-1.0", "urn:ietf:params:xml:ns:contact-1.0",
        "urn:ietf:params:xml:ns:host-1.0", "urn:ietf:params:xml:ns:rgp-1.0",
    ]]
    await registrar.client.hello()
    await registrar.read_domain("example.com")
    assert server.executed == [("login", ""), ("info", "example.com"), ("hello", ""), ("info", "example.com")]
    assert registrar.client.connects == 1


async def test_reconnects_after_registry_dropped_the_session(
    server: EppServer, registrar: EppRegistrar
) -> None:
    server.add_domain("example.com", EXPIRY)
    await registrar.read_domain("example.com")
    await server.drop_all_connections()
    assert (await registrar.read_domain("example.com")).expires_on == EXPIRY
    assert registrar.client.connects == 2
    assert server.count("login") == 2


async def test_idle_session_is_checked_with_hello_first(tls: Tls, server: EppServer) -> None:
    server.add_domain("example.com", EXPIRY)
    adapter = EppRegistrar(config(tls, server, keepalive_interval=0.05))
    try:
        await adapter.read_domain("example.com")
        await asyncio.sleep(0.1)
        await adapter.read_domain("example.com")
    finally:
        await adapter.close()
    assert [c for c, _ in server.executed] == ["login", "info", "hello", "info"]


async def test_concurrent_commands_share_one_session(server: EppServer, registrar: EppRegistrar) -> None:
    for n in range(5):
        server.add_domain(f"d{n}.com", EXPIRY)
    results = await asyncio.gather(*(registrar.read_domain(f"d{n}.com") for n in range(5)))
    assert [r.domain_name for r in results] == [f"d{n}.com" for n in range(5)]
    assert registrar.client.connects == 1


async def test_wrong_password_is_retryable(tls: Tls, server: EppServer) -> None:
    adapter = EppRegistrar(config(tls, server, password="wrong-pw"))
    error = await run_activity_error(RegistrarActivities(adapter).read_domain,
                                     ReadDomainInput(domain_name="example.com"))
    assert error.type == "RegistrarUnavailable"
    assert not error.non_retryable
    assert "2200" in str(error)


async def test_registry_without_the_dialects_namespace_is_not_used(tls: Tls, fred: EppServer) -> None:
    adapter = EppRegistrar(config(tls, fred, dialect="ietf"))
    with pytest.raises(RegistrarUnavailable, match="offers none of"):
        await adapter.read_domain("example.cz")
    assert fred.executed == []


# --- renew --------------------------------------------------------------------------------


async def test_renew_sends_current_expiry_and_returns_the_new_one(
    server: EppServer, registrar: EppRegistrar
) -> None:
    server.add_domain("example.com", EXPIRY)
    result = await ActivityEnvironment().run(RegistrarActivities(registrar).renew_domain,
                                             renewal("example.com", years=2))
    assert result.new_expiry == date(2028, 3, 10)
    assert not result.already_renewed
    assert server.domains["example.com"].expires_on == date(2028, 3, 10)
    assert server.count("renew") == 1


async def test_renew_retried_after_dropped_answer_renews_exactly_once(
    server: EppServer, registrar: EppRegistrar
) -> None:
    server.add_domain("example.com", EXPIRY)
    server.drop_after_next("renew")
    activities = RegistrarActivities(registrar)

    first = await run_activity_error(activities.renew_domain, renewal("example.com"))
    assert first.type == "RegistrarUnavailable"
    assert not first.non_retryable
    assert server.domains["example.com"].expires_on == date(2027, 3, 10)  # the registry did renew

    retried = await ActivityEnvironment().run(activities.renew_domain, renewal("example.com"))
    assert retried.new_expiry == date(2027, 3, 10)
    assert retried.already_renewed
    assert server.count("renew") == 1
    assert server.domains["example.com"].expires_on == date(2027, 3, 10)


async def test_renew_that_hung_unexecuted_is_not_resent_then_retry_renews_once(
    tls: Tls, server: EppServer
) -> None:
    server.add_domain("example.com", EXPIRY)
    server.hang_next("renew")
    adapter = EppRegistrar(config(tls, server, command_timeout=0.3))
    try:
        with pytest.raises(RegistrarUnavailable):
            await adapter.renew_domain("example.com", EXPIRY, 1)
        assert server.count("renew") == 0
        result = await adapter.renew_domain("example.com", EXPIRY, 1)
    finally:
        await adapter.close()
    assert (result.new_expiry, result.already_renewed) == (date(2027, 3, 10), False)
    assert server.count("renew") == 1


async def test_renew_after_registry_closed_an_idle_session_goes_out_on_a_new_one(
    server: EppServer, registrar: EppRegistrar
) -> None:
    server.add_domain("example.com", EXPIRY)
    await registrar.read_domain("example.com")
    await server.drop_all_connections()
    result = await registrar.renew_domain("example.com", EXPIRY, 1)
    assert (result.new_expiry, result.already_renewed) == (date(2027, 3, 10), False)
    assert registrar.client.connects == 2


async def test_renew_from_a_stale_expiry_that_is_not_ours_is_refused(
    server: EppServer, registrar: EppRegistrar
) -> None:
    server.add_domain("example.com", date(2029, 3, 10))
    error = await run_activity_error(RegistrarActivities(registrar).renew_domain, renewal("example.com"))
    assert (error.type, error.non_retryable, error.details) == ("RegistrarRefused", True, (2306,))
    assert "registry expiry is 2029-03-10" in str(error)
    assert server.count("renew") == 0


async def test_query_survives_a_hung_answer_by_reconnecting(tls: Tls, server: EppServer) -> None:
    server.add_domain("example.com", EXPIRY)
    server.hang_next("info")
    adapter = EppRegistrar(config(tls, server, command_timeout=0.3))
    try:
        assert (await adapter.read_domain("example.com")).expires_on == EXPIRY
        assert adapter.client.connects == 2
    finally:
        await adapter.close()


@workflow.defn(sandboxed=False)
class RenewOnceWorkflow:
    """Only here to let Temporal's own retry policy drive the activity."""

    @workflow.run
    async def run(self, request: RenewDomainInput) -> RenewDomainResult:
        return await workflow.execute_activity_method(
            RegistrarActivities.renew_domain, request,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=3,
                                     non_retryable_error_types=["RegistrarRefused"]),
        )


async def test_temporal_retry_after_dropped_renew_reports_already_renewed(
    server: EppServer, registrar: EppRegistrar
) -> None:
    server.add_domain("example.com", EXPIRY)
    server.drop_after_next("renew")
    test_server = Path(sysconfig.get_path("scripts"), "temporal-test-server")
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(test_server), data_converter=pydantic_data_converter
    ) as env:
        task_queue = str(uuid.uuid4())
        async with Worker(env.client, task_queue=task_queue, workflows=[RenewOnceWorkflow],
                          activities=[RegistrarActivities(registrar).renew_domain]):
            result = await env.client.execute_workflow(
                RenewOnceWorkflow.run, renewal("example.com"),
                id=f"renew-{uuid.uuid4()}", task_queue=task_queue,
            )
    assert (result.new_expiry, result.already_renewed) == (date(2027, 3, 10), True)
    assert server.count("renew") == 1


# --- error mapping ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "code"),
    [
        ("missing", 2303),        # object does not exist
        ("pending_delete", 2304),  # status prohibits operation
        ("policy", 2306),         # parameter value policy error
    ],
)
async def test_refusals_are_not_retried(
    server: EppServer, registrar: EppRegistrar, setup: str, code: int
) -> None:
    if setup == "pending_delete":
        server.add_domain("example.com", EXPIRY, statuses={"pendingDelete"})
    elif setup == "policy":
        server.add_domain("example.com", EXPIRY)
        server.fail_next(1, 2306, "period too long")
    error = await run_activity_error(RegistrarActivities(registrar).renew_domain, renewal("example.com"))
    assert (error.type, error.non_retryable, error.details) == ("RegistrarRefused", True, (code,))
    assert server.count("renew") == 0


@pytest.mark.parametrize("code", [2400, 2500, 2502])
async def test_server_failures_are_retried(server: EppServer, registrar: EppRegistrar, code: int) -> None:
    server.add_domain("example.com", EXPIRY)
    server.fail_next(1, code)
    error = await run_activity_error(RegistrarActivities(registrar).renew_domain, renewal("example.com"))
    assert (error.type, error.non_retryable) == ("RegistrarUnavailable", False)
    assert f"EPP {code}" in str(error)
    result = await registrar.renew_domain("example.com", EXPIRY, 1)
    assert (result.new_expiry, result.already_renewed) == (date(2027, 3, 10), False)


async def test_unreachable_registry_is_retried(tls: Tls, server: EppServer) -> None:
    port = server.port
    await server.stop()
    adapter = EppRegistrar(config(tls, server, port=port))
    error = await run_activity_error(RegistrarActivities(adapter).read_domain,
                                     ReadDomainInput(domain_name="example.com"))
    assert (error.type, error.non_retryable) == ("RegistrarUnavailable", False)


# --- RFC 3915 restore ---------------------------------------------------------------------------


async def test_restore_sends_request_then_report(server: EppServer, registrar: EppRegistrar) -> None:
    server.add_domain("example.com", EXPIRY, statuses={"pendingDelete"}, rgp={"redemptionPeriod"})
    request = RestoreDomainInput(idempotency_key="service-1:restore", service_id="1",
                                 domain_name="example.com")
    result = await ActivityEnvironment().run(RegistrarActivities(registrar).restore_domain, request)
    assert (result.restored, result.already_restored) == (True, False)
    assert [c for c, _ in server.executed if c.startswith("restore")] == ["restore-request", "restore-report"]
    (report,) = server.reports
    assert len(report["statement"]) == 2
    assert "name=example.com" in report["preData"][0]
    assert report["resTime"][0].endswith("Z")
    assert server.domains["example.com"].statuses == {"ok"}


async def test_restore_retried_after_dropped_request_only_reports(
    server: EppServer, registrar: EppRegistrar
) -> None:
    server.add_domain("example.com", EXPIRY, statuses={"pendingDelete"}, rgp={"redemptionPeriod"})
    server.drop_after_next("restore")
    with pytest.raises(RegistrarUnavailable):
        await registrar.restore_domain("example.com")
    assert server.domains["example.com"].rgp == {"pendingRestore"}
    result = await registrar.restore_domain("example.com")
    assert result.restored
    assert server.count("restore-request") == 1
    assert server.count("restore-report") == 1
    again = await registrar.restore_domain("example.com")
    assert (again.restored, again.already_restored) == (True, True)
    assert server.count("restore-report") == 1


async def test_restore_of_a_domain_past_redemption_is_refused(
    server: EppServer, registrar: EppRegistrar
) -> None:
    server.add_domain("example.com", EXPIRY, statuses={"pendingDelete"}, rgp={"pendingDelete"})
    with pytest.raises(RegistrarRefused) as caught:
        await registrar.restore_domain("example.com")
    assert caught.value.code == 2304


# --- poll ---------------------------------------------------------------------------------------


async def test_poll_reads_without_dequeuing_until_acknowledged(
    server: EppServer, registrar: EppRegistrar
) -> None:
    server.notices = [Notice("11", "Transfer completed", "moved.com"), Notice("12", "Expiring", "old.com")]
    activities = RegistrarActivities(registrar)
    env = ActivityEnvironment()

    first = await env.run(activities.read_registry_message, ReadRegistryMessageInput())
    assert first.message is not None
    assert (first.message.message_id, first.message.text, first.message.domain_name) == (
        "11", "Transfer completed", "moved.com")
    assert first.remaining == 2
    assert first.message.queued_at is not None and first.message.queued_at.year == 2026
    assert "panData" in first.message.payload_xml
    again = await env.run(activities.read_registry_message, ReadRegistryMessageInput())
    assert again.message is not None and again.message.message_id == "11"

    acked = await env.run(activities.acknowledge_registry_message,
                          AcknowledgeRegistryMessageInput(message_id="11"))
    assert acked.remaining == 1
    second = await env.run(activities.read_registry_message, ReadRegistryMessageInput())
    assert second.message is not None and second.message.domain_name == "old.com"
    await env.run(activities.acknowledge_registry_message, AcknowledgeRegistryMessageInput(message_id="12"))
    empty = await env.run(activities.read_registry_message, ReadRegistryMessageInput())
    assert (empty.message, empty.remaining) == (None, 0)

    error = await run_activity_error(activities.acknowledge_registry_message,
                                     AcknowledgeRegistryMessageInput(message_id="99"))
    assert (error.type, error.non_retryable, error.details) == ("RegistrarRefused", True, (2303,))


# --- FRED (.cz) ---------------------------------------------------------------------------------


async def test_fred_renew_of_a_cz_domain(tls: Tls, fred: EppServer) -> None:
    fred.add_domain("example.cz", EXPIRY)
    adapter = EppRegistrar(config(tls, fred))
    try:
        result = await adapter.renew_domain("example.cz", EXPIRY, 1)
    finally:
        await adapter.close()
    assert (result.new_expiry, result.already_renewed) == (date(2027, 3, 10), False)
    assert fred.logins == [[*FRED_OBJECTS, "http://www.nic.cz/xml/epp/enumval-1.2"]]
    assert fred.count("renew", "example.cz") == 1


async def test_fred_renew_retried_after_drop_renews_once(tls: Tls, fred: EppServer) -> None:
    fred.add_domain("example.cz", EXPIRY)
    fred.drop_after_next("renew")
    adapter = EppRegistrar(config(tls, fred))
    try:
        with pytest.raises(RegistrarUnavailable):
            await adapter.renew_domain("example.cz", EXPIRY, 1)
        result = await adapter.renew_domain("example.cz", EXPIRY, 1)  # FRED answers 2004 to the stale date
    finally:
        await adapter.close()
    assert (result.new_expiry, result.already_renewed) == (date(2027, 3, 10), True)
    assert fred.count("renew") == 1


async def test_fred_has_no_redemption_restore(tls: Tls, fred: EppServer) -> None:
    fred.add_domain("example.cz", EXPIRY)
    adapter = EppRegistrar(config(tls, fred))
    error = await run_activity_error(
        RegistrarActivities(adapter).restore_domain,
        RestoreDomainInput(idempotency_key="k", service_id="1", domain_name="example.cz"),
    )
    assert (error.type, error.non_retryable) == ("RegistrarRefused", True)
    assert fred.executed == []

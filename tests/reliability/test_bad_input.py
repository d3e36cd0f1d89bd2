"""Bad input: every request to a service gets a clear refusal or a defined outcome, never a stuck workflow.

Hypothesis throws malformed, huge, negative, 3-decimal, 11-digit, non-numeric and unicode payloads
at every update of `SubscriptionWorkflow`, as raw JSON (so the client's own pydantic models do not
filter them first). Each call must end in a result or a `WorkflowUpdateFailedError` with a
message, and afterwards the workflow must still answer, with no workflow task failing (a failing
task retries forever: the service would be stuck).

The updates run on the session's time-skipping server, whose client lives on pytest's event loop;
Hypothesis drives them from a thread (`asyncio.to_thread`) and hands each call back to that loop.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.workflow import _Definition

from starter.temporal_setup import installed_binary, register_search_attributes
from tests.workflows.harness import Lab, finish, lab
from workflows.subscription import SubscriptionWorkflow

T = TypeVar("T")
Handle = WorkflowHandle[SubscriptionWorkflow, Any]

UPDATES = [
    "submit_payment",
    "billing_details_changed",
    "change_period",
    "cancel",
    "suspend_for_abuse",
    "resolve_abuse",
    "grant_deferral",
    "renew_for",
    "set_auto_renew",
    "retry_registry_renewal",
    "park",
    "unpark",
    "restore",
    "change_plan",
    "request_refund",
    "schedule_provider_deletion",
    "cancel_provider_deletion",
    "restore_mail",
    "apply_coupon",
    "announce_price",
    "renew_prepaid",
    "set_stored_card",
]
"""Every update of SubscriptionWorkflow (checked below, so a new one cannot be left out)."""

nasty_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "\x00", "🙂" * 50, "Příliš žluťoučký kůň", "x" * 100_000, "null", "NaN"]),
)
nasty_number = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from(
        ["1200.001", "-1200.00", "0", "0.00", "1e400", "Infinity", "12,00", "1 200.00", "9" * 400]
    ),
    st.floats(allow_nan=True, allow_infinity=True),
)
variable_symbols = st.one_of(
    st.sampled_from(["12345678901", "00000000000000001", "abc", "-1", "12 34", "٣٤٥", "", "1" * 10]),
    st.text(max_size=12),
    st.integers(),
)
any_value = st.one_of(st.none(), st.booleans(), nasty_number, nasty_text, st.lists(st.integers(), max_size=3))
fields = {
    "payment_id": nasty_text,
    "variable_symbol": variable_symbols,
    "amount": nasty_number,
    "received_at": st.one_of(nasty_text, st.just("2026-13-45T99:00:00Z")),
    "reason": nasty_text,
    "period": st.one_of(nasty_text, st.sampled_from(["P1M", "P1Y", "P0Y", "P-1M", "P100Y", "PT1H"])),
    "on": st.one_of(nasty_text, st.sampled_from(["1900-01-01", "9999-12-31", "2026-02-30"])),
    "severe": any_value,
    "note": nasty_text,
    "days": nasty_number,
    "by_support": any_value,
    "years": nasty_number,
    "enabled": any_value,
    "domains": st.one_of(any_value, st.lists(nasty_text, max_size=3)),
    "onto_service_id": nasty_text,
    "onto": any_value,
    "code": nasty_text,
    "product": st.one_of(nasty_text, st.sampled_from(["hosting", "vps", "domain"])),
    "plan": st.one_of(any_value, st.sampled_from(["hosting-start", "hosting-premium", "vps-l"])),
    "price": nasty_number,
    "effective_on": st.one_of(nasty_text, st.sampled_from(["1900-01-01", "9999-12-31", "2026-02-30"])),
    "reference": nasty_text,
    "debit_key": nasty_text,
    "currency": st.one_of(nasty_text, st.sampled_from(["CZK", "EUR", "RON", "czk", "XXXX"])),
    "expected_amount": nasty_number,
    "balance": nasty_number,
    "card": st.one_of(
        any_value, st.fixed_dictionaries({}, optional={"token": nasty_text, "label": nasty_text})
    ),
}
payloads = st.one_of(
    st.one_of(st.booleans(), nasty_number, nasty_text, st.lists(st.integers(), max_size=3)),
    st.fixed_dictionaries({}, optional=fields),
    st.dictionaries(nasty_text, any_value, max_size=4),
)


class LoopBridge:
    """Run coroutines on the test's loop from Hypothesis's thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout)


class Services:
    """One service at a time; a fresh one when an update ended the last (a severe suspension closes it)."""

    def __init__(self, l: Lab) -> None:
        self.l = l
        self.handles: list[Handle] = []

    async def current(self) -> Handle:
        if self.handles:
            description = await self.handles[-1].describe()
            if description.status is not None and description.status.name == "RUNNING":
                return self.handles[-1]
        handle = await self.l.start(expires_in_days=20)
        self.handles.append(handle)
        return handle


async def stuck_task_attempts(handle: Handle) -> int:
    """A workflow task that failed and retries shows an attempt above 1: the service is stuck."""
    description = await handle.describe()
    pending = description.raw_description.pending_workflow_task
    return int(pending.attempt) if description.raw_description.HasField("pending_workflow_task") else 0


async def call(handle: Handle, update: str, payload: Any) -> tuple[str, str]:
    """('ok', result) or ('refused', message); anything else propagates and fails the test."""
    args = [] if update in ("park", "unpark") and payload is None else [payload]
    try:
        result = await asyncio.wait_for(handle.execute_update(update, *args), 10)
    except WorkflowUpdateFailedError as exc:
        message = str(getattr(exc.cause, "message", "") or exc.cause or "")
        return "refused", message
    return "ok", str(result)


def test_the_fuzzed_updates_are_every_update_of_the_workflow() -> None:
    defined = {name for name in _Definition.must_from_class(SubscriptionWorkflow).updates if name}
    assert set(UPDATES) == defined


async def test_every_update_refuses_bad_input_clearly_and_the_service_never_sticks(
    env: WorkflowEnvironment,
) -> None:
    loop = asyncio.get_running_loop()
    bridge = LoopBridge(loop)
    seen: dict[str, set[str]] = {name: set() for name in UPDATES}
    async with lab(env) as l:
        services = Services(l)

        @settings(
            max_examples=100,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            derandomize=True,
        )
        @given(update=st.sampled_from(UPDATES), payload=payloads)
        def property_(update: str, payload: Any) -> None:
            async def one() -> None:
                handle = await services.current()
                outcome, message = await call(handle, update, payload)
                seen[update].add(outcome)
                if outcome == "refused":
                    assert message.strip(), f"{update}({payload!r}) was refused without a reason"
                    assert len(message) < 5_000 or "x" * 100 in message
                assert await stuck_task_attempts(handle) <= 1, f"{update}({payload!r}) left a failing task"
                await handle.query(SubscriptionWorkflow.status)

            bridge.run(one(), timeout=60)

        try:
            # Each update at least once, whatever Hypothesis samples: a request that is not an object.
            for update in UPDATES:
                handle = await services.current()
                outcome, message = await call(handle, update, "not a request")
                assert (outcome, bool(message.strip())) == ("refused", True), (update, message)
                seen[update].add(outcome)
                assert await stuck_task_attempts(handle) <= 1, f"{update} left a failing task"
            await asyncio.to_thread(property_)
            # After all of it, the last service still takes a correct payment.
            handle = await services.current()
            status = await handle.query(SubscriptionWorkflow.status)
            if status.open_invoice is not None:
                outcome, _ = await call(
                    handle,
                    "submit_payment",
                    {
                        "payment_id": f"good-{uuid.uuid4().hex[:6]}",
                        "variable_symbol": status.open_invoice.variable_symbol,
                        "amount": str(status.open_invoice.amount),
                    },
                )
                assert outcome == "ok"
        finally:
            for handle in services.handles:
                await finish(handle)
    assert all("refused" in outcomes for outcomes in seen.values()), seen


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    """A server of its own: workflows fed garbage on purpose must not share the session's clock."""
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(installed_binary("temporal-test-server")),
        data_converter=pydantic_data_converter,
    ) as environment:
        await register_search_attributes(environment.client)
        yield environment


async def test_an_update_with_a_null_argument_is_refused_not_stuck(env: WorkflowEnvironment) -> None:
    async with lab(env) as l:
        handle = await l.start(expires_in_days=20)
        try:
            for update in UPDATES:
                if update in ("park", "unpark"):
                    continue  # their request is optional: null is "no options"
                outcome, message = await call(handle, update, None)
                assert outcome == "refused" and message, update
                assert await stuck_task_attempts(handle) <= 1, f"{update}(null) left a failing task"
        finally:
            await finish(handle)


async def test_a_signal_with_an_unreadable_payment_is_not_silently_lost(env: WorkflowEnvironment) -> None:
    """The signal form of a payment cannot answer; a payload it cannot read must still leave a trace."""
    async with lab(env) as l:
        handle = await l.start(expires_in_days=20)
        try:
            await handle.signal(
                "payment_received",
                {"payment_id": "sig-bad", "variable_symbol": "12345678901", "amount": "1.001"},
            )
            await asyncio.sleep(0.5)
            assert await stuck_task_attempts(handle) <= 1
            await handle.query(SubscriptionWorkflow.status)
        finally:
            await finish(handle)

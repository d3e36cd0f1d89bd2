"""Heartbeats while an adapter call runs, and a deadline that turns a hanging call into a retry.

Two ways a side effect can hang, and who notices:

* the worker itself dies or freezes (kill -9, a stuck event loop, a lost node): the activity stops
  heartbeating and Temporal retries it elsewhere after the call site's `heartbeat_timeout`
  (seconds to a minute) instead of its whole start-to-close timeout (up to 10 minutes);
* the worker is fine but the peer never answers (a libvirt call stuck on a dead node, an EPP
  session or SMTP relay that accepts the connection and goes silent): the call is given
  `deadline` seconds, then abandoned with a retryable `ApplicationError` of type `AdapterHung`.
  The retry repeats the same request with the same idempotency key, so a call that did get
  through before hanging is recognised, not repeated.

Ops see a hang while it lasts: the pending activity in the Web UI (and in `hostlife service show`)
carries the attempt count, the last failure `AdapterHung: ... did not answer within N s` and the
last heartbeat (`{"waiting_for": ..., "seconds": ...}`); the worker logs `adapter hung` as a
warning with the call and the service. A hang that outlasts a bounded retry policy (mail) ends as
`mail_failed` and the service's `HostlifeAttention`.

The deadlines are per adapter kind in `DEADLINES` (seconds); tests shorten them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

T = TypeVar("T")

HUNG = "AdapterHung"
HEARTBEAT_EVERY = 5.0
# How long one adapter call may take before it counts as hung, beyond what the call itself waits
# for on purpose (a VM's graceful shutdown): each is well inside its activity's start-to-close.
DEADLINES: dict[str, float] = {
    "hypervisor": 180.0,  # + the graceful-shutdown wait; HYPERVISOR_OPTIONS: 10 min
    "registrar": 90.0,  # EPP connect 10 s + command 30 s, twice; REGISTRAR_OPTIONS: 2 min
    "mail": 45.0,  # SMTP timeout 30 s; MAIL_OPTIONS: 60 s
}


def deadline_for(kind: str, extra_seconds: float = 0.0) -> float:
    return DEADLINES[kind] + extra_seconds


def _hung(what: str, deadline: float, waited: float) -> ApplicationError:
    info = activity.info()
    activity.logger.warning(
        "adapter hung",
        extra={
            "call": what,
            "deadline_seconds": deadline,
            "waited_seconds": round(waited, 1),
            "attempt": info.attempt,
            "workflow_id": info.workflow_id,
        },
    )
    return ApplicationError(
        f"{what} did not answer within {deadline:g} s (attempt {info.attempt}); retrying",
        {"call": what, "deadline_seconds": deadline},
        type=HUNG,
    )


def _beat(what: str, waited: float) -> None:
    activity.heartbeat({"waiting_for": what, "seconds": round(waited)})


async def watched(call: Awaitable[T], *, what: str, deadline: float, every: float | None = None) -> T:
    """Await an adapter coroutine, heartbeating every `every` s; past `deadline` cancel it: `AdapterHung`."""
    task: asyncio.Future[T] = asyncio.ensure_future(call)
    if not activity.in_activity():
        return await task
    every = HEARTBEAT_EVERY if every is None else every
    started = time.monotonic()
    try:
        while True:
            waited = time.monotonic() - started
            remaining = deadline - waited
            if remaining <= 0:
                raise _hung(what, deadline, waited)
            done, _ = await asyncio.wait({task}, timeout=min(every, remaining))
            if done:
                return task.result()
            _beat(what, time.monotonic() - started)
    finally:
        if not task.done():
            task.cancel()
            # let the adapter clean up (close the socket); never wait on it for long
            await asyncio.wait({task}, timeout=1.0)


def watched_sync(call: Callable[[], T], *, what: str, deadline: float, every: float | None = None) -> T:
    """The same for a blocking call (libvirt), from a sync activity's thread.

    The call runs on a thread of its own, so this thread stays free to heartbeat. A Python thread
    cannot be killed: a call abandoned as hung keeps its (daemon) thread until the library returns
    or the worker exits; libvirt's keepalive ends calls on a dead connection eventually.
    """
    if not activity.in_activity():
        return call()
    every = HEARTBEAT_EVERY if every is None else every
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    context = contextvars.copy_context()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(context.run(call))
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, name=f"hostlife {what}", daemon=True).start()
    started = time.monotonic()
    while True:
        waited = time.monotonic() - started
        remaining = deadline - waited
        if remaining <= 0:
            raise _hung(what, deadline, waited)
        try:
            result: T = future.result(timeout=min(every, remaining))
            return result
        except concurrent.futures.TimeoutError:
            if future.done():  # the call itself raised a TimeoutError: the adapter's, not ours
                raise
            _beat(what, time.monotonic() - started)

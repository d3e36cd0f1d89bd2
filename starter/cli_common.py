"""What every `hostlife` command shares: the client, one-line errors, Rich output, `--json`.

Errors are for people and for scripts at once: one line on stderr starting with `error:` and a
non-zero exit status (1 for what went wrong out there, 2 for a bad command line), never a
traceback or a boxed usage panel. `run_async` translates what the Temporal client raises:

    RuntimeError "Failed client connect"     -> Temporal server unreachable at ADDRESS
    RPCError NOT_FOUND "workflow not found"  -> unknown service ID
    WorkflowUpdateFailedError (validator)    -> refused: <the validator's reason>
    WorkflowUpdateRPCTimeoutOrCancelledError -> no answer within N s (is a worker running?)
    WorkflowAlreadyStartedError              -> service ID is already running
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode
from typer.core import TyperGroup

try:  # typer >= 0.20 carries its own copy of click; its exceptions are not click's
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer on the real click
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

from starter.config import Settings
from workflows import service_workflow_id

T = TypeVar("T")

JsonFlag = Annotated[bool, typer.Option("--json", help="machine-readable JSON on stdout")]


@dataclass
class CliOptions:
    """Options of the top-level callback, read by every command."""

    timeout: float = 30.0


OPTIONS = CliOptions()


class CliError(Exception):
    """An error the user made or met; printed as one line with exit status `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class OneLineErrors(TyperGroup):
    """The top-level group: usage errors become one `error:` line instead of Typer's panel."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            result = super().main(
                args,
                prog_name,
                complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )
        except click_exceptions.NoArgsIsHelpError as exc:
            # Typer has printed the help already.
            code = exc.exit_code
        except click_exceptions.UsageError as exc:
            hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            print(f"error: {one_line(exc.format_message())}{hint}", file=sys.stderr, flush=True)
            code = exc.exit_code
        except click_exceptions.ClickException as exc:
            print(f"error: {one_line(exc.format_message())}", file=sys.stderr, flush=True)
            code = exc.exit_code
        except CliError as exc:
            print(f"error: {one_line(str(exc))}", file=sys.stderr, flush=True)
            code = exc.code
        except typer.Abort:
            print("error: aborted", file=sys.stderr, flush=True)
            code = 1
        else:
            code = result if isinstance(result, int) else 0
        if not standalone_mode:
            return code
        sys.exit(code)


def one_line(text: str) -> str:
    """Collapse a multi-line message (pydantic, click) into one line."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def fail(message: str, code: int = 1) -> NoReturn:
    sys.stdout.flush()
    print(f"error: {one_line(message)}", file=sys.stderr, flush=True)
    raise typer.Exit(code)


def console() -> Console:
    """A console made per command, so COLUMNS and redirected streams are honoured."""
    return Console(highlight=False, soft_wrap=False)


_OS_REASON = re.compile(r'message: "([^"]+)"')
_NOT_FOUND = re.compile(r"workflow not found for ID: service-(\S+)")


def explain(exc: BaseException, settings: Settings) -> tuple[str, int] | None:
    """The one line (and exit status) for an error met while talking to Temporal; None if unknown."""
    if isinstance(exc, CliError):
        return str(exc), exc.code
    if isinstance(exc, WorkflowUpdateFailedError):
        cause = exc.cause
        return f"refused: {getattr(cause, 'message', None) or cause}", 1
    if isinstance(exc, WorkflowUpdateRPCTimeoutOrCancelledError):
        return (
            f"no answer within {OPTIONS.timeout:g}s (it may still be applied); is a hostlife worker "
            f"polling task queue {settings.task_queue}?",
            1,
        )
    if isinstance(exc, WorkflowAlreadyStartedError):
        service = exc.workflow_id.removeprefix("service-")
        return f"service {service} is already running", 1
    if isinstance(exc, WorkflowQueryRejectedError | WorkflowQueryFailedError):
        return f"the service did not answer: {exc}", 1
    if isinstance(exc, WorkflowFailureError):
        return f"the service's workflow failed: {exc.cause}", 1
    if isinstance(exc, RPCError):
        if exc.status == RPCStatusCode.NOT_FOUND:
            match = _NOT_FOUND.search(exc.message)
            if match:
                return f"unknown service {match.group(1)}", 1
            if "already completed" in exc.message:
                return f"the service's workflow has ended: {exc.message}", 1
            return f"not found: {exc.message}", 1
        if exc.status == RPCStatusCode.UNAVAILABLE:
            return f"Temporal server unreachable at {settings.temporal_address}: {exc.message}", 1
        if exc.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
            return (
                f"no answer within {OPTIONS.timeout:g}s; is a hostlife worker polling task queue "
                f"{settings.task_queue}?",
                1,
            )
        return f"Temporal refused: {exc.message}", 1
    if isinstance(exc, RuntimeError) and "connect" in str(exc).lower():
        reason = _OS_REASON.search(str(exc))
        why = reason.group(1) if reason else one_line(str(exc))
        return f"Temporal server unreachable at {settings.temporal_address}: {why}", 1
    return None


def run_async(factory: Callable[[], Awaitable[T]]) -> T:
    """Run one command's coroutine; every known failure ends as one `error:` line."""

    async def main() -> T:
        return await factory()

    try:
        return asyncio.run(main())
    except Exception as exc:
        explained = explain(exc, Settings.from_env())
        if explained is None:
            raise
        fail(*explained)


async def connect() -> Client:
    from worker import connect as worker_connect

    return await worker_connect(Settings.from_env())


def rpc_timeout() -> timedelta:
    return timedelta(seconds=OPTIONS.timeout)


def service_handle(client: Client, service_id: str) -> WorkflowHandle[Any, Any]:
    from workflows.subscription import SubscriptionWorkflow

    return client.get_workflow_handle_for(SubscriptionWorkflow.run, service_workflow_id(service_id))


def parse_money(text: str, what: str = "amount") -> Decimal:
    from policy.money import to_money

    try:
        return to_money(text)
    except (ValueError, InvalidOperation) as exc:
        raise CliError(f"bad {what} {text!r}: {exc}", 2) from None


def parse_date(text: str, what: str = "date") -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CliError(f"bad {what} {text!r}: expected YYYY-MM-DD", 2) from None


def checked(factory: Callable[[], T]) -> T:
    """Run a parser outside the event loop: a CliError becomes the one-line error."""
    try:
        return factory()
    except CliError as exc:
        fail(str(exc), exc.code)

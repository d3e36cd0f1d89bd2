"""The `hostlife` command line: run the system, steer services, simulate their future.

    hostlife run [--demo]                 the dev server, the worker, mail catcher, payment ingress
    hostlife demo                         the same with a few services on a compressed clock
    hostlife service start|show|list      hand services over, read one, find many (starter/cli_services.py)
    hostlife pay|cancel|suspend|...       change one service through its updates (starter/cli_commands.py)
    hostlife upgrade|downgrade|refund     SPEC §6 plan changes and refunds (starter/cli_commerce.py)
    hostlife account delete|keep          provider deletion with notice (starter/cli_commerce.py)
    hostlife held-payments list|resolve   what waits for the billing department (starter/cli_billing.py)
    hostlife renew-bulk|card set|remove   renewal from credit in bulk, the stored card (starter/cli_money.py)
    hostlife coupon|price|usage           coupons, price changes, usage reports (starter/cli_offers.py)
    hostlife vps start|stop|restart|reinstall|backup|restore|restore-mail   VPS support and backups (cli_vps.py)
    hostlife simulate SCENARIO.json       a scenario on the time-skipping server (shared/SIMULATOR.md)

Every read command takes `--json`. Every error is one line on stderr with a non-zero exit
status: an unknown service, an update a validator refused (with its reason), an unreachable
server (starter/cli_common.py).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from starter import cli_commands, cli_commerce, cli_money, cli_offers, cli_reconcile, cli_vps
from starter.cli_billing import held_app
from starter.cli_common import OPTIONS, OneLineErrors, fail
from starter.cli_services import service_app
from starter.config import Settings

app = typer.Typer(
    cls=OneLineErrors,
    help="hostlife: the life of hosting services on Temporal.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(service_app, name="service")
app.add_typer(held_app, name="held-payments")
cli_reconcile.register(app)
cli_commands.register(app)
cli_money.register(app)
cli_offers.register(app)
cli_commerce.register(app)
cli_vps.register(app)


@app.callback()
def options(
    timeout: Annotated[
        float, typer.Option(help="seconds to wait for the server or a service to answer", min=1)
    ] = 30.0,
) -> None:
    """hostlife: the life of hosting services on Temporal. Settings come from HOSTLIFE_* variables."""
    OPTIONS.timeout = timeout


# ---------------------------------------------------------------------------- simulate


@app.command()
def simulate(scenario: Annotated[Path, typer.Argument(help="scenario JSON (shared/SIMULATOR.md)")]) -> None:
    """Run a scenario on the time-skipping server and print what happens, as JSON Lines."""
    from starter.simulate import ScenarioError, run

    try:
        text = scenario.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {scenario}: {exc.strerror}", 2)
    code = 0
    try:
        run(text, lambda line: print(line))
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    # The SDK's runtime can abort the interpreter at exit in plain scripts (sdk-python #300):
    # flush what we printed and leave deliberately.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# ---------------------------------------------------------------------------- run


@app.command("run")
def run_system(
    demo: Annotated[bool, typer.Option(help="start a few demo services on a compressed clock")] = False,
    seconds_per_day: Annotated[int, typer.Option(help="demo clock: real seconds per day")] = 10,
) -> None:
    """Start the Temporal dev server (SQLite in .data/, UI on :8233) and the worker; Ctrl-C stops all."""
    from starter.runner import run_stack

    asyncio.run(run_stack(Settings.from_env(), demo=demo, seconds_per_day=seconds_per_day))


@app.command()
def demo(
    seconds_per_day: Annotated[int, typer.Option(help="real seconds per simulated day", min=1)] = 10,
) -> None:
    """`run --demo`: the stack plus a few services whose invoice, block, payment and deletion pass in minutes."""
    run_system(demo=True, seconds_per_day=seconds_per_day)


def main() -> None:
    """The console script: exit without running the interpreter's finalizers.

    The SDK's runtime can abort the interpreter at exit once a client was used (sdk-python #300,
    "PyGILState_Release ... finalizing", status 134), as `simulate` notes; flush and leave
    deliberately with the status the command chose.
    """
    code = app(standalone_mode=False)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()

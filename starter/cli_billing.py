"""`hostlife held-payments`: what waits for the billing department, read from the local ledger.

A payment with a stale or unknown variable symbol, or the wrong amount, is held (SPEC §3.4, §3.6);
a bank statement line the importer could not read is kept too. Both sit in the billing ledger
(`$HOSTLIFE_DATA_DIR/billing.sqlite`) until someone resolves them; refunds are listed for the
same department. The ledger is a local file, so these commands need no Temporal server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from activities.billing import BillingError, HeldPayment, SqliteBilling
from starter.cli_common import CliError, JsonFlag, console
from starter.config import Settings

held_app = typer.Typer(help="Payments held for the billing department, and refunds.", no_args_is_help=True)


def ledger_path() -> Path:
    return Settings.from_env().data_dir / "billing.sqlite"


def open_ledger() -> SqliteBilling:
    """The ledger `hostlife run` writes; refuse to create an empty one in the wrong directory."""
    path = ledger_path()
    if not path.exists():
        raise CliError(
            f"no billing ledger at {path}; set HOSTLIFE_DATA_DIR to the data directory of `hostlife run`"
        )
    return SqliteBilling(path)


@held_app.command("list")
def held_list(
    include_resolved: Annotated[bool, typer.Option("--all", help="resolved ones too")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Held payments and unreadable statement lines waiting for the billing department."""
    ledger = open_ledger()
    held = ledger.held_payments(include_resolved=include_resolved)
    lines = ledger.unreadable_lines(include_resolved=include_resolved)
    if as_json:
        print(
            json.dumps(
                {
                    "held_payments": [h.model_dump(mode="json") for h in held],
                    "unreadable_lines": [line.model_dump(mode="json") for line in lines],
                },
                indent=2,
            )
        )
        return
    out = console()
    table = Table(
        "payment", "received", "VS", "amount", "service", "reason", "resolution",
        title="held payments", title_justify="left",
    )  # fmt: skip
    for h in held:
        p = h.payment
        table.add_row(
            p.payment_id,
            p.received_at.date().isoformat(),
            p.variable_symbol,
            f"{p.amount} {p.currency}",
            h.service_id or "—",
            h.reason,
            h.resolution or ("open" if not h.resolved else "resolved"),
        )
    out.print(table)
    if lines:
        unread = Table("line", "source", "where", "reason", "text", title="unreadable statement lines")
        for line in lines:
            unread.add_row(line.line_id, line.source, line.location or "—", line.reason, line.raw[:60])
        out.print(unread)
    out.print(f"{len(held)} held payment(s), {len(lines)} unreadable line(s)")


@held_app.command("resolve")
def held_resolve(
    payment_id: str,
    note: Annotated[
        str, typer.Option(help="what the billing department did, e.g. 'refunded by bank transfer'")
    ],
    as_json: JsonFlag = False,
) -> None:
    """Mark a held payment as dealt with, saying how."""
    if not note.strip():
        raise CliError("--note must say what was done", 2)
    ledger = open_ledger()
    previous: HeldPayment | None = next(
        (h for h in ledger.held_payments(include_resolved=True) if h.payment.payment_id == payment_id), None
    )
    if previous is None:
        raise CliError(f"no held payment {payment_id}")
    if previous.resolved:
        raise CliError(f"held payment {payment_id} was already resolved: {previous.resolution}")
    try:
        held = ledger.resolve_held_payment(payment_id, note)
    except BillingError as exc:
        raise CliError(str(exc)) from None
    if as_json:
        print(held.model_dump_json())
    else:
        console().print(f"held payment {payment_id} resolved: {note}")


@held_app.command("refunds")
def refunds(as_json: JsonFlag = False) -> None:
    """Payments returned to the payer (e.g. they came after the service was deleted)."""
    items = open_ledger().refunds()
    if as_json:
        print(json.dumps([r.model_dump(mode="json") for r in items], indent=2))
        return
    table = Table(
        "refund", "payment", "VS", "amount", "service", "reason", title="refunds", title_justify="left"
    )
    for r in items:
        p = r.payment
        table.add_row(
            r.refund_id,
            p.payment_id,
            p.variable_symbol,
            f"{p.amount} {p.currency}",
            r.service_id or "—",
            r.reason,
        )
    out = console()
    out.print(table)
    out.print(f"{len(items)} refund(s)")


@held_app.command("customer-refunds")
def customer_refunds(as_json: JsonFlag = False) -> None:
    """Refunds on request (SPEC §6) for the payments department to send, with their pay-by date."""
    items = open_ledger().customer_refunds()
    if as_json:
        print(json.dumps([r.model_dump(mode="json") for r in items], indent=2))
        return
    table = Table(
        "refund",
        "customer",
        "service",
        "amount",
        "pay by",
        "reason",
        title="refunds on request",
        title_justify="left",
    )
    for r in items:
        table.add_row(
            r.refund_id,
            r.customer_id,
            r.service_id,
            f"{r.amount} {r.currency}",
            r.pay_by.isoformat() if r.pay_by else "—",
            r.reason,
        )
    out = console()
    out.print(table)
    out.print(f"{len(items)} refund(s) on request")

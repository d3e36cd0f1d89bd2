"""`hostlife reconcile`: every payment applied, held or returned, and the totals balance to the heller.

Reads the billing ledger (`$HOSTLIFE_DATA_DIR/billing.sqlite`, like `hostlife held-payments`), so
it needs no Temporal server. Give it what the payment systems sent (`--payments`, the bank's or
gateway's export as JSON: an array or one object per line, `PaymentReceived` fields) and it checks
each payment against the ledger; add what the ingress answered (`--results`: `RoutingResult`s or
whole ingress answers with a `results` list) and the answers are checked too. Without `--payments`
the ledger is reconciled with itself. Exit status 1 when the totals do not balance.

    hostlife reconcile --payments bank-export.jsonl --results ingress-answers.jsonl
    hostlife reconcile --json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from activities.billing import PaymentReceived
from starter.cli_billing import open_ledger
from starter.cli_common import CliError, JsonFlag, console
from starter.payment_routing import RoutingResult
from starter.reconcile import ReconciliationReport, reconcile_ledger


def read_records(path: Path) -> list[dict[str, Any]]:
    """A JSON array, one JSON object, or JSON Lines; refuse anything else naming the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", 2) from None
    stripped = text.strip()
    if not stripped:
        return []
    if stripped[0] in "[{":
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError:
            data = None  # perhaps JSON Lines whose first line is an object
        if isinstance(data, list):
            if not all(isinstance(item, dict) for item in data):
                raise CliError(f"{path}: every item of the array must be an object", 2)
            return data
        if isinstance(data, dict):
            return [data]
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CliError(f"{path}:{number}: not JSON: {exc.msg}", 2) from None
        if not isinstance(item, dict):
            raise CliError(f"{path}:{number}: expected a JSON object", 2)
        records.append(item)
    return records


def read_payments(path: Path) -> list[PaymentReceived]:
    payments = []
    for index, record in enumerate(read_records(path), start=1):
        try:
            payments.append(PaymentReceived.model_validate(record))
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in first["loc"]) or "record"
            raise CliError(f"{path}: payment {index}: {where}: {first['msg']}", 2) from None
    return payments


def read_results(path: Path) -> list[RoutingResult]:
    results = []
    for index, record in enumerate(read_records(path), start=1):
        items = record["results"] if isinstance(record.get("results"), list) else [record]
        for item in items:
            try:
                results.append(RoutingResult.model_validate(item))
            except ValidationError as exc:
                first = exc.errors(include_url=False)[0]
                raise CliError(f"{path}: result {index}: {first['msg']}", 2) from None
    return results


def print_report(report: ReconciliationReport, show_lines: bool) -> None:
    out = console()
    for currency in report.currencies or ["CZK"]:
        table = Table(
            "", "count", f"amount {currency}", title=f"reconciliation ({currency})", title_justify="left"
        )
        for name in ("received", "duplicates", "unique", "applied", "held", "returned", "missing"):
            total = getattr(report, name)
            table.add_row(name, str(total.count), str(total.amount(currency)))
        out.print(table)
    if report.rejected_lines:
        out.print(f"{report.rejected_lines} unreadable line(s) kept for the billing department (no amount)")
    if show_lines and report.lines:
        lines = Table(
            "payment", "VS", "amount", "outcome", "deliveries", "service", "reason", title="payments"
        )
        for line in report.lines:
            lines.add_row(
                line.payment_id,
                line.variable_symbol,
                f"{line.amount} {line.currency}",
                line.outcome.value,
                str(line.deliveries),
                line.service_id or "—",
                line.reason,
            )
        out.print(lines)
    for finding in report.discrepancies:
        out.print(f"[red]discrepancy[/red] {finding.kind} {finding.payment_id or ''}: {finding.detail}")
    for finding in report.warnings:
        out.print(f"[yellow]warning[/yellow] {finding.kind} {finding.payment_id or ''}: {finding.detail}")
    out.print(report.summary())


def reconcile_command(
    payments: Annotated[
        Path | None, typer.Option(help="what the payment systems sent: JSON array or JSON Lines of payments")
    ] = None,
    results: Annotated[
        Path | None, typer.Option(help="what the ingress answered: RoutingResults or ingress answers")
    ] = None,
    show_lines: Annotated[
        bool, typer.Option("--lines", help="list every payment and where it ended")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Check that every payment ended applied, held or returned, once, and that the totals balance."""
    received = read_payments(payments) if payments is not None else None
    answers = read_results(results) if results is not None else []
    report = reconcile_ledger(open_ledger(), received, answers)
    if as_json:
        print(report.model_dump_json(indent=2))
    else:
        print_report(report, show_lines)
    if not report.balanced:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add `hostlife reconcile` to the top-level app (starter/cli.py)."""
    app.command("reconcile")(reconcile_command)


__all__ = ["read_payments", "read_results", "reconcile_command", "register"]

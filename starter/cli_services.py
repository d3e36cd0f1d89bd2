"""`hostlife service start|show|list`: hand services over, read one, find many.

`service start --file` takes many services at once, as JSON (a list of objects, or
`{"services": [...]}`) or CSV (a header row). Field names in both:

| field | meaning |
|---|---|
| `id` (or `service_id`) | service id; the workflow is `service-<id>` |
| `customer` | customer id (in JSON also an object `{"id", "email", "language", "name"}`) |
| `email`, `language`, `customer_name` | the customer's contact (flat form) |
| `product`, `price`, `period`, `expires_on` | as the flags of the same name |
| `name`, `profile`, `node` | domain name or label, policy profile, hypervisor node |
| `subservers` | list (JSON) or `;`-separated (CSV) |
| `auto_renew` | true/false |
| `plan` | the product's plan (policy/plans.toml, e.g. `vps-m`): plan changes, `price announce --plan`, and a VPS/APS backup restores only onto a plan of the same or a higher tier |
| `new_order`, `new_customer` | true/false: a new order's first invoice is for the first period (coupons) |

Every row is checked before anything starts, so a bad file starts nothing. A service that is
already running is skipped and counted, so a file can be fed again after a partial failure.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from temporalio.client import WorkflowQueryFailedError
from temporalio.exceptions import WorkflowAlreadyStartedError

from policy.catalog import Catalog, load_catalog
from policy.clock import Clock
from policy.money import normalize_variable_symbol, to_money
from starter.cli_common import (
    CliError,
    JsonFlag,
    checked,
    connect,
    console,
    fail,
    one_line,
    parse_date,
    rpc_timeout,
    run_async,
    service_handle,
)
from starter.config import Settings
from workflows import search_attributes as sa
from workflows.commerce_models import PlanQuoteView
from workflows.models import Customer, JournalEntry, ServiceSpec, ServiceState, ServiceStatus

service_app = typer.Typer(help="Start, inspect and list services.", no_args_is_help=True)

_CSV_LIST_SEPARATOR = ";"


# ---------------------------------------------------------------------------- start


def _catalog() -> Catalog:
    from policy.catalog import CatalogError

    try:
        return load_catalog(Settings.from_env().catalog_path)
    except CatalogError as exc:
        raise CliError(str(exc)) from None


def spec_from_row(row: dict[str, Any], catalog: Catalog) -> ServiceSpec:
    """One service of a JSON/CSV file, validated against the catalog; ValueError names the field."""
    fields = {key.strip(): value for key, value in row.items() if key and value not in (None, "")}
    customer = fields.pop("customer", None)
    if not isinstance(customer, dict):
        customer = {
            "id": customer,
            "email": fields.pop("email", None),
            "language": fields.pop("language", "cs"),
            "name": fields.pop("customer_name", ""),
        }
    for key in ("email", "language", "customer_name"):
        fields.pop(key, None)
    if "id" in fields:
        fields["service_id"] = fields.pop("id")
    if isinstance(fields.get("subservers"), str):
        fields["subservers"] = [
            s.strip() for s in fields["subservers"].split(_CSV_LIST_SEPARATOR) if s.strip()
        ]
    if isinstance(fields.get("auto_renew"), str):
        fields["auto_renew"] = fields["auto_renew"].strip().lower() in ("1", "true", "yes", "y")
    unknown = sorted(set(fields) - set(ServiceSpec.model_fields))
    if unknown:
        hint = " (a VPS's size is its plan: give plan, e.g. vps-m)" if "tier" in unknown else ""
        raise ValueError(f"unknown field(s) {', '.join(unknown)}{hint}")
    if "price" in fields:
        try:
            fields["price"] = to_money(str(fields["price"]))
        except (ValueError, ArithmeticError) as exc:
            raise ValueError(f"bad price {fields['price']!r}: {exc}") from None
    try:
        spec = ServiceSpec(customer=Customer.model_validate(customer), **fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "row"
        raise ValueError(f"{where}: {first['msg']}") from None
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    from starter.services import subscription_input

    subscription_input(spec, catalog)  # unknown product/profile/TLD or a period the product lacks
    return spec


def read_services_file(path: Path, catalog: Catalog) -> list[ServiceSpec]:
    """All services of a file, or a CliError naming the first bad row."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", 2) from None
    except UnicodeDecodeError:
        raise CliError(f"{path} is not UTF-8 text", 2) from None
    rows: list[dict[str, Any]]
    if path.suffix.lower() == ".csv":
        rows = [dict(row) for row in csv.DictReader(io.StringIO(text))]
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CliError(f"{path} is not valid JSON: {exc}", 2) from None
        if isinstance(data, dict):
            data = data.get("services")
        if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
            raise CliError(f'{path}: expected a list of services or {{"services": [...]}}', 2)
        rows = data
    if not rows:
        raise CliError(f"{path} holds no services", 2)
    specs: list[ServiceSpec] = []
    seen: set[str] = set()
    for number, row in enumerate(rows, start=1):
        try:
            spec = spec_from_row(row, catalog)
        except ValueError as exc:
            raise CliError(f"{path}: service {number}: {one_line(str(exc))}", 2) from None
        if spec.service_id in seen:
            raise CliError(f"{path}: service {number}: id {spec.service_id} appears twice", 2)
        seen.add(spec.service_id)
        specs.append(spec)
    return specs


@service_app.command("start")
def service_start(
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="JSON or CSV file of many services (see module docs)")
    ] = None,
    service_id: Annotated[str | None, typer.Option("--id", help="service id")] = None,
    customer_id: Annotated[str | None, typer.Option("--customer", help="customer id")] = None,
    email: Annotated[str | None, typer.Option(help="customer e-mail")] = None,
    product: Annotated[
        str | None, typer.Option(help="product of the catalog, e.g. hosting, vps, domain")
    ] = None,
    price: Annotated[str | None, typer.Option(help="price of one period, e.g. 1200.00")] = None,
    expires_on: Annotated[str | None, typer.Option(help="expiry date D, YYYY-MM-DD")] = None,
    period: Annotated[str, typer.Option(help="P1Y, P1M, …")] = "P1Y",
    name: Annotated[str, typer.Option(help="domain name, or a label")] = "",
    profile: Annotated[str, typer.Option(help="policy profile")] = "default",
    language: Annotated[str, typer.Option(help="customer language (cs, en)")] = "cs",
    node: Annotated[str, typer.Option(help="hypervisor node of a VPS")] = "node-1",
    new_order: Annotated[
        bool,
        typer.Option(help="a new order: the first invoice is for the first period (implied by --coupon)"),
    ] = False,
    new_customer: Annotated[
        bool | None,
        typer.Option(
            "--new-customer/--existing-customer",
            help="for coupons; default: new when hostlife knows no other service of the customer",
        ),
    ] = None,
    coupon: Annotated[str | None, typer.Option(help="coupon code for the first period")] = None,
    plan: Annotated[
        str | None,
        typer.Option(
            help="the plan, e.g. vps-m (policy/plans.toml); a VPS backup restores onto the same or a higher tier"
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Hand one service (flags) or many (--file) to hostlife."""
    catalog = checked(_catalog)
    if file is not None:
        given = [
            flag
            for flag, value in (("--id", service_id), ("--product", product), ("--coupon", coupon))
            if value
        ]
        if given:
            fail(f"--file cannot be combined with {', '.join(given)}", 2)
        specs = checked(lambda: read_services_file(file, catalog))
    else:
        required = {
            "--id": service_id,
            "--customer": customer_id,
            "--email": email,
            "--product": product,
            "--price": price,
            "--expires-on": expires_on,
        }
        missing = [flag for flag, value in required.items() if not value]
        if missing:
            fail(f"missing {', '.join(missing)} (or give --file)", 2)
        row = {
            "id": service_id,
            "customer": customer_id,
            "email": email,
            "language": language,
            "product": product,
            "price": price,
            "expires_on": checked(lambda: parse_date(str(expires_on), "--expires-on")).isoformat(),
            "period": period,
            "name": name,
            "profile": profile,
            "node": node,
            "plan": plan,
            "new_order": new_order or coupon is not None,
        }
        if new_customer is not None:
            row["new_customer"] = new_customer
        try:
            specs = [checked(lambda: spec_from_row(row, catalog))]
        except ValueError as exc:
            fail(f"service {service_id}: {exc}", 2)
    if coupon is not None:
        from workflows.offers_models import normalize_coupon_code

        try:
            coupon = normalize_coupon_code(coupon)
        except ValueError as exc:
            fail(str(exc), 2)
        spec = specs[0]
        detect = new_customer is None
        result = run_async(lambda: _start_with_coupon(spec, catalog, str(coupon), detect))
        if as_json:
            print(json.dumps(result))
        else:
            console().print(f"started {result['workflow_id']}; {result['coupon']}")
        return
    results = run_async(lambda: _start_all(specs, catalog, show_progress=file is not None and not as_json))
    if as_json:
        print(json.dumps(results, indent=2))
    elif file is None:
        console().print(f"started {results[0]['workflow_id']}")
    else:
        started = sum(1 for r in results if r["result"] == "started")
        skipped = [r["service_id"] for r in results if r["result"] == "already running"]
        console().print(
            f"started {started} of {len(results)} services"
            + (f"; already running: {', '.join(skipped)}" if skipped else "")
        )


async def _start_with_coupon(
    spec: ServiceSpec, catalog: Catalog, coupon: str, detect: bool
) -> dict[str, str]:
    """Start one new order with its coupon; a refused coupon leaves it started at the full price."""
    from starter.services import CouponNotApplied, start_service

    settings = Settings.from_env()
    client = await connect()
    if detect:
        # A customer is new when hostlife knows no other service of theirs (running or ended).
        query = f"WorkflowType = 'SubscriptionWorkflow' AND {sa.CUSTOMER_ID.name} = '{_keyword('--customer', spec.customer.id)}'"
        count = await client.count_workflows(query, rpc_timeout=rpc_timeout())
        spec = spec.model_copy(update={"new_customer": count.count == 0})
    answers: list[str] = []
    try:
        handle = await start_service(
            client,
            spec,
            catalog=catalog,
            task_queue=settings.task_queue,
            coupon=coupon,
            on_coupon=lambda result: answers.append(result.message),
        )
    except CouponNotApplied as exc:
        raise CliError(str(exc)) from None
    return {
        "service_id": spec.service_id,
        "workflow_id": handle.id,
        "result": "started",
        "coupon": answers[0],
    }


async def _start_all(specs: list[ServiceSpec], catalog: Catalog, show_progress: bool) -> list[dict[str, str]]:
    from starter.services import start_service

    settings = Settings.from_env()
    client = await connect()
    results: list[dict[str, str]] = []
    single = len(specs) == 1 and not show_progress
    with Progress(
        TextColumn("starting services"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        console=console(),
        disable=not show_progress,
        transient=False,
    ) as progress:
        task = progress.add_task("", total=len(specs))
        for spec in specs:
            progress.update(task, description=spec.service_id)
            try:
                handle = await start_service(client, spec, catalog=catalog, task_queue=settings.task_queue)
                results.append({"service_id": spec.service_id, "workflow_id": handle.id, "result": "started"})
            except WorkflowAlreadyStartedError as exc:
                if single:
                    raise
                results.append(
                    {
                        "service_id": spec.service_id,
                        "workflow_id": exc.workflow_id,
                        "result": "already running",
                    }
                )
            progress.advance(task)
    return results


# ---------------------------------------------------------------------------- show


def event_sentence(entry: JournalEntry) -> str:
    """A journal entry as ops read it."""
    d = entry.data
    kind = entry.kind
    if kind == "state":
        return f"state → {d.get('state')}" + (f" ({d['reason']})" if d.get("reason") else "")
    if kind == "invoice":
        text = f"invoice VS {d.get('vs')} {d.get('action')}: {d.get('amount')}"
        if d.get("action") == "issued":
            text += f", due {d.get('due')}"
        return text + (f" ({d['reason']})" if d.get("reason") else "")
    if kind == "payment":
        return (
            f"payment {d.get('payment_id')} of {d.get('amount')} with VS {d.get('vs')}: "
            f"{d.get('result')} ({d.get('reason')})"
        )
    if kind == "renewed":
        return f"renewed until {d.get('expires_on')} ({d.get('period')})"
    if kind == "mail":
        return f"mail {d.get('template')} to {d.get('to')}"
    if kind == "mail_failed":
        return f"mail {d.get('template')} to {d.get('to')} FAILED: {d.get('error')}"
    if kind == "action_failed":
        return f"{d.get('action')} FAILED: {d.get('error')}"
    if kind == "hypervisor":
        return f"hypervisor: {str(d.get('action')).replace('_', ' ')}" + (
            f" on {d['node']}" if d.get("node") else ""
        )
    if kind in ("platform", "registrar"):
        return f"{kind}: {str(d.get('action')).replace('_', ' ')}"
    if kind == "skipped":
        return f"skipped {str(d.get('milestone')).replace('_', ' ')}: {d.get('reason')}"
    if kind == "cancel_requested":
        return f"cancellation requested, effective {d.get('effective_on')} ({d.get('reason')})"
    details = ", ".join(f"{key} {value}" for key, value in d.items())
    return f"{kind.replace('_', ' ')}" + (f": {details}" if details else "")


def _local(at: datetime) -> str:
    return Clock().local(at).strftime("%Y-%m-%d %H:%M")


async def in_progress(description: Any, converter: Any) -> list[dict[str, Any]]:
    """The service's side effects under way, as ops need them when one hangs or keeps failing:
    activity, attempt, last failure (type and message, decrypted), when it last heartbeated."""
    rows: list[dict[str, Any]] = []
    for pending in description.raw_description.pending_activities:
        row: dict[str, Any] = {
            "activity": pending.activity_type.name,
            "attempt": pending.attempt,
            "last_failure": None,
            "last_heartbeat": None,
        }
        if pending.HasField("last_failure"):
            failure = type(pending.last_failure)()
            failure.CopyFrom(pending.last_failure)
            error = await converter.decode_failure(failure)
            kind = getattr(error, "type", None) or type(error).__name__
            row["last_failure"] = f"{kind}: {error}"
        if pending.HasField("last_heartbeat_time"):
            row["last_heartbeat"] = pending.last_heartbeat_time.ToDatetime(tzinfo=UTC).isoformat()
        rows.append(row)
    return rows


@service_app.command("show")
def service_show(
    service_id: str,
    events: Annotated[int, typer.Option(help="how many of the last events to show")] = 10,
    as_json: JsonFlag = False,
) -> None:
    """State, expiry, open invoice, what comes next (with dates) and the last events."""
    from workflows.subscription import SubscriptionWorkflow

    async def go() -> tuple[ServiceStatus, list[JournalEntry], PlanQuoteView | None, list[dict[str, Any]]]:
        client = await connect()
        handle = service_handle(client, service_id)
        status: ServiceStatus = await handle.query(SubscriptionWorkflow.status, rpc_timeout=rpc_timeout())
        journal: list[JournalEntry] = await handle.query(
            SubscriptionWorkflow.journal, 0, rpc_timeout=rpc_timeout()
        )
        commerce: PlanQuoteView | None = None
        with contextlib.suppress(WorkflowQueryFailedError):  # a worker from before plan changes
            commerce = await handle.query(SubscriptionWorkflow.commerce, rpc_timeout=rpc_timeout())
        description = await handle.describe(rpc_timeout=rpc_timeout())
        pending = await in_progress(description, client.data_converter)
        return status, journal[-events:] if events > 0 else [], commerce, pending

    status, journal, commerce, pending = run_async(go)
    if as_json:
        body = status.model_dump(mode="json")
        body["in_progress"] = pending
        body["events"] = [entry.model_dump(mode="json") for entry in journal]
        if commerce is not None:
            body["commerce"] = commerce.model_dump(mode="json", exclude={"at"})
        print(json.dumps(body, indent=2))
        return
    out = console()
    table = Table(title=f"service {status.service_id}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("state", status.state.value)
    table.add_row("now", status.details)
    table.add_row("product", f"{status.product} (profile {status.profile})")
    table.add_row("customer", status.customer_id)
    table.add_row("expires on", status.expires_on.isoformat())
    table.add_row("price", f"{status.price} per {status.period}")
    if status.open_invoice:
        inv = status.open_invoice
        table.add_row(
            "open invoice", f"VS {inv.variable_symbol}: {inv.amount} ({inv.purpose.value}), due {inv.due_on}"
        )
    else:
        table.add_row("open invoice", "none")
    if status.suspension:
        table.add_row("suspension", f"since {status.suspension.since}: {status.suspension.reason}")
    if status.parked:
        table.add_row("parked", "yes")
    if status.deferral_until:
        table.add_row("deferred until", status.deferral_until.isoformat())
    if status.cancel_effective_on:
        table.add_row("cancelled from", status.cancel_effective_on.isoformat())
    if status.backup_until:
        table.add_row("backup until", status.backup_until.isoformat())
    table.add_row("renewals", str(status.renewals))
    if commerce is not None:
        _commerce_rows(table, commerce)
    out.print(table)
    upcoming = Table("date", "what comes next", title="timeline", title_justify="left")
    for item in status.upcoming:
        upcoming.add_row(item.on.isoformat(), item.kind.replace("_", " "))
    if not status.upcoming:
        upcoming.add_row("—", "nothing scheduled")
    out.print(upcoming)
    if pending:
        under_way = Table(
            "activity", "attempt", "last failure", "last heartbeat", title="in progress", title_justify="left"
        )
        for row in pending:
            under_way.add_row(
                row["activity"], str(row["attempt"]), row["last_failure"] or "—", row["last_heartbeat"] or "—"
            )
        out.print(under_way)
    if journal:
        last = Table("at", "event", title="last events", title_justify="left")
        for entry in journal:
            last.add_row(_local(entry.at), event_sentence(entry))
        out.print(last)


def _commerce_rows(table: Table, commerce: PlanQuoteView) -> None:
    """Plan, a waiting upgrade, an announced deletion and a refund (SPEC §6), when there are any."""
    if commerce.plan:
        last = f" (last change {commerce.last_plan_change_on})" if commerce.last_plan_change_on else ""
        table.add_row("plan", commerce.plan + last)
    pending = commerce.pending_upgrade
    if pending is not None:
        table.add_row(
            "upgrade waiting",
            f"to {pending.plan.name}: VS {pending.variable_symbol} {pending.amount}, void on {pending.void_on}",
        )
    if commerce.provider_deletion is not None:
        deletion = commerce.provider_deletion
        table.add_row("deletion announced", f"on {deletion.delete_on}: {deletion.reason}")
    if commerce.refund is not None:
        table.add_row("refunded", f"{commerce.refund.amount} ({commerce.refund.reason})")


# ---------------------------------------------------------------------------- list

_SAFE_VALUE = r"^[A-Za-z0-9._:@+-]+$"


def _keyword(flag: str, value: str) -> str:
    """A value placed inside a visibility query: no quotes, so no query injection."""
    import re

    if not re.match(_SAFE_VALUE, value):
        raise CliError(f"bad {flag} {value!r}: letters, digits and . _ : @ + - only", 2)
    return value


def list_query(
    state: str | None,
    product: str | None,
    customer: str | None,
    profile: str | None,
    expiring_before: str | None,
    attention: bool,
    include_closed: bool,
    variable_symbol: str | None = None,
) -> str:
    """The visibility query `service list` sends (also what ops type into the Web UI)."""
    clauses = ["WorkflowType = 'SubscriptionWorkflow'"]
    if not include_closed:
        clauses.append("ExecutionStatus = 'Running'")
    if state:
        known = [s.value for s in ServiceState]
        if state not in known:
            raise CliError(f"unknown state {state!r}; one of: {', '.join(known)}", 2)
        clauses.append(f"{sa.SERVICE_STATE.name} = '{state}'")
    if product:
        clauses.append(f"{sa.PRODUCT.name} = '{_keyword('--product', product)}'")
    if customer:
        clauses.append(f"{sa.CUSTOMER_ID.name} = '{_keyword('--customer', customer)}'")
    if profile:
        clauses.append(f"{sa.PROFILE.name} = '{_keyword('--profile', profile)}'")
    if expiring_before:
        # The attribute holds local midnight of D as an instant: compare instants, not UTC dates.
        before = Clock().instant(parse_date(expiring_before, "--expiring-before")).astimezone(UTC)
        clauses.append(f"{sa.EXPIRES_ON.name} < '{before.strftime('%Y-%m-%dT%H:%M:%SZ')}'")
    if variable_symbol:
        try:
            vs = normalize_variable_symbol(variable_symbol)
        except ValueError as exc:
            raise CliError(f"bad --vs: {exc}", 2) from None
        clauses.append(f"{sa.VARIABLE_SYMBOLS.name} = '{vs}'")
    if attention:
        clauses.append(f"{sa.NEEDS_ATTENTION.name} IS NOT NULL AND {sa.NEEDS_ATTENTION.name} != ''")
    return " AND ".join(clauses)


@service_app.command("list")
def service_list(
    state: Annotated[str | None, typer.Option(help="e.g. blocked")] = None,
    product: Annotated[str | None, typer.Option(help="e.g. vps")] = None,
    customer: Annotated[str | None, typer.Option(help="customer id")] = None,
    profile: Annotated[str | None, typer.Option(help="policy profile")] = None,
    expiring_before: Annotated[
        str | None, typer.Option(help="expiry date D before this day, YYYY-MM-DD")
    ] = None,
    vs: Annotated[
        str | None, typer.Option("--vs", help="the service that issued this variable symbol")
    ] = None,
    attention: Annotated[bool, typer.Option("--attention", help="only services ops must look at")] = False,
    include_closed: Annotated[bool, typer.Option("--all", help="closed workflows too")] = False,
    limit: Annotated[int, typer.Option(help="at most this many rows")] = 200,
    as_json: JsonFlag = False,
) -> None:
    """Services by state, product, customer, profile and expiry (visibility search attributes)."""
    query = checked(
        lambda: list_query(state, product, customer, profile, expiring_before, attention, include_closed, vs)
    )

    async def go() -> list[dict[str, Any]]:
        client = await connect()
        rows: list[dict[str, Any]] = []
        async for execution in client.list_workflows(query, limit=limit, rpc_timeout=rpc_timeout()):
            attrs = execution.typed_search_attributes
            expires = attrs.get(sa.EXPIRES_ON)
            rows.append(
                {
                    "service_id": attrs.get(sa.SERVICE_ID),
                    "state": attrs.get(sa.SERVICE_STATE),
                    "product": attrs.get(sa.PRODUCT),
                    "profile": attrs.get(sa.PROFILE),
                    "customer_id": attrs.get(sa.CUSTOMER_ID),
                    "expires_on": Clock().today(expires).isoformat() if expires else None,
                    "attention": attrs.get(sa.NEEDS_ATTENTION) or "",
                    "workflow_id": execution.id,
                    "status": execution.status.name.lower() if execution.status else None,
                }
            )
        return rows

    rows = run_async(go)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("service", "state", "product", "customer", "expires on", "attention")
    for row in rows:
        table.add_row(
            row["service_id"],
            row["state"],
            row["product"],
            row["customer_id"],
            row["expires_on"],
            row["attention"],
        )
    out = console()
    out.print(table)
    out.print(f"{len(rows)} service(s)" + (f" (limit {limit})" if len(rows) >= limit else ""))


__all__ = ["event_sentence", "list_query", "read_services_file", "service_app", "spec_from_row"]

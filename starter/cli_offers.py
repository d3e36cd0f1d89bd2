"""`hostlife coupon ...`, `hostlife price announce`, `hostlife usage report` (SPEC §6).

    hostlife coupon create CODE --kind weekly --percent 20 --from 2027-03-01 --until 2027-03-08
    hostlife coupon list | show CODE | retire CODE --reason TEXT
    hostlife coupon apply SERVICE CODE        the first period's invoice, while it is still open
    hostlife price announce --product vps --price 3600.00 --effective 2027-03-01 [--plan X]
    hostlife usage report SERVICE --disk BYTES --free-disk BYTES | --cpu-full-minutes N

A coupon is its own workflow (`coupon-<CODE>`), which counts redemptions exactly; a refused
coupon is one `error:` line naming the rule. `price announce` finds the affected services by
their search attributes and asks each one; a service of another plan or period answers "not
affected" and is counted, not treated as an error.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.table import Table
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from policy.clock import Clock
from starter.cli_common import (
    CliError,
    JsonFlag,
    checked,
    connect,
    console,
    one_line,
    parse_date,
    parse_money,
    rpc_timeout,
    run_async,
    service_handle,
)
from starter.config import Settings
from workflows import search_attributes as sa
from workflows.models import CommandResult
from workflows.offers_models import (
    ApplyCoupon,
    CouponInput,
    CouponStatus,
    PriceAnnouncement,
    RetireCoupon,
    UsageReport,
    coupon_workflow_id,
    normalize_coupon_code,
)

T = TypeVar("T")

coupon_app = typer.Typer(help="Create, inspect, apply and withdraw discount coupons.", no_args_is_help=True)
price_app = typer.Typer(help="Announce new prices for existing services.", no_args_is_help=True)
usage_app = typer.Typer(help="Monitoring's usage reports of servers.", no_args_is_help=True)


def _code(code: str) -> str:
    try:
        return normalize_coupon_code(code)
    except ValueError as exc:
        raise CliError(str(exc), 2) from None


def _moment(text: str, what: str) -> datetime:
    """An ISO instant with its offset, or a date meaning local midnight of the provider's zone."""
    try:
        if len(text) == 10:
            return Clock().instant(date.fromisoformat(text))
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"bad {what} {text!r}: expected YYYY-MM-DD or an ISO time with offset", 2) from None
    if moment.utcoffset() is None:
        raise CliError(f"bad {what} {text!r}: give a time zone offset, e.g. +01:00", 2)
    return moment


def _coupon_handle(client: Any, code: str) -> Any:
    from workflows.coupon import CouponWorkflow

    return client.get_workflow_handle_for(CouponWorkflow.run, coupon_workflow_id(code))


async def _known(code: str, call: Awaitable[T]) -> T:
    """A coupon nobody created is one plain line, not the server's "workflow not found"."""
    try:
        return await call
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND and "not found" in exc.message:
            raise CliError(f"unknown coupon {code}") from None
        if exc.status == RPCStatusCode.NOT_FOUND and "completed" in exc.message:
            raise CliError(f"coupon {code} is withdrawn: nothing can change it now") from None
        raise


def _print_coupon(status: CouponStatus, as_json: bool) -> None:
    if as_json:
        print(status.model_dump_json())
        return
    c = status.coupon
    off = f"{c.percent_off} %" if c.percent_off is not None else f"{c.amount_off}"
    window = f"{c.valid_from.isoformat() if c.valid_from else '…'} – {c.valid_until.isoformat() if c.valid_until else '…'}"
    limit = f"{status.uses} of {c.max_uses}" if c.max_uses is not None else f"{status.uses}"
    out = console()
    out.print(f"coupon {c.code}: {c.kind.value}, {off} off, valid {window}, used {limit}")
    if c.products or c.min_period_months:
        out.print(
            f"  only for: {', '.join(c.products) or 'any product'}"
            + (f"; periods of {c.min_period_months}+ months" if c.min_period_months else "")
        )
    if status.retired:
        out.print(f"  withdrawn: {status.retired}")
    out.print(f"  refused orders: {status.refusals}")
    for r in status.redemptions:
        out.print(
            f"  {r.at.isoformat()}  {r.service_id} (customer {r.customer_id}): -{r.discount} of {r.price}"
        )


@coupon_app.command("create")
def coupon_create(
    code: Annotated[str, typer.Argument(help="the code customers type (letters, digits, - and _)")],
    kind: Annotated[str, typer.Option(help="weekly, flash, monthly, holiday or limited")],
    percent: Annotated[str | None, typer.Option(help="percent off, e.g. 20")] = None,
    amount: Annotated[str | None, typer.Option(help="amount off, e.g. 300.00")] = None,
    valid_from: Annotated[str | None, typer.Option("--from", help="YYYY-MM-DD or ISO time")] = None,
    valid_until: Annotated[
        str | None, typer.Option("--until", help="exclusive end, YYYY-MM-DD or ISO")
    ] = None,
    max_uses: Annotated[int | None, typer.Option(help="limited coupons: how many orders in all")] = None,
    product: Annotated[list[str] | None, typer.Option(help="only for this product (repeatable)")] = None,
    min_months: Annotated[int, typer.Option(help="only for periods of this many months or more")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """Create a coupon; its rules are checked now (a flash coupon lasts at most 24 hours, ...)."""
    from policy.commerce import Coupon
    from workflows.coupon import CouponWorkflow

    normalized = checked(lambda: _code(code))
    fields: dict[str, Any] = {
        "code": normalized,
        "kind": kind,
        "max_uses": max_uses,
        "products": product or [],
        "min_period_months": min_months,
    }
    if percent is not None:
        fields["percent_off"] = checked(lambda: _decimal(percent, "--percent"))
    if amount is not None:
        fields["amount_off"] = checked(lambda: parse_money(amount, "--amount"))
    if valid_from is not None:
        fields["valid_from"] = checked(lambda: _moment(valid_from, "--from"))
    if valid_until is not None:
        fields["valid_until"] = checked(lambda: _moment(valid_until, "--until"))
    try:
        coupon = Coupon.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        checked(lambda: _raise(f"bad coupon{' ' + where if where else ''}: {one_line(first['msg'])}"))
        return

    async def go() -> CouponStatus:
        client = await connect()
        try:
            handle = await client.start_workflow(
                CouponWorkflow.run,
                CouponInput(coupon=coupon),
                id=coupon_workflow_id(normalized),
                task_queue=Settings.from_env().task_queue,
                static_summary=f"coupon {normalized} ({coupon.kind.value})",
            )
        except WorkflowAlreadyStartedError:
            raise CliError(f"coupon {normalized} already exists") from None
        status: CouponStatus = await handle.query(CouponWorkflow.details, rpc_timeout=rpc_timeout())
        return status

    _print_coupon(run_async(go), as_json)


def _raise(message: str) -> None:
    raise CliError(message, 2)


def _decimal(text: str, what: str) -> Decimal:
    try:
        value = Decimal(text)
    except ArithmeticError:
        raise CliError(f"bad {what} {text!r}", 2) from None
    if not value.is_finite():
        raise CliError(f"bad {what} {text!r}", 2)
    return value


@coupon_app.command("show")
def coupon_show(code: str, as_json: JsonFlag = False) -> None:
    """A coupon's rules, uses and redemptions."""
    from workflows.coupon import CouponWorkflow

    normalized = checked(lambda: _code(code))

    async def go() -> CouponStatus:
        client = await connect()
        status: CouponStatus = await _known(
            normalized,
            _coupon_handle(client, normalized).query(CouponWorkflow.details, rpc_timeout=rpc_timeout()),
        )
        return status

    _print_coupon(run_async(go), as_json)


@coupon_app.command("list")
def coupon_list(
    include_retired: Annotated[bool, typer.Option(help="also withdrawn coupons")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Every coupon with its uses."""
    from workflows.coupon import CouponWorkflow

    query = "WorkflowType = 'CouponWorkflow'" + (
        "" if include_retired else " AND ExecutionStatus = 'Running'"
    )

    async def go() -> list[CouponStatus]:
        client = await connect()
        found = []
        async for w in client.list_workflows(query, rpc_timeout=rpc_timeout()):
            handle = client.get_workflow_handle(w.id, run_id=w.run_id)
            found.append(await handle.query(CouponWorkflow.details, rpc_timeout=rpc_timeout()))
        return sorted(found, key=lambda s: s.coupon.code)

    statuses = run_async(go)
    if as_json:
        print(json.dumps([s.model_dump(mode="json") for s in statuses]))
        return
    table = Table("code", "kind", "off", "valid until", "uses", "state")
    for s in statuses:
        c = s.coupon
        table.add_row(
            c.code,
            c.kind.value,
            f"{c.percent_off} %" if c.percent_off is not None else str(c.amount_off),
            c.valid_until.isoformat() if c.valid_until else "",
            f"{s.uses}" + (f"/{c.max_uses}" if c.max_uses is not None else ""),
            "withdrawn" if s.retired else "active",
        )
    console().print(table)


@coupon_app.command("retire")
def coupon_retire(
    code: str,
    reason: Annotated[str, typer.Option(help="why, for the audit trail")],
    as_json: JsonFlag = False,
) -> None:
    """Withdraw a coupon: later orders are refused; redemptions so far stand."""
    from workflows.coupon import CouponWorkflow

    normalized = checked(lambda: _code(code))
    if not reason.strip():
        checked(lambda: _raise("--reason must not be empty"))

    async def go() -> CouponStatus:
        client = await connect()
        status: CouponStatus = await _known(
            normalized,
            _coupon_handle(client, normalized).execute_update(
                CouponWorkflow.retire, RetireCoupon(reason=reason), rpc_timeout=rpc_timeout()
            ),
        )
        return status

    _print_coupon(run_async(go), as_json)


@coupon_app.command("apply")
def coupon_apply(service_id: str, code: str, as_json: JsonFlag = False) -> None:
    """Apply a coupon to a new order whose first invoice is still open (never once it is paid)."""
    from starter.cli_commands import command

    normalized = checked(lambda: _code(code))
    command(service_id, "apply_coupon", ApplyCoupon(code=normalized), as_json)


# ---------------------------------------------------------------------------- price changes


@price_app.command("announce")
def price_announce(
    product: Annotated[str, typer.Option(help="product of the catalog, e.g. vps")],
    price: Annotated[str, typer.Option(help="the new price of one --period, e.g. 3600.00")],
    effective: Annotated[str, typer.Option(help="first day of the new price, YYYY-MM-DD")],
    plan: Annotated[str | None, typer.Option(help="only services of this plan")] = None,
    period: Annotated[str, typer.Option(help="the period --price is for (P1Y, P1M)")] = "P1Y",
    profile: Annotated[str | None, typer.Option(help="only services of this policy profile")] = None,
    reference: Annotated[str, typer.Option(help="name of the change, for the audit trail")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Announce a new price to every affected service: it applies from the first renewal on or
    after EFFECTIVE (and at least the profile's notice days from today); prepaid periods keep theirs."""
    from policy.commerce import CommerceRulesError, commerce_rules
    from policy.periods import parse_period
    from starter.cli_services import list_query
    from workflows.subscription import SubscriptionWorkflow

    money = checked(lambda: parse_money(price, "--price"))
    day = checked(lambda: parse_date(effective, "--effective"))
    if money <= 0:
        checked(lambda: _raise("--price must be positive"))
    problem: str | None = None
    notice = 0
    try:
        parse_period(period)
        notice = commerce_rules(profile or "default").price_change_notice_days
    except (ValueError, CommerceRulesError) as exc:
        problem = str(exc)
    if problem is not None:
        checked(lambda: _raise(str(problem)))
    today = Clock().today(datetime.now(UTC))
    if (day - today).days < notice:
        checked(
            lambda: _raise(
                f"--effective {day} is less than {notice} days ahead; customers must be told at least "
                f"{notice} days before (the earliest is {today + timedelta(days=notice)})"
            )
        )
    query = checked(lambda: list_query(None, product, None, profile, None, False, False))
    announcement = PriceAnnouncement(
        product=product, plan=plan, price=money, period=period, effective_on=day, reference=reference
    )

    async def go() -> list[dict[str, str]]:
        client = await connect()
        results: list[dict[str, str]] = []
        async for w in client.list_workflows(query, rpc_timeout=rpc_timeout()):
            sid = str(w.typed_search_attributes.get(sa.SERVICE_ID))
            try:
                answer: CommandResult = await service_handle(client, sid).execute_update(
                    SubscriptionWorkflow.announce_price, announcement, rpc_timeout=rpc_timeout()
                )
                results.append({"service_id": sid, "result": "announced", "message": answer.message})
            except WorkflowUpdateFailedError as exc:
                message = str(getattr(exc.cause, "message", exc.cause))
                outcome = "not affected" if message.startswith("not affected") else "refused"
                results.append({"service_id": sid, "result": outcome, "message": message})
        return results

    results = run_async(go)
    if as_json:
        print(json.dumps(results))
        return
    out = console()
    for r in results:
        if r["result"] != "not affected":
            out.print(f"{r['service_id']}: {r['result']}: {r['message']}")
    counts = {
        k: sum(1 for r in results if r["result"] == k) for k in ("announced", "not affected", "refused")
    }
    out.print(
        f"{counts['announced']} service(s) told, {counts['not affected']} not affected, {counts['refused']} refused"
    )
    if counts["refused"]:
        raise typer.Exit(1)


# ---------------------------------------------------------------------------- usage reports


@usage_app.command("report")
def usage_report(
    service_id: str,
    disk: Annotated[int | None, typer.Option(help="disk size in bytes", min=0)] = None,
    free_disk: Annotated[int | None, typer.Option(help="free disk in bytes", min=0)] = None,
    cpu_full_minutes: Annotated[
        int | None, typer.Option(help="consecutive minutes at 100 % CPU", min=0)
    ] = None,
    managed: Annotated[bool, typer.Option(help="a VPS the provider manages (the disk rule)")] = True,
    shared: Annotated[bool, typer.Option(help="a VPS on shared CPU (the CPU rule)")] = True,
    measured_at: Annotated[str | None, typer.Option(help="ISO time with offset (default: now)")] = None,
) -> None:
    """Report one measurement; the service notifies, and suspends after ignored notices."""
    from workflows.subscription import SubscriptionWorkflow

    if (disk is None) != (free_disk is None):
        checked(lambda: _raise("give --disk and --free-disk together"))
    if disk is None and cpu_full_minutes is None:
        checked(lambda: _raise("nothing to report: give --disk/--free-disk or --cpu-full-minutes"))
    if disk is not None and free_disk is not None and free_disk > disk:
        checked(lambda: _raise("--free-disk cannot exceed --disk"))
    at = checked(lambda: _moment(measured_at, "--measured-at")) if measured_at else datetime.now(UTC)
    report = UsageReport(
        measured_at=at,
        managed=managed,
        shared_resources=shared,
        disk_bytes=disk,
        free_disk_bytes=free_disk,
        cpu_full_minutes=cpu_full_minutes,
    )

    async def go() -> None:
        client = await connect()
        await service_handle(client, service_id).signal(
            SubscriptionWorkflow.usage_report, report, rpc_timeout=rpc_timeout()
        )

    run_async(go)
    console().print(f"{service_id}: usage reported ({at.isoformat()})")


def register(app: typer.Typer) -> None:
    app.add_typer(coupon_app, name="coupon")
    app.add_typer(price_app, name="price")
    app.add_typer(usage_app, name="usage")

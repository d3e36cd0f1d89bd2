"""`hostlife renew-bulk` and `hostlife card set|remove`: money in without a bank transfer.

`renew-bulk` renews several services of one type of one customer from the credit account, all or
nothing (SPEC §3.10, `starter/bulk_renewal.py`); a request it refuses debits nothing, and a credit
short of the whole debits nothing either and says how much is missing (exit status 1). Run it again
with the printed `--request-id` after a failure half-way: nothing is debited or renewed twice.

`card set` stores the card (the gateway's token of the customer's first, card-storing payment) that
is charged for each renewal invoice as soon as it is issued (SPEC §6); `card remove` forgets it.
"""

from __future__ import annotations

import json
from typing import Annotated

import httpx
import typer

from starter.bulk_renewal import BulkRenewalAnswer, BulkRenewalRefused, renew_bulk
from starter.cli_commands import command
from starter.cli_common import CliError, JsonFlag, checked, connect, console, fail, rpc_timeout, run_async
from workflows import search_attributes as sa
from workflows.money_models import StoredCard, StoredCardSetting

card_app = typer.Typer(help="The stored card charged for renewal invoices.", no_args_is_help=True)


def renew_bulk_command(
    services: Annotated[
        list[str], typer.Argument(help="service ids, all of one product", show_default=False)
    ],
    customer: Annotated[str, typer.Option(help="the customer whose credit pays")],
    request_id: Annotated[
        str | None,
        typer.Option(
            help="idempotency key; default: customer, services and today (a retry today is the same)"
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Renew several services of one type from the credit account, all or nothing."""

    async def go() -> BulkRenewalAnswer:
        from activities.exchange_rates import BnrRates, CnbRates

        client = await connect()
        async with httpx.AsyncClient(timeout=30, follow_redirects=True) as http:
            try:
                return await renew_bulk(
                    client,
                    customer,
                    services,
                    request_id=request_id,
                    rates={"CZK": CnbRates(http), "RON": BnrRates(http)},
                )
            except BulkRenewalRefused as exc:
                raise CliError(str(exc)) from None

    answer = run_async(go)
    if as_json:
        print(json.dumps(answer.model_dump(mode="json")))
    else:
        out = console()
        for item in answer.services:
            out.print(f"{item.service_id}: {item.message}")
        out.print(answer.summary())
        out.print(f"request id: {answer.request_id}")
    if not answer.ok:
        raise typer.Exit(1)


def _card_targets(service_id: str | None, customer: str | None) -> list[str]:
    """One service, or every running service of a customer (the account's card)."""
    if (service_id is None) == (customer is None):
        raise CliError("give a SERVICE_ID or --customer, not both", 2)
    if service_id is not None:
        return [service_id]
    from starter.cli_services import list_query

    query = checked(lambda: list_query(None, None, customer, None, None, False, False))

    async def go() -> list[str]:
        client = await connect()
        ids = [
            str(w.typed_search_attributes.get(sa.SERVICE_ID))
            async for w in client.list_workflows(query, rpc_timeout=rpc_timeout())
        ]
        if not ids:
            raise CliError(f"customer {customer} has no running services")
        return ids

    return run_async(go)


@card_app.command("set")
def card_set(
    service_id: Annotated[str | None, typer.Argument(help="one service")] = None,
    token: Annotated[
        str, typer.Option(help="the gateway's token (ComGate: transId of the initial payment)")
    ] = "",
    label: Annotated[str, typer.Option(help="what the customer knows it by, e.g. 'Visa •••• 4242'")] = "",
    customer: Annotated[str | None, typer.Option(help="every running service of this customer")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Charge this card for each renewal invoice as soon as it is issued (and now for an open one)."""
    if not token.strip():
        fail("--token is required", 2)
    setting = StoredCardSetting(card=StoredCard(token=token, label=label))
    for target in _card_targets(service_id, customer):
        command(target, "set_stored_card", setting, as_json)


@card_app.command("remove")
def card_remove(
    service_id: Annotated[str | None, typer.Argument(help="one service")] = None,
    customer: Annotated[str | None, typer.Option(help="every running service of this customer")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Stop charging the stored card; invoices are paid as usual."""
    for target in _card_targets(service_id, customer):
        command(target, "set_stored_card", StoredCardSetting(card=None), as_json)


def register(app: typer.Typer) -> None:
    app.command("renew-bulk")(renew_bulk_command)
    app.add_typer(card_app, name="card")

"""`hostlife renew-bulk` and `hostlife card` against the session's dev server and worker."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from decimal import Decimal

from policy.catalog import default_catalog
from starter.accounts import balance, top_up
from tests.starter.conftest import DevStack
from tests.starter.test_cli import error_line, hostlife, ok
from workflows.models import Customer

HOSTING = default_catalog().profile("default").terms("hosting")


def customer() -> Customer:
    return Customer(id=f"c-{uuid.uuid4().hex[:6]}", email="jana@example.cz", language="en")


def test_renew_bulk_all_or_nothing_and_a_retry_renews_nothing_twice(dev_stack: DevStack) -> None:
    owner = customer()
    one = dev_stack.start(100, customer=owner)
    two = dev_stack.start(200, customer=owner, price=Decimal("800.00"))
    short = hostlife(dev_stack, "renew-bulk", "--customer", owner.id, one, two)
    assert short.exit_code == 1, short.output
    assert "2000.00 CZK is missing" in short.stdout
    dev_stack.run(top_up(dev_stack.client, owner.id, Decimal("2500.00"), f"top-{owner.id}", HOSTING,
                         task_queue=dev_stack.task_queue))  # fmt: skip
    answer = json.loads(ok(dev_stack, "renew-bulk", "--customer", owner.id, one, two, "--json").stdout)
    assert answer["ok"] and answer["total"] == "2000.00" and answer["balance"] == "500.00"
    d = dev_stack.today() + timedelta(days=100)
    assert dev_stack.status(one).expires_on == d.replace(year=d.year + 1)
    again = ok(dev_stack, "renew-bulk", "--customer", owner.id, one, two).stdout
    assert "nothing debited again" in again and f"request id: {answer['request_id']}" in again
    found = dev_stack.run(balance(dev_stack.client, owner.id))
    assert found is not None and found.balance == Decimal("500.00")
    assert dev_stack.status(two).renewals == 1


def test_renew_bulk_refuses_a_service_that_cannot_be_renewed(dev_stack: DevStack) -> None:
    owner = customer()
    one = dev_stack.start(100, customer=owner)
    line = error_line(hostlife(dev_stack, "renew-bulk", "--customer", owner.id, one, "gone-1"))
    assert line == "error: nothing debited: gone-1: no such service"


def test_card_set_charges_the_open_invoice_and_card_remove_forgets_it(dev_stack: DevStack) -> None:
    service = dev_stack.start(10)  # the renewal invoice is open already (issued 30 days before D)
    dev_stack.wait_for(service, lambda s: s.open_invoice is not None)
    out = ok(dev_stack, "card", "set", service, "--token", "INIT-1", "--label", "Visa 4242").stdout
    assert "open invoice VS" in out and "paid" in out
    status = dev_stack.wait_for(service, lambda s: s.renewals == 1)
    d = dev_stack.today() + timedelta(days=10)
    assert status.expires_on == d.replace(year=d.year + 1)
    assert "stored card removed" in ok(dev_stack, "card", "remove", service).stdout
    assert "no card is stored" in error_line(hostlife(dev_stack, "card", "remove", service))
    assert "--token is required" in error_line(hostlife(dev_stack, "card", "set", service), 2)

"""Handing services to hostlife: resolve terms from the catalog and start their workflows."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from decimal import Decimal
from functools import cache
from typing import Any

from temporalio.client import Client, WithStartWorkflowOperation, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from policy.catalog import Catalog, ProductKind, default_catalog, load_catalog
from policy.clock import Clock
from policy.commerce import CommerceRulesError, commerce_rules
from workflows import TASK_QUEUE, service_workflow_id
from workflows import search_attributes as sa
from workflows.models import CommandResult, ServiceSpec, SubscriptionInput
from workflows.money_models import InvoiceCurrency
from workflows.offers_models import ApplyCoupon, UsageDelivery, UsageReport
from workflows.subscription import SubscriptionWorkflow
from workflows.vps_backups import VpsBackupsWorkflow
from workflows.vps_models import VpsBackupsConfig, VpsBackupsInput, vps_backups_workflow_id


class CouponNotApplied(Exception):
    """The service started at its full price; the coupon was refused (the message names the rule)."""

    def __init__(self, service_id: str, reason: str) -> None:
        super().__init__(f"service {service_id} started at the full price; {reason}")
        self.service_id = service_id
        self.reason = reason


def usage_sink(client: Client) -> Callable[[str, UsageReport], Awaitable[UsageDelivery]]:
    """Deliver monitoring's measurements to services as the `usage_report` signal (the ingress's sink)."""

    async def deliver(service_id: str, report: UsageReport) -> UsageDelivery:
        handle = client.get_workflow_handle_for(SubscriptionWorkflow.run, service_workflow_id(service_id))
        try:
            await handle.signal(SubscriptionWorkflow.usage_report, report)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return "ended" if "completed" in exc.message else "unknown service"
            raise
        return "delivered"

    return deliver


@cache
def configured_catalog() -> Catalog:
    """Ops' own catalog (HOSTLIFE_CATALOG) when set, else the shipped one: what new services get."""
    path = os.environ.get("HOSTLIFE_CATALOG")
    return load_catalog(path) if path else default_catalog()


def subscription_input(
    spec: ServiceSpec, catalog: Catalog | None = None, clock: Clock | None = None
) -> SubscriptionInput:
    """The start input of a service: its terms resolved now, so later catalog edits never replay differently."""
    profile = (catalog or configured_catalog()).profile(spec.profile)
    terms = profile.terms(spec.product)
    tld = profile.tld_rules(spec.name) if terms.kind is ProductKind.DOMAIN else None
    if spec.period not in terms.periods:
        raise ValueError(
            f"{terms.title} cannot be billed for {spec.period}; allowed: {', '.join(terms.periods)}"
        )
    if spec.plan is not None:
        from policy.plans import configured_plans

        configured_plans().product_plans(spec.profile, spec.product).plan(spec.plan)  # PlansError names it
    return SubscriptionInput(
        spec=spec,
        terms=terms,
        tld=tld,
        clock=clock or Clock(time_zone=terms.time_zone),
        invoice_currency=invoice_currency_for(spec.profile, terms.currency),
    )


def invoice_currency_for(profile: str, price_currency: str) -> InvoiceCurrency | None:
    """The profile's invoice currency and rate margin (commerce rules, SPEC §6) when it differs from the price's.

    A profile the commerce rules do not know (ops' own catalog) invoices in the price currency.
    """
    try:
        rules = commerce_rules(profile)
    except CommerceRulesError:
        return None
    if rules.invoice_currency == price_currency:
        return None
    return InvoiceCurrency(currency=rules.invoice_currency, margin_percent=rules.invoice_rate_margin_percent)


async def start_service(
    client: Client,
    spec: ServiceSpec,
    *,
    catalog: Catalog | None = None,
    clock: Clock | None = None,
    task_queue: str = TASK_QUEUE,
    coupon: str | None = None,
    on_coupon: Callable[[CommandResult], None] | None = None,
) -> WorkflowHandle[SubscriptionWorkflow, object]:
    """Start a service's workflow; with `coupon`, redeem it for the first period in the same call.

    A refused coupon raises `CouponNotApplied` after the service started at its full price.
    """
    start = subscription_input(spec, catalog, clock)
    assert start.terms is not None and start.clock is not None
    attributes = TypedSearchAttributes(
        [
            SearchAttributePair(sa.SERVICE_ID, spec.service_id),
            SearchAttributePair(sa.PRODUCT, spec.product),
            SearchAttributePair(sa.PROFILE, spec.profile),
            SearchAttributePair(sa.CUSTOMER_ID, spec.customer.id),
            SearchAttributePair(
                sa.EXPIRES_ON, Clock(time_zone=start.clock.time_zone).instant(spec.expires_on)
            ),
        ]
    )
    if spec.backup_rotation and not start.terms.on_hypervisor:
        raise ValueError(f"{start.terms.title} has no automatic backups (only VPS and APS do)")
    if spec.follows and start.terms.kind is not ProductKind.DNS:
        raise ValueError("only DNS hosting follows a domain")
    options: dict[str, Any] = {
        "id": service_workflow_id(spec.service_id),
        "task_queue": task_queue,
        "search_attributes": attributes,
        "static_summary": f"{start.terms.title} {spec.name or spec.service_id} of customer {spec.customer.id}",
        "static_details": (
            f"service {spec.service_id} · product {spec.product} · profile {spec.profile} · "
            f"customer {spec.customer.id} · {spec.price} {start.terms.currency} per {spec.period}"
        ),
    }
    if coupon is None:
        handle = await client.start_workflow(SubscriptionWorkflow.run, start, **options)
    else:
        # Update-with-start: the coupon's handler holds the service's lock before the workflow
        # can issue its first invoice, so that invoice is already discounted.
        operation = WithStartWorkflowOperation(
            SubscriptionWorkflow.run,
            start,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            **options,
        )
        try:
            applied = await client.execute_update_with_start_workflow(
                SubscriptionWorkflow.apply_coupon,
                ApplyCoupon(code=coupon),
                start_workflow_operation=operation,
            )
        except WorkflowUpdateFailedError as exc:
            handle = await operation.workflow_handle()
            if spec.backup_rotation:
                await start_vps_backups(client, spec, start.clock, task_queue)
            reason = str(getattr(exc.cause, "message", exc.cause))
            raise CouponNotApplied(spec.service_id, reason) from None
        handle = await operation.workflow_handle()
        if on_coupon is not None:
            on_coupon(applied)
    if spec.backup_rotation:
        await start_vps_backups(
            client,
            spec,
            start.clock,
            task_queue,
            price_per_gib_month=start.terms.backup_storage_price_per_gib_month,
        )
    return handle


async def start_vps_backups(
    client: Client,
    spec: ServiceSpec,
    clock: Clock,
    task_queue: str = TASK_QUEUE,
    price_per_gib_month: Decimal = Decimal("0.00"),
) -> None:
    """Automatic daily backups of a VPS in a 3- or 7-day rotation, as their own durable workflow."""
    await client.start_workflow(
        VpsBackupsWorkflow.run,
        VpsBackupsInput(
            config=VpsBackupsConfig(
                service_id=spec.service_id,
                node=spec.node,
                vm_name=spec.name or spec.service_id,
                clock=clock,
                customer_id=spec.customer.id,
                price_per_gib_month=price_per_gib_month,
            ),
            rotation=spec.backup_rotation,
        ),
        id=vps_backups_workflow_id(spec.service_id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"backups of VPS {spec.service_id} on {spec.node} ({spec.backup_rotation}-day rotation)",
    )

"""Handing services to hostlife: resolve terms from the catalog and start their workflows."""

from __future__ import annotations

import os
from decimal import Decimal
from functools import cache

from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

from policy.catalog import Catalog, ProductKind, default_catalog, load_catalog
from policy.clock import Clock
from workflows import TASK_QUEUE, service_workflow_id
from workflows import search_attributes as sa
from workflows.models import ServiceSpec, SubscriptionInput
from workflows.subscription import SubscriptionWorkflow
from workflows.vps_backups import VpsBackupsWorkflow
from workflows.vps_models import VpsBackupsConfig, VpsBackupsInput, vps_backups_workflow_id


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
    if spec.tier is not None and spec.tier not in terms.tiers:
        known = ", ".join(terms.tiers) or "none"
        raise ValueError(f"{terms.title} has no tier {spec.tier!r}; tiers: {known}")
    return SubscriptionInput(spec=spec, terms=terms, tld=tld, clock=clock or Clock(time_zone=terms.time_zone))


async def start_service(
    client: Client,
    spec: ServiceSpec,
    *,
    catalog: Catalog | None = None,
    clock: Clock | None = None,
    task_queue: str = TASK_QUEUE,
) -> WorkflowHandle[SubscriptionWorkflow, object]:
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
    handle = await client.start_workflow(
        SubscriptionWorkflow.run,
        start,
        id=service_workflow_id(spec.service_id),
        task_queue=task_queue,
        search_attributes=attributes,
        static_summary=f"{start.terms.title} {spec.name or spec.service_id} of customer {spec.customer.id}",
        static_details=(
            f"service {spec.service_id} · product {spec.product} · profile {spec.profile} · "
            f"customer {spec.customer.id} · {spec.price} {start.terms.currency} per {spec.period}"
        ),
    )
    if spec.backup_rotation:
        await start_vps_backups(
            client, spec, start.clock, task_queue, price_per_gib_month=start.terms.backup_storage_price_per_gib_month
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

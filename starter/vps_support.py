"""Support actions on a VPS (start, stop, restart, reinstall) for the CLI, through client handles.

    request = SupportActionRequest(service_id="vps-7", node="node-a", vm_name="vps-7",
                                   action=SupportAction.RESTART, request_id="T-1234",
                                   requested_by="jana@example.cz (ticket T-1234)")
    result = await run_support_action(client, request)     # waits; SupportActionResult
    handle = await start_support_action(client, request)   # returns at once; await handle.result()

Each request becomes a `VpsSupportActionWorkflow` with id
`vps-support-<service>-<action>-<request id>` on the lifecycle task queue; the hypervisor call runs
on the node's queue. The same request id never runs twice: starting it again returns the handle of
the first run (finished or not), so a CLI retried after a timeout is safe.

Before starting, the service's own workflow (`service-<id>`) is asked for its state, so support
cannot switch on what the lifecycle switched off: start, restart and reinstall are refused while
the service is blocked, suspended, parked or cancelled, and everything is refused once it is
deleted. Pass `check_service=False` for a VPS that is not (yet) managed by hostlife.
"""

from __future__ import annotations

from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from workflows import TASK_QUEUE, service_workflow_id
from workflows import search_attributes as sa
from workflows.models import GONE, ServiceState
from workflows.subscription import SubscriptionWorkflow
from workflows.vps_models import SupportAction, SupportActionRequest, SupportActionResult, support_workflow_id
from workflows.vps_support import VpsSupportActionWorkflow

SupportHandle = WorkflowHandle[VpsSupportActionWorkflow, SupportActionResult]

SWITCHED_OFF_BY_LIFECYCLE = frozenset(
    {ServiceState.BLOCKED, ServiceState.SUSPENDED, ServiceState.PARKED, ServiceState.CANCELLED}
)


class SupportActionRefused(Exception):
    """The request cannot be carried out as asked; the message says why (printed by the CLI)."""


async def check_service_allows(client: Client, request: SupportActionRequest) -> None:
    """Refuse an action the service's state forbids (see the module docstring)."""
    handle = client.get_workflow_handle_for(SubscriptionWorkflow.run, service_workflow_id(request.service_id))
    try:
        status = await handle.query(SubscriptionWorkflow.status)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise SupportActionRefused(f"no service {request.service_id} in hostlife") from exc
        raise
    if status.state in GONE:
        raise SupportActionRefused(f"service {request.service_id} is {status.state.value}; nothing to act on")
    if request.action is not SupportAction.STOP and status.state in SWITCHED_OFF_BY_LIFECYCLE:
        raise SupportActionRefused(
            f"service {request.service_id} is {status.state.value}: {request.action.value} refused "
            f"({status.details})"
        )


async def start_support_action(
    client: Client,
    request: SupportActionRequest,
    *,
    task_queue: str = TASK_QUEUE,
    check_service: bool = True,
) -> SupportHandle:
    """Start the action (or find the run of the same request id) and return its handle."""
    if request.action is SupportAction.REINSTALL and not request.image:
        raise SupportActionRefused("reinstall needs an image")
    if check_service:
        await check_service_allows(client, request)
    workflow_id = support_workflow_id(request.service_id, request.action.value, request.request_id)
    try:
        return await client.start_workflow(
            VpsSupportActionWorkflow.run,
            request,
            id=workflow_id,
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=TypedSearchAttributes([SearchAttributePair(sa.SERVICE_ID, request.service_id)]),
            static_summary=f"support {request.action.value} of VPS {request.service_id} on {request.node}",
            static_details=(
                f"request {request.request_id} by {request.requested_by}"
                + (f": {request.reason}" if request.reason else "")
                + (f" · image {request.image}" if request.image else "")
            ),
        )
    except WorkflowAlreadyStartedError:
        return client.get_workflow_handle_for(VpsSupportActionWorkflow.run, workflow_id)


async def run_support_action(
    client: Client,
    request: SupportActionRequest,
    *,
    task_queue: str = TASK_QUEUE,
    check_service: bool = True,
) -> SupportActionResult:
    """Start the action and wait for its result. A failed action raises `SupportActionRefused`
    with the node's reason (VM not found, image not found, node down for hours)."""
    handle = await start_support_action(client, request, task_queue=task_queue, check_service=check_service)
    try:
        return await handle.result()
    except WorkflowFailureError as exc:
        cause = exc.cause
        raise SupportActionRefused(str(getattr(cause, "message", None) or cause)) from exc


__all__ = [
    "SupportAction",
    "SupportActionRefused",
    "SupportActionRequest",
    "SupportActionResult",
    "check_service_allows",
    "run_support_action",
    "start_support_action",
]

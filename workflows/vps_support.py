"""VpsSupportActionWorkflow: one support action on a VPS, at an authorised request (SPEC §5).

Start, stop, restart or reinstall, run as a short workflow (id
`vps-support-<service>-<action>-<request id>`) rather than a direct call, so the action is
durable (it survives a crashed CLI or worker), audited (who asked, why and what happened stay in
the workflow's history and result) and retried on the node's task queue while the node is down.
One request id runs once. Started by `starter/vps_support.py`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.hypervisor import (
        COPY_TIMEOUTS,
        POWER_TIMEOUTS,
        HypervisorActivities,
        VmActionInput,
        node_task_queue,
    )
    from workflows.vps_models import SupportAction, SupportActionRequest, SupportActionResult

SUPPORT_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(minutes=15),
    "schedule_to_close_timeout": timedelta(hours=6),
    "retry_policy": RetryPolicy(
        maximum_interval=timedelta(minutes=5),
        non_retryable_error_types=["VmNotFound", "ImageNotFound", "InvalidRequest"],
    ),
}
"""A node down for hours fails the request visibly instead of running a stale action much later."""

ACTIVITIES = {
    SupportAction.START: HypervisorActivities.power_on_vm,
    SupportAction.STOP: HypervisorActivities.power_off_vm,
    SupportAction.RESTART: HypervisorActivities.restart_vm,
    SupportAction.REINSTALL: HypervisorActivities.reinstall_vm,
}


@workflow.defn
class VpsSupportActionWorkflow:
    @workflow.run
    async def run(self, request: SupportActionRequest) -> SupportActionResult:
        if request.action is SupportAction.REINSTALL and not request.image:
            raise ApplicationError("reinstall needs an image", type="InvalidRequest", non_retryable=True)
        workflow.set_current_details(
            f"{request.action.value} VPS {request.service_id} on {request.node} "
            f"for {request.requested_by}: {request.reason or 'no reason given'}"
        )
        try:
            result = await workflow.execute_activity_method(
                ACTIVITIES[request.action],
                VmActionInput(
                    idempotency_key=workflow.info().workflow_id,
                    service_id=request.service_id,
                    node=request.node,
                    vm_name=request.vm_name,
                    graceful_timeout_seconds=request.graceful_timeout_seconds,
                    image=request.image,
                ),
                task_queue=node_task_queue(request.node),
                summary=f"support {request.action.value} of VPS {request.service_id} ({request.request_id})",
                # A hung node stops the beats (stop beats while the guest shuts down; reinstall per copy).
                heartbeat_timeout=(
                    COPY_TIMEOUTS.heartbeat if request.action is SupportAction.REINSTALL else POWER_TIMEOUTS.heartbeat
                ),
                **SUPPORT_OPTIONS,
            )
        except ActivityError as exc:
            cause = exc.cause
            kind = cause.type if isinstance(cause, ApplicationError) and cause.type else "SupportActionFailed"
            workflow.logger.error(
                "support action failed",
                extra={"service_id": request.service_id, "action": request.action.value, "error": str(cause)},
            )
            raise ApplicationError(
                f"{request.action.value} of {request.vm_name} on {request.node} failed: {cause or exc}",
                type=kind,
                non_retryable=True,
            ) from exc
        if result.changed:
            message = f"{request.action.value} done"
        elif request.action in (SupportAction.START, SupportAction.RESTART):
            message = (
                f"{request.action.value}: nothing changed (already running, or parked: unpark it instead)"
            )
        else:
            message = f"{request.action.value}: nothing changed (already in that state)"
        workflow.logger.info(
            "support action done",
            extra={
                "service_id": request.service_id,
                "action": request.action.value,
                "changed": result.changed,
            },
        )
        return SupportActionResult(
            service_id=request.service_id,
            node=request.node,
            action=request.action,
            request_id=request.request_id,
            requested_by=request.requested_by,
            changed=result.changed,
            message=message,
            finished_at=workflow.now(),
        )

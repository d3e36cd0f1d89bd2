"""Support actions (SPEC §5: start, stop, restart, reinstall on an authorised request) through
`starter.vps_support` and `VpsSupportActionWorkflow`, on a libvirt test-driver node."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from starter.vps_support import (
    SupportAction,
    SupportActionRefused,
    SupportActionRequest,
    run_support_action,
    start_support_action,
)
from tests.workflows.vps_lab import Node, VpsLab, at_day, vps_lab, vps_service
from workflows.subscription import SubscriptionWorkflow

GIB = 1024**3


def request(node: Node, action: SupportAction, request_id: str, **fields: str) -> SupportActionRequest:
    values = {
        "service_id": fields.pop("service_id", "vps-support-test"),
        "node": node.name,
        "vm_name": fields.pop("vm_name", "vps-a"),
        "action": action,
        "request_id": request_id,
        "requested_by": "jana@example.cz (ticket)",
        "reason": "customer asked by phone, PIN verified",
        **fields,
    }
    return SupportActionRequest.model_validate(values)


async def act(v: VpsLab, req: SupportActionRequest, check_service: bool = False) -> tuple[bool, str]:
    # Awaiting a result on the time-skipping server would unlock time and let a subscription's
    # milestones race ahead; a support action needs no timer, so it runs with skipping held.
    with v.env.auto_time_skipping_disabled():
        result = await run_support_action(
            v.env.client, req, task_queue=v.vps_task_queue, check_service=check_service
        )
    assert (result.action, result.request_id, result.node) == (req.action, req.request_id, req.node)
    return result.changed, result.message


def ticket() -> str:
    return f"T-{uuid.uuid4().hex[:8]}"


async def test_stop_start_restart_reinstall_on_the_node(env: WorkflowEnvironment, tmp_path: Path) -> None:
    async with vps_lab(env, tmp_path) as v:
        node = next(iter(v.nodes.values()))
        stop = request(node, SupportAction.STOP, ticket())
        assert await act(v, stop) == (True, "stop done")
        assert not node.running("vps-a")
        changed, message = await act(v, request(node, SupportAction.STOP, ticket()))
        assert (changed, "nothing changed" in message) == (False, True)

        assert await act(v, request(node, SupportAction.START, ticket())) == (True, "start done")
        assert node.running("vps-a")
        first_id = node.domain("vps-a").ID()
        assert await act(v, request(node, SupportAction.RESTART, ticket())) == (True, "restart done")
        assert node.running("vps-a")

        root_before = (
            node.hypervisor.connection()
            .storagePoolLookupByName("default")
            .storageVolLookupByName("vps-a-root.qcow2")
        )
        assert root_before.info()[1] == 20 * GIB
        reinstall = request(node, SupportAction.REINSTALL, ticket(), image="debian-12.qcow2")
        assert await act(v, reinstall) == (True, "reinstall done")
        root = (
            node.hypervisor.connection()
            .storagePoolLookupByName("default")
            .storageVolLookupByName("vps-a-root.qcow2")
        )
        assert root.info()[1] == 20 * GIB  # the disk keeps its size, with the image's contents
        assert node.running("vps-a")  # it was running, so it runs again
        assert node.domain("vps-a").ID() != first_id

        # The same request again runs nothing: it answers with the first run's result.
        handle = await start_support_action(
            v.env.client, stop, task_queue=v.vps_task_queue, check_service=False
        )
        assert handle.id == f"vps-support-vps-support-test-stop-{stop.request_id}"
        with v.env.auto_time_skipping_disabled():
            again = await handle.result()
        assert (again.changed, again.requested_by) == (True, "jana@example.cz (ticket)")
        assert node.running("vps-a")


async def test_failed_actions_are_refused_with_the_nodes_reason(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with vps_lab(env, tmp_path) as v:
        node = next(iter(v.nodes.values()))
        with pytest.raises(SupportActionRefused, match="image"):
            await act(v, request(node, SupportAction.REINSTALL, ticket(), image="windows-95.iso"))
        assert node.running("vps-a")  # nothing was touched
        with pytest.raises(SupportActionRefused, match="not found"):
            await act(v, request(node, SupportAction.RESTART, ticket(), vm_name="vps-nobody"))
        with pytest.raises(SupportActionRefused, match="needs an image"):
            await act(v, request(node, SupportAction.REINSTALL, ticket()))


async def test_support_cannot_switch_on_what_the_lifecycle_switched_off(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with vps_lab(env, tmp_path) as v:
        node = next(iter(v.nodes.values()))
        async with vps_service(v, node) as handle:
            status = await handle.query(SubscriptionWorkflow.status)
            service_id, d = status.service_id, status.expires_on
            restart = request(node, SupportAction.RESTART, ticket(), service_id=service_id)
            assert await act(v, restart, check_service=True) == (True, "restart done")

            await at_day(v, d, 1)  # blocked for non-payment: powered off
            assert not node.running("vps-a")
            for action in (SupportAction.START, SupportAction.RESTART):
                with pytest.raises(SupportActionRefused, match="is blocked"):
                    await act(v, request(node, action, ticket(), service_id=service_id), check_service=True)
            with pytest.raises(SupportActionRefused, match="is blocked"):
                await act(
                    v,
                    request(
                        node,
                        SupportAction.REINSTALL,
                        ticket(),
                        service_id=service_id,
                        image="debian-12.qcow2",
                    ),
                    check_service=True,
                )
            assert not node.running("vps-a")
            stop = request(node, SupportAction.STOP, ticket(), service_id=service_id)
            assert (await act(v, stop, check_service=True))[0] is False  # allowed; already off

        with pytest.raises(SupportActionRefused, match="no service"):
            await act(
                v, request(node, SupportAction.STOP, ticket(), service_id="vps-unknown"), check_service=True
            )

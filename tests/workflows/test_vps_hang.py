"""A node that hangs, then recovers (issue 5): a libvirt call that never answers sends no heartbeat,
so the activity's heartbeat timeout (`POWER_TIMEOUTS`) fails that attempt and the retry policy
runs it again; once the node answers the VPS is blocked as if nothing happened. Hypervisor calls
heartbeat while they make progress (the graceful-shutdown wait, one beat per poll)."""

from __future__ import annotations

import threading
from datetime import time, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.hypervisor import (
    COPY_TIMEOUTS,
    POWER_TIMEOUTS,
    HypervisorActivities,
    HypervisorUnavailable,
    VmActionInput,
)
from activities.libvirt_node import LibvirtHypervisor
from tests.workflows.vps_lab import FIXTURE, at_day, eventually, vps_lab, vps_service
from workflows.subscription import SubscriptionWorkflow


class KeepHangsOnce:
    """A node whose first provider-backup copy never answers (stuck mid-copy, no heartbeat)."""

    def __init__(self, inner: LibvirtHypervisor) -> None:
        self.inner = inner
        self.release = threading.Event()
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def keep_provider_backup(self, vm_name: str, label: str) -> list[str]:
        self.calls += 1
        if self.calls == 1:
            self.release.wait(60)
            raise HypervisorUnavailable("node hung")
        return self.inner.keep_provider_backup(vm_name, label)


class HangsOnce:
    """A node whose first power-off never answers (a stuck libvirt call: no reply, no heartbeat)."""

    def __init__(self, inner: LibvirtHypervisor) -> None:
        self.inner = inner
        self.release = threading.Event()
        self.hung = threading.Event()
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def power_off(self, vm_name: str, graceful_timeout: timedelta) -> bool:
        self.calls += 1
        if self.calls == 1:
            self.hung.set()
            self.release.wait(60)  # released when the test ends; the server gave up on it long before
            raise HypervisorUnavailable("node hung")
        return self.inner.power_off(vm_name, graceful_timeout)


async def test_a_hung_node_times_out_by_heartbeat_and_the_retry_blocks_the_vps(
    env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test server does not skip time while an activity runs: a heartbeat timeout passes in real
    # time, so this test shortens it (the workflow module reads it when the sandbox imports it).
    monkeypatch.setattr(POWER_TIMEOUTS, "heartbeat", timedelta(seconds=2))
    nodes: list[HangsOnce] = []

    def hanging(hypervisor: LibvirtHypervisor) -> HangsOnce:
        nodes.append(HangsOnce(hypervisor))
        return nodes[-1]

    async with vps_lab(env, tmp_path, wrap=hanging) as v:
        node = next(iter(v.nodes.values()))
        try:
            async with vps_service(v, node) as handle:
                d = (await handle.query(SubscriptionWorkflow.status)).expires_on
                assert node.running("vps-a")
                await at_day(v, d, 1, at=time(0, 0, 1))  # blocked at 00:00: the power-off hangs
                assert nodes[0].hung.wait(10)
                assert node.running("vps-a")
                # No heartbeat, so the server fails the attempt after POWER_TIMEOUTS.heartbeat; the retry
                # reaches the node, which answers again.
                journal = await eventually(
                    lambda: handle.query(SubscriptionWorkflow.journal, 0),
                    lambda j: any(e.kind == "hypervisor" for e in j),
                    seconds=30,
                )
                assert [e.data["action"] for e in journal if e.kind == "hypervisor"] == ["power_off"]
                assert [e for e in journal if e.kind == "action_failed"] == []
                assert not node.running("vps-a")  # the retry, on the recovered node, blocked it
                assert nodes[0].calls == 2
                assert (await handle.query(SubscriptionWorkflow.status)).state == "blocked"
        finally:
            for wrapper in nodes:
                wrapper.release.set()


def test_the_graceful_shutdown_wait_heartbeats_on_every_poll(tmp_path: Path) -> None:
    """A guest that ignores ACPI: every poll of the wait is a heartbeat, then the VM is destroyed."""
    path = tmp_path / "node.xml"
    path.write_text(FIXTURE.read_text())
    now = [0.0]
    hypervisor = LibvirtHypervisor(
        f"test://{path}",
        poll_interval=1.0,
        clock=lambda: now[0],
        sleep=lambda s: now.__setitem__(0, now[0] + s),
    )
    dom = hypervisor.connection().lookupByName("vps-a")
    dom.shutdown = lambda: None  # the guest ignores the ACPI request
    original = hypervisor._domain
    hypervisor._domain = lambda name: dom if name == "vps-a" else original(name)  # type: ignore[method-assign]
    beats: list[Any] = []
    activity_env = ActivityEnvironment()
    activity_env.on_heartbeat = lambda *details: beats.append(details)
    result = activity_env.run(
        HypervisorActivities(hypervisor).power_off_vm,
        VmActionInput(
            idempotency_key="k", service_id="s", node="n", vm_name="vps-a", graceful_timeout_seconds=5
        ),
    )
    assert result.changed and not dom.isActive()
    assert len(beats) == 5  # one per second of the 5-second wait, then destroy
    hypervisor.close()


async def test_a_node_hung_mid_provider_backup_is_retried_and_the_vps_deleted_after_the_copy(
    env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(COPY_TIMEOUTS, "heartbeat", timedelta(seconds=2))  # real time, as above
    nodes: list[KeepHangsOnce] = []

    def hanging(hypervisor: LibvirtHypervisor) -> KeepHangsOnce:
        nodes.append(KeepHangsOnce(hypervisor))
        return nodes[-1]

    async with vps_lab(env, tmp_path, wrap=hanging) as v:
        node = next(iter(v.nodes.values()))
        try:
            async with vps_service(v, node) as handle:
                d = (await handle.query(SubscriptionWorkflow.status)).expires_on
                await at_day(v, d, 31, at=time(0, 0, 1))  # deletion at 00:00: the copy hangs first
                status = await eventually(
                    lambda: handle.query(SubscriptionWorkflow.status),
                    lambda s: s.state == "deleted",
                    seconds=30,
                )
                assert status.state == "deleted"
                assert nodes[0].calls == 2
                assert "vps-a" not in node.defined()  # deleted only once the copy was made
                assert any(name.startswith("provider.") for name in node.volumes())
                journal = await handle.query(SubscriptionWorkflow.journal, 0)
                assert [e for e in journal if e.kind == "action_failed"] == []
        finally:
            for wrapper in nodes:
                wrapper.release.set()

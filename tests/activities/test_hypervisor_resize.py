"""A plan change resizes a VM on libvirt's test driver: real API calls, the persistent definition read back."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed (make install adds it)")

from temporalio.exceptions import ApplicationError  # noqa: E402
from temporalio.testing import ActivityEnvironment  # noqa: E402

from activities.hypervisor import HypervisorActivities, RecordingHypervisor, VmActionInput  # noqa: E402
from activities.libvirt_node import LibvirtHypervisor  # noqa: E402

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "libvirt"


@pytest.fixture
def node_a() -> Iterator[LibvirtHypervisor]:
    hypervisor = LibvirtHypervisor(f"test://{FIXTURES / 'node-a.xml'}")
    yield hypervisor
    hypervisor.close()


def size(hypervisor: LibvirtHypervisor, name: str) -> tuple[int, int, int, int]:
    """(vcpus, max vcpus, current memory MiB, max memory MiB) of the persistent definition."""
    dom = hypervisor.connection().lookupByName(name)
    config = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    desc = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    memory = desc.find("memory")
    current = desc.find("currentMemory")
    assert memory is not None and current is not None
    assert memory.get("unit", "KiB") == "KiB" and current.get("unit", "KiB") == "KiB"
    return (
        dom.vcpusFlags(config),
        dom.vcpusFlags(config | libvirt.VIR_DOMAIN_VCPU_MAXIMUM),
        int(current.text or 0) // 1024,
        int(memory.text or 0) // 1024,
    )


def test_a_running_vm_grows_in_its_definition_and_keeps_running(node_a: LibvirtHypervisor) -> None:
    assert size(node_a, "vps-a") == (2, 2, 2048, 2048)
    assert node_a.resize("vps-a", 4, 8192) is True
    assert size(node_a, "vps-a") == (4, 4, 8192, 8192)
    assert node_a.connection().lookupByName("vps-a").isActive()
    # The same plan again changes nothing (an activity retry is harmless).
    assert node_a.resize("vps-a", 4, 8192) is False


def test_a_vm_shrinks_running_or_stopped(node_a: LibvirtHypervisor) -> None:
    assert node_a.resize("vps-a", 1, 1024) is True
    assert size(node_a, "vps-a") == (1, 1, 1024, 1024)
    assert node_a.resize("vps-b", None, 512) is True  # only memory: vCPUs stay
    assert size(node_a, "vps-b") == (1, 1, 512, 512)


def test_resize_activity_on_libvirt_and_an_unknown_vm(node_a: LibvirtHypervisor) -> None:
    activities = HypervisorActivities(node_a)
    request = VmActionInput(
        idempotency_key="k", service_id="vps-a", node="node-a", vm_name="vps-a", vcpus=2, memory_mb=4096
    )
    result = ActivityEnvironment().run(activities.resize_vm, request)
    assert (result.action, result.changed) == ("resize", True)
    assert size(node_a, "vps-a") == (2, 2, 4096, 4096)
    with pytest.raises(ApplicationError) as missing:
        ActivityEnvironment().run(activities.resize_vm, request.model_copy(update={"vm_name": "vps-zz"}))
    assert missing.value.type == "VmNotFound" and missing.value.non_retryable


def test_the_recording_hypervisor_keeps_sizes() -> None:
    recording: Any = RecordingHypervisor()
    assert recording.resize("v", 2, None) is True
    assert recording.resize("v", None, 4096) is True
    assert recording.sizes["v"] == (2, 4096)
    assert recording.resize("v", 2, 4096) is False

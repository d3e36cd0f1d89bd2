"""LibvirtHypervisor against libvirt's test driver: real libvirt API calls, no daemon.

Each node is its own fixture file (`test:///abs/path/node-a.xml`); a connection reads it afresh and
keeps changes in memory, so every test starts from the fixture and nodes are independent.
"""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed (make install adds it)")

from temporalio.exceptions import ApplicationError  # noqa: E402
from temporalio.testing import ActivityEnvironment  # noqa: E402

from activities.hypervisor import (  # noqa: E402
    BackupKind,
    BackupNotFound,
    Hypervisor,
    HypervisorActivities,
    HypervisorUnavailable,
    ImageNotFound,
    ProviderBackupInput,
    RecordingHypervisor,
    RotateVmBackupsInput,
    VmAction,
    VmActionInput,
    VmBackupInput,
    VmNotFound,
)
from activities.libvirt_node import LibvirtHypervisor  # noqa: E402

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "libvirt"
GIB = 1024**3


def node_uri(path: Path) -> str:
    return f"test://{path}"


class FakeTime:
    """Monotonic clock and sleep for the graceful-shutdown wait; `on_sleep` plays the guest."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[int], None] = lambda _count: None

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.on_sleep(len(self.sleeps))


class Timestamps:
    """Creation times one hour apart, so the order of backups is visible in their records."""

    def __init__(self) -> None:
        self.at = datetime(2025, 3, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.at += timedelta(hours=1)
        return self.at


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def node_a(fake_time: FakeTime) -> Any:
    hypervisor = LibvirtHypervisor(
        node_uri(FIXTURES / "node-a.xml"),
        graceful_timeout=timedelta(seconds=30),
        poll_interval=5,
        clock=fake_time.clock,
        sleep=fake_time.sleep,
        now=Timestamps(),
    )
    yield hypervisor
    hypervisor.close()


def domain(hypervisor: LibvirtHypervisor, name: str) -> Any:
    return hypervisor.connection().lookupByName(name)


def volumes(hypervisor: LibvirtHypervisor) -> set[str]:
    return set(hypervisor.connection().storagePoolLookupByName("default").listVolumes())


def running(hypervisor: LibvirtHypervisor, name: str) -> bool:
    return bool(domain(hypervisor, name).isActive())


def live_xml(dom: Any) -> str:
    """The running definition, canonical and without the runtime domain id (new on every start).

    Canonical because the test driver keeps the fixture's whitespace inside <metadata> until the
    first restart re-formats it.
    """
    xml = re.sub(r"<domain type='test' id='\d+'>", "<domain type='test'>", dom.XMLDesc(0))
    return ET.canonicalize(xml, strip_text=True)


def test_worker_can_import_the_adapter_from_the_interface_module() -> None:
    from activities.hypervisor import LibvirtHypervisor as reexported  # type: ignore[attr-defined]

    assert reexported is LibvirtHypervisor


def test_both_implementations_satisfy_the_protocol() -> None:
    implementations: list[Hypervisor] = [RecordingHypervisor(), LibvirtHypervisor("test:///default")]
    assert len(implementations) == 2


# -- block / unblock ----------------------------------------------------------------------------


def test_power_off_and_on_are_idempotent(node_a: LibvirtHypervisor) -> None:
    assert node_a.power_off("vps-a", timedelta(seconds=30)) is True
    assert not running(node_a, "vps-a")
    assert node_a.power_off("vps-a", timedelta(seconds=30)) is False
    assert node_a.power_on("vps-a") is True
    assert running(node_a, "vps-a")
    assert node_a.power_on("vps-a") is False


def test_guest_ignoring_acpi_is_destroyed_after_the_timeout(
    node_a: LibvirtHypervisor, fake_time: FakeTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutdowns: list[str] = []
    destroys: list[str] = []
    real_destroy = libvirt.virDomain.destroy

    def shutdown(dom: Any) -> int:  # the ACPI request is acknowledged; the guest ignores it
        shutdowns.append(dom.name())
        return 0

    def destroy(dom: Any) -> int:
        destroys.append(dom.name())
        return int(real_destroy(dom))

    monkeypatch.setattr(libvirt.virDomain, "shutdown", shutdown)
    monkeypatch.setattr(libvirt.virDomain, "destroy", destroy)

    assert node_a.power_off("vps-a", timedelta(seconds=12)) is True

    assert shutdowns == ["vps-a"]
    assert destroys == ["vps-a"]
    assert fake_time.sleeps == [5, 5, 2]  # polled until exactly the timeout, then destroyed
    assert not running(node_a, "vps-a")


def test_guest_shutting_down_within_the_timeout_is_not_destroyed(
    node_a: LibvirtHypervisor, fake_time: FakeTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_shutdown = libvirt.virDomain.shutdown
    destroys: list[str] = []

    def destroy(dom: Any) -> int:
        destroys.append(dom.name())
        return 0

    monkeypatch.setattr(libvirt.virDomain, "shutdown", lambda dom: 0)  # ACPI request acknowledged only
    monkeypatch.setattr(libvirt.virDomain, "destroy", destroy)

    def guest_powers_off_on_second_poll(count: int) -> None:
        if count == 2:
            real_shutdown(domain(node_a, "vps-a"))

    fake_time.on_sleep = guest_powers_off_on_second_poll

    assert node_a.power_off("vps-a", timedelta(seconds=120)) is True
    assert destroys == []
    assert fake_time.sleeps == [5, 5]
    assert not running(node_a, "vps-a")


def test_missing_vm_is_not_found_but_deleting_it_succeeds(node_a: LibvirtHypervisor) -> None:
    with pytest.raises(VmNotFound):
        node_a.power_off("vps-zz", timedelta(seconds=1))
    with pytest.raises(VmNotFound):
        node_a.power_on("vps-zz")
    with pytest.raises(VmNotFound):
        node_a.park("vps-zz")
    assert node_a.delete("vps-zz") is False


# -- parking ------------------------------------------------------------------------------------


def test_unpark_restores_the_vm_exactly(node_a: LibvirtHypervisor) -> None:
    dom = domain(node_a, "vps-a")
    dom.setAutostart(1)
    config_before = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    live_before = live_xml(dom)
    network_before = node_a.connection().networkLookupByName("public").XMLDesc(0)
    volumes_before = volumes(node_a)

    assert node_a.park("vps-a") is True
    assert not dom.isActive()
    assert dom.autostart() == 0  # a node reboot does not bring a parked server back
    assert "hostlife:parked" in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert node_a.park("vps-a") is False
    assert node_a.power_on("vps-a") is False  # lifting a block does not un-park
    assert node_a.restart("vps-a") is False
    assert not dom.isActive()

    assert node_a.unpark("vps-a") is True
    assert dom.isActive()
    assert dom.autostart() == 1
    assert dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) == config_before  # disks, MAC, network kept
    assert live_xml(dom) == live_before
    assert "hostlife:parked" not in dom.XMLDesc(0)
    assert node_a.connection().networkLookupByName("public").XMLDesc(0) == network_before  # IP reservation
    assert volumes(node_a) == volumes_before
    assert node_a.unpark("vps-a") is False


def test_parking_a_stopped_vm_unparks_it_stopped(node_a: LibvirtHypervisor) -> None:
    dom = domain(node_a, "vps-b")
    config_before = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert "<metadata" not in config_before
    assert node_a.park("vps-b") is True
    assert node_a.unpark("vps-b") is True
    assert not running(node_a, "vps-b")
    # libvirt keeps the <metadata> container once our element is removed; nothing else differs.
    config_after = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert config_after.replace("  <metadata/>\n", "") == config_before


def test_unpark_does_not_start_a_vm_that_was_never_parked(node_a: LibvirtHypervisor) -> None:
    node_a.power_off("vps-a", timedelta(seconds=30))  # blocked, not parked
    assert node_a.unpark("vps-a") is False
    assert not running(node_a, "vps-a")


def test_park_interrupted_after_the_mark_is_finished_by_the_retry(
    node_a: LibvirtHypervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    dom = domain(node_a, "vps-a")
    dom.setAutostart(1)

    def worker_dies(*_args: Any) -> None:
        raise OSError("worker died before the shutdown")

    with monkeypatch.context() as patch:
        patch.setattr(LibvirtHypervisor, "_shut_down", worker_dies)
        with pytest.raises(OSError):
            node_a.park("vps-a")
    assert dom.isActive()
    assert node_a.park("vps-a") is True
    assert not dom.isActive()
    assert node_a.unpark("vps-a") is True
    assert dom.isActive()
    assert dom.autostart() == 1  # the autostart recorded before the crash, not the one after


# -- deletion -----------------------------------------------------------------------------------


def test_delete_removes_vm_its_volumes_addons_and_backups(node_a: LibvirtHypervisor) -> None:
    node_a.create_backup("vps-a", "manual-1", BackupKind.MANUAL)
    node_a.create_backup("vps-a", "daily-2025-03-01", BackupKind.AUTOMATIC)
    assert set(domain(node_a, "vps-a").snapshotListNames()) == {"backup-manual-1", "backup-daily-2025-03-01"}

    assert node_a.delete("vps-a") is True

    with pytest.raises(libvirt.libvirtError):
        domain(node_a, "vps-a")
    # The shared rescue ISO, the OS image and the other VM's disk stay.
    assert volumes(node_a) == {"vps-b-root.qcow2", "debian-12.qcow2", "rescue.iso"}
    assert running(node_a, "vps-b") is False
    assert node_a.delete("vps-a") is False


def test_delete_retried_after_a_crash_removes_what_is_left(node_a: LibvirtHypervisor) -> None:
    dom = domain(node_a, "vps-a")
    dom.destroy()
    dom.undefine()  # crashed after the undefine: add-on volumes are still there
    assert {"vps-a-mail", "vps-a-backup"} <= volumes(node_a)

    assert node_a.delete("vps-a") is True
    assert not {"vps-a-mail", "vps-a-backup"} & volumes(node_a)
    assert node_a.delete("vps-a") is False


def test_delete_removes_a_disk_referenced_by_path(node_a: LibvirtHypervisor) -> None:
    assert node_a.delete("vps-b") is True
    assert "vps-b-root.qcow2" not in volumes(node_a)
    assert running(node_a, "vps-a")


# -- backups ------------------------------------------------------------------------------------


def test_running_server_is_snapshotted_then_backed_up(node_a: LibvirtHypervisor) -> None:
    assert node_a.create_backup("vps-a", "manual-1", BackupKind.MANUAL) is True
    assert node_a.create_backup("vps-a", "manual-1", BackupKind.MANUAL) is False  # retry: same backup

    [backup] = node_a.list_backups("vps-a")
    assert backup.snapshot == "backup-manual-1"
    assert domain(node_a, "vps-a").snapshotListNames() == ["backup-manual-1"]
    assert backup.volumes == ["default/vps-a.backup.manual-1.vda"]
    copy = (
        node_a.connection()
        .storagePoolLookupByName("default")
        .storageVolLookupByName("vps-a.backup.manual-1.vda")
    )
    assert copy.info()[1] == 20 * GIB  # capacity of the root disk
    assert running(node_a, "vps-a")


def test_stopped_server_is_backed_up_without_a_snapshot(node_a: LibvirtHypervisor) -> None:
    assert node_a.create_backup("vps-b", "manual-1", BackupKind.MANUAL) is True
    [backup] = node_a.list_backups("vps-b")
    assert backup.snapshot is None
    assert domain(node_a, "vps-b").snapshotListNames() == []
    assert "vps-b.backup.manual-1.vda" in volumes(node_a)


def test_rotation_drops_the_oldest_automatic_backups_only(node_a: LibvirtHypervisor) -> None:
    node_a.create_backup("vps-a", "manual-1", BackupKind.MANUAL)
    days = [f"daily-2025-03-0{day}" for day in range(1, 6)]
    for label in days:
        node_a.create_backup("vps-a", label, BackupKind.AUTOMATIC)

    assert node_a.rotate_backups("vps-a", keep=3) == days[:2]

    assert [b.label for b in node_a.list_backups("vps-a")] == ["manual-1", *days[2:]]
    created = [b.created_at for b in node_a.list_backups("vps-a")]
    assert created == sorted(created)
    assert {f"vps-a.backup.{label}.vda" for label in days[:2]}.isdisjoint(volumes(node_a))
    assert set(domain(node_a, "vps-a").snapshotListNames()) == {
        "backup-manual-1",
        *(f"backup-{label}" for label in days[2:]),
    }
    assert node_a.rotate_backups("vps-a", keep=3) == []

    # Automatic backup switched off: all automatic backups go, the manual one stays.
    assert node_a.rotate_backups("vps-a", keep=0) == days[2:]
    assert [b.label for b in node_a.list_backups("vps-a")] == ["manual-1"]


def test_delete_backup_is_idempotent(node_a: LibvirtHypervisor) -> None:
    node_a.create_backup("vps-a", "manual-1", BackupKind.MANUAL)
    assert node_a.delete_backup("vps-a", "manual-1") is True
    assert node_a.list_backups("vps-a") == []
    assert "vps-a.backup.manual-1.vda" not in volumes(node_a)
    assert domain(node_a, "vps-a").snapshotListNames() == []
    assert "hostlife:backups" not in domain(node_a, "vps-a").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert node_a.delete_backup("vps-a", "manual-1") is False


def test_backup_label_must_be_a_plain_name(node_a: LibvirtHypervisor) -> None:
    with pytest.raises(ValueError):
        node_a.create_backup("vps-a", "../etc", BackupKind.MANUAL)


# -- support actions ----------------------------------------------------------------------------


def test_restart_reboots_a_running_vm_and_starts_a_stopped_one(node_a: LibvirtHypervisor) -> None:
    assert node_a.restart("vps-a") is True
    assert running(node_a, "vps-a")
    assert node_a.restart("vps-b") is True
    assert running(node_a, "vps-b")


def test_reinstall_replaces_the_root_disk_and_keeps_its_size(node_a: LibvirtHypervisor) -> None:
    config_before = domain(node_a, "vps-a").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    pool = node_a.connection().storagePoolLookupByName("default")
    old_key = pool.storageVolLookupByName("vps-a-root.qcow2").key()

    assert node_a.reinstall("vps-a", "debian-12.qcow2") is True

    root = pool.storageVolLookupByName("vps-a-root.qcow2")
    assert root.info()[1] == 20 * GIB
    assert root.info()[2] == 0  # a fresh (sparse) copy of the image, not the old data (256 MiB)
    assert root.key() == old_key
    assert "<format type='qcow2'/>" in root.XMLDesc(0)
    assert running(node_a, "vps-a")
    assert domain(node_a, "vps-a").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) == config_before


def test_reinstall_with_an_unknown_image_changes_nothing(node_a: LibvirtHypervisor) -> None:
    with pytest.raises(ImageNotFound):
        node_a.reinstall("vps-a", "windows-95.qcow2")
    assert running(node_a, "vps-a")
    assert "vps-a-root.qcow2" in volumes(node_a)


def test_reinstall_retried_after_the_old_disk_was_removed(
    node_a: LibvirtHypervisor, monkeypatch: pytest.MonkeyPatch
) -> None:

    def copy_fails(*_args: Any) -> None:
        raise libvirt.libvirtError("worker died mid-copy")

    with monkeypatch.context() as patch:
        patch.setattr(libvirt.virStoragePool, "createXMLFrom", copy_fails)
        with pytest.raises(Exception, match="mid-copy"):
            node_a.reinstall("vps-a", "debian-12.qcow2")
    assert "vps-a-root.qcow2" not in volumes(node_a)

    assert node_a.reinstall("vps-a", "debian-12.qcow2") is True
    root = node_a.connection().storagePoolLookupByName("default").storageVolLookupByName("vps-a-root.qcow2")
    assert root.info()[1] == 20 * GIB
    assert running(node_a, "vps-a")


# -- nodes and connections ----------------------------------------------------------------------


def test_node_that_cannot_be_reached_then_recovers(tmp_path: Path) -> None:
    node_c = tmp_path / "node-c.xml"
    hypervisor = LibvirtHypervisor(node_uri(node_c))
    with pytest.raises(HypervisorUnavailable):
        hypervisor.power_off("vps-a", timedelta(seconds=1))

    shutil.copy(FIXTURES / "node-a.xml", node_c)  # the node is back
    assert hypervisor.power_off("vps-a", timedelta(seconds=1)) is True
    hypervisor.close()


def test_dead_connection_is_reopened(node_a: LibvirtHypervisor) -> None:
    node_a.connection().close()  # as if the daemon dropped the connection
    # The test driver reloads its file on reconnect, so vps-a is running again there.
    assert node_a.power_off("vps-a", timedelta(seconds=1)) is True
    assert node_a.connection().isAlive() == 1


def test_nodes_are_independent(node_a: LibvirtHypervisor) -> None:
    node_b = LibvirtHypervisor(node_uri(FIXTURES / "node-b.xml"))
    with pytest.raises(VmNotFound):
        node_a.power_on("vps-c")
    assert node_b.delete("vps-c") is True
    assert running(node_a, "vps-a")
    with pytest.raises(VmNotFound):
        node_b.power_on("vps-a")
    node_b.close()


# -- activities ---------------------------------------------------------------------------------


def request(vm_name: str, **fields: Any) -> VmActionInput:
    return VmActionInput(idempotency_key="test", service_id="s-1", node="node-a", vm_name=vm_name, **fields)


def test_activities_drive_the_libvirt_node(node_a: LibvirtHypervisor) -> None:
    activities = HypervisorActivities(node_a)
    env = ActivityEnvironment()

    result = env.run(activities.power_off_vm, request("vps-a", graceful_timeout_seconds=10))
    assert (result.action, result.changed) == (VmAction.POWER_OFF, True)
    assert env.run(activities.power_off_vm, request("vps-a")).changed is False
    assert env.run(activities.power_on_vm, request("vps-a")).changed is True
    assert env.run(activities.park_vm, request("vps-a")).changed is True
    assert env.run(activities.unpark_vm, request("vps-a")).changed is True
    assert env.run(activities.restart_vm, request("vps-a")).changed is True
    assert env.run(activities.reinstall_vm, request("vps-a", image="debian-12.qcow2")).changed is True

    backup = VmBackupInput(
        idempotency_key="k",
        service_id="s-1",
        node="node-a",
        vm_name="vps-a",
        label="daily-2025-03-01",
        kind=BackupKind.AUTOMATIC,
    )
    assert env.run(activities.create_vm_backup, backup).changed is True
    assert [b.label for b in env.run(activities.list_vm_backups, request("vps-a")).backups] == [
        "daily-2025-03-01"
    ]
    rotation = RotateVmBackupsInput(
        idempotency_key="k", service_id="s-1", node="node-a", vm_name="vps-a", keep=0
    )
    assert env.run(activities.rotate_vm_backups, rotation).deleted == ["daily-2025-03-01"]
    assert env.run(activities.delete_vm_backup, backup).changed is False

    assert env.run(activities.delete_vm, request("vps-a")).changed is True
    assert env.run(activities.delete_vm, request("vps-a")).changed is False


def test_activities_fail_for_good_on_missing_vm_image_or_input(node_a: LibvirtHypervisor) -> None:
    activities = HypervisorActivities(node_a)
    env = ActivityEnvironment()
    cases: list[tuple[Callable[[VmActionInput], Any], VmActionInput, str]] = [
        (activities.power_on_vm, request("vps-zz"), "VmNotFound"),
        (activities.reinstall_vm, request("vps-a", image="windows-95.qcow2"), "ImageNotFound"),
        (activities.reinstall_vm, request("vps-a"), "InvalidRequest"),
    ]
    for activity_fn, payload, error_type in cases:
        with pytest.raises(ApplicationError) as raised:
            env.run(activity_fn, payload)
        assert (raised.value.type, raised.value.non_retryable) == (error_type, True)


def test_unreachable_node_is_retried_by_the_activity(tmp_path: Path) -> None:
    activities = HypervisorActivities(LibvirtHypervisor(node_uri(tmp_path / "down.xml")))
    with pytest.raises(HypervisorUnavailable):  # not an ApplicationError: the retry policy applies
        ActivityEnvironment().run(activities.power_off_vm, request("vps-a"))


# -- provider backup after deletion (SPEC §4, VPS row) ------------------------------------------


def provider(hypervisor: LibvirtHypervisor) -> set[str]:
    return {name for name in volumes(hypervisor) if name.startswith("provider.")}


def new_vm(hypervisor: LibvirtHypervisor, name: str, gib: int) -> Any:
    """A newly ordered server: a root volume of `gib` GiB and a running domain using it."""
    conn = hypervisor.connection()
    conn.storagePoolLookupByName("default").createXML(
        f"<volume><name>{name}-root</name><capacity unit='GiB'>{gib}</capacity>"
        "<allocation>0</allocation></volume>",
        0,
    )
    dom = conn.defineXML(
        f"<domain type='test'><name>{name}</name><memory unit='MiB'>512</memory><os><type>hvm</type></os>"
        f"<devices><disk type='volume' device='disk'><source pool='default' volume='{name}-root'/>"
        "<target dev='vda'/></disk></devices></domain>"
    )
    dom.create()
    return dom


def test_provider_backup_keeps_disk_and_mail_but_not_backup_space_and_outlives_the_vm(
    node_a: LibvirtHypervisor,
) -> None:
    assert running(node_a, "vps-a")
    kept = node_a.keep_provider_backup("vps-a", "svc-1")
    assert kept == ["default/provider.svc-1.vda", "default/provider.svc-1.mail"]
    assert not running(node_a, "vps-a")  # copied from a stopped disk
    assert node_a.keep_provider_backup("vps-a", "svc-1") == kept  # a retry copies nothing again
    node_a.delete("vps-a")
    assert provider(node_a) == {"provider.svc-1.vda", "provider.svc-1.mail"}
    assert "vps-a-backup" not in volumes(node_a)  # the backup space is never kept
    assert node_a.keep_provider_backup("vps-a", "svc-1") == sorted(kept)  # retried after the delete
    assert node_a.purge_provider_backup("svc-1") is True
    assert provider(node_a) == set()
    assert node_a.purge_provider_backup("svc-1") is False
    with pytest.raises(VmNotFound):
        node_a.keep_provider_backup("vps-a", "svc-1")  # nothing to copy, nothing kept


def test_provider_backup_retried_after_a_copy_cut_short(node_a: LibvirtHypervisor) -> None:
    pool = node_a.connection().storagePoolLookupByName("default")
    pool.createXML("<volume><name>provider.svc-2.vda</name><capacity>1</capacity></volume>", 0)  # half a copy
    node_a.keep_provider_backup("vps-a", "svc-2")
    assert pool.storageVolLookupByName("provider.svc-2.vda").info()[1] == 20 * GIB  # copied again, whole


def test_restore_onto_a_bigger_new_vm_is_idempotent_and_refused_onto_a_smaller_one(
    node_a: LibvirtHypervisor,
) -> None:
    node_a.keep_provider_backup("vps-a", "svc-3")
    node_a.delete("vps-a")
    with pytest.raises(ValueError, match="disk vda of vps-b holds 10 GiB, the backup 20 GiB"):
        node_a.restore_provider_backup("svc-3", "vps-b")
    dom = new_vm(node_a, "vps-c", gib=40)
    assert node_a.restore_provider_backup("svc-3", "vps-c") is True
    assert dom.isActive()  # it was running: started again after the copy
    root = node_a.connection().storagePoolLookupByName("default").storageVolLookupByName("vps-c-root")
    assert root.info()[1] == 40 * GIB  # the new plan's size is kept
    assert node_a.restore_provider_backup("svc-3", "vps-c") is False  # a retry: already done
    assert provider(node_a) == {"provider.svc-3.vda", "provider.svc-3.mail"}  # kept until purged
    node_a.purge_provider_backup("svc-3")
    new_vm(node_a, "vps-d", gib=40)
    with pytest.raises(BackupNotFound):
        node_a.restore_provider_backup("svc-3", "vps-d")


def test_provider_backup_activities_fail_for_good_where_a_retry_cannot_help(node_a: LibvirtHypervisor) -> None:
    activities = HypervisorActivities(node_a)
    env = ActivityEnvironment()

    def backup(vm_name: str, label: str) -> ProviderBackupInput:
        return ProviderBackupInput(idempotency_key="k", service_id="s", node="node-a", vm_name=vm_name, label=label)

    kept = env.run(activities.keep_provider_backup, backup("vps-a", "svc-4"))
    assert kept.volumes == ["default/provider.svc-4.vda", "default/provider.svc-4.mail"]
    cases = [
        (activities.restore_provider_backup, backup("vps-b", "svc-4"), "InvalidRequest"),  # smaller disk
        (activities.restore_provider_backup, backup("vps-b", "svc-none"), "BackupNotFound"),
        (activities.restore_provider_backup, backup("vps-zz", "svc-4"), "VmNotFound"),
        (activities.keep_provider_backup, backup("vps-a", "bad label!"), "InvalidRequest"),
    ]
    for activity_fn, payload, error_type in cases:
        with pytest.raises(ApplicationError) as raised:
            env.run(activity_fn, payload)
        assert (raised.value.type, raised.value.non_retryable) == (error_type, True)
    assert env.run(activities.purge_provider_backup, backup("", "svc-4")).changed is True

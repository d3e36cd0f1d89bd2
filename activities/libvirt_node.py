"""`Hypervisor` on libvirt: one `LibvirtHypervisor` per node (`qemu+ssh://node-a/system`, or
`test:///abs/path/node-a.xml` in tests).

How the service states map onto libvirt, and why:

* Block = graceful shutdown (ACPI), polled until `graceful_timeout`, then destroy: a guest that
  ignores ACPI must not keep an unpaid server running. Unblock = start.
* Park = shut down, autostart off, and a `<hostlife:parked>` element in the domain's persistent
  `<metadata>` recording whether it was running and autostarted. Nothing else in the domain XML is
  touched, so disks, MAC addresses and the network (hence the IP addresses) are kept; unpark puts
  back exactly what park recorded and removes the mark. `power_on` and `restart` leave a parked VM
  off (logged), so lifting a block never un-parks a server behind the customer's back.
* Delete = destroy, remove the VM's own disk volumes (never read-only or shareable disks such as
  ISO images), its backups, and the add-on volumes named after it (`<vm>-mail`, `<vm>-backup`: the
  add-on mail and backup space, blocked with it because only the VM reaches them), then undefine.
  Volumes go before the undefine and a name sweep runs after it, so a retry after a crash halfway
  still finds everything. (So `VmActionInput.addons` is not needed here: add-ons are found by name.)
* Backups = a snapshot first when the server is running (kept with the backup as its restore
  point), then a copy of each disk volume into `<vm>.backup.<label>.<disk>` in the same pool. The
  list of backups lives in `<hostlife:backups>` metadata, oldest first, which is what rotation
  trims.

* Provider backup = a copy of each own disk into `provider.<label>.<disk>` in the disk's pool,
  taken before a deleted VM is destroyed (shut down first if it still runs). Progress is marked in
  `<hostlife:provider-backup>` metadata disk by disk, so a retry redoes only a copy cut short. The
  name matches no sweep of `delete`, so the copy outlives the VM until `purge_provider_backup`.
  `restore_provider_backup` copies it onto another (newly ordered) VM's disks of the same targets,
  each at least as big, planned in metadata like a reinstall; a `done` mark makes a retry a no-op.

Long calls heartbeat (the shutdown wait on every poll, copies after each disk): a hung node stops
the beats and the activity's heartbeat timeout hands the work to a retry.

libvirt errors are translated at the boundary: no domain → `VmNotFound`; an unopenable or dead
connection → `HypervisorUnavailable` (the connection is dropped and reopened on the next call);
anything else → `HypervisorError`.
"""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import libvirt
import structlog

from activities.hypervisor import (
    BackupKind,
    BackupNotFound,
    HypervisorError,
    HypervisorUnavailable,
    ImageNotFound,
    VmBackup,
    VmNotFound,
    check_backup_label,
    heartbeat,
)

log = structlog.get_logger(__name__)

NAMESPACE = "https://hostlife.dev/libvirt"
PARK_NAMESPACE = f"{NAMESPACE}/parked/1"
BACKUPS_NAMESPACE = f"{NAMESPACE}/backups/1"
REINSTALL_NAMESPACE = f"{NAMESPACE}/reinstall/1"
PROVIDER_NAMESPACE = f"{NAMESPACE}/provider-backup/1"
RESTORE_NAMESPACE = f"{NAMESPACE}/restore/1"
PROVIDER_PREFIX = "provider."
MAIL_TARGET = "mail"
"""The add-on mail space in a provider backup (`provider.<label>.mail`): restored by the mail
platform per domain (a paid mail restore), never copied onto a new VM's disks."""
METADATA_PREFIX = "hostlife"
ADDON_VOLUME_SUFFIXES = ("mail", "backup")
"""Add-on mail space and backup space: volumes `<vm>-mail` and `<vm>-backup` in any pool."""

# Without a handler libvirt also prints every error to stderr; they are raised as exceptions anyway.
libvirt.registerErrorHandler(lambda _context, _error: None, None)

CONNECTION_ERRORS = frozenset(
    {
        libvirt.VIR_ERR_NO_CONNECT,
        libvirt.VIR_ERR_INVALID_CONN,
        libvirt.VIR_ERR_SYSTEM_ERROR,
        libvirt.VIR_ERR_RPC,
        libvirt.VIR_ERR_OPERATION_TIMEOUT,
        libvirt.VIR_ERR_AUTH_FAILED,
        libvirt.VIR_ERR_AUTH_CANCELLED,
        libvirt.VIR_ERR_AUTH_UNAVAILABLE,
    }
)
CONNECTION_ERROR_DOMAINS = frozenset({libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE})


@dataclass(frozen=True)
class _Disk:
    target: str
    volume: Any | None  # libvirt.virStorageVol, or None for a disk outside every storage pool
    source: str


_UNIT_KIB = {
    "b": 1 / 1024,
    "bytes": 1 / 1024,
    "k": 1,
    "kib": 1,
    "kb": 1000 / 1024,
    "m": 1024,
    "mib": 1024,
    "mb": 1000**2 / 1024,
    "g": 1024**2,
    "gib": 1024**2,
    "gb": 1000**3 / 1024,
}


def _kib(element: ET.Element | None) -> int | None:
    """A libvirt memory element in KiB (its `unit` attribute, KiB by default)."""
    if element is None or not (element.text or "").strip():
        return None
    factor = _UNIT_KIB.get(element.get("unit", "KiB").lower(), 1)
    return int(int(element.text or "0") * factor)


def _code(exc: libvirt.libvirtError) -> int | None:
    code: int | None = exc.get_error_code()
    return code


class LibvirtHypervisor:
    """One node's libvirt, connected lazily and reconnected when the connection dies.

    `clock` and `sleep` drive the graceful-shutdown wait, so tests can run a timeout without waiting.
    `graceful_timeout` is used where the `Hypervisor` call has none (park, reinstall).
    """

    def __init__(
        self,
        uri: str,
        *,
        graceful_timeout: timedelta = timedelta(minutes=2),
        poll_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.uri = uri
        self.graceful_timeout = graceful_timeout
        self.poll_interval = poll_interval
        self._clock = clock
        self._sleep = sleep
        self._now = now
        self._lock = threading.Lock()
        self._conn: Any | None = None

    # -- connection and errors -------------------------------------------------------------

    def connection(self) -> Any:
        """The open connection; (re)opened here so a node that was down is picked up again."""
        with self._lock:
            if self._conn is not None and self._alive(self._conn):
                return self._conn
            self._conn = None
            try:
                conn = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                raise HypervisorUnavailable(f"cannot connect to {self.uri}: {exc}") from exc
            # Remote connections notice a dead peer through keepalive; local drivers lack it.
            with suppress(libvirt.libvirtError):
                conn.setKeepAlive(5, 3)
            self._conn = conn
            return conn

    @staticmethod
    def _alive(conn: Any) -> bool:
        try:
            return bool(conn.isAlive())
        except libvirt.libvirtError:
            return False

    def close(self) -> None:
        """Close the connection (worker shutdown); the next call reconnects."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(libvirt.libvirtError):
                conn.close()

    @contextmanager
    def _errors(self, vm_name: str) -> Iterator[None]:
        """Translate libvirt errors into the adapter's hierarchy."""
        try:
            yield
        except libvirt.libvirtError as exc:
            if _code(exc) == libvirt.VIR_ERR_NO_DOMAIN:
                raise VmNotFound(vm_name) from exc
            conn = self._conn
            if (
                _code(exc) in CONNECTION_ERRORS
                or exc.get_error_domain() in CONNECTION_ERROR_DOMAINS
                or conn is None
                or not self._alive(conn)
            ):
                with self._lock:
                    if self._conn is conn:
                        self._conn = None
                raise HypervisorUnavailable(f"{self.uri}: {exc}") from exc
            raise HypervisorError(f"{vm_name}: {exc}") from exc

    def _domain(self, vm_name: str) -> Any:
        return self.connection().lookupByName(vm_name)

    # -- metadata ---------------------------------------------------------------------------

    @staticmethod
    def _metadata(dom: Any, namespace: str) -> ET.Element | None:
        try:
            text = dom.metadata(
                libvirt.VIR_DOMAIN_METADATA_ELEMENT, namespace, libvirt.VIR_DOMAIN_AFFECT_CONFIG
            )
        except libvirt.libvirtError as exc:
            if _code(exc) == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                return None
            raise
        return ET.fromstring(text)

    @staticmethod
    def _set_metadata(dom: Any, namespace: str, element: ET.Element | None) -> None:
        """Write (or with None remove) our element in the persistent definition, and in the running
        one too, else a start would copy a stale mark into the live XML."""
        text = None if element is None else ET.tostring(element, encoding="unicode")
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
        if dom.isActive():
            flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
        dom.setMetadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT,
            text,
            METADATA_PREFIX if text is not None else None,
            namespace,
            flags,
        )

    # -- disks and volumes ------------------------------------------------------------------

    def _disks(self, dom: Any) -> list[_Disk]:
        """The VM's own writable disks (not CD-ROMs, read-only or shared images)."""
        conn = self.connection()
        disks = []
        root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        for disk in root.iterfind("devices/disk"):
            if disk.get("device", "disk") != "disk" or disk.find("readonly") is not None:
                continue
            if disk.find("shareable") is not None:
                continue
            target = disk.find("target")
            source = disk.find("source")
            if target is None or source is None:
                continue
            volume = None
            if disk.get("type") == "volume":
                described = f"{source.get('pool')}/{source.get('volume')}"
                volume = self._lookup_volume(conn, source.get("pool", ""), source.get("volume", ""))
            else:
                described = source.get("file") or source.get("dev") or ""
                try:
                    volume = conn.storageVolLookupByPath(described)
                except libvirt.libvirtError as exc:
                    if _code(exc) != libvirt.VIR_ERR_NO_STORAGE_VOL:
                        raise
            disks.append(_Disk(target=target.get("dev", ""), volume=volume, source=described))
        return disks

    @staticmethod
    def _lookup_volume(conn: Any, pool_name: str, volume_name: str) -> Any | None:
        try:
            return conn.storagePoolLookupByName(pool_name).storageVolLookupByName(volume_name)
        except libvirt.libvirtError as exc:
            if _code(exc) in (libvirt.VIR_ERR_NO_STORAGE_VOL, libvirt.VIR_ERR_NO_STORAGE_POOL):
                return None
            raise

    @staticmethod
    def _delete_volume(volume: Any | None) -> bool:
        if volume is None:
            return False
        try:
            volume.delete(0)
        except libvirt.libvirtError as exc:
            if _code(exc) == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return False
            raise
        return True

    def _sweep_volumes(self, vm_name: str) -> bool:
        """Remove add-on and backup volumes named after the VM, wherever they are."""
        names = {f"{vm_name}-{suffix}" for suffix in ADDON_VOLUME_SUFFIXES}
        backup_prefix = f"{vm_name}.backup."
        changed = False
        for pool in self.connection().listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
            for name in pool.listVolumes():
                if name in names or name.startswith(backup_prefix):
                    volume = self._lookup_volume(self.connection(), pool.name(), name)
                    if self._delete_volume(volume):
                        log.info("volume deleted", vm=vm_name, pool=pool.name(), volume=name)
                        changed = True
        return changed

    # -- power ------------------------------------------------------------------------------

    def _shut_down(self, dom: Any, graceful_timeout: timedelta) -> None:
        """ACPI shutdown, then destroy once the timeout has passed with the guest still up."""
        try:
            dom.shutdown()
        except libvirt.libvirtError as exc:
            if _code(exc) != libvirt.VIR_ERR_OPERATION_INVALID:  # stopped in the meantime
                raise
        deadline = self._clock() + graceful_timeout.total_seconds()
        while dom.isActive():
            remaining = deadline - self._clock()
            if remaining <= 0:
                log.warning(
                    "graceful shutdown timed out, destroying",
                    vm=dom.name(),
                    timeout_seconds=graceful_timeout.total_seconds(),
                )
                try:
                    dom.destroy()
                except libvirt.libvirtError as exc:
                    if _code(exc) != libvirt.VIR_ERR_OPERATION_INVALID:
                        raise
                return
            heartbeat({"vm": dom.name(), "waiting": "graceful shutdown"})
            self._sleep(min(self.poll_interval, remaining))

    def _is_parked(self, dom: Any) -> bool:
        return self._metadata(dom, PARK_NAMESPACE) is not None

    def power_off(self, vm_name: str, graceful_timeout: timedelta) -> bool:
        with self._errors(vm_name):
            dom = self._domain(vm_name)
            if not dom.isActive():
                return False
            self._shut_down(dom, graceful_timeout)
            return True

    def power_on(self, vm_name: str) -> bool:
        with self._errors(vm_name):
            dom = self._domain(vm_name)
            if self._is_parked(dom):
                log.warning("vm is parked, left off; unpark it to start", vm=vm_name)
                return False
            if dom.isActive():
                return False
            dom.create()
            return True

    def restart(self, vm_name: str) -> bool:
        with self._errors(vm_name):
            dom = self._domain(vm_name)
            if self._is_parked(dom):
                log.warning("vm is parked, left off; unpark it to restart", vm=vm_name)
                return False
            if dom.isActive():
                dom.reboot(0)
            else:
                dom.create()
            return True

    # -- plan changes -----------------------------------------------------------------------

    def resize(self, vm_name: str, vcpus: int | None, memory_mb: int | None) -> bool:
        """Set the VM's vCPUs and memory in its persistent configuration (a plan change).

        A running VM keeps its current size until its next start (ops or the customer restart it);
        nothing is hot-plugged. Maximum and current values move together, the order chosen so the
        current value never exceeds the maximum. The disk is the platform's job (grow the volume
        and the guest's filesystem), not done here.
        """
        config = libvirt.VIR_DOMAIN_AFFECT_CONFIG
        with self._errors(vm_name):
            dom = self._domain(vm_name)
            changed = False
            if vcpus is not None:
                most = dom.vcpusFlags(config | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)
                now = dom.vcpusFlags(config)
                if (most, now) != (vcpus, vcpus):
                    if vcpus > most:
                        dom.setVcpusFlags(vcpus, config | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)
                        dom.setVcpusFlags(vcpus, config)
                    else:
                        dom.setVcpusFlags(vcpus, config)
                        dom.setVcpusFlags(vcpus, config | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)
                    changed = True
            if memory_mb is not None:
                kib = memory_mb * 1024
                desc = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
                most_kib = _kib(desc.find("memory"))
                now_kib = _kib(desc.find("currentMemory")) or most_kib
                if (most_kib, now_kib) != (kib, kib):
                    if most_kib is None or kib > most_kib:
                        dom.setMemoryFlags(kib, config | libvirt.VIR_DOMAIN_MEM_MAXIMUM)
                        dom.setMemoryFlags(kib, config)
                    else:
                        dom.setMemoryFlags(kib, config)
                        dom.setMemoryFlags(kib, config | libvirt.VIR_DOMAIN_MEM_MAXIMUM)
                    changed = True
            if changed:
                log.info(
                    "vm resized", vm=vm_name, vcpus=vcpus, memory_mb=memory_mb, running=bool(dom.isActive())
                )
            return changed

    # -- parking ----------------------------------------------------------------------------

    def park(self, vm_name: str) -> bool:
        with self._errors(vm_name):
            dom = self._domain(vm_name)
            changed = False
            if not self._is_parked(dom):
                mark = ET.Element(
                    "parked",
                    {
                        "was-running": str(int(bool(dom.isActive()))),
                        "autostart": str(int(bool(dom.autostart()))),
                    },
                )
                self._set_metadata(dom, PARK_NAMESPACE, mark)
                changed = True
            # Also finishes a park interrupted after the mark was written.
            if dom.autostart():
                dom.setAutostart(0)
                changed = True
            if dom.isActive():
                self._shut_down(dom, self.graceful_timeout)
                changed = True
            return changed

    def unpark(self, vm_name: str) -> bool:
        with self._errors(vm_name):
            dom = self._domain(vm_name)
            mark = self._metadata(dom, PARK_NAMESPACE)
            if mark is None:
                return False
            if mark.get("autostart") == "1" and not dom.autostart():
                dom.setAutostart(1)
            if mark.get("was-running") == "1" and not dom.isActive():
                dom.create()
            self._set_metadata(dom, PARK_NAMESPACE, None)
            return True

    # -- deletion ---------------------------------------------------------------------------

    def delete(self, vm_name: str) -> bool:
        with self._errors(vm_name):
            try:
                dom = self._domain(vm_name)
            except libvirt.libvirtError as exc:
                if _code(exc) != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
                dom = None
            changed = False
            if dom is not None:
                if dom.isActive():
                    dom.destroy()
                for backup in self._backups(dom):
                    self._remove_backup(dom, backup)
                for disk in self._disks(dom):
                    if disk.volume is None:
                        log.warning(
                            "disk outside storage pools left in place", vm=vm_name, source=disk.source
                        )
                    elif self._delete_volume(disk.volume):
                        log.info("volume deleted", vm=vm_name, volume=disk.source)
                self._undefine(dom)
                changed = True
            return self._sweep_volumes(vm_name) or changed

    @staticmethod
    def _undefine(dom: Any) -> None:
        flags = libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        try:
            dom.undefineFlags(flags | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        except libvirt.libvirtError as exc:
            if _code(exc) != libvirt.VIR_ERR_INVALID_ARG:  # drivers without NVRAM reject the flag
                raise
            dom.undefineFlags(flags)

    # -- reinstall --------------------------------------------------------------------------

    def reinstall(self, vm_name: str, image: str) -> bool:
        """Replace the first disk with a copy of `image` (a volume in the same pool), size kept."""
        with self._errors(vm_name):
            dom = self._domain(vm_name)
            plan = self._metadata(dom, REINSTALL_NAMESPACE)
            if plan is None or plan.get("image") != image:
                plan = self._plan_reinstall(dom, vm_name, image)
                self._set_metadata(dom, REINSTALL_NAMESPACE, plan)
            if dom.isActive():
                self._shut_down(dom, self.graceful_timeout)
            conn = self.connection()
            pool = conn.storagePoolLookupByName(plan.get("pool", ""))
            template = self._lookup_volume(conn, pool.name(), image)
            if template is None:
                raise ImageNotFound(f"image {image} not in pool {pool.name()}")
            volume_xml = plan.find("volume")
            assert volume_xml is not None  # written by _plan_reinstall
            self._delete_volume(self._lookup_volume(conn, pool.name(), volume_xml.findtext("name", "")))
            pool.createXMLFrom(ET.tostring(volume_xml, encoding="unicode"), template, 0)
            heartbeat({"vm": vm_name, "reinstalled": image})
            self._set_metadata(dom, REINSTALL_NAMESPACE, None)
            if plan.get("was-running") == "1" and not self._is_parked(dom):
                dom.create()
            log.info("vm reinstalled", vm=vm_name, image=image)
            return True

    def _plan_reinstall(self, dom: Any, vm_name: str, image: str) -> ET.Element:
        """Record what a retry needs once the old root volume is gone: its definition and pool."""
        disks = [disk for disk in self._disks(dom) if disk.volume is not None]
        if not disks:
            raise HypervisorError(f"{vm_name} has no disk in a storage pool to reinstall")
        root: Any = disks[0].volume
        pool = root.storagePoolLookupByVolume()
        if self._lookup_volume(self.connection(), pool.name(), image) is None:
            raise ImageNotFound(f"image {image} not in pool {pool.name()}")
        plan = ET.Element(
            "reinstall", {"image": image, "pool": pool.name(), "was-running": str(int(bool(dom.isActive())))}
        )
        old = ET.fromstring(root.XMLDesc(0))
        volume = ET.SubElement(plan, "volume")
        for tag in ("name", "capacity"):
            found = old.find(tag)
            if found is not None:
                volume.append(found)
        ET.SubElement(volume, "allocation").text = "0"  # sparse, as a fresh image is
        fmt = old.find("target/format")
        if fmt is not None:
            ET.SubElement(volume, "target").append(fmt)
        return plan

    # -- backups ----------------------------------------------------------------------------

    def _backups(self, dom: Any) -> list[VmBackup]:
        index = self._metadata(dom, BACKUPS_NAMESPACE)
        if index is None:
            return []
        return [
            VmBackup(
                label=entry.get("label", ""),
                kind=BackupKind(entry.get("kind", BackupKind.MANUAL)),
                created_at=datetime.fromisoformat(entry.get("created", "")),
                snapshot=entry.get("snapshot") or None,
                volumes=[volume.get("name", "") for volume in entry.iterfind("volume")],
                size_bytes=int(entry.get("size", "0")),
            )
            for entry in index.iterfind("backup")
        ]

    def _write_backups(self, dom: Any, backups: list[VmBackup]) -> None:
        if not backups:
            self._set_metadata(dom, BACKUPS_NAMESPACE, None)
            return
        index = ET.Element("backups")
        for backup in backups:
            entry = ET.SubElement(
                index,
                "backup",
                {"label": backup.label, "kind": backup.kind.value, "created": backup.created_at.isoformat()},
            )
            if backup.snapshot:
                entry.set("snapshot", backup.snapshot)
            entry.set("size", str(backup.size_bytes))
            for volume in backup.volumes:
                ET.SubElement(entry, "volume", {"name": volume})
        self._set_metadata(dom, BACKUPS_NAMESPACE, index)

    def _remove_backup(self, dom: Any, backup: VmBackup) -> None:
        conn = self.connection()
        for qualified in backup.volumes:
            pool_name, _, volume_name = qualified.partition("/")
            self._delete_volume(self._lookup_volume(conn, pool_name, volume_name))
        if backup.snapshot:
            try:
                dom.snapshotLookupByName(backup.snapshot).delete(0)
            except libvirt.libvirtError as exc:
                if _code(exc) != libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                    raise

    def create_backup(self, vm_name: str, label: str, kind: BackupKind) -> bool:
        check_backup_label(label)
        with self._errors(vm_name):
            dom = self._domain(vm_name)
            backups = self._backups(dom)
            if any(backup.label == label for backup in backups):
                return False
            snapshot = None
            if dom.isActive():
                snapshot = f"backup-{label}"
                if snapshot not in dom.snapshotListNames():
                    description = f"hostlife {kind.value} backup {label}"
                    dom.snapshotCreateXML(
                        f"<domainsnapshot><name>{snapshot}</name>"
                        f"<description>{description}</description></domainsnapshot>",
                        0,
                    )
            volumes = []
            size = 0
            for disk in self._disks(dom):
                if disk.volume is None:
                    log.warning("disk outside storage pools not backed up", vm=vm_name, source=disk.source)
                    continue
                size += int(disk.volume.info()[2])  # allocation: the data, not the disk's capacity
                pool = disk.volume.storagePoolLookupByVolume()
                name = f"{vm_name}.backup.{label}.{disk.target}"
                if self._lookup_volume(self.connection(), pool.name(), name) is None:
                    capacity = disk.volume.info()[1]
                    pool.createXMLFrom(
                        f"<volume><name>{name}</name><capacity>{capacity}</capacity>"
                        "<allocation>0</allocation></volume>",  # sparse: only the data is copied
                        disk.volume,
                        0,
                    )
                volumes.append(f"{pool.name()}/{name}")
                heartbeat({"vm": vm_name, "backup": label, "disk": disk.target})
            backup = VmBackup(
                label=label, kind=kind, created_at=self._now(), snapshot=snapshot, volumes=volumes, size_bytes=size
            )
            self._write_backups(dom, [*backups, backup])
            log.info("vm backup created", vm=vm_name, label=label, kind=kind.value, snapshot=snapshot)
            return True

    def delete_backup(self, vm_name: str, label: str) -> bool:
        with self._errors(vm_name):
            dom = self._domain(vm_name)
            backups = self._backups(dom)
            doomed = [backup for backup in backups if backup.label == label]
            if not doomed:
                return False
            self._remove_backup(dom, doomed[0])
            self._write_backups(dom, [backup for backup in backups if backup.label != label])
            return True

    def list_backups(self, vm_name: str) -> list[VmBackup]:
        with self._errors(vm_name):
            return self._backups(self._domain(vm_name))

    def rotate_backups(self, vm_name: str, keep: int) -> list[str]:
        with self._errors(vm_name):
            dom = self._domain(vm_name)
            automatic = [backup for backup in self._backups(dom) if backup.kind is BackupKind.AUTOMATIC]
            doomed = automatic[: max(len(automatic) - keep, 0)]
            for backup in doomed:  # one at a time, so a crash leaves the index true
                self._remove_backup(dom, backup)
                self._write_backups(dom, [b for b in self._backups(dom) if b.label != backup.label])
            return [backup.label for backup in doomed]

    # -- provider backup after deletion -------------------------------------------------------

    def _provider_volumes(self, label: str) -> dict[str, Any]:
        """Provider backup `label` on this node: disk target → volume, from every active pool."""
        prefix = f"{PROVIDER_PREFIX}{label}."
        found: dict[str, Any] = {}
        conn = self.connection()
        for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
            for name in pool.listVolumes():
                if name.startswith(prefix):
                    volume = self._lookup_volume(conn, pool.name(), name)
                    if volume is not None:
                        found[name[len(prefix) :]] = volume
        return found

    def keep_provider_backup(self, vm_name: str, label: str) -> list[str]:
        check_backup_label(label)
        with self._errors(vm_name):
            try:
                dom = self._domain(vm_name)
            except libvirt.libvirtError as exc:
                if _code(exc) != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
                kept = self._provider_volumes(label)  # the VM went after its backup was taken
                if not kept:
                    raise
                return sorted(f"{v.storagePoolLookupByVolume().name()}/{v.name()}" for v in kept.values())
            if dom.isActive():
                self._shut_down(dom, self.graceful_timeout)  # a consistent copy of a stopped disk
            mark = self._metadata(dom, PROVIDER_NAMESPACE)
            if mark is None or mark.get("label") != label:
                mark = ET.Element("provider-backup", {"label": label})
            done = {entry.get("name", "") for entry in mark.iterfind("volume")}
            conn = self.connection()
            volumes = []
            for target, volume in self._provider_sources(dom, vm_name):
                pool = volume.storagePoolLookupByVolume()
                name = f"{PROVIDER_PREFIX}{label}.{target}"
                qualified = f"{pool.name()}/{name}"
                if qualified not in done:
                    self._delete_volume(self._lookup_volume(conn, pool.name(), name))  # a copy cut short
                    capacity = volume.info()[1]
                    pool.createXMLFrom(
                        f"<volume><name>{name}</name><capacity>{capacity}</capacity>"
                        "<allocation>0</allocation></volume>",
                        volume,
                        0,
                    )
                    ET.SubElement(mark, "volume", {"name": qualified})
                    self._set_metadata(dom, PROVIDER_NAMESPACE, mark)
                    heartbeat({"vm": vm_name, "kept": qualified})
                volumes.append(qualified)
            log.info("provider backup kept", vm=vm_name, label=label, volumes=volumes)
            return volumes

    def _provider_sources(self, dom: Any, vm_name: str) -> list[tuple[str, Any]]:
        """What a provider backup holds: the VM's own disks and its add-on mail space (`mail`, which
        a paid mail restore draws on); never the backup space, which SPEC says is not restored."""
        sources = []
        for disk in self._disks(dom):
            if disk.volume is None:
                log.warning("disk outside storage pools not kept", vm=vm_name, source=disk.source)
            else:
                sources.append((disk.target, disk.volume))
        conn = self.connection()
        for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
            mail = self._lookup_volume(conn, pool.name(), f"{vm_name}-mail")
            if mail is not None:
                sources.append((MAIL_TARGET, mail))
                break
        return sources

    def purge_provider_backup(self, label: str) -> bool:
        check_backup_label(label)
        with self._errors(label):
            changed = False
            for volume in self._provider_volumes(label).values():
                name = volume.name()
                if self._delete_volume(volume):
                    log.info("provider backup volume purged", label=label, volume=name)
                    changed = True
            return changed

    def restore_provider_backup(self, label: str, vm_name: str) -> bool:
        """Copy provider backup `label` onto `vm_name`'s disks (matched by target, e.g. vda)."""
        check_backup_label(label)
        with self._errors(vm_name):
            dom = self._domain(vm_name)
            plan = self._metadata(dom, RESTORE_NAMESPACE)
            if plan is not None and plan.get("label") == label and plan.get("done") == "1":
                return False
            if plan is None or plan.get("label") != label:
                plan = self._plan_restore(dom, vm_name, label)
                self._set_metadata(dom, RESTORE_NAMESPACE, plan)
            if dom.isActive():
                self._shut_down(dom, self.graceful_timeout)
            conn = self.connection()
            sources = self._provider_volumes(label)
            for entry in plan.iterfind("disk"):
                target, pool_name = entry.get("target", ""), entry.get("pool", "")
                source = sources.get(target)
                if source is None:
                    raise BackupNotFound(f"provider backup {label} has no disk {target} (purged?)")
                volume_xml = entry.find("volume")
                assert volume_xml is not None  # written by _plan_restore
                pool = conn.storagePoolLookupByName(pool_name)
                self._delete_volume(self._lookup_volume(conn, pool_name, volume_xml.findtext("name", "")))
                pool.createXMLFrom(ET.tostring(volume_xml, encoding="unicode"), source, 0)
                heartbeat({"vm": vm_name, "restored": target})
            plan.set("done", "1")
            self._set_metadata(dom, RESTORE_NAMESPACE, plan)
            if plan.get("was-running") == "1" and not self._is_parked(dom) and not dom.isActive():
                dom.create()
            log.info("provider backup restored", vm=vm_name, label=label)
            return True

    def _plan_restore(self, dom: Any, vm_name: str, label: str) -> ET.Element:
        """Which of the VM's volumes get which backup disk, recorded before any volume is replaced."""
        sources = self._provider_volumes(label)
        if not sources:
            raise BackupNotFound(f"no provider backup {label} on {self.uri}")
        disks = {disk.target: disk for disk in self._disks(dom) if disk.volume is not None}
        plan = ET.Element(
            "restore", {"label": label, "was-running": str(int(bool(dom.isActive())))}
        )
        for target, source in sorted(sources.items()):
            if target == MAIL_TARGET:
                continue
            disk = disks.get(target)
            if disk is None:
                raise ValueError(f"{vm_name} has no disk {target} in a storage pool for the backup's {target}")
            own: Any = disk.volume
            need, have = source.info()[1], own.info()[1]
            if have < need:
                raise ValueError(
                    f"disk {target} of {vm_name} holds {have // 2**30} GiB, the backup {need // 2**30} GiB: "
                    "restore needs disks at least as big (a plan of the same or a higher tier)"
                )
            old = ET.fromstring(own.XMLDesc(0))
            entry = ET.SubElement(plan, "disk", {"target": target, "pool": own.storagePoolLookupByVolume().name()})
            volume = ET.SubElement(entry, "volume")
            for tag in ("name", "capacity"):
                found = old.find(tag)
                if found is not None:
                    volume.append(found)
            ET.SubElement(volume, "allocation").text = "0"
            fmt = old.find("target/format")
            if fmt is not None:
                ET.SubElement(volume, "target").append(fmt)
        return plan

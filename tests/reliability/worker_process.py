"""A hostlife worker in its own process, with real adapters pointed at the peers a test started.

    python -m tests.reliability.worker_process CONFIG.json

The crash tests (test_crash.py) run this, SIGKILL it in the middle of a side effect, run it again,
and count at the peers what happened. It is `worker.build_workers` with:

* billing: `SqliteBilling` on the test's ledger file;
* mail: `SmtpMailer` to the test's `MailCatcher` (the catcher itself can hold a delivery);
* registrar: `EppRegistrar` over TLS to the test's EPP registry (which can hold an answer);
* hypervisor: `LibvirtHypervisor` on libvirt's `test:///` driver for one node.

Two adapters are libraries inside this process, so the pause for the kill is made here, *after*
the peer did its work and before the activity reports it (the case where a retry could double
it): when the control directory holds `block-<call>-<subject>`, the call writes
`reached-<call>-<subject>` and waits forever. Every adapter call is appended to `calls.jsonl`
there (process id, activity attempt, idempotency key, whether the peer changed anything), so a
test can see the retry happen.

libvirt's test driver keeps a node's state in the memory of the connection, so a new process
would see the node file's initial state again. A real node keeps its state when our worker dies;
to be that node, this process writes each VM's power state to `node-state.json` after every change
and puts it back when it connects. That is the only state emulated; the power-off itself is a real
libvirt call on the test driver.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import signal
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from temporalio import activity
from temporalio.client import Client

from activities.billing import (
    CancelInvoiceInput,
    HeldPayment,
    HoldPaymentInput,
    Invoice,
    IssueInvoiceInput,
    MarkInvoicePaidInput,
    Refund,
    ReturnPaymentInput,
    SqliteBilling,
)
from activities.epp import EppConfig
from activities.hypervisor import BackupKind, VmBackup
from activities.libvirt_node import LibvirtHypervisor
from activities.mailer import SmtpMailer, SmtpSettings
from activities.registrar import EppRegistrar
from starter.codec import data_converter_from_env
from worker import Adapters, build_workers


class WorkerConfig(BaseModel):
    """What the test hands the worker process (written as JSON next to the ledger)."""

    address: str
    namespace: str = "default"
    task_queue: str
    control_dir: Path
    billing_path: Path
    smtp_host: str = "127.0.0.1"
    smtp_port: int
    epp_port: int | None = None
    epp_ca_file: str | None = None
    epp_client_id: str = "REG-HOSTLIFE"
    epp_password: str = "secret-pw"
    node: str = "node-a"
    libvirt_node_file: Path | None = None


class Control:
    """The control directory: block flags in, reached markers and the call log out."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()

    def log(self, peer: str, call: str, subject: str, **fields: Any) -> None:
        try:
            info = activity.info()
            context = {
                "attempt": info.attempt,
                "activity_id": info.activity_id,
                "workflow_id": info.workflow_id,
            }
        except RuntimeError:
            context = {}
        line = {"pid": os.getpid(), "peer": peer, "call": call, "subject": subject, **context, **fields}
        with self._lock, (self.directory / "calls.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(line, default=str) + "\n")

    def pause_if_asked(self, call: str, subject: str) -> None:
        """Block this thread for good when the test asked to kill us here."""
        if (self.directory / f"block-{call}-{subject}").exists():
            (self.directory / f"reached-{call}-{subject}").write_text(str(os.getpid()), encoding="utf-8")
            threading.Event().wait()


class PausingBilling:
    """The real ledger, logging each call and pausing after an invoice is written."""

    def __init__(self, ledger: SqliteBilling, control: Control) -> None:
        self.ledger = ledger
        self.control = control

    def issue_invoice(self, request: IssueInvoiceInput) -> Invoice:
        before = len(self.ledger.invoices())
        invoice = self.ledger.issue_invoice(request)
        written = len(self.ledger.invoices()) > before
        self.control.log(
            "billing", "issue_invoice", request.service_id, key=request.idempotency_key, changed=written
        )
        self.control.pause_if_asked("issue_invoice", request.service_id)
        return invoice

    def cancel_invoice(self, request: CancelInvoiceInput) -> Invoice:
        return self.ledger.cancel_invoice(request)

    def mark_invoice_paid(self, request: MarkInvoicePaidInput) -> Invoice:
        return self.ledger.mark_invoice_paid(request)

    def hold_payment(self, request: HoldPaymentInput) -> HeldPayment:
        return self.ledger.hold_payment(request)

    def return_payment(self, request: ReturnPaymentInput) -> Refund:
        return self.ledger.return_payment(request)


class PersistentTestNode:
    """`LibvirtHypervisor` on the test driver, whose VM power states outlive this process (see above)."""

    def __init__(self, node_file: Path, control: Control) -> None:
        self.libvirt = LibvirtHypervisor(
            f"test://{node_file.resolve()}", graceful_timeout=timedelta(seconds=5)
        )
        self.control = control
        self.state_file = control.directory / "node-state.json"
        self._restored = False
        self._lock = threading.Lock()

    def _restore(self) -> None:
        with self._lock:
            if self._restored:
                return
            self._restored = True
            if self.state_file.exists():
                for vm, running in json.loads(self.state_file.read_text(encoding="utf-8")).items():
                    if not running:
                        self.libvirt.power_off(vm, timedelta(seconds=5))

    def _save(self, vm_name: str, running: bool) -> None:
        with self._lock:
            state = (
                json.loads(self.state_file.read_text(encoding="utf-8")) if self.state_file.exists() else {}
            )
            state[vm_name] = running
            self.state_file.write_text(json.dumps(state), encoding="utf-8")

    def power_off(self, vm_name: str, graceful_timeout: timedelta) -> bool:
        self._restore()
        changed = self.libvirt.power_off(vm_name, graceful_timeout)
        self._save(vm_name, False)
        self.control.log("libvirt", "power_off", vm_name, changed=changed)
        self.control.pause_if_asked("power_off", vm_name)
        return changed

    def power_on(self, vm_name: str) -> bool:
        self._restore()
        changed = self.libvirt.power_on(vm_name)
        self._save(vm_name, True)
        self.control.log("libvirt", "power_on", vm_name, changed=changed)
        return changed

    def delete(self, vm_name: str) -> bool:
        self._restore()
        return self.libvirt.delete(vm_name)

    def park(self, vm_name: str) -> bool:
        self._restore()
        return self.libvirt.park(vm_name)

    def unpark(self, vm_name: str) -> bool:
        self._restore()
        return self.libvirt.unpark(vm_name)

    def restart(self, vm_name: str) -> bool:
        return self.libvirt.restart(vm_name)

    def reinstall(self, vm_name: str, image: str) -> bool:
        return self.libvirt.reinstall(vm_name, image)

    def resize(self, vm_name: str, vcpus: int | None, memory_mb: int | None) -> bool:
        return self.libvirt.resize(vm_name, vcpus, memory_mb)

    def create_backup(self, vm_name: str, label: str, kind: BackupKind) -> bool:
        return self.libvirt.create_backup(vm_name, label, kind)

    def delete_backup(self, vm_name: str, label: str) -> bool:
        return self.libvirt.delete_backup(vm_name, label)

    def list_backups(self, vm_name: str) -> list[VmBackup]:
        return self.libvirt.list_backups(vm_name)

    def rotate_backups(self, vm_name: str, keep: int) -> list[str]:
        return self.libvirt.rotate_backups(vm_name, keep)


def adapters_for(config: WorkerConfig, control: Control) -> Adapters:
    adapters = Adapters(
        billing=PausingBilling(SqliteBilling(config.billing_path), control),
        mailer=SmtpMailer(SmtpSettings(host=config.smtp_host, port=config.smtp_port, timeout=120)),
        hypervisors={},
    )
    if config.epp_port is not None:
        adapters.registrar = EppRegistrar(
            EppConfig(
                host="127.0.0.1",
                port=config.epp_port,
                client_id=config.epp_client_id,
                password=config.epp_password,
                ca_file=config.epp_ca_file,
                command_timeout=300,
            )
        )
    if config.libvirt_node_file is not None:
        adapters.hypervisors[config.node] = PersistentTestNode(config.libvirt_node_file, control)
    return adapters


async def serve(config: WorkerConfig) -> None:
    control = Control(config.control_dir)
    client = await Client.connect(
        config.address, namespace=config.namespace, data_converter=data_converter_from_env()
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as executor:
        workers = build_workers(
            client, adapters_for(config, control), task_queue=config.task_queue, executor=executor
        )
        async with contextlib.AsyncExitStack() as stack:
            for worker in workers:
                await stack.enter_async_context(worker)
            (config.control_dir / f"ready-{os.getpid()}").write_text(str(time.time()), encoding="utf-8")
            await stop.wait()


def main(argv: list[str]) -> None:
    config = WorkerConfig.model_validate_json(Path(argv[1]).read_text(encoding="utf-8"))
    asyncio.run(serve(config))
    sys.stdout.flush()
    os._exit(0)  # the SDK runtime can abort at interpreter exit (sdk-python #300); leave deliberately


if __name__ == "__main__":
    main(sys.argv)

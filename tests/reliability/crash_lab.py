"""The stage for crash tests: a dev server, real peers in this process, workers in another.

The peers are the ones hostlife talks to in production, on loopback: a `MailCatcher` (aiosmtpd)
that can store a message and then never answer, an EPP registry over TLS (tests/eppserver.py)
that can execute a renew and then never answer, the billing ledger file and libvirt's test driver
(inside the worker process, see worker_process.py). Workers run as separate processes so a test
can SIGKILL one exactly while a side effect is in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session
from lxml import etree
from temporalio.testing import WorkflowEnvironment

from activities.billing import SqliteBilling
from starter.config import Settings
from starter.mailcatcher import MailCatcher, MailStore
from starter.runner import Ports, dev_server
from tests.eppserver import EPP_NS, EppServer, Tls
from tests.reliability.worker_process import WorkerConfig

REPO = Path(__file__).resolve().parents[2]
NODE_FILE = REPO / "tests" / "fixtures" / "libvirt" / "node-a.xml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class HoldingMailStore(MailStore):
    """Stores a chosen notice, then never answers its DATA: the sender cannot know it arrived."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.hold: set[tuple[str, str]] = set()
        """(service id, template) whose first delivery is held."""
        self.reached: dict[tuple[str, str], asyncio.Event] = {}
        self.deliveries: dict[tuple[str, str], int] = {}
        self.release = asyncio.Event()

    def hold_first(self, service_id: str, template: str) -> asyncio.Event:
        self.hold.add((service_id, template))
        return self.reached.setdefault((service_id, template), asyncio.Event())

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        text = content.decode("utf-8", "replace")
        service = _header(text, "X-Hostlife-Service")
        template = _header(text, "X-Hostlife-Template")
        key = (service, template)
        self.deliveries[key] = self.deliveries.get(key, 0) + 1
        answer = await super().handle_DATA(server, session, envelope)
        if key in self.hold:
            self.hold.discard(key)
            self.reached[key].set()
            await self.release.wait()
        return answer


def _header(text: str, name: str) -> str:
    for line in text.splitlines():
        if not line.strip():
            break
        if line.lower().startswith(name.lower() + ":"):
            return line.split(":", 1)[1].strip()
    return ""


class HoldingEppServer(EppServer):
    """Executes the next renew, then never answers it (the registrar cannot know it went through)."""

    def __init__(self, tls: Tls) -> None:
        super().__init__(tls)
        self.hold_renew = False
        self.renew_reached = asyncio.Event()
        self.release = asyncio.Event()

    async def _send(self, writer: asyncio.StreamWriter, root: etree._Element) -> None:
        if self.hold_renew and root.find(f"{{{EPP_NS}}}response/{{{EPP_NS}}}resData") is not None:
            data = root.find(f"{{{EPP_NS}}}response/{{{EPP_NS}}}resData")
            if data is not None and any(etree.QName(child).localname == "renData" for child in data):
                self.hold_renew = False
                self.renew_reached.set()
                await self.release.wait()
                raise ConnectionResetError("held answer dropped")
        await super()._send(writer, root)


@dataclass
class CrashLab:
    env: WorkflowEnvironment
    settings: Settings
    config: WorkerConfig
    config_path: Path
    catcher: MailCatcher
    store: HoldingMailStore
    registry: HoldingEppServer
    processes: list[asyncio.subprocess.Process] = field(default_factory=list)

    @property
    def control(self) -> Path:
        return self.config.control_dir

    def ledger(self) -> SqliteBilling:
        return SqliteBilling(self.config.billing_path)

    def block(self, call: str, subject: str) -> Path:
        """Ask the worker to pause for good right after `call` on `subject` did its work."""
        flag = self.control / f"block-{call}-{subject}"
        flag.write_text("", encoding="utf-8")
        return self.control / f"reached-{call}-{subject}"

    def unblock_all(self) -> None:
        for flag in self.control.glob("block-*"):
            flag.unlink()

    async def spawn_worker(self) -> asyncio.subprocess.Process:
        log = (self.control / f"worker-{len(self.processes) + 1}.log").open("ab")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.reliability.worker_process",
            str(self.config_path),
            cwd=REPO,
            stdout=log,
            stderr=log,
            env={**os.environ, "HOSTLIFE_LOG_LEVEL": "WARNING"},
        )
        log.close()
        self.processes.append(process)
        ready = self.control / f"ready-{process.pid}"
        await wait_until(lambda: ready.exists() or process.returncode is not None, 60, "worker ready")
        assert process.returncode is None, (self.control / f"worker-{len(self.processes)}.log").read_text()
        return process

    async def kill(self, process: asyncio.subprocess.Process) -> None:
        """SIGKILL: no shutdown, no activity completion, no goodbye to any peer."""
        process.send_signal(signal.SIGKILL)
        await process.wait()

    def calls(self) -> list[dict[str, Any]]:
        path = self.control / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]

    def mails(self, service_id: str, template: str) -> list[EmailMessage]:
        return [
            m
            for m in self.catcher.messages()
            if m["X-Hostlife-Service"] == service_id and m["X-Hostlife-Template"] == template
        ]


async def wait_until(check: Callable[[], Any], seconds: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")
        await asyncio.sleep(interval)


async def eventually(check: Callable[[], Any], seconds: float, what: str, interval: float = 0.5) -> Any:
    """Poll an async check until it returns something truthy."""
    deadline = time.monotonic() + seconds
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def crash_lab(tmp_path: Path, *, libvirt: bool = False) -> AsyncIterator[CrashLab]:
    settings = Settings(data_dir=tmp_path / "data", task_queue=f"crash-{os.getpid()}-{time.monotonic_ns()}")
    control = tmp_path / "control"
    control.mkdir()
    tls = Tls()
    registry = HoldingEppServer(tls)
    store = HoldingMailStore(tmp_path / "mail")
    ports = Ports(frontend=free_port(), ui=free_port())
    async with dev_server(settings, ports) as env:
        await registry.start()
        async with MailCatcher(port=0, store=store) as catcher:
            config = WorkerConfig(
                address=f"127.0.0.1:{ports.frontend}",
                task_queue=settings.task_queue,
                control_dir=control,
                billing_path=settings.data_dir / "billing.sqlite",
                smtp_port=catcher.port,
                epp_port=registry.port,
                epp_ca_file=str(tls.ca_file),
                libvirt_node_file=NODE_FILE if libvirt else None,
            )
            config_path = tmp_path / "worker.json"
            config_path.write_text(config.model_dump_json(), encoding="utf-8")
            lab = CrashLab(env, settings, config, config_path, catcher, store, registry)
            try:
                yield lab
            finally:
                store.release.set()
                registry.release.set()
                for process in lab.processes:
                    if process.returncode is None:
                        process.send_signal(signal.SIGTERM)
                        try:
                            await asyncio.wait_for(process.wait(), 15)
                        except TimeoutError:
                            process.send_signal(signal.SIGKILL)
                            await process.wait()
                await registry.stop()

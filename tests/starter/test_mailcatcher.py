"""The local SMTP catcher: stores each message once under its Message-ID, in-process and as a command."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest

from starter.mailcatcher import MailCatcher, MailStore, filename_for

ROOT = Path(__file__).resolve().parents[2]


def message(message_id: str | None, subject: str = "Hello", to: str = "jana@example.cz") -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "billing@hostlife.invalid"
    mail["To"] = to
    mail["Subject"] = subject
    if message_id is not None:
        mail["Message-ID"] = message_id
    mail.set_content("Dobrý den, test.\n")
    return mail


def stored_files(directory: Path) -> list[str]:
    """Everything in the directory, so a stray temporary file would show up too."""
    return sorted(p.name for p in directory.iterdir())


async def send(port: int, mail: EmailMessage) -> None:
    await aiosmtplib.send(mail, hostname="127.0.0.1", port=port, timeout=5)


def test_file_name_is_the_message_id_when_it_is_safe() -> None:
    assert filename_for("<3f2a@hostlife.invalid>", b"") == "3f2a@hostlife.invalid.eml"


def test_different_message_ids_never_share_a_file() -> None:
    names = {filename_for(mid, b"") for mid in ("<a/b@x>", "<a_b@x>", "<a\\b@x>", "<../a_b@x>", "<a_b@x> ")}
    assert len(names) == 4  # only the trailing-space variant is the same Message-ID as "<a_b@x>"
    assert all("/" not in name and "\\" not in name and not name.startswith(".") for name in names)


def test_a_message_without_message_id_is_named_by_its_content() -> None:
    assert filename_for(None, b"one") == filename_for(None, b"one") != filename_for(None, b"two")


def test_store_writes_once_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = MailStore(tmp_path)
    content = message("<m1@x>").as_bytes()
    path, new = store.store(content, "billing@hostlife.invalid", ["jana@example.cz"])
    again, new_again = store.store(message("<m1@x>", subject="changed").as_bytes(), "other@x", ["a@b"])
    assert new and not new_again and again == path
    assert stored_files(tmp_path) == ["m1@x.eml"]
    assert b"Subject: Hello" in path.read_bytes()


async def test_catcher_stores_each_message_id_once_with_its_envelope(tmp_path: Path) -> None:
    async with MailCatcher(tmp_path, port=0) as catcher:
        await send(catcher.port, message("<m1@x>"))
        await send(catcher.port, message("<m1@x>"))
        await send(catcher.port, message("<m2@x>", subject="Second", to="petr@example.cz"))
        await asyncio.gather(*(send(catcher.port, message("<m3@x>")) for _ in range(5)))

    assert (catcher.store.received, catcher.store.stored) == (8, 3)
    assert stored_files(tmp_path) == ["m1@x.eml", "m2@x.eml", "m3@x.eml"]
    stored = {m["Message-ID"]: m for m in catcher.messages()}
    assert stored["<m2@x>"]["Subject"] == "Second"
    assert stored["<m2@x>"]["X-Envelope-To"] == "petr@example.cz"
    assert stored["<m2@x>"]["X-Envelope-From"] == "<billing@hostlife.invalid>"
    assert "Dobrý den" in stored["<m1@x>"].get_content()


async def test_stop_does_not_wait_for_an_idle_client(tmp_path: Path) -> None:
    catcher = MailCatcher(tmp_path, port=0)
    await catcher.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", catcher.port)
    assert (await reader.readline()).startswith(b"220")
    await asyncio.wait_for(catcher.stop(), timeout=3)
    assert await asyncio.wait_for(reader.read(), timeout=3) == b""  # the server hung up on us
    writer.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("started_as", ["foreground", "background job (SIGINT ignored)"])
async def test_runs_as_a_command(tmp_path: Path, started_as: str) -> None:
    """Stops on SIGINT, also when started as a script's background job (which ignores SIGINT)."""
    port = free_port()
    directory = tmp_path / "mail"
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "starter.mailcatcher", "--port", str(port), "--dir", str(directory)],
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        preexec_fn=ignore_sigint if started_as != "foreground" else None,
    )
    try:
        for _ in range(100):
            try:
                await send(port, message("<cli@x>"))
                break
            except aiosmtplib.SMTPConnectError:
                assert process.returncode is None, "the catcher exited"
                await asyncio.sleep(0.1)
        else:
            pytest.fail("the catcher did not start listening")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            # Generous: its stop allows a stuck client 5 s, and a loaded CI machine is slow to exit.
            output, _ = await asyncio.wait_for(process.communicate(), timeout=30)
        except TimeoutError:
            process.kill()
            output, _ = await process.communicate()
            pytest.fail(f"the catcher did not stop within 30 s of SIGINT: {output.decode()}")
    assert stored_files(directory) == ["cli@x.eml"]
    assert process.returncode == 0, output.decode()
    assert b"mail stored" in output

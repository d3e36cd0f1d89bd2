"""A local SMTP catcher: every message the worker sends lands as an `.eml` file under `.data/mail/`.

`make run` starts it so that notices can be read without a real relay; tests start it on a free
loopback port. A message is stored under a name derived from its Message-ID and only once, so when an
activity retries a delivery the server had in fact accepted, the duplicate is acknowledged and dropped,
just as a receiving mail system that de-duplicates by Message-ID would do.

    python -m starter.mailcatcher --port 2525 --dir .data/mail
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import re
import signal
import tempfile
import weakref
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session

log = structlog.get_logger()

DEFAULT_DIR = Path(".data/mail")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 2525

_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]")


def filename_for(message_id: str | None, content: bytes) -> str:
    """The file a message is stored in: its Message-ID made safe for a file name.

    When the Message-ID had to be changed (or is missing), a digest is appended so that two different
    identifiers can never share a file; without a Message-ID the digest of the content is used.
    """
    if not message_id or not message_id.strip():
        return f"no-message-id-{hashlib.sha256(content).hexdigest()[:32]}.eml"
    raw = message_id.strip()
    inner = raw.removeprefix("<").removesuffix(">")
    safe = _UNSAFE.sub("_", inner)[:150].lstrip(".") or "message"
    if safe != inner:
        safe = f"{safe}-{hashlib.sha256(raw.encode()).hexdigest()[:12]}"
    return f"{safe}.eml"


class MailStore:
    """aiosmtpd handler that writes each message once; subclass it to inject faults in tests."""

    def __init__(self, directory: Path | str = DEFAULT_DIR) -> None:
        self.directory = Path(directory)
        self.received = 0  # DATA commands answered, duplicates included
        self.stored = 0  # files written

    def store(self, content: bytes, mail_from: str, rcpt_tos: list[str]) -> tuple[Path, bool]:
        """Write `content` under its Message-ID unless it is already there; True when newly stored.

        The file appears atomically (hard link of a complete temp file), so a reader never sees half
        a message and two concurrent deliveries of one Message-ID store it once.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        headers = BytesHeaderParser(policy=policy.default).parsebytes(content)
        path = self.directory / filename_for(headers["Message-ID"], content)
        if path.exists():
            return path, False
        envelope = f"X-Envelope-From: <{mail_from}>\r\nX-Envelope-To: {', '.join(rcpt_tos)}\r\n"
        fd, temp = tempfile.mkstemp(dir=self.directory, prefix=".incoming-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(envelope.encode())
                handle.write(content)
            try:
                os.link(temp, path)
            except FileExistsError:
                return path, False
        finally:
            os.unlink(temp)
        return path, True

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received += 1
        content = envelope.original_content or b""
        mail_from = envelope.mail_from or ""
        rcpt_tos = list(envelope.rcpt_tos)
        path, new = await asyncio.to_thread(self.store, content, mail_from, rcpt_tos)
        if new:
            self.stored += 1
            log.info("mail stored", file=str(path), to=rcpt_tos)
            return "250 OK stored"
        log.info("mail duplicate dropped", file=str(path), to=rcpt_tos)
        return "250 OK duplicate of a stored message"

    def messages(self) -> list[EmailMessage]:
        """Every stored message, oldest first, parsed with the modern e-mail API."""
        if not self.directory.is_dir():
            return []
        files = sorted(self.directory.glob("*.eml"), key=lambda p: (p.stat().st_mtime_ns, p.name))
        parser = BytesParser(policy=policy.default)
        return [cast(EmailMessage, parser.parsebytes(p.read_bytes())) for p in files]


class MailCatcher:
    """The catcher's SMTP server in the running event loop; `port=0` picks a free port.

    async with MailCatcher(tmp_path, port=0) as catcher:
        SmtpSettings(host=catcher.host, port=catcher.port)
    """

    def __init__(
        self,
        directory: Path | str = DEFAULT_DIR,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        store: MailStore | None = None,
    ) -> None:
        self.store = store or MailStore(directory)
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._connections: weakref.WeakSet[SMTP] = weakref.WeakSet()  # closed ones vanish by themselves

    @property
    def directory(self) -> Path:
        return self.store.directory

    def _protocol(self) -> SMTP:
        connection = SMTP(self.store, hostname="hostlife-mailcatcher", ident="hostlife mail catcher")
        self._connections.add(connection)
        return connection

    async def start(self) -> None:
        self.store.directory.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("mail catcher listening", host=self.host, port=self.port, directory=str(self.directory))

    async def stop(self) -> None:
        """Stop listening and drop open connections, so a stuck client never keeps the test waiting."""
        if self._server is None:
            return
        self._server.close()
        for connection in list(self._connections):
            if connection.transport is not None:
                connection.transport.close()
        self._connections.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), timeout=5)
        self._server = None

    async def __aenter__(self) -> MailCatcher:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def messages(self) -> list[EmailMessage]:
        return self.store.messages()


async def serve(
    directory: Path | str = DEFAULT_DIR, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
) -> None:
    """Run the catcher until cancelled."""
    async with MailCatcher(directory, host, port):
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m starter.mailcatcher", description="Store every received e-mail as an .eml file."
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help=f"where to store (default {DEFAULT_DIR})"
    )
    args: Any = parser.parse_args(argv)
    # A shell starts a script's background job with SIGINT ignored, and Python then never turns
    # Ctrl-C / `kill -INT` into KeyboardInterrupt: the catcher would not stop. Take it back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.dir, args.host, args.port))


if __name__ == "__main__":
    main()

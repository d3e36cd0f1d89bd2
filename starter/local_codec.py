"""Encryption on by default for `make run`: a key ring and a codec server made once for this machine.

Without HOSTLIFE_CODEC_KEYS[_FILE], the first `make run` writes a fresh AES-256 key to
`.data/codec-keys` (mode 0600) and every later start, the `hostlife` CLI and the worker reuse it, so
the dev server's SQLite file never holds a customer's name or e-mail in clear. Keys configured in the
environment always win; the file is then neither written nor read.

The dev server's Web UI decodes through a codec server that `make run` starts on loopback. That UI
cannot send a bearer token or a cookie (`temporal server start-dev` has only `--ui-codec-endpoint`),
so its endpoint carries a secret path segment instead (`/ui/TOKEN`), kept in `.data/codec-server.json`
(0600) with the bearer token the CLI uses (`temporal workflow show --codec-endpoint ... --codec-auth`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import uvicorn
from pydantic import SecretStr

from starter.codec import (
    KEYS_ENV,
    KEYS_FILE_ENV,
    EncryptionCodec,
    EncryptionKey,
    parse_keys,
    read_keys_config,
)
from starter.codec_server import CodecServerSettings, create_app

KEYS_FILE = "codec-keys"
SERVER_FILE = "codec-server.json"


def write_private(path: Path, text: str) -> None:
    """Create `path` readable by its owner only (0600 from the first byte); never overwrite it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def configured_in_env(environ: Mapping[str, str]) -> bool:
    return KEYS_ENV in environ or KEYS_FILE_ENV in environ


def ensure_local_keys(data_dir: Path) -> Path:
    """`data_dir/codec-keys`, generated on the first call: one key named after the month it was made."""
    path = data_dir / KEYS_FILE
    if not path.exists():
        key = EncryptionKey.generate(f"local-{datetime.now(UTC):%Y-%m}")
        write_private(
            path,
            "# hostlife dev key ring (make run): first line encrypts, all decrypt. Back it up:\n"
            "# without it the payloads in temporal.sqlite cannot be read.\n" + key.encoded() + "\n",
        )
    return path


def keys_environ(
    data_dir: Path, environ: Mapping[str, str] | None = None, *, create: bool = False
) -> dict[str, str]:
    """The environment with the local key ring filled in when none is configured.

    `create=True` (make run) generates the ring if missing; otherwise (CLI, worker) an existing
    `data_dir/codec-keys` is used and nothing is written.
    """
    env = dict(os.environ if environ is None else environ)
    if configured_in_env(env):
        return env
    path = data_dir / KEYS_FILE
    if create:
        ensure_local_keys(data_dir)
    if path.exists():
        env[KEYS_FILE_ENV] = str(path)
    return env


@dataclass(frozen=True)
class LocalCodecServer:
    """Where the running local codec server answers, and the secrets that open it."""

    url: str
    bearer_token: str
    ui_token: str

    @property
    def ui_endpoint(self) -> str:
        """The endpoint given to the dev server's Web UI (`--ui-codec-endpoint`)."""
        return f"{self.url}/ui/{self.ui_token}"


def local_server_secrets(data_dir: Path) -> dict[str, str]:
    path = data_dir / SERVER_FILE
    if not path.exists():
        write_private(
            path,
            json.dumps({"bearer_token": secrets.token_urlsafe(32), "ui_token": secrets.token_urlsafe(32)}),
        )
    stored = json.loads(path.read_text(encoding="utf-8"))
    return {"bearer_token": str(stored["bearer_token"]), "ui_token": str(stored["ui_token"])}


@contextlib.asynccontextmanager
async def local_codec_server(
    data_dir: Path, environ: Mapping[str, str], port: int, ui_port: int
) -> AsyncIterator[LocalCodecServer]:
    """Serve the codec server on 127.0.0.1:`port` for the dev Web UI on `ui_port` until the block ends."""
    text = read_keys_config(environ)
    if text is None:
        raise ValueError(f"the local codec server needs {KEYS_ENV} or {KEYS_FILE_ENV}")
    stored = local_server_secrets(data_dir)
    settings = CodecServerSettings(
        tokens=(SecretStr(stored["bearer_token"]),),
        ui_path_tokens=(SecretStr(stored["ui_token"]),),
        cors_origins=(f"http://localhost:{ui_port}", f"http://127.0.0.1:{ui_port}"),
    )
    app = create_app(EncryptionCodec(parse_keys(text)), settings)
    # Bind here, so a port in use is an OSError for the caller, not uvicorn's sys.exit in a task.
    sock = socket.create_server(("127.0.0.1", port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(200):
            if server.started or task.done():
                break
            await asyncio.sleep(0.05)
        if not server.started:
            raise RuntimeError(f"codec server on 127.0.0.1:{port} did not start")
        yield LocalCodecServer(f"http://127.0.0.1:{port}", stored["bearer_token"], stored["ui_token"])
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
            await asyncio.wait_for(task, timeout=10)
        sock.close()

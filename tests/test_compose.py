"""docker-compose.yml as Compose v2 reads it (no Docker engine): valid, secrets only as files, and a
check that does fail on a broken file."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "validate-compose.sh"
COMPOSE = ROOT / "docker-compose.yml"
SECRET_WORDS = re.compile(r"PASSWORD|PASSWD|PWD|SECRET|TOKEN|API_KEY|CODEC_KEYS")


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), str(path)], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    """The file after interpolation and merging, as `docker compose config --format json` prints it."""
    binary = subprocess.run(
        [str(SCRIPT), "--binary"], capture_output=True, text=True, timeout=300, check=True
    )
    done = subprocess.run(
        [
            binary.stdout.strip(),
            "--project-directory",
            str(ROOT),
            "-f",
            str(COMPOSE),
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    config: dict[str, Any] = json.loads(done.stdout)
    return config


def test_compose_file_is_valid() -> None:
    done = validate(COMPOSE)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("  worker:\n", "  worker:\n    bogus_key: 1\n", "additional properties 'bogus_key' not allowed"),
        (
            "condition: service_healthy\n",
            "condition: service_healthy\n      no-such-service:\n        condition: service_started\n",
            "no-such-service",
        ),
        ("secrets: [codec_keys]\n", "secrets: [codec_keys, not_declared]\n", "not_declared"),
        ("env_file: deploy/hostlife.env", "env_file: deploy/missing.env", "missing.env"),
    ],
    ids=["unknown-key", "unknown-dependency", "undeclared-secret", "missing-env-file"],
)
def test_a_broken_copy_fails(tmp_path: Path, old: str, new: str, complaint: str) -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    assert old in text
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(old, new, 1), encoding="utf-8")
    done = validate(broken)
    assert done.returncode != 0
    assert complaint in done.stderr


def test_every_service_of_the_issue_is_there(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert {
        "postgresql",
        "temporal",
        "temporal-ui",
        "worker",
        "node-worker",
        "ingress",
        "mailcatcher",
        "codec-server",
    } <= set(services)
    assert services["postgresql"]["image"] == "postgres:16"
    assert services["temporal"]["image"].startswith("temporalio/server:")
    assert "--node" in services["node-worker"]["command"]
    ui = services["temporal-ui"]["environment"]
    assert ui["TEMPORAL_CODEC_ENDPOINT"] and ui["TEMPORAL_CODEC_INCLUDE_CREDENTIALS"] == "true"


def test_secrets_are_files_never_values(resolved: dict[str, Any]) -> None:
    for name, service in resolved["services"].items():
        for variable, value in (service.get("environment") or {}).items():
            if SECRET_WORDS.search(variable) and str(value) not in ("true", "false"):  # switches
                assert variable.endswith("_FILE"), f"{name}: {variable} carries a secret inline"
                assert str(value).startswith("/run/secrets/"), f"{name}: {variable}={value}"
    env_file = (ROOT / "deploy" / "hostlife.env").read_text(encoding="utf-8")
    for line in env_file.splitlines():
        variable = line.split("=", 1)[0]
        if line and not line.startswith("#") and SECRET_WORDS.search(variable):
            assert variable.endswith("_FILE"), f"deploy/hostlife.env: {variable} carries a secret inline"
    for secret in resolved["secrets"].values():
        assert Path(secret["file"]).parent == ROOT / "deploy" / "secrets"


def test_secret_files_are_never_committed() -> None:
    ignored = (ROOT / "deploy" / "secrets" / ".gitignore").read_text(encoding="utf-8")
    assert "*\n" in ignored
    assert "deploy/secrets" in (ROOT / ".dockerignore").read_text(encoding="utf-8").split()


def test_published_ports_are_loopback_only(resolved: dict[str, Any]) -> None:
    for name, service in resolved["services"].items():
        for port in service.get("ports") or []:
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond this machine"


def _entrypoint(command: list[str]) -> list[str]:
    """`python -m module ...` or `python script.py ...` → the interpreter's part of it."""
    assert command[0] == "python", command
    return command[1:3] if command[1] == "-m" else command[1:2]


def test_every_hostlife_service_runs_a_real_entrypoint(resolved: dict[str, Any]) -> None:
    """A module without a `__main__` block imports and exits 0: compose would restart it forever."""
    import sys

    ours = {name: s for name, s in resolved["services"].items() if s.get("image") == "hostlife:latest"}
    assert {"worker", "node-worker", "ingress", "mailcatcher", "codec-server"} <= set(ours)
    for name, service in ours.items():
        done = subprocess.run(
            [sys.executable, *_entrypoint(service["command"]), "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0 and "usage:" in done.stdout, f"{name}: {done.stderr[-400:]}"


def test_the_ingress_entrypoint_serves_with_secrets_from_files_before_temporal_is_up(tmp_path: Path) -> None:
    """`python -m starter.ingress` as compose runs it: secrets as files, Temporal not reachable yet."""
    import os
    import socket
    import sys
    import time

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]  # nothing listens there once the socket closes
    (tmp_path / "webhook").write_text("w" * 32 + "\n", encoding="utf-8")
    (tmp_path / "api").write_text("a" * 32 + "\n", encoding="utf-8")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HOSTLIFE_")},
        "PYTHONPATH": str(ROOT),
        "HOSTLIFE_INGRESS_HOST": "127.0.0.1",
        "HOSTLIFE_INGRESS_PORT": str(port),
        "HOSTLIFE_INGRESS_WEBHOOK_SECRET_FILE": str(tmp_path / "webhook"),
        "HOSTLIFE_INGRESS_API_KEY_FILE": str(tmp_path / "api"),
        "HOSTLIFE_TEMPORAL_ADDRESS": f"127.0.0.1:{closed}",
        "HOSTLIFE_DATA_DIR": str(tmp_path / "data"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "starter.ingress"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the ingress did not start listening"
                time.sleep(0.2)
        assert health.status_code == 200
        unsigned = httpx.post(f"http://127.0.0.1:{port}/payments/card", json={}, timeout=5)
        assert unsigned.status_code == 401
        keyed = httpx.post(
            f"http://127.0.0.1:{port}/payments/bank-statement",
            content=b"",
            headers={"authorization": "Bearer " + "b" * 32},
            timeout=5,
        )
        assert keyed.status_code == 401  # a wrong key; the right one is only in the file
    finally:
        process.terminate()
        process.wait(timeout=30)

    bad = {**env, "HOSTLIFE_INGRESS_API_KEY": "a" * 32}  # and _FILE: refused with one line
    done = subprocess.run(
        [sys.executable, "-m", "starter.ingress"], cwd=ROOT, env=bad, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and "set HOSTLIFE_INGRESS_API_KEY or HOSTLIFE_INGRESS_API_KEY_FILE" in done.stderr

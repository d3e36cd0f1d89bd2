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

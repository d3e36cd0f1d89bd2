"""Secrets from the environment or from a file it names: `NAME` or `NAME_FILE`, never both.

Containers mount secrets as files (`/run/secrets/…`), so every secret hostlife reads also accepts
`<NAME>_FILE`; the file's content is the secret, one trailing newline dropped. Nothing secret is
read from the command line, where `ps` shows it.

    SecretConfigError (ValueError)   both variants set, an unreadable or empty file, a required one missing
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


class SecretConfigError(ValueError):
    """A secret's configuration is unusable; the message names the variable, never the value."""


def secret_from_env(env: Mapping[str, str], name: str, *, required: bool = False) -> str | None:
    """The secret `name` from `env[name]` or from the file `env[name + "_FILE"]`; None when neither is set."""
    direct, path = env.get(name), env.get(name + "_FILE")
    if direct is not None and path is not None:
        raise SecretConfigError(f"set {name} or {name}_FILE, not both")
    if path is not None:
        try:
            value = Path(path).read_text(encoding="utf-8").removesuffix("\n").removesuffix("\r")
        except OSError as exc:
            raise SecretConfigError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from exc
        if not value:
            raise SecretConfigError(f"{name}_FILE: {path} is empty")
        return value
    if direct:
        return direct
    if required:
        raise SecretConfigError(f"{name} (or {name}_FILE) is required")
    return None

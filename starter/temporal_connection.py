"""How clients and workers reach a production Temporal cluster: TLS, mTLS, API key, namespace.

`connect_options_from_env()` returns keyword arguments for `Client.connect`. Secrets come only from the
environment or from files the environment names (container secrets); nothing is read from the command
line, where `ps` would show it.

| variable | meaning |
|---|---|
| HOSTLIFE_NAMESPACE | namespace (default `default`) |
| HOSTLIFE_TEMPORAL_TLS | `true`: TLS with the system's roots; `false`: plaintext (refused with an API key) |
| HOSTLIFE_TEMPORAL_TLS_CA_FILE | PEM root CA to verify the server with (a private CA) |
| HOSTLIFE_TEMPORAL_TLS_CERT_FILE | PEM client certificate for mTLS (with _KEY_FILE) |
| HOSTLIFE_TEMPORAL_TLS_KEY_FILE | PEM client private key for mTLS (with _CERT_FILE) |
| HOSTLIFE_TEMPORAL_TLS_SERVER_NAME | name the server certificate is issued to, when it differs from the address |
| HOSTLIFE_TEMPORAL_API_KEY[_FILE] | API key, sent as `Authorization: Bearer` (Temporal Cloud, or a server authorizer) |

Any of the TLS file variables switches TLS on; so does an API key, which must never cross the network in
clear. A bad configuration raises `ConnectionConfigError` naming the variable, before any connection.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from temporalio.service import TLSConfig

PREFIX = "HOSTLIFE_TEMPORAL_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConnectionConfigError(ValueError):
    """The connection settings contradict each other or name a file that cannot be read."""


def _read_file(variable: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConnectionConfigError(f"{variable}: cannot read {path}: {exc.strerror}") from exc


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """A secret from NAME or from the file NAME_FILE names (trailing newline dropped), not both."""
    direct, path = env.get(name), env.get(name + "_FILE")
    if direct is not None and path is not None:
        raise ConnectionConfigError(f"set {name} or {name}_FILE, not both")
    if path is not None:
        value = _read_file(name + "_FILE", path).decode("utf-8").strip()
    else:
        value = (direct or "").strip()
    return value or None


def _flag(env: Mapping[str, str], name: str) -> bool | None:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return None
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConnectionConfigError(f"{name} must be true or false, not {raw!r}")


def tls_from_env(env: Mapping[str, str]) -> bool | TLSConfig:
    """False (plaintext), True (system roots) or a `TLSConfig` with a CA, a client pair or a server name."""
    switch = _flag(env, PREFIX + "TLS")
    ca_path = env.get(PREFIX + "TLS_CA_FILE")
    cert_path = env.get(PREFIX + "TLS_CERT_FILE")
    key_path = env.get(PREFIX + "TLS_KEY_FILE")
    server_name = (env.get(PREFIX + "TLS_SERVER_NAME") or "").strip() or None
    configured = [
        name
        for name, value in (
            ("TLS_CA_FILE", ca_path),
            ("TLS_CERT_FILE", cert_path),
            ("TLS_KEY_FILE", key_path),
            ("TLS_SERVER_NAME", server_name),
        )
        if value
    ]
    if switch is False:
        if configured:
            raise ConnectionConfigError(
                f"{PREFIX}TLS is false but {', '.join(PREFIX + n for n in configured)} is set"
            )
        return False
    if bool(cert_path) != bool(key_path):
        raise ConnectionConfigError(
            f"mTLS needs both {PREFIX}TLS_CERT_FILE and {PREFIX}TLS_KEY_FILE, or neither"
        )
    if not configured:
        return bool(switch)
    return TLSConfig(
        server_root_ca_cert=_read_file(PREFIX + "TLS_CA_FILE", ca_path) if ca_path else None,
        client_cert=_read_file(PREFIX + "TLS_CERT_FILE", cert_path) if cert_path else None,
        client_private_key=_read_file(PREFIX + "TLS_KEY_FILE", key_path) if key_path else None,
        domain=server_name,
    )


def connect_options_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Keyword arguments for `Client.connect(address, **options, data_converter=...)`: namespace, tls, api_key."""
    env = os.environ if environ is None else environ
    api_key = _secret(env, PREFIX + "API_KEY")
    tls = tls_from_env(env)
    if api_key is not None and tls is False:
        if _flag(env, PREFIX + "TLS") is False:
            raise ConnectionConfigError(
                f"{PREFIX}API_KEY needs TLS: an API key must not travel in clear ({PREFIX}TLS is false)"
            )
        tls = True
    options: dict[str, Any] = {"namespace": env.get("HOSTLIFE_NAMESPACE") or "default", "tls": tls}
    if api_key is not None:
        options["api_key"] = api_key
    return options

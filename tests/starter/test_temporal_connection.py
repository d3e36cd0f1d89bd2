"""Connection options from the environment: TLS, mTLS, API key, namespace — and refusals that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme
from temporalio.service import TLSConfig

from starter.temporal_connection import ConnectionConfigError, connect_options_from_env


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    """A private CA and a client certificate, as files, the way container secrets arrive."""
    ca = trustme.CA()
    client = ca.issue_cert("hostlife-worker")
    files = {
        "ca": tmp_path / "ca.pem",
        "cert": tmp_path / "client.pem",
        "key": tmp_path / "client.key",
        "api_key": tmp_path / "api_key",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    client.cert_chain_pems[0].write_to_path(str(files["cert"]))
    client.private_key_pem.write_to_path(str(files["key"]))
    files["api_key"].write_text("secret-api-key-from-a-file\n", encoding="utf-8")
    return files


def test_defaults_are_plaintext_on_the_default_namespace() -> None:
    assert connect_options_from_env({}) == {"namespace": "default", "tls": False}


def test_namespace_and_system_roots() -> None:
    options = connect_options_from_env(
        {"HOSTLIFE_NAMESPACE": "hostlife-prod", "HOSTLIFE_TEMPORAL_TLS": "true"}
    )
    assert options == {"namespace": "hostlife-prod", "tls": True}


def test_private_ca_and_server_name(pki: dict[str, Path]) -> None:
    options = connect_options_from_env(
        {
            "HOSTLIFE_TEMPORAL_TLS_CA_FILE": str(pki["ca"]),
            "HOSTLIFE_TEMPORAL_TLS_SERVER_NAME": "temporal.internal",
        }
    )
    assert options["tls"] == TLSConfig(server_root_ca_cert=pki["ca"].read_bytes(), domain="temporal.internal")


def test_mtls_pair(pki: dict[str, Path]) -> None:
    options = connect_options_from_env(
        {
            "HOSTLIFE_TEMPORAL_TLS_CA_FILE": str(pki["ca"]),
            "HOSTLIFE_TEMPORAL_TLS_CERT_FILE": str(pki["cert"]),
            "HOSTLIFE_TEMPORAL_TLS_KEY_FILE": str(pki["key"]),
        }
    )
    tls = options["tls"]
    assert isinstance(tls, TLSConfig)
    assert tls.client_cert == pki["cert"].read_bytes()
    assert tls.client_private_key == pki["key"].read_bytes()
    assert tls.client_private_key is not None and b"PRIVATE KEY" in tls.client_private_key
    assert tls.server_root_ca_cert == pki["ca"].read_bytes()


def test_half_an_mtls_pair_is_refused(pki: dict[str, Path]) -> None:
    with pytest.raises(ConnectionConfigError, match="both HOSTLIFE_TEMPORAL_TLS_CERT_FILE and"):
        connect_options_from_env({"HOSTLIFE_TEMPORAL_TLS_CERT_FILE": str(pki["cert"])})


def test_api_key_from_file_switches_tls_on(pki: dict[str, Path]) -> None:
    options = connect_options_from_env({"HOSTLIFE_TEMPORAL_API_KEY_FILE": str(pki["api_key"])})
    assert options == {"namespace": "default", "tls": True, "api_key": "secret-api-key-from-a-file"}


def test_api_key_with_a_private_ca(pki: dict[str, Path]) -> None:
    options = connect_options_from_env(
        {"HOSTLIFE_TEMPORAL_API_KEY": "key-1", "HOSTLIFE_TEMPORAL_TLS_CA_FILE": str(pki["ca"])}
    )
    assert options["api_key"] == "key-1"
    assert isinstance(options["tls"], TLSConfig)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HOSTLIFE_TEMPORAL_API_KEY": "k", "HOSTLIFE_TEMPORAL_API_KEY_FILE": "/x"}, "not both"),
        ({"HOSTLIFE_TEMPORAL_API_KEY": "k", "HOSTLIFE_TEMPORAL_TLS": "false"}, "must not travel in clear"),
        ({"HOSTLIFE_TEMPORAL_TLS": "maybe"}, "must be true or false"),
        ({"HOSTLIFE_TEMPORAL_TLS": "false", "HOSTLIFE_TEMPORAL_TLS_SERVER_NAME": "t"}, "TLS is false but"),
        (
            {"HOSTLIFE_TEMPORAL_TLS_CA_FILE": "/nonexistent/ca.pem"},
            "HOSTLIFE_TEMPORAL_TLS_CA_FILE: cannot read",
        ),
        (
            {"HOSTLIFE_TEMPORAL_API_KEY_FILE": "/nonexistent/key"},
            "HOSTLIFE_TEMPORAL_API_KEY_FILE: cannot read",
        ),
    ],
)
def test_contradictions_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConnectionConfigError, match=message):
        connect_options_from_env(env)

"""Every secret hostlife reads comes from the environment or from the file `<NAME>_FILE` names.

One table of every secret and the code that reads it: the file variant gives the same value as the
plain variable (trailing newline dropped), and setting both, or naming an unreadable file, is a
clear configuration error rather than a silent choice.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from activities.card_gateway import ComGateGateway
from activities.env_secrets import SecretConfigError, secret_from_env
from activities.epp import EppConfig
from activities.mailer import SmtpSettings
from starter.codec import EncryptionCodec, EncryptionKey
from starter.codec_server import CodecServerSettings
from starter.ingress import IngressSettings
from starter.temporal_connection import connect_options_from_env

KEY = EncryptionKey.generate("k-2026")
SECRET = "s3cret-value-with-enough-length"

Reader = Callable[[Mapping[str, str]], str]


def _epp(prefix: str) -> Reader:
    def read(env: Mapping[str, str]) -> str:
        with pytest.MonkeyPatch.context() as patch:
            for name in (prefix + "HOST", prefix + "CLIENT_ID"):
                patch.setenv(name, "epp.example")
            for name, value in env.items():
                patch.setenv(name, value)
            return EppConfig.from_env(prefix).password

    return read


def _comgate_secret(env: Mapping[str, str]) -> str:
    import httpx

    from starter.config import Settings
    from worker import configured_card_gateway

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOSTLIFE_COMGATE_MERCHANT", "123456")
        for name, value in env.items():
            patch.setenv(name, value)
        gateway = configured_card_gateway(Settings(data_dir=Path(tempfile.mkdtemp())), httpx.AsyncClient())
    assert isinstance(gateway, ComGateGateway), gateway
    return gateway.secret


def _codec_keys(env: Mapping[str, str]) -> str:
    codec = EncryptionCodec.from_env(env)
    assert codec is not None
    return codec.current.encoded()


# (variable, a valid value, the code that reads it back).
SECRETS: list[tuple[str, str, Reader]] = [
    ("HOSTLIFE_COMGATE_SECRET", SECRET, _comgate_secret),
    ("HOSTLIFE_CODEC_KEYS", KEY.encoded(), _codec_keys),
    (
        "HOSTLIFE_CODEC_SERVER_TOKEN",
        SECRET,
        lambda env: CodecServerSettings.from_env(env).tokens[0].get_secret_value(),
    ),
    (
        "HOSTLIFE_SMTP_PASSWORD",
        SECRET,
        lambda env: (lambda p: p.get_secret_value() if p else "")(SmtpSettings.from_env(env).password),
    ),
    ("HOSTLIFE_EPP_PASSWORD", SECRET, _epp("HOSTLIFE_EPP_")),
    ("HOSTLIFE_EPP_CZ_PASSWORD", SECRET, _epp("HOSTLIFE_EPP_CZ_")),
    (
        "HOSTLIFE_INGRESS_WEBHOOK_SECRET",
        SECRET,
        lambda env: IngressSettings.from_env(
            {"HOSTLIFE_INGRESS_API_KEY": "k" * 20, **env}
        ).webhook_secret.get_secret_value(),
    ),
    (
        "HOSTLIFE_INGRESS_API_KEY",
        SECRET,
        lambda env: IngressSettings.from_env(
            {"HOSTLIFE_INGRESS_WEBHOOK_SECRET": "w" * 20, **env}
        ).api_key.get_secret_value(),
    ),
    (
        "HOSTLIFE_INGRESS_MONITORING_API_KEY",
        SECRET,
        lambda env: (lambda key: key.get_secret_value() if key else "")(
            IngressSettings.from_env(
                {"HOSTLIFE_INGRESS_WEBHOOK_SECRET": "w" * 20, "HOSTLIFE_INGRESS_API_KEY": "k" * 20, **env}
            ).monitoring_api_key
        ),
    ),
    ("HOSTLIFE_TEMPORAL_API_KEY", SECRET, lambda env: str(connect_options_from_env(env)["api_key"])),
]
IDS = [name for name, _, _ in SECRETS]


@pytest.mark.parametrize(("name", "value", "read"), SECRETS, ids=IDS)
def test_a_secret_from_its_file_equals_the_one_from_the_environment(
    name: str, value: str, read: Reader, tmp_path: Path
) -> None:
    path = tmp_path / name.lower()
    path.write_text(value + "\n", encoding="utf-8")
    path.chmod(0o600)
    assert read({name + "_FILE": str(path)}) == value
    assert read({name: value}) == value


@pytest.mark.parametrize(("name", "value", "read"), SECRETS, ids=IDS)
def test_both_variants_or_a_missing_file_are_refused_by_name(
    name: str, value: str, read: Reader, tmp_path: Path
) -> None:
    path = tmp_path / "secret"
    path.write_text(value, encoding="utf-8")
    with pytest.raises((ValueError, OSError), match=name):
        read({name: value, name + "_FILE": str(path)})
    with pytest.raises((ValueError, OSError)) as missing:
        read({name + "_FILE": str(tmp_path / "absent")})
    assert value not in str(missing.value)


def test_the_helper_drops_one_newline_and_refuses_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "s"
    path.write_text("  keep inner spaces \r\n", encoding="utf-8")
    assert secret_from_env({"X_FILE": str(path)}, "X") == "  keep inner spaces "
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(SecretConfigError, match=r"X_FILE: .* is empty"):
        secret_from_env({"X_FILE": str(path)}, "X")
    assert secret_from_env({}, "X") is None
    with pytest.raises(SecretConfigError, match=r"X \(or X_FILE\) is required"):
        secret_from_env({}, "X", required=True)

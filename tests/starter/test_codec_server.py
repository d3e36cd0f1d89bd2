"""The codec server over real HTTP: uvicorn on a loopback port, httpx as the Web UI and the CLI."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from starter.codec import ENCODING, EncryptionCodec, EncryptionKey
from starter.codec_server import COOKIE, CodecServerSettings, app_from_env, create_app
from tests.http_server import running

TOKEN = "ops-token-0123456789abcdef"
UI = "http://localhost:8080"
KEY = EncryptionKey.generate("2026-06")
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def codec() -> EncryptionCodec:
    return EncryptionCodec([KEY])


@pytest.fixture
def server(codec: EncryptionCodec) -> Iterator[httpx.Client]:
    settings = CodecServerSettings.from_env({"HOSTLIFE_CODEC_SERVER_TOKEN": f"old-token-0123456789,{TOKEN}"})
    with running(create_app(codec, settings)) as client:
        yield client


def as_json(*payloads: Payload) -> dict[str, Any]:
    """The Temporal JSON payloads format the Web UI posts: every bytes field base64."""
    document: dict[str, Any] = json_format.MessageToDict(Payloads(payloads=payloads))
    return document


def from_json(document: Any) -> list[Payload]:
    return list(json_format.ParseDict(document, Payloads()).payloads)


CLEAR = Payload(metadata={"encoding": b"json/plain"}, data=b'{"email":"jana@example.cz"}')


def test_decode_what_a_worker_encrypted(server: httpx.Client, codec: EncryptionCodec) -> None:
    sealed = codec.encrypt(CLEAR)
    body = as_json(sealed)
    assert body["payloads"][0]["metadata"]["encoding"] == base64.b64encode(ENCODING).decode()
    answer = server.post("/decode", json=body, headers={**BEARER, "X-Namespace": "default"})
    assert answer.status_code == 200, answer.text
    assert from_json(answer.json()) == [CLEAR]


def test_encode_then_decode_round_trip(server: httpx.Client, codec: EncryptionCodec) -> None:
    encoded = server.post("/encode", json=as_json(CLEAR), headers=BEARER)
    assert encoded.status_code == 200
    (sealed,) = from_json(encoded.json())
    assert sealed.metadata["encoding"] == ENCODING and b"jana" not in sealed.data
    assert codec.decrypt(sealed) == CLEAR  # what the UI encodes, a worker reads
    decoded = server.post("/default/decode", json=encoded.json(), headers=BEARER)  # CLI templating
    assert from_json(decoded.json()) == [CLEAR]


def test_every_configured_token_works(server: httpx.Client, codec: EncryptionCodec) -> None:
    answer = server.post(
        "/decode",
        json=as_json(codec.encrypt(CLEAR)),
        headers={"Authorization": "Bearer old-token-0123456789"},
    )
    assert answer.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": f"Basic {TOKEN}"}],
    ids=["none", "wrong", "not-bearer"],
)
def test_codec_calls_without_the_token_are_401(
    server: httpx.Client, codec: EncryptionCodec, headers: dict[str, str]
) -> None:
    for path in ("/decode", "/encode", "/default/decode"):
        answer = server.post(path, json=as_json(codec.encrypt(CLEAR)), headers=headers)
        assert answer.status_code == 401, path
        assert answer.headers["www-authenticate"] == "Bearer"
        assert "jana" not in answer.text


def test_cors_preflight_from_the_ui(server: httpx.Client) -> None:
    answer = server.options(
        "/decode",
        headers={
            "Origin": UI,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
        },
    )
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == UI
    assert answer.headers["access-control-allow-credentials"] == "true"
    allowed = answer.headers["access-control-allow-headers"].lower()
    assert {"content-type", "x-namespace", "authorization"} <= {h.strip() for h in allowed.split(",")}


def test_cors_preflight_from_another_origin_is_refused(server: httpx.Client) -> None:
    answer = server.options(
        "/decode",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert answer.status_code == 400
    assert "access-control-allow-origin" not in answer.headers


def test_ui_response_carries_cors_headers(server: httpx.Client, codec: EncryptionCodec) -> None:
    answer = server.post("/decode", json=as_json(codec.encrypt(CLEAR)), headers={**BEARER, "Origin": UI})
    assert answer.headers["access-control-allow-origin"] == UI


def test_login_cookie_lets_the_web_ui_decode(server: httpx.Client, codec: EncryptionCodec) -> None:
    assert server.get("/login").status_code == 200
    refused = server.post("/login", data={"token": "wrong-token-0123456789"})
    assert refused.status_code == 401 and COOKIE not in server.cookies
    signed_in = server.post("/login", data={"token": TOKEN})
    assert signed_in.status_code == 200
    cookie = signed_in.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    answer = server.post("/decode", json=as_json(codec.encrypt(CLEAR)))  # cookie only, as the UI sends it
    assert answer.status_code == 200 and from_json(answer.json()) == [CLEAR]


def test_bad_documents_and_unknown_keys(server: httpx.Client) -> None:
    assert server.post("/decode", content=b"not json", headers=BEARER).status_code == 400
    foreign = EncryptionCodec([EncryptionKey.generate("retired")]).encrypt(CLEAR)
    answer = server.post("/decode", json=as_json(foreign), headers=BEARER)
    assert answer.status_code == 422
    assert "'retired'" in answer.json()["detail"]


def test_healthz_needs_no_token_and_names_no_secret(server: httpx.Client) -> None:
    answer = server.get("/healthz")
    assert answer.json() == {"status": "ok", "current_key": "2026-06"}


def test_settings_from_env(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n", encoding="utf-8")
    settings = CodecServerSettings.from_env(
        {
            "HOSTLIFE_CODEC_SERVER_TOKEN_FILE": str(token_file),
            "HOSTLIFE_CODEC_SERVER_CORS_ORIGINS": "https://ui.x/ , https://b",
        }
    )
    assert [t.get_secret_value() for t in settings.tokens] == [TOKEN]
    assert settings.cors_origins == ("https://ui.x", "https://b")
    with pytest.raises(ValueError, match="at least one token"):
        CodecServerSettings.from_env({})
    with pytest.raises(ValueError, match="at least 16"):
        CodecServerSettings.from_env({"HOSTLIFE_CODEC_SERVER_TOKEN": "short"})
    with pytest.raises(ValueError, match="needs HOSTLIFE_CODEC_KEYS"):
        app_from_env({"HOSTLIFE_CODEC_SERVER_TOKEN": TOKEN})
    assert isinstance(
        app_from_env({"HOSTLIFE_CODEC_SERVER_TOKEN": TOKEN, "HOSTLIFE_CODEC_KEYS": KEY.encoded()}), FastAPI
    )


def test_runs_as_a_module(tmp_path: Path) -> None:
    """`python -m starter.codec_server --port N`, keys and token from files, as in docker-compose.yml."""
    keys, token = tmp_path / "codec_keys", tmp_path / "token"
    keys.write_text(KEY.encoded() + "\n", encoding="utf-8")
    token.write_text(TOKEN + "\n", encoding="utf-8")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "HOSTLIFE_CODEC_KEYS_FILE": str(keys),
        "HOSTLIFE_CODEC_SERVER_TOKEN_FILE": str(token),
    }
    env.pop("HOSTLIFE_CODEC_KEYS", None)
    env.pop("HOSTLIFE_CODEC_SERVER_TOKEN", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "starter.codec_server", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                answer = httpx.post(
                    f"http://127.0.0.1:{port}/decode",
                    json=as_json(EncryptionCodec([KEY]).encrypt(CLEAR)),
                    headers=BEARER,
                )
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read() if process.stderr else b""
                assert time.monotonic() < deadline, "codec server did not start"
                time.sleep(0.1)
        assert from_json(answer.json()) == [CLEAR]
    finally:
        process.terminate()
        process.wait(10)


def test_module_refuses_to_start_without_keys() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOSTLIFE_CODEC")}
    env["HOSTLIFE_CODEC_SERVER_TOKEN"] = TOKEN
    done = subprocess.run(
        [sys.executable, "-m", "starter.codec_server", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert "needs HOSTLIFE_CODEC_KEYS" in done.stderr

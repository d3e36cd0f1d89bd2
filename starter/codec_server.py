"""Codec server: lets the Temporal Web UI and CLI show encrypted payloads to ops who hold the key.

    python -m starter.codec_server --port 8888          # keys and token from the environment

    POST /encode, /decode                 Temporal's codec protocol: {"payloads": [{"metadata": {..base64},
    POST /{namespace}/encode, /decode       "data": "base64"}]} in, the same shape out (CLI endpoint templating)
    GET  /login, POST /login              a form that puts the token into an HttpOnly cookie, for the Web UI
    POST /ui/{token}/encode, /decode      `make run` only: the dev server's Web UI, authorised by a secret path
    GET  /healthz                         liveness, no authentication

Every codec call needs the token of HOSTLIFE_CODEC_SERVER_TOKEN[_FILE] (several, comma- or line-separated,
so a token can be rotated): as `Authorization: Bearer TOKEN` — what `temporal ... --codec-endpoint URL
--codec-auth "Bearer TOKEN"` sends — or as the cookie `/login` sets. The cookie is for the Web UI, which
sends only its own OIDC access token as a bearer; with `TEMPORAL_CODEC_INCLUDE_CREDENTIALS=true` it sends
the cookie instead. Browsers may call only from HOSTLIFE_CODEC_SERVER_CORS_ORIGINS (comma-separated,
default the compose UI on :8080 and the dev server UI on :8233).

Keys come from HOSTLIFE_CODEC_KEYS[_FILE] (starter/codec.py). The server logs counts, never payloads.
"""

from __future__ import annotations

import argparse
import hmac
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import parse_qs

import structlog
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse
from google.protobuf import json_format
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from temporalio.api.common.v1 import Payload, Payloads

from starter.codec import CodecError, EncryptionCodec, parse_keys, read_keys_config
from starter.logging import configure_logging

log = structlog.get_logger(__name__)

TOKEN_ENV = "HOSTLIFE_CODEC_SERVER_TOKEN"
ORIGINS_ENV = "HOSTLIFE_CODEC_SERVER_CORS_ORIGINS"
COOKIE = "hostlife_codec"
DEFAULT_ORIGINS = (
    "http://localhost:8080",
    "http://127.0.0.1:8080",
    "http://localhost:8233",
    "http://127.0.0.1:8233",
)
MAX_BODY_BYTES = 16 * 1024 * 1024
COOKIE_SECONDS = 8 * 3600

Transform = Callable[[Sequence[Payload]], Awaitable[list[Payload]]]


class CodecServerSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    tokens: tuple[SecretStr, ...] = Field(min_length=1)
    # `make run` only: secret path segments (/ui/TOKEN/decode) for the dev server's Web UI, which
    # cannot send a token or a cookie; whoever can read the UI's settings on loopback can decode.
    ui_path_tokens: tuple[SecretStr, ...] = ()
    cors_origins: tuple[str, ...] = DEFAULT_ORIGINS
    max_body_bytes: int = Field(default=MAX_BODY_BYTES, gt=0)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CodecServerSettings:
        env = os.environ if environ is None else environ
        direct, path = env.get(TOKEN_ENV), env.get(TOKEN_ENV + "_FILE")
        if direct is not None and path is not None:
            raise ValueError(f"set {TOKEN_ENV} or {TOKEN_ENV}_FILE, not both")
        text = Path(path).read_text(encoding="utf-8") if path is not None else (direct or "")
        tokens = [t.strip() for line in text.splitlines() for t in line.split(",") if t.strip()]
        if not tokens:
            raise ValueError(f"{TOKEN_ENV} (or {TOKEN_ENV}_FILE) must name at least one token")
        if any(len(token) < 16 for token in tokens):
            raise ValueError(f"every {TOKEN_ENV} token must be at least 16 characters")
        origins = env.get(ORIGINS_ENV)
        values: dict[str, object] = {"tokens": tuple(SecretStr(t) for t in tokens)}
        if origins is not None:
            values["cors_origins"] = tuple(o.strip().rstrip("/") for o in origins.split(",") if o.strip())
        return cls.model_validate(values)


def _token_ok(offered: str, tokens: Sequence[SecretStr]) -> bool:
    raw = offered.encode("utf-8", "replace")
    # compare against every token (no early exit), so timing does not tell which one nearly matched
    matches = [hmac.compare_digest(raw, token.get_secret_value().encode()) for token in tokens]
    return any(matches)


def _authorized(request: Request, tokens: Sequence[SecretStr]) -> bool:
    """A bearer token (CLI, scripts) or the /login cookie (Web UI with includeCredentials)."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return _token_ok(credentials.strip(), tokens)
    cookie = request.cookies.get(COOKIE)
    return cookie is not None and _token_ok(cookie, tokens)


async def _read_body(request: Request, limit: int) -> bytes | None:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail}, headers=headers)


_LOGIN_FORM = """<!doctype html><html><head><meta charset="utf-8"><title>hostlife codec server</title></head>
<body><h1>hostlife codec server</h1><p>{message}</p>
<form method="post" action="login"><label>Token <input type="password" name="token" autofocus></label>
<button type="submit">Sign in</button></form></body></html>"""


def create_app(codec: EncryptionCodec, settings: CodecServerSettings) -> FastAPI:
    app = FastAPI(title="hostlife codec server", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.cors_origins),
        allow_methods=["POST"],
        allow_headers=["content-type", "x-namespace", "authorization"],
        allow_credentials=True,  # the Web UI's includeCredentials sends the /login cookie
        max_age=600,
    )

    async def apply(
        request: Request, action: str, transform: Transform, path_token: str | None = None
    ) -> Response:
        if path_token is not None:
            if not settings.ui_path_tokens or not _token_ok(path_token, settings.ui_path_tokens):
                return _error(404, "not found")
        elif not _authorized(request, settings.tokens):
            return _error(401, "missing or bad token", {"WWW-Authenticate": "Bearer"})
        body = await _read_body(request, settings.max_body_bytes)
        if body is None:
            return _error(413, f"body larger than {settings.max_body_bytes} bytes")
        try:
            payloads = json_format.Parse(body, Payloads())
        except (json_format.ParseError, UnicodeDecodeError) as exc:
            return _error(400, f"not a Temporal payloads JSON document: {exc}")
        try:
            result = Payloads(payloads=await transform(payloads.payloads))
        except CodecError as exc:
            log.warning("codec refused payloads", action=action, error=type(exc).__name__)
            return _error(422, str(exc))
        log.info(
            "payloads converted",
            action=action,
            count=len(result.payloads),
            namespace=request.headers.get("x-namespace", ""),
        )
        return Response(json_format.MessageToJson(result), media_type="application/json")

    @app.post("/encode")
    async def encode(request: Request) -> Response:
        return await apply(request, "encode", codec.encode)

    @app.post("/decode")
    async def decode(request: Request) -> Response:
        return await apply(request, "decode", codec.decode)

    @app.post("/{namespace}/encode")
    async def encode_in(namespace: str, request: Request) -> Response:
        return await apply(request, "encode", codec.encode)

    @app.post("/{namespace}/decode")
    async def decode_in(namespace: str, request: Request) -> Response:
        return await apply(request, "decode", codec.decode)

    @app.post("/ui/{path_token}/encode")
    async def encode_ui(path_token: str, request: Request) -> Response:
        return await apply(request, "encode", codec.encode, path_token)

    @app.post("/ui/{path_token}/decode")
    async def decode_ui(path_token: str, request: Request) -> Response:
        return await apply(request, "decode", codec.decode, path_token)

    @app.get("/healthz")
    async def healthz() -> dict[str, object]:
        return {"status": "ok", "current_key": codec.current.key_id}

    @app.get("/login")
    async def login_form() -> HTMLResponse:
        return HTMLResponse(_LOGIN_FORM.format(message="Sign in to let the Temporal Web UI decode payloads."))

    @app.post("/login")
    async def login(request: Request) -> Response:
        body = await _read_body(request, 4096)
        token = parse_qs((body or b"").decode("utf-8", "replace")).get("token", [""])[0]
        if not token or not _token_ok(token, settings.tokens):
            return HTMLResponse(_LOGIN_FORM.format(message="Wrong token."), status_code=401)
        response = HTMLResponse(
            _LOGIN_FORM.format(message="Signed in: the Web UI can decode payloads now. Close this tab.")
        )
        response.set_cookie(
            COOKIE,
            token,
            max_age=COOKIE_SECONDS,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    return app


def app_from_env(environ: Mapping[str, str] | None = None) -> FastAPI:
    env = os.environ if environ is None else environ
    keys = read_keys_config(env)
    if keys is None:
        raise ValueError("the codec server needs HOSTLIFE_CODEC_KEYS or HOSTLIFE_CODEC_KEYS_FILE")
    return create_app(EncryptionCodec(parse_keys(keys)), CodecServerSettings.from_env(env))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m starter.codec_server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8888, help="port (default 8888)")
    args = parser.parse_args(argv)
    configure_logging(os.environ.get("HOSTLIFE_LOG_LEVEL", "INFO"))
    try:
        app = app_from_env()
    except (ValueError, OSError) as exc:
        raise SystemExit(f"codec server: {exc}") from exc
    uvicorn.run(app, host=args.host, port=args.port, log_config=None)


if __name__ == "__main__":
    main()

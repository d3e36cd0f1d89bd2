"""AES-256-GCM payload codec: customer data (names, e-mails, addresses) never reaches Temporal in clear.

Every payload a client or worker sends — workflow inputs and results, activity arguments, signals,
updates, queries, and (with `data_converter_from_env`) failure messages — is serialized whole and
sealed with AES-256-GCM before it leaves the process. The Temporal server, its database and its
backups see only ciphertext; the Web UI and the CLI show it through the codec server
(starter/codec_server.py) to ops who hold the key.

Keys form a ring: the first key encrypts, every key decrypts. An encrypted payload names its key in the
metadata `encryption-key-id`, so rotating is: put a new key first, keep the old ones until every history
that used them has passed its retention period, then drop them.

    HOSTLIFE_CODEC_KEYS="2026-06:BASE64KEY,2026-01:BASE64KEY"    # first = current
    HOSTLIFE_CODEC_KEYS_FILE=/run/secrets/codec_keys             # same format, commas or lines, # comments

A key is 32 random bytes, base64 (`python -c "import os,base64;print(base64.b64encode(os.urandom(32)).decode())"`).

Errors:

    CodecError (ValueError)
    ├── CodecConfigError        a bad key ring: no keys, bad id, not 32 bytes, set twice
    ├── UnknownEncryptionKey    a payload sealed with a key id the ring does not hold
    └── PayloadDecryptionError  ciphertext, nonce or key id altered, or the wrong key under a known id

Payloads without the `binary/encrypted` encoding pass through decode unchanged, so histories written
before encryption was switched on stay readable.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes, PayloadCodec

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
KEYS_ENV = "HOSTLIFE_CODEC_KEYS"
KEYS_FILE_ENV = "HOSTLIFE_CODEC_KEYS_FILE"
NONCE_BYTES = 12
KEY_BYTES = 32

_KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class CodecError(ValueError):
    """Base of the codec's errors."""


class CodecConfigError(CodecError):
    """The key ring is unusable; the message names what is wrong but never a key."""


class UnknownEncryptionKey(CodecError):
    """A payload names a key id this process was not given."""


class PayloadDecryptionError(CodecError):
    """Authentication failed: the payload was altered or sealed with another key of the same id."""


@dataclasses.dataclass(frozen=True)
class EncryptionKey:
    key_id: str
    secret: bytes = dataclasses.field(repr=False)

    def __post_init__(self) -> None:
        if not _KEY_ID.match(self.key_id):
            raise CodecConfigError(
                f"key id {self.key_id!r} must be 1-64 characters of letters, digits, '.', '_' or '-'"
            )
        if len(self.secret) != KEY_BYTES:
            raise CodecConfigError(
                f"key {self.key_id!r} is {len(self.secret)} bytes; AES-256 needs exactly {KEY_BYTES}"
            )

    @staticmethod
    def generate(key_id: str) -> EncryptionKey:
        return EncryptionKey(key_id, AESGCM.generate_key(bit_length=256))

    def encoded(self) -> str:
        """`id:base64`, the form `HOSTLIFE_CODEC_KEYS` takes."""
        return f"{self.key_id}:{base64.b64encode(self.secret).decode()}"


def parse_keys(text: str) -> list[EncryptionKey]:
    """`id:base64` entries separated by commas or new lines; `#` starts a comment. First = current."""
    keys: list[EncryptionKey] = []
    for line in text.splitlines():
        for entry in line.split("#", 1)[0].split(","):
            entry = entry.strip()
            if not entry:
                continue
            key_id, sep, encoded = entry.partition(":")
            if not sep:
                raise CodecConfigError(f"key entry {key_id.strip()[:64]!r}... is not 'id:base64key'")
            try:
                secret = base64.b64decode(encoded.strip(), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise CodecConfigError(f"key {key_id.strip()!r} is not valid base64") from exc
            keys.append(EncryptionKey(key_id.strip(), secret))
    return keys


class EncryptionCodec(PayloadCodec):
    """Seals each payload (metadata and data) with AES-256-GCM under the ring's first key.

    The nonce is random, so the same input never gives the same ciphertext. That is fine: codecs run
    outside the workflow sandbox, on the bytes after the workflow code has produced them, and replay
    compares commands, not payload bytes. The key id is bound as associated data, so relabelling a
    payload with another key id fails authentication instead of decrypting under the wrong key.
    """

    def __init__(self, keys: Iterable[EncryptionKey]) -> None:
        ring = list(keys)
        if not ring:
            raise CodecConfigError("the key ring is empty: give at least one key")
        ids = [key.key_id for key in ring]
        duplicates = sorted({key_id for key_id in ids if ids.count(key_id) > 1})
        if duplicates:
            raise CodecConfigError(f"key ids must be unique; repeated: {', '.join(duplicates)}")
        self.current = ring[0]
        self._ciphers = {key.key_id: AESGCM(key.secret) for key in ring}

    @property
    def key_ids(self) -> list[str]:
        return list(self._ciphers)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EncryptionCodec | None:
        """The codec configured by HOSTLIFE_CODEC_KEYS or HOSTLIFE_CODEC_KEYS_FILE, or None if neither is set."""
        text = read_keys_config(os.environ if environ is None else environ)
        return None if text is None else cls(parse_keys(text))

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(payload) for payload in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        key_id = self.current.key_id
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[key_id].encrypt(nonce, payload.SerializeToString(), key_id.encode())
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id.encode()},
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        raw_id = payload.metadata.get(KEY_ID_METADATA)
        if raw_id is None:
            raise PayloadDecryptionError(f"an encrypted payload has no {KEY_ID_METADATA} metadata")
        key_id = raw_id.decode("utf-8", errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise UnknownEncryptionKey(
                f"payload was encrypted with key {key_id!r}, which is not in the key ring "
                f"({', '.join(self._ciphers)}); add it to {KEYS_ENV} to read it"
            )
        if len(payload.data) < NONCE_BYTES + 16:
            raise PayloadDecryptionError(f"encrypted payload under key {key_id!r} is truncated")
        nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
        try:
            plain = cipher.decrypt(nonce, sealed, raw_id)
        except InvalidTag as exc:
            raise PayloadDecryptionError(
                f"encrypted payload under key {key_id!r} failed authentication (altered, or another key)"
            ) from exc
        return Payload.FromString(plain)


def read_keys_config(environ: Mapping[str, str]) -> str | None:
    """The key ring text from the environment or the file it names; None when encryption is off."""
    direct, path = environ.get(KEYS_ENV), environ.get(KEYS_FILE_ENV)
    if direct is not None and path is not None:
        raise CodecConfigError(f"set {KEYS_ENV} or {KEYS_FILE_ENV}, not both")
    if path is not None:
        try:
            return Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise CodecConfigError(f"{KEYS_FILE_ENV}: cannot read {path}: {exc.strerror}") from exc
    return direct


def data_converter_from_env(environ: Mapping[str, str] | None = None) -> DataConverter:
    """`pydantic_data_converter`, with the encryption codec when keys are configured.

    With the codec, failure messages and stack traces are moved into an encoded payload as well
    (`DefaultFailureConverterWithEncodedAttributes`): an SMTP refusal or a validation error may quote
    an e-mail address, and a failure's message is otherwise stored in clear.
    """
    codec = EncryptionCodec.from_env(environ)
    if codec is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )

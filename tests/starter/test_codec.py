"""The encryption codec: round trip, key rotation, clear errors, and a real workflow whose history the
Temporal server stores without the customer's e-mail address or name in it."""

from __future__ import annotations

import base64
import concurrent.futures
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowFailureError, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from starter.codec import (
    ENCODING,
    KEY_ID_METADATA,
    CodecConfigError,
    EncryptionCodec,
    EncryptionKey,
    PayloadDecryptionError,
    UnknownEncryptionKey,
    data_converter_from_env,
    parse_keys,
)
from workflows.models import Customer

EMAIL = "jana.novakova@example.cz"
NAME = "Jana Nováková"


def json_payload(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=f'"{text}"'.encode())


# ---------------------------------------------------------------------------------------------
# the codec alone


async def test_round_trip_hides_data_and_metadata() -> None:
    codec = EncryptionCodec([EncryptionKey.generate("k1")])
    original = [json_payload(EMAIL), json_payload(NAME)]
    encoded = await codec.encode(original)
    for payload in encoded:
        assert payload.metadata["encoding"] == ENCODING
        assert payload.metadata[KEY_ID_METADATA] == b"k1"
        assert EMAIL.encode() not in payload.SerializeToString()
        assert b"json/plain" not in payload.data  # the inner encoding is sealed too
    assert await codec.decode(encoded) == original


async def test_same_input_gives_different_ciphertext() -> None:
    codec = EncryptionCodec([EncryptionKey.generate("k1")])
    first, second = await codec.encode([json_payload(EMAIL), json_payload(EMAIL)])
    assert first.data != second.data


async def test_rotation_new_key_encrypts_old_key_still_decrypts() -> None:
    old, new = EncryptionKey.generate("2026-01"), EncryptionKey.generate("2026-06")
    before = await EncryptionCodec([old]).encode([json_payload(EMAIL)])
    rotated = EncryptionCodec([new, old])
    assert await rotated.decode(before) == [json_payload(EMAIL)]
    after = await rotated.encode([json_payload(EMAIL)])
    assert after[0].metadata[KEY_ID_METADATA] == b"2026-06"
    with pytest.raises(UnknownEncryptionKey, match="2026-06"):
        await EncryptionCodec([old]).decode(after)


async def test_unknown_key_id_names_it_and_the_ring() -> None:
    sealed = await EncryptionCodec([EncryptionKey.generate("gone")]).encode([json_payload(EMAIL)])
    with pytest.raises(UnknownEncryptionKey, match=r"'gone'.*not in the key ring \(current\)"):
        await EncryptionCodec([EncryptionKey.generate("current")]).decode(sealed)


async def test_tampered_ciphertext_is_refused() -> None:
    codec = EncryptionCodec([EncryptionKey.generate("k1")])
    (sealed,) = await codec.encode([json_payload(EMAIL)])
    flipped = bytearray(sealed.data)
    flipped[-1] ^= 0x01
    tampered = Payload(metadata=dict(sealed.metadata), data=bytes(flipped))
    with pytest.raises(PayloadDecryptionError, match="failed authentication"):
        await codec.decode([tampered])


async def test_relabelled_key_id_is_refused() -> None:
    """The key id is associated data: relabelled to another id, even one with the same secret, it fails."""
    k1 = EncryptionKey.generate("k1")
    codec = EncryptionCodec([k1, EncryptionKey("k2", k1.secret)])
    (sealed,) = await codec.encode([json_payload(EMAIL)])
    relabelled = Payload(metadata={**dict(sealed.metadata), KEY_ID_METADATA: b"k2"}, data=sealed.data)
    with pytest.raises(PayloadDecryptionError):
        await codec.decode([relabelled])


async def test_wrong_secret_under_a_known_id_is_refused() -> None:
    (sealed,) = await EncryptionCodec([EncryptionKey.generate("k1")]).encode([json_payload(EMAIL)])
    with pytest.raises(PayloadDecryptionError):
        await EncryptionCodec([EncryptionKey.generate("k1")]).decode([sealed])


async def test_truncated_and_unlabelled_payloads_are_refused() -> None:
    codec = EncryptionCodec([EncryptionKey.generate("k1")])
    with pytest.raises(PayloadDecryptionError, match="truncated"):
        await codec.decode([Payload(metadata={"encoding": ENCODING, KEY_ID_METADATA: b"k1"}, data=b"x")])
    with pytest.raises(PayloadDecryptionError, match=KEY_ID_METADATA):
        await codec.decode([Payload(metadata={"encoding": ENCODING}, data=b"x" * 40)])


async def test_clear_payloads_pass_through_decode() -> None:
    """Histories written before encryption was switched on stay readable."""
    codec = EncryptionCodec([EncryptionKey.generate("k1")])
    assert await codec.decode([json_payload(EMAIL)]) == [json_payload(EMAIL)]


# ---------------------------------------------------------------------------------------------
# configuration


def test_parse_keys_commas_lines_and_comments() -> None:
    a, b = EncryptionKey.generate("a"), EncryptionKey.generate("b")
    text = f"# rotated 2026-06\n{b.encoded()}\n\n{a.encoded()}  # old, drop after retention\n"
    assert parse_keys(text) == [b, a]
    assert parse_keys(f"{b.encoded()}, {a.encoded()}") == [b, a]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("k1", "not 'id:base64key'"),
        ("k1:not base64!", "not valid base64"),
        (f"k1:{base64.b64encode(b'short').decode()}", "5 bytes; AES-256 needs exactly 32"),
        (f"bad id:{base64.b64encode(bytes(32)).decode()}", "key id 'bad id'"),
    ],
)
def test_bad_key_entries_are_refused_without_echoing_the_key(text: str, message: str) -> None:
    with pytest.raises(CodecConfigError, match=message) as caught:
        parse_keys(text)
    secret = text.partition(":")[2]
    assert not secret or secret not in str(caught.value)


def test_ring_must_be_non_empty_and_unique() -> None:
    with pytest.raises(CodecConfigError, match="empty"):
        EncryptionCodec([])
    key = EncryptionKey.generate("k1")
    with pytest.raises(CodecConfigError, match="repeated: k1"):
        EncryptionCodec([key, EncryptionKey.generate("k1")])


def test_key_repr_hides_the_secret() -> None:
    key = EncryptionKey.generate("k1")
    assert base64.b64encode(key.secret).decode() not in repr(key)


def test_from_env_and_from_file(tmp_path: Path) -> None:
    new, old = EncryptionKey.generate("new"), EncryptionKey.generate("old")
    assert EncryptionCodec.from_env({}) is None
    codec = EncryptionCodec.from_env({"HOSTLIFE_CODEC_KEYS": f"{new.encoded()},{old.encoded()}"})
    assert codec is not None and codec.current == new and codec.key_ids == ["new", "old"]
    keys_file = tmp_path / "codec_keys"
    keys_file.write_text(f"{old.encoded()}\n", encoding="utf-8")
    codec = EncryptionCodec.from_env({"HOSTLIFE_CODEC_KEYS_FILE": str(keys_file)})
    assert codec is not None and codec.current == old
    with pytest.raises(CodecConfigError, match="not both"):
        EncryptionCodec.from_env({"HOSTLIFE_CODEC_KEYS": new.encoded(), "HOSTLIFE_CODEC_KEYS_FILE": "x"})
    with pytest.raises(CodecConfigError, match="cannot read"):
        EncryptionCodec.from_env({"HOSTLIFE_CODEC_KEYS_FILE": str(tmp_path / "missing")})


def test_data_converter_from_env() -> None:
    assert data_converter_from_env({}) is pydantic_data_converter
    converter = data_converter_from_env({"HOSTLIFE_CODEC_KEYS": EncryptionKey.generate("k").encoded()})
    assert isinstance(converter.payload_codec, EncryptionCodec)
    assert converter.payload_converter_class is pydantic_data_converter.payload_converter_class


# ---------------------------------------------------------------------------------------------
# a real workflow on the time-skipping server


class GreetingInput(BaseModel):
    customer: Customer
    address: str
    fail: bool = False


@activity.defn
async def compose_greeting(start: GreetingInput) -> str:
    return f"Dear {start.customer.name} <{start.customer.email}>, {start.address}"


@workflow.defn
class GreetCustomerWorkflow:
    @workflow.run
    async def run(self, start: GreetingInput) -> str:
        greeting = await workflow.execute_activity(
            compose_greeting, start, start_to_close_timeout=timedelta(seconds=30)
        )
        if start.fail:
            raise ApplicationError(f"mailbox {start.customer.email} refused", type="MailboxRefused")
        return greeting


def encrypted_client(env: WorkflowEnvironment, converter: DataConverter) -> Client:
    """Another client on the same server connection, with the codec in its data converter."""
    config = env.client.config()
    config["data_converter"] = converter
    return Client(**config)


async def run_greeting(client: Client, *, fail: bool = False) -> str:
    """Run the workflow on `client` with its own worker; return the workflow id."""
    task_queue = str(uuid.uuid4())
    workflow_id = f"greet-{uuid.uuid4()}"
    start = GreetingInput(
        customer=Customer(id="c-1", email=EMAIL, name=NAME, language="cs"),
        address="Vinohradská 12, Praha",
        fail=fail,
    )
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as executor:
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[GreetCustomerWorkflow],
            activities=[compose_greeting],
            activity_executor=executor,
            # the test workflow lives in this module, which imports pytest; the codec runs outside any
            # sandbox anyway, so the sandbox adds nothing to what is tested here
            workflow_runner=UnsandboxedWorkflowRunner(),
        ):
            handle = await client.start_workflow(
                GreetCustomerWorkflow.run, start, id=workflow_id, task_queue=task_queue
            )
            if fail:
                with pytest.raises(WorkflowFailureError) as caught:
                    await handle.result()
                assert isinstance(caught.value.cause, ApplicationError)
                assert caught.value.cause.message == f"mailbox {EMAIL} refused"
            else:
                assert await handle.result() == f"Dear {NAME} <{EMAIL}>, Vinohradská 12, Praha"
    return workflow_id


def stored_bytes(history: WorkflowHistory) -> bytes:
    return b"".join(event.SerializeToString() for event in history.events)


def personal_data_in(history: WorkflowHistory) -> list[str]:
    raw = stored_bytes(history)
    return [text for text in (EMAIL, NAME, "Vinohradská") if text.encode() in raw]


async def test_plain_history_does_hold_the_e_mail(env: WorkflowEnvironment) -> None:
    """The control: without the codec the check below would find the address, so it can fail."""
    workflow_id = await run_greeting(env.client)
    history = await env.client.get_workflow_handle(workflow_id).fetch_history()
    assert personal_data_in(history) == [EMAIL, NAME, "Vinohradská"]


async def test_encrypted_history_holds_no_personal_data(env: WorkflowEnvironment) -> None:
    keys = f"{EncryptionKey.generate('2026-06').encoded()}"
    client = encrypted_client(env, data_converter_from_env({"HOSTLIFE_CODEC_KEYS": keys}))
    workflow_id = await run_greeting(client)

    plain = env.client.get_workflow_handle(workflow_id)  # no codec: sees what the server stores
    history = await plain.fetch_history()
    assert personal_data_in(history) == []
    started = history.events[0].workflow_execution_started_event_attributes
    (stored_input,) = started.input.payloads
    assert stored_input.metadata["encoding"] == ENCODING
    assert stored_input.metadata[KEY_ID_METADATA] == b"2026-06"
    # the encrypted client reads the result back in clear
    assert await client.get_workflow_handle(workflow_id).result() == (
        f"Dear {NAME} <{EMAIL}>, Vinohradská 12, Praha"
    )


async def test_failure_messages_are_encrypted_too(env: WorkflowEnvironment) -> None:
    keys = EncryptionKey.generate("k1").encoded()
    client = encrypted_client(env, data_converter_from_env({"HOSTLIFE_CODEC_KEYS": keys}))
    workflow_id = await run_greeting(client, fail=True)
    history = await env.client.get_workflow_handle(workflow_id).fetch_history()
    assert personal_data_in(history) == []
    assert b"MailboxRefused" in stored_bytes(history)  # the failure type stays readable for ops

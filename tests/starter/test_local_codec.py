"""`make run`'s own key ring: made once (0600), reused, and never used when the environment has keys."""

from __future__ import annotations

from pathlib import Path

from starter.codec import KEYS_ENV, KEYS_FILE_ENV, EncryptionCodec, EncryptionKey
from starter.local_codec import KEYS_FILE, ensure_local_keys, keys_environ


def test_the_first_run_makes_a_private_key_ring_and_later_runs_reuse_it(tmp_path: Path) -> None:
    env = keys_environ(tmp_path, {}, create=True)
    path = tmp_path / KEYS_FILE
    assert env[KEYS_FILE_ENV] == str(path)
    assert path.stat().st_mode & 0o777 == 0o600
    first = path.read_text(encoding="utf-8")
    codec = EncryptionCodec.from_env(env)
    assert codec is not None and codec.current.key_id.startswith("local-")
    assert ensure_local_keys(tmp_path) == path and path.read_text(encoding="utf-8") == first
    # The CLI and a second worker find it without creating anything.
    assert keys_environ(tmp_path, {})[KEYS_FILE_ENV] == str(path)


def test_nothing_is_written_or_read_when_keys_are_configured_or_absent(tmp_path: Path) -> None:
    configured = {KEYS_ENV: EncryptionKey.generate("ops").encoded()}
    assert keys_environ(tmp_path, configured, create=True) == configured
    assert not (tmp_path / KEYS_FILE).exists()
    assert keys_environ(tmp_path, {}) == {}  # no ring made by make run: clear payloads, as before

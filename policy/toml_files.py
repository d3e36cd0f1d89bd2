"""Reading the policy's TOML files (catalog, commerce rules, plans) one way, with one set of errors.

Each file is either the shipped one inside the `policy` package or ops' own path; any failure to
read or decode it becomes the caller's own error type with the file named, so a bad file is
refused at start with a message that says which file and why, never a traceback.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def read_policy_toml(
    path: str | Path | None, shipped: str, what: str, error: type[Exception]
) -> tuple[dict[str, Any], str]:
    """The decoded TOML of ops' file at `path`, or of the shipped `policy/<shipped>`, and its name.

    `what` names the file in messages ("catalog", "commerce rules"); `error` is raised for an
    unreadable, non-UTF-8 or invalid file.
    """
    source = f"policy/{shipped}" if path is None else str(path)
    verb = "are" if what.endswith("s") else "is"
    try:
        if path is None:
            text = resources.files("policy").joinpath(shipped).read_text(encoding="utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
        return tomllib.loads(text), source
    except OSError as exc:
        raise error(f"cannot read {what} {source}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{what} {source} {verb} not UTF-8: {exc.reason} at byte {exc.start}") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what} {source} {verb} not valid TOML: {exc}") from None


def load_policy_toml(
    path: str | Path | None,
    shipped: str,
    what: str,
    error: type[Exception],
    parse: Callable[[dict[str, Any]], T],
) -> T:
    """Read the file (see `read_policy_toml`) and parse it; a parse error is prefixed with the file."""
    raw, source = read_policy_toml(path, shipped, what, error)
    try:
        return parse(raw)
    except error as exc:
        raise error(f"{source}: {exc}") from None

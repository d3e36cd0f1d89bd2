"""Configuration from environment variables, with the defaults `make run` uses.

| variable | default | meaning |
|---|---|---|
| HOSTLIFE_TEMPORAL_ADDRESS | 127.0.0.1:7233 | Temporal frontend |
| HOSTLIFE_NAMESPACE | default | Temporal namespace |
| HOSTLIFE_TASK_QUEUE | hostlife-lifecycle | lifecycle task queue |
| HOSTLIFE_DATA_DIR | .data | dev-server database, billing ledger, caught mail |
| HOSTLIFE_CATALOG | (shipped catalog) | ops' own policy catalog file |
| HOSTLIFE_LOG_LEVEL | INFO | log level |
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel

from workflows import TASK_QUEUE


class Settings(BaseModel):
    temporal_address: str = "127.0.0.1:7233"
    namespace: str = "default"
    task_queue: str = TASK_QUEUE
    data_dir: Path = Path(".data")
    catalog_path: Path | None = None
    log_level: str = "INFO"

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        catalog = env.get("HOSTLIFE_CATALOG")
        return cls(
            temporal_address=env.get(
                "HOSTLIFE_TEMPORAL_ADDRESS", cls.model_fields["temporal_address"].default
            ),
            namespace=env.get("HOSTLIFE_NAMESPACE", "default"),
            task_queue=env.get("HOSTLIFE_TASK_QUEUE", TASK_QUEUE),
            data_dir=Path(env.get("HOSTLIFE_DATA_DIR", ".data")),
            catalog_path=Path(catalog) if catalog else None,
            log_level=env.get("HOSTLIFE_LOG_LEVEL", "INFO"),
        )

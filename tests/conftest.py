"""A time-skipping server per test module, started from the installed binary.

One per module, not per session: a workflow a module leaves behind with a task no worker will
ever complete (a continue-as-new just before its worker stopped, say) holds the test server's
time-skipping lock, and every later `env.sleep` on that server times out. A server starts in
well under a second, so no module can stall another.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from starter.temporal_setup import installed_binary, register_search_attributes


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(installed_binary("temporal-test-server")),
        data_converter=pydantic_data_converter,
    ) as environment:
        await register_search_attributes(environment.client)
        yield environment

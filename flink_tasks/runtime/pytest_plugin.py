"""pytest plugin: a session-scoped ``local_runtime`` fixture (real Kafka + StateFun).

Use it with ``pytest_plugins = ["flink_tasks.runtime.pytest_plugin"]`` in the root
``conftest.py`` (or ``-p flink_tasks.runtime.pytest_plugin``), then::

    @pytest.mark.integration
    def test_something(local_runtime: LocalRuntime) -> None:
        producer = KafkaProducer(bootstrap_servers=local_runtime.bootstrap_servers)

The fixture reads the settings from ``FLINK_TASKS_*`` environment variables
(:meth:`LocalRuntimeSettings.from_env`). If ``flink-tasks local up`` already runs with the same
settings it is reused and left running; otherwise the fixture starts the runtime and stops it
when the session ends.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flink_tasks.runtime.local import LocalRuntime
from flink_tasks.runtime.settings import LocalRuntimeSettings


@pytest.fixture(scope="session")
def local_runtime_settings() -> LocalRuntimeSettings:
    """Settings of the session's runtime; override this fixture to change them."""
    return LocalRuntimeSettings.from_env()


@pytest.fixture(scope="session")
def local_runtime(local_runtime_settings: LocalRuntimeSettings) -> Iterator[LocalRuntime]:
    """Start (or reuse) the local runtime for the whole test session."""
    runtime = LocalRuntime(local_runtime_settings)
    runtime.start()
    try:
        yield runtime
    finally:
        runtime.stop()  # only what this fixture started

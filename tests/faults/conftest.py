"""Fixtures of the fault-injection suite. Every runtime here is isolated: its own run dir under
pytest's tmp dir and its own ports in 61000-62999; everything is stopped at the end."""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.faults.harness import RESULTS, FaultStack, fault_stack

# kafka-python (3.0.12) leaks sockets of connections to a broker that was killed (they surface
# as ResourceWarnings when collected, in whatever test runs then); the suite kills brokers on
# purpose, so these are expected here and flushed before the package ends.
_KAFKA_LEAKS = (
    "ignore::pytest.PytestUnraisableExceptionWarning",
    "ignore::ResourceWarning",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.path).startswith(here):
            for spec in _KAFKA_LEAKS:
                item.add_marker(pytest.mark.filterwarnings(spec))


@pytest.fixture(scope="package", autouse=True)
def _flush_leaked_sockets() -> Iterator[None]:
    yield
    for _ in range(3):
        gc.collect()


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    """The shared fault runtime: at-least-once egress, worker in its own process."""
    with fault_stack(tmp_path_factory.mktemp("faults-shared"), 61000) as s:
        yield s


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    terminalreporter.section("fault-injection results")
    for row in RESULTS:
        terminalreporter.write_line(json.dumps(row, sort_keys=True))
    out = os.environ.get("FLINK_TASKS_FAULTS_REPORT")
    if out:
        with open(out, "w") as fh:
            json.dump(RESULTS, fh, indent=2, sort_keys=True)

"""Fixtures of the fault-injection suite. Every runtime here is isolated: its own run dir under
pytest's tmp dir and its own ports in 61000-62999; everything is stopped at the end."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.faults.harness import RESULTS, FaultStack, fault_stack


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

"""The package layout is the architecture: lower layers never import higher ones."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FORBIDDEN = {
    "flink_tasks.pipeline": [
        "aiohttp",
        "kafka",
        "statefun",
        "flink_tasks.engine",
        "flink_tasks.worker",
    ],
    "flink_tasks.engine": [
        "aiohttp",
        "kafka",
        "statefun",
        "flink_tasks.worker",
        "flink_tasks.runtime",
    ],
    "flink_tasks.statefun": ["aiohttp", "kafka", "flink_tasks.engine", "flink_tasks.worker"],
    "flink_tasks": ["aiohttp", "kafka", "statefun"],
}


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_layer_imports(module: str) -> None:
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(subprocess.check_output([sys.executable, "-c", code], text=True))
    for forbidden in FORBIDDEN[module]:
        offenders = [m for m in loaded if m == forbidden or m.startswith(forbidden + ".")]
        assert not offenders, f"{module} imports {offenders}"


def test_public_api() -> None:
    import flink_tasks

    assert {"FlinkTasks", "in_parallel", "RetryPolicy", "TaskError", "PipelineBuilder"} <= set(
        flink_tasks.__all__
    )
    from flink_tasks.testing import PipelineEnvironment

    assert hasattr(PipelineEnvironment, "in_process") and hasattr(
        PipelineEnvironment, "start_local"
    )

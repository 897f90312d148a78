"""Every example of the user guide (README: Pipelines, examples/seed.py) on the real runtime.

Kafka -> StateFun -> worker -> Kafka.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from examples.seed import EXAMPLES
from flink_tasks import PipelineBuilder
from flink_tasks.testing import PipelineEnvironment

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", sorted(set(EXAMPLES) - {"num_stages_with_initial"}))
async def test_seed_example(local_env: PipelineEnvironment, name: str) -> None:
    make_pipeline, expected = EXAMPLES[name]
    assert await local_env.submit_async(make_pipeline()) == expected


@pytest.mark.slow
async def test_seed_ten_thousand_tasks_in_ten_stages_with_initial_args(
    local_env: PipelineEnvironment,
) -> None:
    make_pipeline: Callable[[], PipelineBuilder]
    make_pipeline, expected = EXAMPLES["num_stages_with_initial"]
    pipeline = make_pipeline()
    started = time.perf_counter()
    result: Any = await local_env.submit_async(pipeline, timeout=timedelta(minutes=10))
    elapsed = time.perf_counter() - started
    print(f"10,000-task seed example on the real runtime: {elapsed:.1f} s")
    assert result == expected

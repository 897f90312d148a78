"""The tests of tests/acceptance, run against docker-compose.yml (``--flink-env=compose``).

Skipped unless asked for, and skipped with the reason where no Docker engine is reachable (as on
this project's machines).
"""

from __future__ import annotations

import pytest

from examples.seed import EXAMPLES
from flink_tasks.testing import PipelineEnvironment
from tests.acceptance import test_seed_pipelines as acceptance

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", sorted(set(EXAMPLES) - {"num_stages_with_initial"}))
async def test_seed_example_on_compose(compose_env: PipelineEnvironment, name: str) -> None:
    await acceptance.test_seed_example(compose_env, name)


@pytest.mark.slow
async def test_seed_ten_thousand_tasks_on_compose(compose_env: PipelineEnvironment) -> None:
    await acceptance.test_seed_ten_thousand_tasks_in_ten_stages_with_initial_args(compose_env)

"""The client distribution installs and passes its tests without the worker's dependencies.

Runs ``client/scripts/test-isolated.sh``: a fresh virtualenv with only the core ``flink-tasks``
(no extras) and ``flink-tasks-client`` (+ the test tools), checks that aiohttp is absent and rich
present, that the CLI runs, then runs ``client/tests`` there, against the session runtime's Kafka
broker (the client tests make fresh topics per test) rather than a broker of their own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from flink_tasks_client import FlinkTasksClient

from flink_tasks.testing import PipelineEnvironment

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "client" / "scripts" / "test-isolated.sh"


def test_client_tests_pass_in_a_venv_without_the_worker_dependencies(
    tmp_path: Path, local_env: PipelineEnvironment
) -> None:
    assert isinstance(local_env.client, FlinkTasksClient)
    env = dict(
        os.environ,
        FLINK_TASKS_ISOLATED_VENV=str(tmp_path / "venv"),
        FLINK_TASKS_CLIENT_TEST_BOOTSTRAP=local_env.client.settings.bootstrap_servers,
    )
    # The parent's venv must not leak into the isolated one.
    for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
        env.pop(name, None)
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if Path(sys.prefix) not in Path(p).parents
    )
    done = subprocess.run(
        ["bash", str(SCRIPT), "-q"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert " passed" in done.stdout, output[-4000:]

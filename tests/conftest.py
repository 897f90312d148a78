"""Suite-wide fixtures: the real local runtime with a worker serving the test tasks.

The order of a whole run: unit and in-process tests first (the fastest failures), then the
modules with runtimes of their own, then those on the session runtime (``local_env``,
``local_runtime``) next to each other, so that runtime is not idle beside the others, and the
client's tests last.

`make test TEST_LANES=2` runs two lanes at once (pytest-xdist, `--dist loadgroup`): the
fault-injection package in one, everything else in the other. Most of a fault scenario's time
is an outage or a long task being waited out, which leaves a core free for the other lane; the
two lanes share no runtime and no ports (tests/faults/harness.py: 61000-62999)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from flink_tasks_client import FlinkTasksClient

from examples.seed import tasks as seed_tasks
from flink_tasks import FlinkTasks
from flink_tasks.config import TASK_BUCKETS_VAR, task_buckets_from_env
from flink_tasks.testing import PipelineEnvironment
from tests.faults.harness import RESULTS
from tests.pipelines import tasks as test_tasks

ALL_TASKS = FlinkTasks().include(test_tasks).include(seed_tasks)

HERE = Path(__file__).resolve().parent
FAULTS = HERE / "faults"
SESSION_RUNTIME = frozenset({"local_env", "local_runtime"})


def _rank(path: Path, uses_session_runtime: bool) -> int:
    if HERE not in path.parents:
        return 4  # client/tests: a Kafka broker of their own, for the rest of the session
    part = path.relative_to(HERE).parts[0]
    # tests/cluster overrides `local_env` with its own cluster: it is not a session-runtime user
    if uses_session_runtime and part != "cluster":
        return 3
    return {"unit": 0, "inprocess": 1}.get(part, 2)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--task-buckets",
        type=int,
        default=None,
        metavar="N",
        help="run with EngineSettings.task_buckets=N wherever the tests use the default engine "
        "settings: sets FLINK_TASKS_TASK_BUCKETS for the in-process and local environments and "
        "for the workers the tests start (docs/decisions.md, 'Task addressing revisited')",
    )


def pytest_configure(config: pytest.Config) -> None:
    buckets = config.getoption("--task-buckets")
    if buckets is not None:
        os.environ[TASK_BUCKETS_VAR] = str(buckets)


def pytest_report_header(config: pytest.Config) -> str:
    return f"task buckets: {task_buckets_from_env()}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    uses: dict[Path, bool] = {}
    for item in items:
        uses[item.path] = uses.get(item.path, False) or bool(
            SESSION_RUNTIME & set(getattr(item, "fixturenames", ()))
        )
    items.sort(key=lambda item: _rank(item.path, uses[item.path]))  # stable: modules stay whole
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_lane(item.path)))


def _lane(path: Path) -> str:
    return "faults" if FAULTS in path.parents else "main"


# The fault scenarios' results table is printed by the process that prints the summary: under
# xdist the lanes' workers hand their rows to it when they end.


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["fault_results"] = list(RESULTS)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    RESULTS.extend(node.workeroutput.get("fault_results", []))


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


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """A test that runs the CLI in-process configures logging to that test's captured stderr;
    left in place, every later warning of any thread fails to write there ("--- Logging error
    ---" in the run's output) and the root level stays changed."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="session")
async def local_env() -> AsyncIterator[PipelineEnvironment]:
    """Kafka + StateFun (started, or reused when `flink-tasks local up` runs) and a worker here."""
    async with PipelineEnvironment.start_local(ALL_TASKS, client=FlinkTasksClient) as env:
        yield env

"""How task buckets are set: `flink-tasks serve --task-buckets N`, else `FLINK_TASKS_TASK_BUCKETS`,
else 8 (0 turns them off); read the same way by the testing environments; refused when not a
whole number >= 0."""

from __future__ import annotations

from pathlib import Path

import pytest

from flink_tasks.cli import main as cli_main
from flink_tasks.config import TASK_BUCKETS_VAR, task_buckets_from_env
from flink_tasks.engine import EngineSettings
from flink_tasks.testing import PipelineEnvironment
from flink_tasks.worker.metrics import MULTIPROC_DIR_VAR
from flink_tasks.worker.serve import ServeOptions, Supervisor, build_worker
from tests.pipelines import tasks

TARGET = "tests.pipelines:tasks"


def test_the_variable_is_a_whole_number_and_unset_means_the_default() -> None:
    assert task_buckets_from_env({}) == 8 == EngineSettings().task_buckets
    assert task_buckets_from_env({TASK_BUCKETS_VAR: " "}) == 8
    assert task_buckets_from_env({TASK_BUCKETS_VAR: "0"}) == 0
    assert task_buckets_from_env({TASK_BUCKETS_VAR: "3"}) == 3
    for bad in ("-1", "eight", "2.5"):
        with pytest.raises(ValueError, match=TASK_BUCKETS_VAR):
            task_buckets_from_env({TASK_BUCKETS_VAR: bad})


def test_engine_settings_refuse_a_negative_count() -> None:
    with pytest.raises(ValueError, match="task_buckets must be >= 0"):
        EngineSettings(task_buckets=-1)


def test_serve_takes_the_flag_over_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TASK_BUCKETS_VAR, "4")
    for options, expected in (
        (ServeOptions(TARGET, pool="thread"), 4),
        (ServeOptions(TARGET, pool="thread", task_buckets=0), 0),
        (ServeOptions(TARGET, pool="thread", task_buckets=8), 8),
    ):
        worker = build_worker(tasks, options)
        assert worker.reports is not None
        worker.reports.close()
        assert worker.engine.task_buckets == expected
    monkeypatch.delenv(TASK_BUCKETS_VAR)
    for options, expected in ((ServeOptions(TARGET, pool="thread"), 8),):
        worker = build_worker(tasks, options)
        assert worker.reports is not None
        worker.reports.close()
        assert worker.engine.task_buckets == expected


def test_the_supervisor_passes_the_count_to_its_workers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(MULTIPROC_DIR_VAR, str(tmp_path))  # not a temporary folder left behind
    command = Supervisor(ServeOptions(TARGET, workers=2, task_buckets=8)).child_command()
    assert command[command.index("--task-buckets") + 1] == "8"


def test_serve_refuses_a_bad_count_before_starting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["serve", TARGET, "--task-buckets", "-2"]) == 2
    assert "--task-buckets must be >= 0, got -2" in capsys.readouterr().err
    monkeypatch.setenv(TASK_BUCKETS_VAR, "many")
    assert cli_main(["serve", TARGET]) == 2
    assert f"{TASK_BUCKETS_VAR} must be a whole number >= 0, got 'many'" in capsys.readouterr().err


async def test_the_in_process_environment_reads_the_variable_for_its_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(TASK_BUCKETS_VAR, "3")
    env = PipelineEnvironment.in_process(tasks)
    assert env.worker is not None and env.worker.engine.task_buckets == 3
    explicit = PipelineEnvironment.in_process(tasks, engine=EngineSettings(task_buckets=0))
    assert explicit.worker is not None and explicit.worker.engine.task_buckets == 0

"""The CLI's parts that need no Kafka: parsing, loading a pipeline, output, the watch view."""

from __future__ import annotations

import io
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from flink_tasks_client import cli
from rich.console import Console

from flink_tasks import FlinkTasks, TaskException, in_parallel
from flink_tasks._proto import events_pb2, messages_pb2
from flink_tasks.records import PipelineEvent, pipeline_event
from flink_tasks.types import PipelineStatus

tasks = FlinkTasks()


@tasks.bind()
def double(x: int) -> int:
    return 2 * x


PIPELINE = double.send(1)


def factory() -> object:
    return double.send(2)


def not_a_factory() -> object:
    return 42


def test_load_pipeline_from_a_builder_or_a_factory() -> None:
    assert cli.load_pipeline(f"{__name__}:PIPELINE") is PIPELINE
    assert cli.load_pipeline(f"{__name__}:factory").entries
    assert cli.load_pipeline(f"{__name__}:double.send").entries  # zero-argument call


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "expected MODULE:PIPELINE"),
        (":x", "expected MODULE:PIPELINE"),
        ("no_such_module_xyz:x", "cannot import"),
        (f"{__name__}:missing", "has no attribute"),
        (f"{__name__}:not_a_factory", "returned a int"),
        (f"{__name__}:tasks", "not a pipeline or a function"),
    ],
)
def test_load_pipeline_errors(spec: str, message: str) -> None:
    with pytest.raises(cli.UsageError, match=message):
        cli.load_pipeline(spec)


def test_load_pipeline_imports_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_cli_pipelines.py").write_text(
        "from flink_tasks import FlinkTasks\n"
        "tasks = FlinkTasks()\n"
        "@tasks.bind()\n"
        "def twice(x):\n"
        "    return 2 * x\n"
        "def build():\n"
        "    return twice.send(5)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert cli.load_pipeline("my_cli_pipelines:build").entries


def test_default_bootstrap_servers() -> None:
    assert cli.default_bootstrap_servers({}) == "127.0.0.1:19092"
    assert cli.default_bootstrap_servers({"FLINK_TASKS_KAFKA_PORT": "39092"}) == "127.0.0.1:39092"
    env = {"FLINK_TASKS_BOOTSTRAP_SERVERS": "kafka:9092", "FLINK_TASKS_KAFKA_PORT": "1"}
    assert cli.default_bootstrap_servers(env) == "kafka:9092"


def test_common_options_become_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLINK_TASKS_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("FLINK_TASKS_KAFKA_PORT", raising=False)
    args = cli.build_parser().parse_args(
        ["status", "abc", "--reply-topic", "r", "--timeout", "5min", "--connect-timeout", "2s"]
    )
    settings = cli.settings_from_args(args)
    assert settings.bootstrap_servers == "127.0.0.1:19092"
    assert settings.reply_topic == "r"
    assert settings.default_timeout == timedelta(minutes=5)
    assert settings.connect_timeout == timedelta(seconds=2)
    assert args.pipeline_id == "abc"


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["status"])
    assert exited.value.code == 2
    with pytest.raises(SystemExit) as exited:
        cli.main(["status", "x", "--timeout", "soon"])
    assert exited.value.code == 2
    assert "expected a duration" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["submit", "a:b", "--no-wait", "--watch"])
    assert cli.main(["submit", "no_colon"]) == 2


def test_format_value() -> None:
    assert cli.format_value(13.0) == "13.0"
    assert cli.format_value([6, (1, 2)]) == "[6, [1, 2]]"
    assert cli.format_value("é") == '"é"'
    assert cli.format_value(None) == "null"
    exception = TaskException(
        id="t", type="x", exception_type="builtins.ValueError", exception_message="m"
    )
    assert '"exception_type": "builtins.ValueError"' in cli.format_value([exception])
    assert cli.format_value(object()).startswith('"<object object')


def _event(pipeline_id: str, root: str, **kind: object) -> PipelineEvent:
    raw = events_pb2.PipelineEvent(pipeline_id=pipeline_id, root_pipeline_id=root, **kind)  # type: ignore[arg-type]
    return pipeline_event(raw)


def test_watch_view_follows_events() -> None:
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=False, color_system=None)
    view = cli.WatchView("root", console)
    structure = in_parallel([double.send(i) for i in range(3)]).to_proto()
    view.apply(
        _event("root", "root", pipeline_created=events_pb2.PipelineCreated(pipeline=structure))
    )
    running = events_pb2.PipelineStatusChanged(status=messages_pb2.PIPELINE_STATUS_RUNNING)
    view.apply(_event("root", "root", status_changed=running))
    view.apply(_event("child", "root", pipeline_created=events_pb2.PipelineCreated()))
    for done in (1, 2, 3):
        progress = events_pb2.GroupProgress(group_id="g0123456789", completed=done, total=3)
        view.apply(_event("root", "root", group_progress=progress))
    view.apply(
        _event("root", "root", tasks_skipped=events_pb2.PipelineTasksSkipped(task_ids=["a"]))
    )
    completed = events_pb2.PipelineStatusChanged(status=messages_pb2.PIPELINE_STATUS_COMPLETED)
    view.apply(_event("root", "root", status_changed=completed))
    # a late RUNNING (e.g. a status reply overtaken by events) never replaces a final status
    view.set_status(PipelineStatus.RUNNING, source="asked")
    assert view.status == PipelineStatus.COMPLETED
    console.print(view.render())
    text = out.getvalue()
    assert "status RUNNING" in text and "status COMPLETED" in text
    assert "skipped 1 task" in text
    assert "1 entry" in text
    assert "0/1 finished" in text
    assert "group g0123456" in text and "3/3" in text

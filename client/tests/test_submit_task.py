"""``submit --task TYPE_NAME --args JSON [--kwargs JSON]``: the parts that need no Kafka."""

from __future__ import annotations

import pytest
from flink_tasks_client import cli

from flink_tasks import FlinkTasks


def _pipeline(*argv: str) -> object:
    args = cli.build_parser().parse_args(["submit", *argv])
    from flink_tasks_client import submit_task

    return submit_task.task_pipeline(args)


def test_a_task_by_name_builds_the_entry_of_a_reference() -> None:
    built = _pipeline(
        "--task", "myapp.tasks.scale", "--args", '[6, "x", null]', "--kwargs", '{"by": [1, 2]}'
    )
    expected = FlinkTasks().ref("myapp.tasks.scale").send(6, "x", None, by=[1, 2])
    got, want = built.to_proto(), expected.to_proto()  # type: ignore[attr-defined]
    for proto in (got, want):
        proto.id = ""
        proto.entries[0].task.task_id = ""
    assert got == want
    elsewhere = _pipeline("--task", "t", "--namespace", "shop", "--worker-name", "pricing")
    task = elsewhere.to_proto().entries[0].task  # type: ignore[attr-defined]
    assert (task.task_type, task.namespace, task.worker_name, task.has_args) == (
        "t",
        "shop",
        "pricing",
        False,
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "t", "--args", "[1,"], "--args is not valid JSON (Expecting value"),
        (["--task", "t", "--args", '{"a": 1}'], "--args must be a JSON array, got dict"),
        (["--task", "t", "--kwargs", "[1]"], "--kwargs must be a JSON object, got list"),
        (["--task", "t", "--kwargs", "{'a': 1}"], "--kwargs is not valid JSON"),
        (["--task", ""], "--task needs a task type name"),
        (["a:b", "--task", "t"], "not both"),
        (["a:b", "--args", "[1]"], "--args only go with --task"),
        ([], "give MODULE:PIPELINE, or --task TYPE_NAME"),
    ],
)
def test_bad_task_arguments_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["submit", *argv, "--bootstrap-servers", "127.0.0.1:9"]) == cli.EXIT_USAGE
    assert message in capsys.readouterr().err

"""The client's commands join `flink-tasks` through an entry point; a missing or broken
distribution is a clear message, never a silently shorter command list."""

from __future__ import annotations

import importlib.metadata
from typing import Any

import pytest

from flink_tasks import cli


def _entry_points(*found: importlib.metadata.EntryPoint) -> Any:
    return lambda group: [e for e in found if e.group == group]


def test_the_installed_client_adds_its_commands() -> None:
    choices = cli.build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(cli.CLIENT_COMMANDS) <= set(choices)
    assert choices["submit"].get_default("handler").__module__ == "flink_tasks_client.cli"


def test_without_the_client_its_commands_say_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(importlib.metadata, "entry_points", _entry_points())
    assert cli.main(["submit", "examples.seed:fan_in", "--id", "x"]) == 2
    assert capsys.readouterr().err == (
        "flink-tasks submit: this command comes with the flink-tasks-client distribution, which "
        "is not installed (pip install flink-tasks-client)\n"
    )


def test_a_broken_plugin_is_an_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = importlib.metadata.EntryPoint(
        name="client", value="no_such_module_xyz:register", group=cli.COMMANDS_GROUP
    )
    monkeypatch.setattr(importlib.metadata, "entry_points", _entry_points(broken))
    with pytest.raises(RuntimeError, match="cannot load flink-tasks commands 'client' "):
        cli.build_parser()


def test_start_local_finds_the_kafka_client_or_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flink_tasks_client import FlinkTasksClient

    from flink_tasks.testing._local import installed_client

    assert installed_client() is FlinkTasksClient
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **_: [])
    with pytest.raises(RuntimeError, match="start_local needs a Kafka client: install the "):
        installed_client()

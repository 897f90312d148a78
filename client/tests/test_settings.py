"""`ClientSettings`: defaults, validation and `from_env`."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flink_tasks_client import DEFAULT_MAX_REQUEST_BYTES, ClientSettings


def test_defaults() -> None:
    settings = ClientSettings()
    assert settings.bootstrap_servers == "127.0.0.1:19092"
    assert settings.request_topic == "flink-tasks.requests"
    assert settings.reply_topic == "flink-tasks.replies"
    assert settings.default_timeout == timedelta(seconds=60)
    assert settings.read_committed
    assert not settings.allow_pickle
    assert settings.max_request_bytes == DEFAULT_MAX_REQUEST_BYTES < 1024 * 1024


def test_from_env() -> None:
    settings = ClientSettings.from_env(
        environ={
            "FLINK_TASKS_BOOTSTRAP_SERVERS": "kafka:9092",
            "FLINK_TASKS_DEFAULT_TIMEOUT": "5min",
            "FLINK_TASKS_CONNECT_TIMEOUT": "500ms",
            "FLINK_TASKS_READ_COMMITTED": "false",
            "FLINK_TASKS_MAX_REQUEST_BYTES": "2048",
            "FLINK_TASKS_REPLY_TOPIC": "my.replies",
            "OTHER": "ignored",
        },
        allow_pickle=True,
    )
    assert settings.bootstrap_servers == "kafka:9092"
    assert settings.default_timeout == timedelta(minutes=5)
    assert settings.connect_timeout == timedelta(milliseconds=500)
    assert not settings.read_committed
    assert settings.allow_pickle
    assert settings.max_request_bytes == 2048
    assert settings.reply_topic == "my.replies"


def test_from_env_errors_name_the_variable() -> None:
    with pytest.raises(ValueError, match="FLINK_TASKS_DEFAULT_TIMEOUT"):
        ClientSettings.from_env(environ={"FLINK_TASKS_DEFAULT_TIMEOUT": "soon"})
    with pytest.raises(ValueError, match="FLINK_TASKS_READ_COMMITTED"):
        ClientSettings.from_env(environ={"FLINK_TASKS_READ_COMMITTED": "maybe"})


def test_validation() -> None:
    with pytest.raises(ValueError, match="positive"):
        ClientSettings(default_timeout=timedelta(0))
    with pytest.raises(TypeError, match="timedelta"):
        ClientSettings(default_timeout=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reply_topic"):
        ClientSettings(reply_topic="")

"""One duration syntax, one env parser and one MODULE:ATTR loader for worker, runtime, client."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from flink_tasks_client import ClientSettings

from flink_tasks.config import load_attribute, parse_duration
from flink_tasks.runtime.settings import LocalRuntimeSettings


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30", 30),
        ("30s", 30),
        ("2sec", 2),
        ("5m", 300),
        ("5min", 300),
        ("2h", 7200),
        ("1d", 86400),
        (" 1.5 S ", 1.5),
    ],
)
def test_one_duration_syntax_everywhere(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)
    client = ClientSettings.from_env(environ={"FLINK_TASKS_DEFAULT_TIMEOUT": text})
    assert client.default_timeout == timedelta(seconds=seconds)
    runtime = LocalRuntimeSettings.from_env(environ={"FLINK_TASKS_CHECKPOINT_INTERVAL": text})
    assert runtime.checkpoint_interval == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("soon", "expected a duration such as 500ms, 30s, 5min, 2h or 1d, got 'soon'"),
        ("-1s", "expected a duration such as 500ms, 30s, 5min, 2h or 1d, got '-1s'"),
        ("5 weeks", "unknown duration unit 'weeks' in '5 weeks' (use ms, s, min, h or d)"),
    ],
)
def test_a_bad_duration_is_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_duration(text)
    with pytest.raises(ValueError) as raised:
        ClientSettings.from_env(environ={"FLINK_TASKS_DEFAULT_TIMEOUT": text})
    assert (
        str(raised.value) == f"environment variable FLINK_TASKS_DEFAULT_TIMEOUT={text!r}: {message}"
    )


def test_load_attribute_errors_name_the_problem() -> None:
    assert load_attribute("flink_tasks.config:parse_duration", example="m:a") is parse_duration
    with pytest.raises(ValueError, match=r"expected MODULE:ATTR \(e.g. m:a\)"):
        load_attribute("no_colon", example="m:a")
    with pytest.raises(ValueError, match="cannot import 'no_such_module_xyz'"):
        load_attribute("no_such_module_xyz:x", example="m:a")
    with pytest.raises(ValueError, match=re.escape("'flink_tasks.config' has no attribute 'nope'")):
        load_attribute("flink_tasks.config:nope", example="m:a")

"""Reading configuration, one way for the whole project (worker, runtime, client):
durations, typed settings from the environment, and ``MODULE:ATTR`` targets."""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import sys
import types
import typing
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)\s*")
DURATION_UNITS: dict[str, float] = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "min": 60.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")

SettingsT = TypeVar("SettingsT")

#: Environment variable: `EngineSettings.task_buckets` of `flink-tasks serve` (``--task-buckets``)
#: and of the testing environments' default engine settings.
TASK_BUCKETS_VAR = "FLINK_TASKS_TASK_BUCKETS"
#: `EngineSettings.task_buckets` unless set: a pipeline address's group tasks go to 8 addresses
DEFAULT_TASK_BUCKETS = 8
#: Environment variable: `EngineSettings.inline_chain_steps` where a worker builds its own
#: settings (`Worker` without `engine=`, `flink-tasks serve`, the testing environments).
INLINE_CHAIN_STEPS_VAR = "FLINK_TASKS_INLINE_CHAIN_STEPS"


def parse_duration(text: str) -> timedelta:
    """``500ms``, ``30s``/``30sec``, ``5min``/``5m``, ``2h``, ``1d``, or a bare number of seconds.

    Raises:
        ValueError: the text is not such a duration.
    """
    match = _DURATION.fullmatch(text.lower())
    if match is None:
        raise ValueError(f"expected a duration such as 500ms, 30s, 5min, 2h or 1d, got {text!r}")
    number, unit = float(match.group(1)), match.group(2) or "s"
    if unit not in DURATION_UNITS:
        raise ValueError(f"unknown duration unit {unit!r} in {text!r} (use ms, s, min, h or d)")
    return timedelta(seconds=number * DURATION_UNITS[unit])


def parse_setting(raw: str, hint: Any) -> Any:
    """A setting's text (an environment variable, a recorded value) as the type `hint` names.

    Raises:
        ValueError: the text cannot be a value of that type.
    """
    origin = typing.get_origin(hint)
    if hint is bool:
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError("expected a boolean (true or false)")
    if hint is int:
        return int(raw)
    if hint is float:
        return float(raw)
    if hint is str:
        return raw
    if hint is Path:
        return Path(raw).expanduser().resolve()
    if hint is timedelta:
        return parse_duration(raw)
    if origin is Literal:
        if raw not in typing.get_args(hint):
            raise ValueError(f"expected one of {typing.get_args(hint)}")
        return raw
    if origin is tuple:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if origin in (typing.Union, types.UnionType):
        return parse_setting(raw, next(a for a in typing.get_args(hint) if a is not type(None)))
    raise ValueError(f"unsupported setting type {hint!r}")


def settings_from_env(
    cls: type[SettingsT],
    prefix: str,
    environ: Mapping[str, str] | None,
    overrides: Mapping[str, Any],
    *,
    aliases: Mapping[str, str] | None = None,
) -> SettingsT:
    """A settings dataclass from ``<prefix><FIELD_NAME>`` variables (``aliases``: other
    suffixes for a field); ``overrides`` win over the environment.

    Raises:
        ValueError: a variable has a value its field cannot take (the message names it).
    """
    env = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, raw in env.items():
        if not key.startswith(prefix):
            continue
        suffix = key[len(prefix) :]
        name = (aliases or {}).get(suffix, suffix.lower())
        if name not in names:
            continue
        try:
            values[name] = parse_setting(raw, hints[name])
        except ValueError as exc:
            raise ValueError(f"environment variable {key}={raw!r}: {exc}") from None
    values.update(overrides)
    return cls(**values)


def load_attribute(spec: str, *, example: str, form: str = "MODULE:ATTR") -> object:
    """Import ``package.module:attr.path`` (the current directory is importable).

    Raises:
        ValueError: `spec` is not ``MODULE:ATTR``, the module cannot be imported, or it has no
            such attribute (the message says which, with `example` of the form).
    """
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise ValueError(f"expected {form} (e.g. {example}), got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        target: object = importlib.import_module(module_name)
    except ImportError as err:
        if err.name is not None and (module_name + ".").startswith(err.name + "."):
            raise ValueError(f"cannot import {module_name!r}: {err}") from err
        raise  # a bug inside the module: its own traceback is the useful one
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no attribute {attr_path!r}") from None
    return target


def count_from_env(name: str, environ: Mapping[str, str] | None = None, default: int = 0) -> int:
    """The variable `name` as a whole number >= 0; unset or empty: `default`.

    Raises:
        ValueError: it is set to something else.
    """
    env = os.environ if environ is None else environ
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise ValueError(f"{name} must be a whole number >= 0, got {raw!r}")
    return int(raw)


def task_buckets_from_env(environ: Mapping[str, str] | None = None) -> int:
    """``FLINK_TASKS_TASK_BUCKETS``; unset: `DEFAULT_TASK_BUCKETS` (8); 0: no buckets."""
    return count_from_env(TASK_BUCKETS_VAR, environ, DEFAULT_TASK_BUCKETS)


def inline_chain_steps_from_env(environ: Mapping[str, str] | None = None) -> int:
    """``FLINK_TASKS_INLINE_CHAIN_STEPS``; unset: 0 (no inlined chain steps)."""
    return count_from_env(INLINE_CHAIN_STEPS_VAR, environ)

"""``flink-tasks submit --task TYPE_NAME --args JSON [--kwargs JSON]``: one task by its name.

The pipeline is built with `FlinkTasks.ref`, so the task's code is never imported here: the
arguments are JSON (numbers, strings, booleans, null, arrays as lists, objects as dicts).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from flink_tasks import FlinkTasks
from flink_tasks.pipeline import PipelineBuilder
from flink_tasks.pipeline.builder import DEFAULT_NAMESPACE, DEFAULT_WORKER_NAME


class TaskArgumentsError(ValueError):
    """``--task``, ``--args`` or ``--kwargs`` cannot make a pipeline (a usage error)."""


def add_arguments(submit: argparse.ArgumentParser) -> None:
    """Add ``--task``, ``--args``, ``--kwargs``, ``--namespace`` and ``--worker-name``."""
    submit.description = (
        f"{submit.description} Or submit one task by its type name with --task, its arguments "
        "given as JSON: the task's module is not imported."
    )
    by_name = submit.add_argument_group("one task by name (instead of MODULE:PIPELINE)")
    by_name.add_argument(
        "--task", metavar="TYPE_NAME", help="the task's type name, e.g. myapp.tasks.multiply"
    )
    by_name.add_argument(
        "--args", metavar="JSON", help="positional arguments, a JSON array (e.g. '[6, 7]')"
    )
    by_name.add_argument(
        "--kwargs", metavar="JSON", help="keyword arguments, a JSON object (e.g. '{\"y\": 7}')"
    )
    by_name.add_argument(
        "--namespace", help=f"the task's StateFun namespace (default {DEFAULT_NAMESPACE})"
    )
    by_name.add_argument(
        "--worker-name", help=f"the worker's function name (default {DEFAULT_WORKER_NAME})"
    )


def wants_task(args: argparse.Namespace) -> bool:
    """True if the command names a task (``--task``) rather than a ``MODULE:PIPELINE``."""
    return getattr(args, "task", None) is not None


def task_pipeline(args: argparse.Namespace) -> PipelineBuilder:
    """The one-task pipeline ``--task``/``--args``/``--kwargs`` describe.

    Raises:
        TaskArgumentsError: both or neither of ``--task`` and ``MODULE:PIPELINE``, an empty type
            name, or ``--args``/``--kwargs`` that are not a JSON array/object.
    """
    if args.pipeline is not None:
        raise TaskArgumentsError("give MODULE:PIPELINE or --task TYPE_NAME, not both")
    if not args.task:
        raise TaskArgumentsError("--task needs a task type name, e.g. myapp.tasks.multiply")
    positional = _json(args.args, "--args", list, "an array", "[6, 7]") if args.args else []
    keywords = _json(args.kwargs, "--kwargs", dict, "an object", '{"y": 7}') if args.kwargs else {}
    reference = FlinkTasks().ref(
        args.task,
        namespace=args.namespace or DEFAULT_NAMESPACE,
        worker_name=args.worker_name or DEFAULT_WORKER_NAME,
    )
    return reference.send(*positional, **keywords)


def check_pipeline_options(args: argparse.Namespace) -> None:
    """``--args`` and the others belong to ``--task``; a pipeline needs MODULE:PIPELINE."""
    given = [
        option
        for option, value in (
            ("--args", args.args),
            ("--kwargs", args.kwargs),
            ("--namespace", args.namespace),
            ("--worker-name", args.worker_name),
        )
        if value is not None
    ]
    if given:
        raise TaskArgumentsError(f"{', '.join(given)} only go with --task TYPE_NAME")
    if args.pipeline is None:
        raise TaskArgumentsError("give MODULE:PIPELINE, or --task TYPE_NAME to submit one task")


def _json(text: str, option: str, kind: type[Any], what: str, example: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise TaskArgumentsError(
            f"{option} is not valid JSON ({err.msg} at line {err.lineno} column {err.colno}): "
            f"{text!r}; expected {what}, e.g. '{example}'"
        ) from None
    if not isinstance(value, kind):
        raise TaskArgumentsError(
            f"{option} must be a JSON {what[3:] if what.startswith('an ') else what}, "
            f"got {type(value).__name__}: {text!r}; e.g. '{example}'"
        )
    return value

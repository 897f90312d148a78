"""The pipelines the fault scenarios run, with their expected results: fan-outs of hundreds of
tasks (a result list that must be exactly right: nothing lost, nothing applied twice) and chains
of stateful steps (a state list that shows any step applied twice or skipped)."""

from __future__ import annotations

import uuid
from collections import Counter
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any

from flink_tasks import PipelineBuilder, in_parallel
from tests.faults import fault_tasks as ft


@dataclass
class Job:
    pipeline: PipelineBuilder
    expected: Any
    kind: str
    future: Future[Any] | None = None

    @property
    def id(self) -> str:
        return self.pipeline.id


def fan_out(size: int, delay: float, tag: str) -> Job:
    pipeline = in_parallel([ft.square.send(i, delay, tag) for i in range(size)]).continue_with(
        ft.total
    )
    pipeline.id = f"fan-{tag}-{uuid.uuid4().hex[:8]}"
    return Job(pipeline, sum(i * i for i in range(size)), "fan-out")


def chain(length: int, delay: float, tag: str) -> Job:
    labels = [f"{tag}-{i}" for i in range(length)]
    pipeline = ft.step.send(0, labels[0], delay)
    for label in labels[1:]:
        pipeline = pipeline.continue_with(ft.step, label, delay)
    pipeline = pipeline.continue_with(ft.read_state).with_initial(state=[])
    pipeline.id = f"chain-{tag}-{uuid.uuid4().hex[:8]}"
    return Job(pipeline, {"value": length, "state": labels}, "chain")


def mixed(
    fan_outs: int, fan_size: int, chains: int, chain_length: int, delay: float, tag: str
) -> list[Job]:
    jobs = [fan_out(fan_size, delay, f"{tag}f{k}") for k in range(fan_outs)]
    jobs += [chain(chain_length, delay, f"{tag}c{k}") for k in range(chains)]
    return jobs


def submit_all(client: Any, jobs: list[Job], timeout: float = 300.0) -> None:
    for job in jobs:
        job.future = client.submit(job.pipeline, timeout=timeout)


@dataclass
class Outcome:
    completed_correctly: int
    wrong: list[tuple[str, Any, Any]]
    failed: list[tuple[str, BaseException]]


def collect(jobs: list[Job], timeout: float) -> Outcome:
    futures = [j.future for j in jobs if j.future is not None]
    wait(futures, timeout=timeout)
    ok, wrong, failed = 0, [], []
    for job in jobs:
        assert job.future is not None
        if not job.future.done():
            failed.append((job.id, TimeoutError("not done")))
            continue
        error = job.future.exception()
        if error is not None:
            failed.append((job.id, error))
        elif job.future.result() != job.expected:
            wrong.append((job.id, job.future.result(), job.expected))
        else:
            ok += 1
    return Outcome(ok, wrong, failed)


def tasks_in(jobs: list[Job], fan_size: int, chain_length: int) -> int:
    return sum(fan_size + 1 if j.kind == "fan-out" else chain_length + 1 for j in jobs)


def fan_out_runs(runs: Counter[str], tags: set[str]) -> dict[str, int]:
    """How often each body of the fan-outs tagged `tags` ran (`runs` as `executions()` counts)."""
    return {key: n for key, n in runs.items() if key.split(":")[0] in tags}


def run_again(runs: dict[str, int]) -> int:
    """Task bodies run more than once (at-least-once allows it), counted beyond their first."""
    return sum(n - 1 for n in runs.values() if n > 1)


def duplicate_replies(by_pipeline: Counter[str], jobs: list[Job]) -> int:
    """Replies on the reply topic beyond the first, over `jobs`."""
    return sum(by_pipeline[j.id] - 1 for j in jobs if by_pipeline[j.id] > 1)


def outcome_fields(jobs: list[Job], outcome: Outcome, by_pipeline: Counter[str]) -> dict[str, Any]:
    """The result-table fields every workload scenario reports."""
    return {
        "pipelines": len(jobs),
        "completed_correctly": outcome.completed_correctly,
        "wrong": len(outcome.wrong),
        "failed": len(outcome.failed),
        "duplicate_replies": duplicate_replies(by_pipeline, jobs),
    }

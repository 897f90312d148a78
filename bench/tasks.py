"""The flink-tasks side's tasks: trivial ones, and an orchestrator that builds a fan-out inside the
worker (so that fan-outs bigger than a Kafka record, e.g. 100,000 tasks, can be submitted)."""

from __future__ import annotations

from flink_tasks import FlinkTasks, PipelineBuilder, in_parallel

tasks = FlinkTasks()


@tasks.bind()
def inc(x: int) -> int:
    """The trivial task: like Celery's `add.s(x, 1)`."""
    return x + 1


@tasks.bind()
def fan_out(n: int, num_stages: int = 0, max_parallelism: int = 0) -> PipelineBuilder:
    """An orchestrator task: returns `in_parallel` of n `inc` tasks, run as a child pipeline."""
    return in_parallel(
        [inc.send(i) for i in range(n)],
        num_stages=num_stages or None,
        max_parallelism=max_parallelism or None,
    )


@tasks.bind()
def count(results: list[int]) -> int:
    """Reduces a fan-out's result to its length, so that the reply stays small."""
    return len(results)


#: Children one orchestrator task builds at most. A returned pipeline is ~55 bytes a child; an
#: orchestrator that runs past the worker's inline wait (building 100,000 children takes ~4 s,
#: longer on a busy machine) returns it over the task-reports topic, a Kafka record of at most
#: 1 MiB by default. So larger fan-outs are built by a tree of orchestrators, as a user would.
FAN_OUT_LEAF = 10_000


@tasks.bind()
def fan_out_tree(n: int, num_stages: int = 0) -> PipelineBuilder:
    """An orchestrator of orchestrators: `in_parallel` of `fan_out` leaves of at most
    `FAN_OUT_LEAF` children, each counted; the result is the list of leaf counts."""
    leaves = [min(FAN_OUT_LEAF, n - start) for start in range(0, n, FAN_OUT_LEAF)]
    return in_parallel([fan_out.send(size, num_stages).continue_with(count) for size in leaves])


@tasks.bind()
def total(counts: list[int]) -> int:
    return sum(counts)


def b3_pipeline(n: int, num_stages: int = 0) -> PipelineBuilder:
    """B3's pipeline: a fan-out of n `inc` built inside the worker, reduced to n."""
    if n <= FAN_OUT_LEAF:
        return fan_out.send(n, num_stages).continue_with(count)
    return fan_out_tree.send(n, num_stages).continue_with(total)


def fan_out_pipeline(
    n: int, *, num_stages: int = 0, max_parallelism: int = 0, ordered: bool = True
) -> PipelineBuilder:
    return in_parallel(
        [inc.send(i) for i in range(n)],
        num_stages=num_stages or None,
        max_parallelism=max_parallelism or None,
        ordered=ordered,
    )


def chain_pipeline(steps: int) -> PipelineBuilder:
    pipeline = inc.send(0)
    for _ in range(steps - 1):
        pipeline = pipeline.continue_with(inc)
    return pipeline

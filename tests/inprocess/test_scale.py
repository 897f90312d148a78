"""One task result costs O(1) state traffic, whatever the size of the fan-out."""

from __future__ import annotations

from datetime import timedelta

import pytest

from flink_tasks import TaskError, in_parallel, wire
from flink_tasks.testing import PipelineEnvironment
from tests import pipelines as t


async def _fan_out_cost(size: int) -> tuple[float, int, float]:
    """(state bytes shipped per result, the most shipped in one call, pipeline calls per result)."""
    # The in-memory runtime has no in-flight limit (StateFun has), so 100,000 tasks would queue in
    # the worker past its inline wait and go the lease path: not what this measures.
    # 100,000 chains are a ~6 MB request: as on a broker configured for records that large.
    async with PipelineEnvironment.in_process(
        t.tasks, inline_wait=timedelta(hours=1), max_request_bytes=16 * 1024 * 1024
    ) as env:
        pipeline = in_parallel([t.multiply.send(i) for i in range(size)]).with_initial(args=2)
        result = await env.submit_async(pipeline, timeout=timedelta(minutes=5))
        assert result == [2 * i for i in range(size)]
        assert env.runtime is not None
        stats = [
            s
            for (typename, _), s in env.runtime.stats.items()
            if typename == wire.PIPELINE_FUNCTION
        ]
        shipped = sum(s.state_bytes for s in stats)
        calls = sum(s.invocations for s in stats)
        return shipped / size, max(s.max_state_bytes for s in stats), calls / size


@pytest.mark.slow
async def test_state_shipped_per_result_does_not_grow_with_the_fan_out() -> None:
    # 30x the size is enough to see growth; 100,000 and 1,000,000 are `make bench`'s (B3)
    small = await _fan_out_cost(1_000)
    large = await _fan_out_cost(30_000)
    print(
        f"per result: 1,000 -> {small[0]:.0f} B, 30,000 -> {large[0]:.0f} B; "
        f"largest call {large[1]} B"
    )
    assert large[0] <= 1.5 * small[0]
    assert large[1] <= 64 * 1024  # no address ever ships the whole fan-out
    assert large[2] <= 1.5 * small[2]


async def test_long_chains_are_segmented_and_keep_their_semantics() -> None:
    async with PipelineEnvironment.in_process(t.tasks) as env:
        chain = t.add.send(0, 1)
        for _ in range(999):
            chain = chain.continue_with(t.add, 1)
        assert await env.submit_async(chain, timeout=timedelta(minutes=2)) == 1000
        assert env.runtime is not None
        largest = max(s.max_state_bytes for s in env.runtime.stats.values())
        assert largest < 40_000  # the 1,000-entry definition is never shipped whole

        # an error in the first segment is handled by an exceptionally in the fourth
        failing = t.fail.send("early")
        for _ in range(300):
            failing = failing.continue_with(t.add, 1)
        failing = failing.exceptionally(t.handle_error).continue_with(t.echo, "after")
        failing = failing.finally_do(t.record, "finally")
        t.recorded.clear()
        result = await env.submit_async(failing, timeout=timedelta(minutes=2))
        assert result == ("handled", "builtins.ValueError", "early", "after")
        assert t.recorded == [("finally",)]

        # an unhandled error in a late segment fails the pipeline with that error
        late = t.add.send(0, 1)
        for _ in range(250):
            late = late.continue_with(t.add, 1)
        late = late.continue_with(t.fail_with_key_error).continue_with(t.add, 1)
        with pytest.raises(TaskError) as caught:
            await env.submit_async(late, timeout=timedelta(minutes=2))
        assert caught.value.exception_type == "builtins.KeyError"

"""One task result costs O(1) state traffic, whatever the size of the fan-out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest

from flink_tasks import TaskError, in_parallel, serialization, wire
from flink_tasks.testing import PipelineEnvironment
from tests import pipelines as t


@dataclass(frozen=True)
class FanOutCost:
    state_per_result: float  # state bytes shipped per task result
    calls_per_result: float  # pipeline function calls per task result
    largest_cell: dict[str, int]  # the most one call shipped of each cell, over all addresses
    result_bytes: int  # the encoded result of the whole fan-out


async def _fan_out_cost(size: int) -> FanOutCost:
    # The in-memory runtime has no in-flight limit (StateFun has), so 100,000 tasks would queue in
    # the worker past its inline wait and go the lease path: not what this measures.
    # 100,000 chains are a ~6 MB request: as on a broker configured for records that large.
    async with PipelineEnvironment.in_process(
        t.tasks,
        inline_wait=timedelta(hours=1),
        batch_wait=timedelta(hours=1),
        max_request_bytes=16 * 1024 * 1024,
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
        largest: dict[str, int] = {}
        for s in stats:
            for cell, shipped in s.max_cell_bytes.items():
                largest[cell] = max(largest.get(cell, 0), shipped)
        return FanOutCost(
            state_per_result=sum(s.state_bytes for s in stats) / size,
            calls_per_result=sum(s.invocations for s in stats) / size,
            largest_cell=largest,
            result_bytes=serialization.encode(result).ByteSize(),
        )


@pytest.mark.slow
async def test_state_shipped_per_result_does_not_grow_with_the_fan_out() -> None:
    # 30x the size is enough to see growth; 100,000 and 1,000,000 are `make bench`'s (B3)
    small = await _fan_out_cost(1_000)
    large = await _fan_out_cost(30_000)
    print(f"1,000: {small}\n30,000: {large}")
    # how results batch into calls varies from run to run (with task buckets, whose results
    # arrive packed, 74-199 bytes a result at 1,000): 2x still fails any growth with the size,
    # which would be ~30x here
    assert large.state_per_result <= 2 * small.state_per_result
    assert large.calls_per_result <= 1.5 * small.calls_per_result
    # a definition holds one stage (at most 100 chains: a leaf's tasks or the references to the
    # stages below it), the control record at most the ids of 100 running stages, whatever the
    # fan-out...
    assert large.largest_cell["definition"] <= 16 * 1024
    assert large.largest_cell["run"] <= 8 * 1024
    # ...while a fan-in's slots hold the results its children returned so far: these grow with
    # the results (how many arrive per call varies from run to run), never to all of them (the
    # group finishes in the call its last result arrives in)
    assert large.largest_cell["slots"] < large.result_bytes


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

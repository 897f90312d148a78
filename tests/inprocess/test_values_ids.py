"""Issue 10 parts 4 and 5, in memory: the shared nesting limit, unreadable messages, deadline=,
the stall timeout for orphaned pipelines, and ids that cannot be hijacked."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from google.protobuf.message import DecodeError

from flink_tasks import (
    FlinkTasks,
    PipelineDefinitionError,
    SerializationError,
    TaskError,
    in_parallel,
    serialization,
    wire,
)
from flink_tasks._proto import messages_pb2, values_pb2
from flink_tasks.engine import EngineSettings, step, unreadable
from flink_tasks.engine import effects as fx
from flink_tasks.engine.state import AddressState
from flink_tasks.errors import (
    INVALID_REQUEST_ERROR,
    PIPELINE_DEADLINE_ERROR,
    SERIALIZATION_ERROR,
)
from flink_tasks.pipeline.builder import MAX_GROUP_NESTING, PipelineBuilder
from flink_tasks.testing import PipelineEnvironment
from flink_tasks.testing.environment import _REPLY_TOPIC, InProcessClient
from flink_tasks.types import PipelineStatus

LIMIT = serialization.MAX_VALUE_DEPTH
tasks = FlinkTasks()
finally_runs: list[str] = []


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"k": value}
    return value


@tasks.bind()
def echo(*args: Any) -> Any:
    return args[0] if len(args) == 1 else args


@tasks.bind()
def deep_result(depth: int) -> Any:
    return nested(depth)


@tasks.bind(with_state=True)
def deep_state(state: Any, depth: int) -> tuple[Any, Any]:
    return nested(depth), "ok"


@tasks.bind()
async def sleep(seconds: float, value: Any = None) -> Any:
    await asyncio.sleep(seconds)
    return value


@tasks.bind()
async def tick(previous: int, seconds: float) -> int:
    await asyncio.sleep(seconds)
    return previous + 1


@tasks.bind(is_fruitful=False)
def note_finally(tag: str) -> None:
    finally_runs.append(tag)


@tasks.bind()
def spawn(seconds: float, value: Any) -> PipelineBuilder:
    """An orchestrator: its child runs at `<root>:<random>`, announced in a PipelineCreated."""
    return sleep.send(seconds, value).continue_with(echo)


@pytest.fixture
async def env() -> AsyncIterator[PipelineEnvironment]:
    async with PipelineEnvironment.in_process(tasks, default_timeout=20) as environment:
        yield environment


def _client(env: PipelineEnvironment) -> InProcessClient:
    client = env.client
    assert isinstance(client, InProcessClient)
    return client


async def _raw_submit(env: PipelineEnvironment, key: str, pipeline: PipelineBuilder) -> Any:
    """A PipelineRequest keyed by any id, as a producer other than our client could send."""
    reply_id = uuid.uuid4().hex
    request = messages_pb2.PipelineRequest(
        pipeline=pipeline.to_proto(), reply_topic=_REPLY_TOPIC, reply_id=reply_id
    )
    client = _client(env)
    return await client._call(
        wire.PIPELINE_REQUEST, key, request.SerializeToString(), reply_id, timedelta(seconds=10)
    )


def _deep_value(depth: int) -> values_pb2.Value:
    """A Value nested `depth` dict levels, built without the encoder (which would refuse it)."""
    value = values_pb2.Value(int_value=1)
    for _ in range(depth):
        outer = values_pb2.Value()
        entry = outer.dict_value.entries.add()
        entry.key.str_value = "k"
        entry.value.CopyFrom(value)
        value = outer
    return value


async def _wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------- one nesting limit


def test_encoder_and_decoder_share_the_limit() -> None:
    assert serialization.decode(serialization.encode(nested(LIMIT))) == nested(LIMIT)
    with pytest.raises(SerializationError, match=f"more than {LIMIT} levels"):
        serialization.encode(nested(LIMIT + 1))
    with pytest.raises(SerializationError, match=f"more than {LIMIT} levels"):
        serialization.encode([(nested(LIMIT - 1),)])
    with pytest.raises(SerializationError, match=f"more than {LIMIT} levels"):
        serialization.decode(_deep_value(LIMIT + 1))
    assert serialization.decode(_deep_value(LIMIT)) == nested(LIMIT)


def test_every_message_at_the_limits_parses() -> None:
    """A value at the limit inside the deepest envelope (a get_request reply with groups
    nested MAX_GROUP_NESTING deep) stays within protobuf's parse limit."""
    pipeline = echo.send(nested(LIMIT))
    for _ in range(MAX_GROUP_NESTING):
        pipeline = in_parallel([pipeline])
    with pytest.raises(PipelineDefinitionError, match="nested 11 deep"):
        in_parallel([pipeline])
    request = messages_pb2.PipelineRequest(
        pipeline=pipeline.with_initial(state=nested(LIMIT)).to_proto()
    )
    reply = messages_pb2.Reply(request=request)
    assert messages_pb2.Reply.FromString(reply.SerializeToString()) == reply


async def test_too_deep_arguments_fail_at_the_sender(env: PipelineEnvironment) -> None:
    with pytest.raises(SerializationError, match=r"an argument of .*echo"):
        await env.submit_async(echo.send(nested(40)))
    with pytest.raises(SerializationError, match="levels deep"):
        await env.submit_async(echo.send(1).with_initial(state=nested(40)))
    with pytest.raises(SerializationError, match="levels deep"):
        await env.submit_async(echo.send().with_initial(kwargs={"x": nested(40)}))
    assert await env.submit_async(echo.send(nested(LIMIT))) == nested(LIMIT)


async def test_too_deep_results_and_states_are_task_errors(env: PipelineEnvironment) -> None:
    with pytest.raises(TaskError) as caught:
        await env.submit_async(deep_result.send(40))
    assert caught.value.exception_type == SERIALIZATION_ERROR
    assert "levels deep" in caught.value.exception_message
    with pytest.raises(TaskError) as caught:
        await env.submit_async(deep_state.send(40))
    assert caught.value.exception_type == SERIALIZATION_ERROR
    assert await env.submit_async(deep_result.send(LIMIT)) == nested(LIMIT)


# ---------------------------------------------------------------- unreadable messages


async def test_an_unreadable_result_fails_the_task_it_names(env: PipelineEnvironment) -> None:
    pipeline = sleep.send(10, "late")
    task_id = pipeline.entries[0].task_id  # type: ignore[union-attr]
    submitted = asyncio.ensure_future(env.submit_async(pipeline))
    await _wait_for(
        lambda: env.runtime is not None
        and env.runtime.state_of(wire.PIPELINE_FUNCTION, pipeline.id)
    )
    result = messages_pb2.TaskResult(task_id=task_id, invocation=1, attempt=1)
    result.result.CopyFrom(_deep_value(40))  # past protobuf's parse limit
    started = time.monotonic()
    assert env.runtime is not None
    env.runtime.route(
        wire.PIPELINE_FUNCTION, pipeline.id, wire.TASK_RESULT, result.SerializeToString()
    )
    with pytest.raises(TaskError) as caught:
        await submitted
    assert time.monotonic() - started < 2
    assert caught.value.exception_type == SERIALIZATION_ERROR
    assert task_id in caught.value.exception_message
    assert await env.get_status(pipeline.id) == PipelineStatus.FAILED
    assert env.worker is not None
    assert env.worker.metrics.value("flink_tasks_rejected_messages_total", reason="unparsable") == 1


async def test_an_unattributable_message_fails_a_running_pipeline(env: PipelineEnvironment) -> None:
    pipeline = sleep.send(10, "late").finally_do(note_finally, "unreadable")
    submitted = asyncio.ensure_future(env.submit_async(pipeline))
    assert env.runtime is not None
    await _wait_for(lambda: env.runtime.state_of(wire.PIPELINE_FUNCTION, pipeline.id))  # type: ignore[union-attr]
    env.runtime.route(wire.PIPELINE_FUNCTION, pipeline.id, wire.PIPELINE_MESSAGE, b"\xff\xff\xff")
    with pytest.raises(TaskError) as caught:
        await submitted
    assert caught.value.exception_type == SERIALIZATION_ERROR
    assert "cannot read" in caught.value.exception_message
    assert finally_runs.count("unreadable") == 1
    # garbage for an address without a pipeline stays a counted rejection
    env.runtime.route(wire.PIPELINE_FUNCTION, "nobody", wire.TASK_RESULT, b"\xff\xff\xff")
    assert env.worker is not None
    await _wait_for(
        lambda: env.worker.metrics.value("flink_tasks_rejected_messages_total", reason="unparsable")
        == 2
    )  # type: ignore[union-attr]
    assert await env.submit_async(echo.send("next")) == "next"


# ---------------------------------------------------------------- deadline= and the stall timeout


async def test_deadline_ends_a_running_pipeline(env: PipelineEnvironment) -> None:
    chains = [sleep.send(10, i).continue_with(echo) for i in range(3)]
    pipeline = (
        in_parallel(chains)
        .finally_do(note_finally, "deadline")
        .with_options(deadline=timedelta(milliseconds=300))
    )
    started = time.monotonic()
    with pytest.raises(TaskError) as caught:
        await env.submit_async(pipeline)
    assert 0.3 <= time.monotonic() - started < 3
    assert caught.value.exception_type == PIPELINE_DEADLINE_ERROR
    assert "deadline of 0.3 s" in caught.value.exception_message
    assert await env.get_status(pipeline.id) == PipelineStatus.FAILED
    assert finally_runs.count("deadline") == 1
    # the chains (child pipelines) were cancelled: their addresses are cleared
    assert env.runtime is not None
    await _wait_for(
        lambda: not any(
            key[1].startswith(pipeline.id + ":") and address.state
            for key, address in env.runtime._addresses.items()  # type: ignore[union-attr]
        )
    )


async def test_deadline_not_reached_changes_nothing(env: PipelineEnvironment) -> None:
    pipeline = sleep.send(0.05, "done").with_options(deadline=timedelta(seconds=5))
    assert await env.submit_async(pipeline) == "done"
    with pytest.raises(PipelineDefinitionError, match="positive timedelta"):
        echo.send(1).with_options(deadline=timedelta(0))
    with pytest.raises(PipelineDefinitionError, match="outer pipeline"):
        in_parallel([echo.send(1).with_options(deadline=timedelta(seconds=1))])


async def test_stalled_pipelines_end_and_progressing_ones_do_not() -> None:
    settings = EngineSettings(stall_timeout=timedelta(milliseconds=400))
    async with PipelineEnvironment.in_process(tasks, engine=settings, default_timeout=20) as env:
        started = time.monotonic()
        with pytest.raises(TaskError) as caught:
            await env.submit_async(sleep.send(10))
        assert 0.4 <= time.monotonic() - started < 3
        assert caught.value.exception_type == PIPELINE_DEADLINE_ERROR
        assert "made no progress" in caught.value.exception_message
        # steady progress for longer than the stall timeout, at the root and inside children
        chain = sleep.send(0.1, 0)
        for _ in range(9):
            chain = chain.continue_with(tick, 0.1)
        assert await env.submit_async(chain) == 9
        assert await env.submit_async(in_parallel([chain, chain])) == [9, 9]


# ---------------------------------------------------------------- ids


async def test_a_request_at_a_child_id_is_refused(env: PipelineEnvironment) -> None:
    parent = spawn.send(1.0, "parent's").continue_with(echo)
    submitted = asyncio.ensure_future(env.submit_async(parent))
    events = _client(env).events
    await _wait_for(
        lambda: any(e.created and e.created.parent_id for e in events.get(parent.id, []))
    )
    child_id = next(e.pipeline_id for e in events[parent.id] if e.created and e.created.parent_id)
    assert child_id.startswith(parent.id + ":")
    reply = await _raw_submit(env, child_id, echo.send("hijack"))
    assert reply.error.exception_type == INVALID_REQUEST_ERROR
    assert "child pipeline" in reply.error.exception_message
    reply = await _raw_submit(env, parent.id + "~request", echo.send("hijack"))
    assert reply.error.exception_type == INVALID_REQUEST_ERROR
    assert await submitted == "parent's"
    # a finished child's id is refused too (':' is reserved)
    reply = await _raw_submit(env, child_id, echo.send("hijack"))
    assert reply.error.exception_type == INVALID_REQUEST_ERROR


async def test_reserved_characters_are_refused_before_sending(env: PipelineEnvironment) -> None:
    for bad in ("a:b", "a~request"):
        pipeline = echo.send(1)
        pipeline.id = bad
        with pytest.raises(PipelineDefinitionError, match="reserves"):
            await env.submit_async(pipeline)


def test_an_unreadable_child_start_fails_the_parents_entry() -> None:
    start = messages_pb2.ChildStart(parent_id="P", entry_id="e", invocation=3, slot=2)
    start.input.has_previous = True
    start.input.previous.CopyFrom(_deep_value(40))
    wrapper = messages_pb2.PipelineMessage()
    wrapper.start_child.CopyFrom(start)
    payload = wrapper.SerializeToString()
    with pytest.raises(DecodeError):
        messages_pb2.PipelineMessage.FromString(payload)
    message = unreadable.salvage_pipeline_message(payload, "too deep")
    effects = step(
        "P:child", AddressState(), message, EngineSettings(), clock=lambda: 0, ids=lambda: "c"
    )
    assert len(effects) == 1
    sent = effects[0]
    assert isinstance(sent, fx.SendPipelineMessage) and sent.pipeline_id == "P"
    assert isinstance(sent.message, messages_pb2.PipelineMessage)
    result = sent.message.child_result
    assert (result.task_id, result.invocation, result.slot) == ("e", 3, 2)
    assert result.error.exception_type == SERIALIZATION_ERROR
    # an unreadable child result becomes that child's failure at its parent
    child_result = messages_pb2.TaskResult(task_id="c", invocation=1, slot=4)
    child_result.result.CopyFrom(_deep_value(40))
    wrapper = messages_pb2.PipelineMessage()
    wrapper.child_result.CopyFrom(child_result)
    payload = wrapper.SerializeToString()
    salvaged = unreadable.salvage_pipeline_message(payload, "too deep")
    assert isinstance(salvaged, messages_pb2.PipelineMessage)
    assert (salvaged.child_result.task_id, salvaged.child_result.slot) == ("c", 4)
    assert salvaged.child_result.error.exception_type == SERIALIZATION_ERROR

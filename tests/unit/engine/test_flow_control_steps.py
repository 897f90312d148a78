"""`step()` driven directly for unordered groups, pause points and delayed starts: the exact
effects each message has (docs/semantics.md)."""

from __future__ import annotations

from flink_tasks import errors
from flink_tasks._proto import messages_pb2, pipeline_pb2
from flink_tasks.engine import EngineSettings, step
from flink_tasks.engine import effects as fx
from flink_tasks.engine.state import AddressState
from tests.unit.engine.harness import Engine, action, group, ok, request, task

S = messages_pb2
PAUSED = ("event", "PIPELINE_STATUS_PAUSED")
RUNNING = ("event", "PIPELINE_STATUS_RUNNING")


def waits(entry: pipeline_pb2.Entry) -> pipeline_pb2.Entry:
    (entry.task if entry.WhichOneof("kind") == "task" else entry.group).pause_after = True
    return entry


def timed(entry: pipeline_pb2.Entry, **timing: int) -> pipeline_pb2.Entry:
    for name, value in timing.items():
        setattr(entry.task, name, value)
    return entry


def test_unordered_group_replies_in_completion_order() -> None:
    engine = Engine()
    engine.step(
        "P", request(group("g", [task("a", 1)], [task("b", 2)], [task("c", 3)], unordered=True))
    )
    engine.step("P", ok("c", "C", slot=3))
    engine.step("P", ok("a", "A", slot=1))
    effects = engine.step("P", ok("b", "B", slot=2))
    assert ("reply", "result", ["C", "A", "B"]) in effects
    ordered = Engine()
    ordered.step("P", request(group("g", [task("a", 1)], [task("b", 2)])))
    ordered.step("P", ok("b", "B", slot=2))
    assert ("reply", "result", ["A", "B"]) in ordered.step("P", ok("a", "A", slot=1))


def _slots_bytes(unordered: bool) -> int:
    engine = Engine()
    chains = [[task(f"t{i}", i)] for i in range(100)]
    engine.step("P", request(group("g", *chains, unordered=unordered)))
    for i in range(99):
        engine.step("P", ok(f"t{i}", i, slot=i + 1))
    return len(engine.states["P"].raw["slots"] or b"")


def test_unordered_slots_cost_a_completion_number_more_than_ordered_ones() -> None:
    ordered, unordered = _slots_bytes(False), _slots_bytes(True)
    assert ordered < unordered <= ordered + 3 * 99  # one varint field per finished slot


def test_a_pause_point_pauses_and_unpause_starts_the_next_entry() -> None:
    engine = Engine()
    engine.step("P", request(waits(task("a", 1)), task("b")))
    assert engine.step("P", ok("a", 10)) == [PAUSED]
    run = engine.run()
    assert run.paused and run.held and run.status == S.PIPELINE_STATUS_PAUSED and run.cursor == 1
    effects = engine.step("P", action(S.ACTION_UNPAUSE))
    assert effects[:2] == [RUNNING, ("task", "b", 1, 0, [10])]


def test_a_pause_point_after_the_last_entry_holds_the_reply() -> None:
    engine = Engine()
    engine.step("P", request(waits(task("a", 1))))
    assert engine.step("P", ok("a", 10)) == [PAUSED]
    effects = engine.step("P", action(S.ACTION_UNPAUSE))
    assert ("reply", "result", 10) in effects


def test_a_pause_point_on_a_chain_stops_new_chains_not_running_ones() -> None:
    engine = Engine()
    chains = [[waits(task("a", 1))], [task("b", 2)], [task("c", 3)]]
    engine.step("P", request(group("g", *chains, max_parallelism=2), task("after")))
    assert engine.step("P", ok("a", "A", slot=1)) == [PAUSED, ("event", "progress", 1, 3)]
    assert engine.step("P", ok("b", "B", slot=2)) == [("event", "progress", 2, 3)]
    effects = engine.step("P", action(S.ACTION_UNPAUSE))
    assert ("task", "c", 1, 3, [3]) in effects


def test_a_pause_point_in_a_child_asks_its_root_to_pause() -> None:
    engine = Engine()
    definition = S.ChildDefinition(
        pipeline=pipeline_pb2.Pipeline(entries=[waits(task("x", 1)), task("y")]),
        parent_id="P",
        root_pipeline_id="P",
    )
    engine.step("P:c1", S.PipelineMessage(define_child=definition))
    start = S.ChildStart(parent_id="P", root_pipeline_id="P", entry_id="c1", invocation=1)
    engine.step("P:c1", S.PipelineMessage(start_child=start))
    assert engine.step("P:c1", ok("x", 1)) == [("send", "P", "control", 0)]


def test_a_countdown_is_a_durable_delayed_start_held_while_paused() -> None:
    engine = Engine()
    effects = engine.step("P", request(timed(task("a", 1), countdown_ms=5_000), task("b")))
    assert effects[-1] == ("send", "P", "retry_due", 5_000)
    engine.step("P", action(S.ACTION_PAUSE))
    due = S.RetryDue(task_id="a", attempt=1, invocation=1)
    assert engine.step("P", S.PipelineMessage(retry_due=due)) == []
    effects = engine.step("P", action(S.ACTION_UNPAUSE))
    assert ("task", "a", 1, 0, [1]) in effects


def test_an_eta_counts_from_the_clock_and_a_past_one_starts_at_once() -> None:
    engine = Engine(now=10_000)
    effects = engine.step("P", request(timed(task("a", 1), eta_ms=12_500)))
    assert effects[-1] == ("send", "P", "retry_due", 2_500)
    engine = Engine(now=10_000)
    effects = engine.step("P", request(timed(task("a", 1), eta_ms=9_000)))
    assert effects[-1] == ("task", "a", 1, 0, [1])


def test_expires_before_the_countdown_fails_the_task_at_once() -> None:
    state = AddressState()
    pipeline = request(timed(task("a", 1), countdown_ms=5_000, expires_in_ms=1_000))
    effects = step("P", state, pipeline, EngineSettings(), clock=lambda: 1_000, ids=lambda: "c")
    sent = effects[-1]
    assert isinstance(sent, fx.SendPipelineMessage) and sent.delay_ms == 0
    assert isinstance(sent.message, S.TaskResult)
    error = sent.message.error
    assert error.exception_type == errors.TASK_EXPIRED_ERROR and not error.retryable
    assert error.exception_message == (
        "task 't.a' (a) would start at 1970-01-01T00:00:06.000+00:00, after it expires at "
        "1970-01-01T00:00:02.000+00:00; its countdown/eta is later than its expires"
    )


def test_a_start_due_after_its_expiry_fails_instead_of_starting() -> None:
    engine = Engine()
    engine.step("P", request(timed(task("a", 1), countdown_ms=1_000, expires_in_ms=2_000)))
    engine.now += 5_000
    due = S.RetryDue(task_id="a", attempt=1, invocation=1, expires_at_ms=3_000)
    effects = engine.step("P", S.PipelineMessage(retry_due=due))
    assert effects == [("send", "P", "task_result", 0)]


def test_cancel_drops_a_pending_countdown() -> None:
    engine = Engine()
    engine.step("P", request(timed(task("a", 1), countdown_ms=5_000)))
    engine.step("P", action(S.ACTION_CANCEL))
    due = S.RetryDue(task_id="a", attempt=1, invocation=1)
    assert engine.step("P", S.PipelineMessage(retry_due=due)) == []

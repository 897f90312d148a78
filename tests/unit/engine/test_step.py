"""`step()` driven directly, per concern: messages in, effects and state out (no StateFun, no
simulator). Each case runs its prelude, then the message under test, whose effects must be
exactly the expected ones and whose Run must hold the expected fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from flink_tasks import errors
from flink_tasks._proto import messages_pb2, pipeline_pb2
from flink_tasks.engine import EngineMessage, EngineSettings, step
from flink_tasks.engine import effects as fx
from flink_tasks.engine.state import AddressState
from flink_tasks.engine.step import HANDLERS
from flink_tasks.engine.unreadable import UnreadableMessage
from tests.unit.engine.harness import (
    Engine,
    Summary,
    action,
    failed,
    group,
    ok,
    request,
    task,
)

S = messages_pb2
P = "P"
STORED = ("send", "P~request", "store_request", 0)  # a request above inline_request_bytes
EXPIRE = ("send", P, "expire", 60_000)
CREATED = ("event", "pipeline_created")
RUNNING = ("event", "PIPELINE_STATUS_RUNNING")
COMPLETED = ("event", "PIPELINE_STATUS_COMPLETED")
FAILED = ("event", "PIPELINE_STATUS_FAILED")


def pm(**kind: Any) -> messages_pb2.PipelineMessage:
    return messages_pb2.PipelineMessage(**kind)


@dataclass
class Case:
    name: str
    message: EngineMessage
    effects: list[Summary]
    prelude: list[EngineMessage] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)
    address: str = P
    settings: EngineSettings | None = None
    now: int = 1_000


TWO_TASKS = request(task("a", 1), task("b"))
RETRIED = request(task("a", 1, retry_for=["builtins.ValueError"], max_retries=1, delay_ms=500))


# attempt "a" of TWO_TASKS holds a lease (beat 1, 3 s) that has fallen due once
LEASE_FELL_DUE = [
    TWO_TASKS,
    S.WorkerReport(
        running=S.TaskRunning(task_id="a", attempt=1, invocation=1, beat=1, lease_ms=3000)
    ),
    pm(task_deadline=S.TaskDeadline(task_id="a", attempt=1, invocation=1, beat=1, lease_ms=3000)),
]
#: task a of TWO_TASKS failed as lost: b skipped, the pipeline fails
A_LOST = [
    ("event", "skipped", ["b"]),
    (
        "reply",
        "error",
        errors.WORKER_LOST_ERROR,
        "the worker running task 't.a' (attempt 1) sent no word for 3 s: its process "
        "died or lost its connection",
    ),
    FAILED,
    EXPIRE,
]

CASES = [
    # ---------------------------------------------------------------- submission
    Case(
        "submit starts the first task",
        TWO_TASKS,
        [CREATED, RUNNING, ("task", "a", 1, 0, [1])],
        run={"status": S.PIPELINE_STATUS_RUNNING, "cursor": 0, "task_id": "a", "size": 2},
    ),
    Case(
        "an empty pipeline is refused",
        request(),
        [("reply", "error", errors.INVALID_REQUEST_ERROR, "the pipeline has no entries")],
    ),
    Case(
        "a running id is refused",
        TWO_TASKS,
        [
            (
                "reply",
                "error",
                errors.ALREADY_RUNNING_ERROR,
                "pipeline 'P' is already running; wait for it or cancel it",
            )
        ],
        prelude=[TWO_TASKS],
    ),
    Case(
        "a child's address refuses a request",
        TWO_TASKS,
        [
            (
                "reply",
                "error",
                errors.INVALID_REQUEST_ERROR,
                "pipeline id 'Q:c1' belongs to a child pipeline of 'Q'; submit under an id of "
                "your own",
            )
        ],
        prelude=[
            pm(
                define_child=S.ChildDefinition(
                    pipeline=pipeline_pb2.Pipeline(entries=[task("x")]),
                    parent_id="Q",
                    root_pipeline_id="Q",
                )
            )
        ],
        address="Q:c1",
    ),
    # ---------------------------------------------------------------- sequence
    Case(
        "a result starts the next task with it",
        ok("a", 10),
        [("task", "b", 1, 0, [10])],
        prelude=[TWO_TASKS],
        run={"cursor": 1, "task_id": "b"},
    ),
    Case(
        "the last result is the reply",
        ok("b", 11),
        [("reply", "result", 11), COMPLETED, EXPIRE],
        prelude=[TWO_TASKS, ok("a", 10)],
        run={"status": S.PIPELINE_STATUS_COMPLETED, "cursor": 0},
    ),
    Case(
        "a failure skips to the reply",
        failed("a", retryable=False),
        [
            ("event", "skipped", ["b"]),
            ("reply", "error", "builtins.ValueError", "bad"),
            FAILED,
            EXPIRE,
        ],
        prelude=[TWO_TASKS],
        run={"status": S.PIPELINE_STATUS_FAILED},
    ),
    Case(
        "a stale invocation's result is ignored",
        messages_pb2.TaskResult(task_id="a", invocation=7),
        [],
        prelude=[TWO_TASKS],
        run={"cursor": 0, "task_id": "a"},
    ),
    Case(
        "a duplicate result of a decided attempt is ignored",
        ok("b", 11, attempt=2),
        [],
        prelude=[TWO_TASKS, ok("a", 10)],
        run={"cursor": 1},
    ),
    # ---------------------------------------------------------------- compile (staging)
    Case(
        "a group over the threshold is staged into child pipelines",
        request(group("g", [task("a")], [task("b")], [task("c")])),
        [
            CREATED,
            RUNNING,
            ("send", "P:c1", "define_child", 0),
            ("send", "P:c2", "define_child", 0),
            ("send", "P:c1", "start_child", 0),
            ("send", "P:c2", "start_child", 0),
        ],
        settings=EngineSettings(auto_stage_threshold=2, stall_timeout=None),
        run={"group_size": 2, "running": 2, "active_children": ["P:c1", "P:c2"]},
    ),
    Case(
        "a multi-entry chain is parked as a child",
        request(group("g", [task("a"), task("b")], [task("c")])),
        [
            CREATED,
            RUNNING,
            ("send", "P:c1", "define_child", 0),
            ("send", "P:c1", "start_child", 0),
            ("task", "c", 1, 2, []),
        ],
        run={"group_size": 2, "running": 2},
    ),
    # ---------------------------------------------------------------- groups
    Case(
        "group results are collected in declaration order",
        ok("a", "A", slot=1),
        [("event", "progress", 2, 2), ("reply", "result", ["A", "B"]), COMPLETED, EXPIRE],
        prelude=[request(group("g", [task("a")], [task("b")])), ok("b", "B", slot=2)],
    ),
    Case(
        "max_parallelism starts the next chain as one finishes",
        ok("a", "A", slot=1),
        [("event", "progress", 1, 3), ("task", "c", 1, 3, [])],
        prelude=[request(group("g", [task("a")], [task("b")], [task("c")], max_parallelism=2))],
        run={"running": 2, "completed": 1, "next_chain": 3},
    ),
    Case(
        "return_exceptions keeps a failure in its slot",
        failed("b", slot=2, retryable=False),
        [
            ("event", "progress", 2, 2),
            ("reply", "result", ["A", "builtins.ValueError: bad"]),
            COMPLETED,
            EXPIRE,
        ],
        prelude=[
            request(group("g", [task("a")], [task("b")], return_exceptions=True)),
            ok("a", "A", slot=1),
        ],
    ),
    Case(
        "an empty group yields an empty list",
        request(group("g")),
        [CREATED, RUNNING, ("reply", "result", []), COMPLETED, EXPIRE],
    ),
    # ---------------------------------------------------------------- retries
    Case(
        "a retryable failure schedules a durable retry",
        failed("a"),
        [("send", P, "retry_due", 500)],
        prelude=[RETRIED],
        run={"attempt": 2, "cursor": 0},
    ),
    Case(
        "a retry that falls due resends at the next attempt's address",
        pm(retry_due=S.RetryDue(task_id="a", attempt=2, invocation=1)),
        [("task", "a#2", 2, 0, [1])],
        prelude=[RETRIED, failed("a")],
    ),
    Case(
        "the last attempt's failure is final",
        failed("a", attempt=2),
        [
            ("reply", "error", "builtins.ValueError", "bad (failed after 2 attempts)"),
            FAILED,
            EXPIRE,
        ],
        prelude=[
            RETRIED,
            failed("a"),
            pm(retry_due=S.RetryDue(task_id="a", attempt=2, invocation=1)),
        ],
    ),
    Case(
        "a retry falling due while paused is held",
        pm(retry_due=S.RetryDue(task_id="a", attempt=2, invocation=1)),
        [],
        prelude=[RETRIED, failed("a"), action(S.ACTION_PAUSE)],
        run={"paused": True},
    ),
    # ---------------------------------------------------------------- leases
    Case(
        "a running beat arms the lease deadline",
        S.WorkerReport(
            running=S.TaskRunning(task_id="a", attempt=1, invocation=1, beat=1, lease_ms=3000)
        ),
        [("send", P, "task_deadline", 3000)],
        prelude=[TWO_TASKS],
        run={"task_beat": 1},
    ),
    Case(
        "a deadline with no newer beat is checked behind the worker's reports, and re-armed",
        pm(
            task_deadline=S.TaskDeadline(
                task_id="a", attempt=1, invocation=1, beat=1, lease_ms=3000
            )
        ),
        [("check_lease", P, "a", 1), ("send", P, "task_deadline", 3000)],
        prelude=[
            TWO_TASKS,
            S.WorkerReport(
                running=S.TaskRunning(task_id="a", attempt=1, invocation=1, beat=1, lease_ms=3000)
            ),
        ],
        run={"task_beat": 1},
    ),
    Case(
        "a lease check back with still no newer beat fails the attempt as lost",
        S.WorkerReport(
            lease_check=S.TaskDeadline(task_id="a", attempt=1, invocation=1, beat=1, lease_ms=3000)
        ),
        A_LOST,
        prelude=[
            *LEASE_FELL_DUE,
        ],
    ),
    Case(
        "a task outside a group is never delivered again, whatever its worker's report says",
        S.WorkerReport(
            lease_check=S.TaskDeadline(
                task_id="a", attempt=1, invocation=1, beat=1, lease_ms=3000, redeliverable=True
            )
        ),
        A_LOST,
        prelude=[*LEASE_FELL_DUE],
    ),
    Case(
        "a lease check overtaken by a late beat written before it is ignored (a live worker)",
        S.WorkerReport(
            lease_check=S.TaskDeadline(task_id="a", attempt=1, invocation=1, beat=1, lease_ms=3000)
        ),
        [],
        prelude=[
            *LEASE_FELL_DUE,
            S.WorkerReport(
                running=S.TaskRunning(task_id="a", attempt=1, invocation=1, beat=2, lease_ms=3000)
            ),
        ],
        run={"task_beat": 2},
    ),
    Case(
        "a deadline overtaken by a newer beat is ignored",
        pm(
            task_deadline=S.TaskDeadline(
                task_id="a", attempt=1, invocation=1, beat=1, lease_ms=3000
            )
        ),
        [],
        prelude=[
            TWO_TASKS,
            S.WorkerReport(
                running=S.TaskRunning(task_id="a", attempt=1, invocation=1, beat=1, lease_ms=3000)
            ),
            S.WorkerReport(
                running=S.TaskRunning(task_id="a", attempt=1, invocation=1, beat=2, lease_ms=3000)
            ),
        ],
        run={"task_beat": 2},
    ),
    # ---------------------------------------------------------------- deadlines and stalls
    Case(
        "deadline= is a delayed message armed at the start",
        request(task("a"), deadline_ms=5000),
        [CREATED, RUNNING, ("send", P, "deadline_due", 5000), ("task", "a", 1, 0, [])],
    ),
    Case(
        "the deadline ends the pipeline",
        pm(deadline_due=S.PipelineDeadlineDue(invocation=1)),
        [
            (
                "reply",
                "error",
                errors.PIPELINE_DEADLINE_ERROR,
                "pipeline 'P' did not finish within its deadline of 5 s",
            ),
            FAILED,
            EXPIRE,
        ],
        prelude=[request(task("a"), deadline_ms=5000)],
    ),
    Case(
        "a root arms one stall check",
        TWO_TASKS,
        # 10 s and its slack (1 %): a pipeline done by then needs no expiry of its own
        [CREATED, RUNNING, ("send", P, "progress_check", 10_100), ("task", "a", 1, 0, [1])],
        settings=EngineSettings(stall_timeout=timedelta(seconds=10)),
        run={"last_progress_ms": 1_000, "check_due_ms": 11_100},
    ),
    Case(
        "a stall check after progress re-arms for the rest",
        pm(progress_check=S.PipelineProgressCheck(invocation=1)),
        [("send", P, "progress_check", 4_000)],
        prelude=[TWO_TASKS, ok("a", 1)],  # at 7_000 below: 6 s idle... of 10 s
        settings=EngineSettings(stall_timeout=timedelta(seconds=10)),
        now=7_000,
        run={"check_due_ms": 11_000},
    ),
    # ---------------------------------------------------------------- control
    Case(
        "pause",
        action(S.ACTION_PAUSE),
        [("event", "PIPELINE_STATUS_PAUSED"), ("reply", "status", "PIPELINE_STATUS_PAUSED")],
        prelude=[TWO_TASKS],
        run={"paused": True, "status": S.PIPELINE_STATUS_PAUSED},
    ),
    Case(
        "a result while paused does not start the next entry",
        ok("a", 10),
        [],
        prelude=[TWO_TASKS, action(S.ACTION_PAUSE)],
        run={"cursor": 1, "entry_started": False},
    ),
    Case(
        "unpause starts what the pause held",
        action(S.ACTION_UNPAUSE),
        [RUNNING, ("task", "b", 1, 0, [10]), ("reply", "status", "PIPELINE_STATUS_RUNNING")],
        prelude=[TWO_TASKS, action(S.ACTION_PAUSE), ok("a", 10)],
    ),
    Case(
        "cancel ends the pipeline as cancelled",
        action(S.ACTION_CANCEL),
        [
            ("event", "PIPELINE_STATUS_CANCELLING"),
            ("reply", "error", errors.CANCELLED_ERROR, "pipeline 'P' was cancelled"),
            ("event", "PIPELINE_STATUS_CANCELLED"),
            EXPIRE,
            ("reply", "status", "PIPELINE_STATUS_CANCELLED"),
        ],
        prelude=[TWO_TASKS],
        run={"status": S.PIPELINE_STATUS_CANCELLED},
    ),
    Case(
        "an action on a finished pipeline is refused",
        action(S.ACTION_CANCEL),
        [
            (
                "reply",
                "error",
                errors.ACTION_ERROR,
                "pipeline 'P' has finished (PIPELINE_STATUS_COMPLETED); cancel changes nothing",
            )
        ],
        prelude=[request(task("a")), ok("a", 1)],
    ),
    Case(
        "an unreadable message fails its pipeline",
        UnreadableMessage("garbled"),
        [
            (
                "reply",
                "error",
                errors.SERIALIZATION_ERROR,
                "pipeline 'P' received a message it cannot read (garbled); it was failed rather "
                "than left waiting for it",
            ),
            FAILED,
            EXPIRE,
        ],
        prelude=[TWO_TASKS],
    ),
    # ---------------------------------------------------------------- finish and retention
    Case(
        "get_status",
        action(S.ACTION_GET_STATUS),
        [("reply", "status", "PIPELINE_STATUS_COMPLETED")],
        prelude=[request(task("a")), ok("a", 1)],
    ),
    Case(
        "get_result of a finished pipeline is its stored reply",
        action(S.ACTION_GET_RESULT),
        [("reply", "result", 1)],
        prelude=[request(task("a")), ok("a", 1)],
    ),
    Case(
        "get_result before the end",
        action(S.ACTION_GET_RESULT),
        [("reply", "error", errors.NOT_FOUND_ERROR, "pipeline 'P' has not finished")],
        prelude=[request(task("a"))],
    ),
    Case(
        "get_request of a small request is answered at the root",
        action(S.ACTION_GET_REQUEST),
        [("reply", "request", "r1")],
        prelude=[request(task("a")), ok("a", 1)],
    ),
    Case(
        "expiry clears a finished pipeline with its small request",
        pm(expire=S.Expire(invocation=1)),
        [],
        prelude=[request(task("a")), ok("a", 1)],
    ),
    Case(
        "a large request is stored at <id>~request",
        request(task("a")),
        [STORED, CREATED, RUNNING, ("task", "a", 1, 0, [])],
        settings=EngineSettings(stall_timeout=None, inline_request_bytes=0),
    ),
    Case(
        "get_request of a large request asks the request store",
        action(S.ACTION_GET_REQUEST),
        [("send", "P~request", "get_request", 0)],
        prelude=[request(task("a"))],
        settings=EngineSettings(stall_timeout=None, inline_request_bytes=0),
    ),
    Case(
        "expiry clears a finished pipeline and its large request",
        pm(expire=S.Expire(invocation=1)),
        [("send", "P~request", "expire", 0)],
        prelude=[request(task("a")), ok("a", 1)],
        settings=EngineSettings(
            stall_timeout=None, inline_request_bytes=0, retention=timedelta(seconds=60)
        ),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_step(case: Case) -> None:
    engine = Engine()
    if case.settings is not None:
        engine.settings = case.settings
    for message in case.prelude:
        engine.step(case.address, message)
    engine.now = case.now
    assert engine.step(case.address, case.message) == case.effects
    if case.run:
        run = engine.run(case.address)
        actual = {name: getattr(run, name) for name in case.run}
        actual = {k: (list(v) if k == "active_children" else v) for k, v in actual.items()}
        assert actual == case.run


def test_every_message_kind_has_its_handler_named_after_it() -> None:
    for kind, handler in HANDLERS.items():
        assert handler.__name__ == f"on_{kind}", kind
    kinds = {f.name for f in messages_pb2.PipelineMessage.DESCRIPTOR.oneofs_by_name["kind"].fields}
    reports = messages_pb2.WorkerReport.DESCRIPTOR.oneofs_by_name["kind"].fields
    kinds |= {f"task_{field.name}" for field in reports}
    kinds |= {"pipeline_request", "action_request", "task_result", "unreadable"}
    assert set(HANDLERS) == kinds


def test_a_small_request_after_a_large_one_at_the_same_id_clears_the_old_store() -> None:
    """The earlier run's request at `<id>~request` would outlive its expiry (which now finds
    the request in the root's cell), so the new submission clears it at once."""
    engine = Engine(settings=EngineSettings(stall_timeout=None, inline_request_bytes=0))
    engine.step(P, request(task("a")))
    engine.step(P, ok("a", 1))
    engine.settings = EngineSettings(stall_timeout=None)
    assert engine.step(P, request(task("b"))) == [
        ("send", "P~request", "expire", 0),
        CREATED,
        RUNNING,
        ("task", "b", 1, 0, []),
    ]
    assert engine.step(P, action(S.ACTION_GET_REQUEST)) == [("reply", "request", "r1")]


STALL_AND_RETENTION_10S = EngineSettings(
    stall_timeout=timedelta(seconds=10), retention=timedelta(seconds=10), task_buckets=0
)
STALL_CHECK = pm(progress_check=S.PipelineProgressCheck(invocation=1))


def test_a_pipeline_done_within_the_checks_slack_is_expired_by_that_check() -> None:
    """One delayed message for a short pipeline: the stall check armed at the start (10 s and
    100 ms of slack) comes due after its retention (10 s from the end at 1_080), so it expires
    the finished pipeline and no `Expire` is armed."""
    engine = Engine(settings=STALL_AND_RETENTION_10S)
    engine.step(P, request(task("a")))
    engine.now = 1_080
    assert engine.step(P, ok("a", 1)) == [("reply", "result", 1), COMPLETED]
    assert (engine.run().expires_at_check, engine.run().check_due_ms) == (True, 11_100)
    engine.now = 11_100
    assert engine.step(P, action(S.ACTION_GET_RESULT)) == [("reply", "result", 1)]
    assert engine.step(P, STALL_CHECK) == []
    assert engine.states[P].run is None
    assert engine.step(P, action(S.ACTION_GET_STATUS)) == [
        ("reply", "status", "PIPELINE_STATUS_PENDING")
    ]


@pytest.mark.parametrize(
    ("ended_at", "retention_s"),
    [(1_101, 10), (1_080, 5), (1_080, 11)],
    ids=["ran-past-the-slack", "shorter-retention", "longer-retention"],
)
def test_otherwise_the_finished_pipeline_gets_its_own_expire(
    ended_at: int, retention_s: int
) -> None:
    """The check would come before the retention ends, or later than its slack after: an
    `Expire` at the retention, and the check finds a finished pipeline and does nothing."""
    engine = Engine(
        settings=EngineSettings(
            stall_timeout=timedelta(seconds=10),
            retention=timedelta(seconds=retention_s),
            task_buckets=0,
        )
    )
    engine.step(P, request(task("a")))
    engine.now = ended_at
    assert engine.step(P, ok("a", 1)) == [
        ("reply", "result", 1),
        COMPLETED,
        ("send", P, "expire", retention_s * 1000),
    ]
    assert not engine.run().expires_at_check
    engine.now = 11_100
    assert engine.step(P, STALL_CHECK) == []
    assert engine.run().status == S.PIPELINE_STATUS_COMPLETED


def test_a_run_again_at_a_finished_id_is_not_expired_by_the_old_check() -> None:
    engine = Engine(settings=STALL_AND_RETENTION_10S)
    engine.step(P, request(task("a")))
    engine.step(P, ok("a", 1))
    engine.now = 5_000
    engine.step(P, request(task("b")))  # invocation 2, its own check
    engine.now = 11_100
    assert engine.step(P, STALL_CHECK) == []  # the first run's check (invocation 1)
    assert engine.run().status == S.PIPELINE_STATUS_RUNNING


def test_step_is_deterministic() -> None:
    """Same state, message, clock and ids: the same effects and the same state."""
    message = request(group("g", [task("a"), task("b")], [task("c")]))
    outs = []
    for _ in range(2):
        state = AddressState()
        effects = step(P, state, message, EngineSettings(), clock=lambda: 5, ids=lambda: "k")
        outs.append((effects, state.encoded()))
    assert outs[0] == outs[1]
    sent = [e.pipeline_id for e in outs[0][0] if isinstance(e, fx.SendPipelineMessage)]
    # the parked chain defined, the stall check armed, the chain started
    assert sent == ["P:k", "P", "P:k"]


def test_an_engine_bug_fails_the_pipeline_instead_of_raising() -> None:
    engine = Engine()
    engine.step(P, TWO_TASKS)
    state = engine.states[P]
    state.raw["definition"] = b"\xff"  # a corrupt definition: the next step cannot read it
    effects = engine.step(P, ok("a", 1))
    assert effects[0][:3] == ("reply", "error", errors.INTERNAL_ERROR)
    assert engine.run().status == S.PIPELINE_STATUS_FAILED

"""The worker's StateFun functions: the pipeline function (engine shell) and the task functions."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Collection, Sequence
from datetime import timedelta
from typing import Any

from google.protobuf.message import DecodeError

from flink_tasks import logs, wire
from flink_tasks._proto import messages_pb2
from flink_tasks.config import inline_chain_steps_from_env, task_buckets_from_env
from flink_tasks.engine import (
    EngineMessage,
    EngineSettings,
    random_ids,
    step,
    system_clock,
    unreadable,
)
from flink_tasks.engine import effects as fx
from flink_tasks.engine.context import Clock, IdSource
from flink_tasks.engine.state import CELLS, AddressState
from flink_tasks.registry import FlinkTasks
from flink_tasks.statefun.adapter import CellSpec, Invocation, Outbox, StatefunEndpoint
from flink_tasks.worker import inline_steps
from flink_tasks.worker.attempts import Attempt, RunningAttempts, hold
from flink_tasks.worker.metrics import Metrics
from flink_tasks.worker.reports import ReportSink
from flink_tasks.worker.task_runner import (
    DEFAULT_MAX_RESULT_BYTES,
    PoolSettings,
    TaskRunner,
)

logger = logging.getLogger(__name__)

PIPELINE_CELLS = [CellSpec(name, wire.state_type(name)) for name in CELLS]
_TERMINAL: dict[int, str] = {
    messages_pb2.PIPELINE_STATUS_COMPLETED: "completed",
    messages_pb2.PIPELINE_STATUS_FAILED: "failed",
    messages_pb2.PIPELINE_STATUS_CANCELLED: "cancelled",
}

_PipelineInput = (
    messages_pb2.PipelineRequest
    | messages_pb2.ActionRequest
    | messages_pb2.TaskResult
    | messages_pb2.PipelineMessage
    | messages_pb2.WorkerReport
)
_PIPELINE_INPUTS: dict[str, type[_PipelineInput]] = {
    wire.PIPELINE_REQUEST: messages_pb2.PipelineRequest,
    wire.ACTION_REQUEST: messages_pb2.ActionRequest,
    wire.TASK_RESULT: messages_pb2.TaskResult,
    wire.PIPELINE_MESSAGE: messages_pb2.PipelineMessage,
    wire.WORKER_REPORT: messages_pb2.WorkerReport,
}

#: Tasks still running after this are answered with a lease (see `Worker`).
DEFAULT_INLINE_WAIT = timedelta(seconds=5)
#: A group's tasks at a bucket address (`EngineSettings.task_buckets`) still running after this
#: are leased, so the tasks queued behind them there wait at most this long.
DEFAULT_BATCH_WAIT = timedelta(milliseconds=500)
#: Tasks still queued for a pool slot after this are answered with a lease too.
DEFAULT_QUEUE_WAIT = timedelta(seconds=15)
DEFAULT_LEASE = timedelta(seconds=30)


_SALVAGE: dict[str, Callable[[bytes, str], EngineMessage]] = {
    wire.TASK_RESULT: unreadable.salvage_task_result,
    wire.PIPELINE_MESSAGE: unreadable.salvage_pipeline_message,
}


#: A packed message carries payloads up to this many bytes in all (one larger payload goes
#: alone): a result may be 256 KiB and a bucket's call may carry a thousand tasks, so every
#: message through Flink stays about as small as one task's own.
PACK_BYTES = 1024 * 1024
_PACKED: dict[str, tuple[str, Callable[[list[bytes]], Any]]] = {
    wire.TASK_REQUEST: (
        wire.TASK_REQUESTS,
        lambda chunk: messages_pb2.TaskRequests(requests=chunk),
    ),
    wire.TASK_RESULT: (wire.TASK_RESULTS, lambda chunk: messages_pb2.TaskResults(results=chunk)),
}
_UNPACKED: dict[str, tuple[str, Callable[[bytes], Sequence[bytes]]]] = {
    wire.TASK_REQUESTS: (
        wire.TASK_REQUEST,
        lambda b: messages_pb2.TaskRequests.FromString(b).requests,
    ),
    wire.TASK_RESULTS: (wire.TASK_RESULT, lambda b: messages_pb2.TaskResults.FromString(b).results),
}


def _send_packed(
    outbox: Outbox, function_type: str, address_id: str, typename: str, payloads: list[bytes]
) -> None:
    """`payloads` (each a `typename` message) to one address in as few messages as
    `PACK_BYTES` allows; a payload alone in its message goes as itself."""
    start, size = 0, 0
    for end, payload in enumerate(payloads):
        if end > start and size + len(payload) > PACK_BYTES:
            _send_chunk(outbox, function_type, address_id, typename, payloads[start:end])
            start, size = end, 0
        size += len(payload)
    _send_chunk(outbox, function_type, address_id, typename, payloads[start:])


def _send_chunk(
    outbox: Outbox, function_type: str, address_id: str, typename: str, chunk: list[bytes]
) -> None:
    if len(chunk) == 1:
        outbox.send(function_type, address_id, typename, chunk[0])
    else:
        packed_type, pack = _PACKED[typename]
        outbox.send(function_type, address_id, packed_type, pack(chunk).SerializeToString())


def _send_packs(packs: dict[tuple[str, str], list[bytes]], outbox: Outbox) -> None:
    for (function_type, address_id), payloads in packs.items():
        _send_packed(outbox, function_type, address_id, wire.TASK_REQUEST, payloads)


def _write_back(state: AddressState, outbox: Outbox) -> None:
    for cell, data in state.encoded().items():
        outbox.set(cell, data)
    state.dirty.clear()


class Worker:
    """Serves a `FlinkTasks` registry's tasks and the pipeline function over request-reply.

    Args:
        tasks: the task registry.
        engine: pipeline engine settings; `served_namespaces` defaults to the registry's.
        hooks: observer hooks (received, started, finished, retried) and middleware
            (``around_sync``, ``around_async``): see `flink_tasks.worker.hooks`.
        reports: where heartbeats and results of tasks that outlive `inline_wait` go (the
            task-reports topic). Without it every task is waited for within the request-reply
            call, so a task longer than StateFun's call budget would fail the Flink job.
        inline_wait: how long a task may run while its task function holds StateFun's call;
            past it the call is answered with a lease. Counted from the task's start, so tasks
            queued for a pool slot keep their calls and StateFun sends no more than it has
            calls in flight (admission control).
        batch_wait: the inline wait of a call at a task bucket (`EngineSettings.task_buckets`),
            when it is shorter: a bucket is shared by a group's tasks, and what queues there
            waits for the call in flight, so a slow task is leased after this instead.
        queue_wait: how long a call whose tasks wait for a pool slot (every slot busy) may
            be held before they are leased anyway. A call is held at most the longer of the
            two waits: keep both well under the runtime's call budget (``transport.call``:
            10 min in the module `flink-tasks local` writes, 2 min in the compose settings,
            StateFun's own default 1 min).
        lease: a detached task's heartbeat lease: the pipeline fails the attempt with
            `WorkerLostError` when no heartbeat arrives for this long.
        egress_topics: the Kafka topics replies and events may be written to (the configured
            reply and events topics). A request naming any other topic gets no reply there: the
            record is dropped, logged and counted (`rejected_messages{reason="egress_topic"}`),
            because StateFun's Kafka egress fails the whole Flink job on a topic that does not
            exist. `None` allows any topic (only for a broker that auto-creates topics).
        pool: where sync task bodies run (process or thread pool); default: threads.
        clock, ids: the engine's clock (ms) and child-id source; tests may pin them.
        tracing: an OpenTelemetry span per task attempt (the ``tracing`` extra); default:
            ``FLINK_TASKS_TRACING``. See `flink_tasks.tracing`.
    """

    def __init__(
        self,
        tasks: FlinkTasks,
        *,
        engine: EngineSettings | None = None,
        hooks: Sequence[object] = (),
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
        egress_topics: Collection[str] | None = None,
        reports: ReportSink | None = None,
        inline_wait: timedelta = DEFAULT_INLINE_WAIT,
        batch_wait: timedelta = DEFAULT_BATCH_WAIT,
        queue_wait: timedelta = DEFAULT_QUEUE_WAIT,
        lease: timedelta = DEFAULT_LEASE,
        pool: PoolSettings | None = None,
        clock: Clock = system_clock,
        ids: IdSource = random_ids,
        tracing: bool | None = None,
    ) -> None:
        self.tasks = tasks
        self.clock = clock
        self.ids = ids
        self.reports = reports
        self.inline_wait_s = inline_wait.total_seconds()
        self.batch_wait_s = min(self.inline_wait_s, batch_wait.total_seconds())
        self.queue_wait_s = queue_wait.total_seconds()
        self.lease_ms = int(lease.total_seconds() * 1000)
        if self.lease_ms < 300:
            raise ValueError("lease must be at least 300 ms (heartbeats go every third of it)")
        self._attempts = RunningAttempts()
        # labelled metric series, looked up once (`_series`): labels() costs a lock and a key
        self._labelled: dict[tuple[object, ...], Any] = {}
        self.egress_topics = frozenset(egress_topics) if egress_topics is not None else None
        self.metrics = Metrics()
        self._batch_tally = self.metrics.batches
        self.engine = engine or EngineSettings(
            served_namespaces=frozenset(tasks.namespaces),
            task_buckets=task_buckets_from_env(),
            inline_chain_steps=inline_chain_steps_from_env(),
        )
        self.runner = TaskRunner(
            tasks,
            hooks=hooks,
            max_result_bytes=max_result_bytes,
            pool=pool,
            metrics=self.metrics,
            tracing=tracing,
        )
        self.endpoint = StatefunEndpoint()
        self.endpoint.register(wire.PIPELINE_FUNCTION, self._pipeline_function, PIPELINE_CELLS)
        for namespace in sorted({*tasks.namespaces, wire.PIPELINE_FUNCTION.partition("/")[0]}):
            self.endpoint.register_fallback(namespace, self._task_function)

    async def handle(self, body: bytes) -> bytes:
        """One request-reply round: `ToFunction` bytes in, `FromFunction` bytes out."""
        return await self.endpoint.handle(body)

    # ---------------------------------------------------------------- pipeline function

    async def _pipeline_function(self, invocation: Invocation, outbox: Outbox) -> None:
        typename, payloads = self._unpacked(invocation)
        for payload in payloads:
            self._pipeline_message(invocation, typename, payload, outbox)
        if typename in _PIPELINE_INPUTS:  # known types only: a bounded set of labels
            # one per message StateFun delivered: a packed one (TaskResults) counts once, so
            # the batch sizes add up to these counts
            messages = self._batch_tally.messages
            messages[invocation.typename] = messages.get(invocation.typename, 0) + 1

    def _unpacked(self, invocation: Invocation) -> tuple[str, Sequence[bytes]]:
        """A message's payloads and their type: itself, or what a packed message holds (its
        framing only: each payload is parsed, or rejected, on its own)."""
        unpacked = _UNPACKED.get(invocation.typename)
        if unpacked is None:
            return invocation.typename, (invocation.payload,)
        typename, unpack = unpacked
        try:
            return typename, unpack(invocation.payload)
        except DecodeError as err:
            self._reject("unparsable", invocation, f"cannot parse {invocation.typename}: {err}")
            return typename, ()

    def _pipeline_message(
        self, invocation: Invocation, typename: str, payload: bytes, outbox: Outbox
    ) -> None:
        # the hottest path of the worker (every message of every pipeline): kept lean on purpose
        message_type = _PIPELINE_INPUTS.get(typename)
        if message_type is None:
            self._reject("unknown_type", invocation, f"unexpected message type {typename!r}")
            return
        message: EngineMessage
        try:
            message = message_type.FromString(payload)
        except DecodeError as err:
            detail = f"cannot parse {typename}: {err}"
            self._reject("unparsable", invocation, detail)
            salvage = _SALVAGE.get(typename)
            if salvage is None:
                return
            # from our own functions, so a pipeline waits for it: fail it rather than hang
            message = salvage(payload, detail)
            self.metrics.unreadable_failures.labels(typename.rpartition("/")[2]).inc()
        if message_type is messages_pb2.PipelineRequest and not message.pipeline.entries:  # type: ignore[union-attr]
            self.metrics.rejected_messages.labels("invalid_request").inc()
        state: AddressState | None = outbox.scratch.get("pipeline")
        if state is None:
            # parsed once per batch, written back (and counted in the metrics) once per batch
            state = new = AddressState(load=outbox.get)
            outbox.scratch["pipeline"] = new
            outbox.at_batch_end(functools.partial(self._end_batch, new, outbox))
        address_id = invocation.address_id
        run_before = run = state.run
        before = None if run is None else (run.invocation, run.status)
        token = logs.enter_pipeline(address_id)
        try:
            effects = step(address_id, state, message, self.engine, clock=self.clock, ids=self.ids)
        finally:
            logs.leave(token)
        apply = self._apply
        for effect in effects:
            apply(effect, outbox)
        run = state.run
        if run is not None and (
            before is None or before[0] != run.invocation or before[1] != run.status
        ):
            self._observe_run(before, run_before, state)

    def _end_batch(self, state: AddressState, outbox: Outbox) -> None:
        _write_back(state, outbox)
        self._batch_tally.batch_done(outbox.batch_size)

    def _observe_run(
        self,
        before: tuple[int, int] | None,
        run_before: messages_pb2.Run | None,
        state: AddressState,
    ) -> None:
        """Count a run that started or ended in this step (the engine is not touched: its run's
        (invocation, status) before and after the step tell; they differ here). The start time
        goes into the run's `metrics_started_ms` field, which the engine never reads."""
        run = state.run
        assert run is not None
        level = "child" if run.parent_id else "root"
        invocation, status = run.invocation, run.status
        now_ms = int(time.time() * 1000)
        new_run = before is None or before[0] != invocation or before[1] in _TERMINAL
        if new_run:
            self._series(self.metrics.pipelines_started, level).inc()
        outcome = _TERMINAL.get(status)
        if outcome is None:
            if new_run:
                run.metrics_started_ms = now_ms
                state.touch_run()
            return
        started = now_ms
        if not new_run:
            # a finishing step may have replaced the run record: the start is on the one before
            assert run_before is not None
            started = run.metrics_started_ms or run_before.metrics_started_ms or now_ms
        self._series(self.metrics.pipeline_duration, level, outcome).observe(
            max(0.0, (now_ms - started) / 1000)
        )

    def _series(self, family: Any, *labels: str) -> Any:
        """`family.labels(*labels)`, looked up once (labels() takes a lock and builds a key)."""
        key = (id(family), *labels)
        child = self._labelled.get(key)
        if child is None:
            child = self._labelled[key] = family.labels(*labels)
        return child

    def _apply(self, effect: fx.Effect, outbox: Outbox) -> None:
        if isinstance(effect, fx.SendTask):
            function_type = f"{effect.namespace}/{effect.worker_name}"
            payload = effect.request.SerializeToString()
            if effect.request.delivery:
                self.metrics.tasks_redelivered.labels(effect.request.task_type).inc()
            if not effect.request.batched:
                outbox.send(function_type, effect.address_id, wire.TASK_REQUEST, payload)
                return
            # a bucket gets its tasks of this batch packed, at the batch's end
            packs: dict[tuple[str, str], list[bytes]] | None = outbox.scratch.get("packs")
            if packs is None:
                packs = outbox.scratch["packs"] = {}
                outbox.at_batch_end(functools.partial(_send_packs, packs, outbox))
            packs.setdefault((function_type, effect.address_id), []).append(payload)
        elif isinstance(effect, fx.SendPipelineMessage):
            typename = (
                wire.TASK_RESULT
                if isinstance(effect.message, messages_pb2.TaskResult)
                else wire.PIPELINE_MESSAGE
            )
            payload = effect.message.SerializeToString()
            if effect.delay_ms > 0:
                outbox.send_after(
                    timedelta(milliseconds=effect.delay_ms),
                    wire.PIPELINE_FUNCTION,
                    effect.pipeline_id,
                    typename,
                    payload,
                )
            else:
                outbox.send(wire.PIPELINE_FUNCTION, effect.pipeline_id, typename, payload)
        elif isinstance(effect, fx.SendReply):
            if self._egress_allowed(effect.topic, effect.key):
                outbox.egress(effect.topic, effect.key, effect.reply.SerializeToString())
        elif isinstance(effect, fx.EmitEvent) and self._egress_allowed(effect.topic, effect.key):
            outbox.egress(effect.topic, effect.key, effect.event.SerializeToString())
        elif isinstance(effect, fx.CheckLease):
            check = messages_pb2.WorkerReport(lease_check=effect.deadline).SerializeToString()
            if self.reports is not None:
                self.reports.send(effect.pipeline_id, check)
            else:  # no reports topic: no task of this worker is ever leased
                outbox.send(wire.PIPELINE_FUNCTION, effect.pipeline_id, wire.WORKER_REPORT, check)

    def _egress_allowed(self, topic: str, key: str) -> bool:
        if self.egress_topics is None or topic in self.egress_topics:
            return True
        self.metrics.rejected_messages.labels("egress_topic").inc()
        logger.error(
            "dropped a reply/event for %r to topic %r: not one of the configured topics %s",
            key,
            topic,
            sorted(self.egress_topics),
        )
        return False

    def _reject(self, reason: str, invocation: Invocation, detail: str) -> None:
        self.metrics.rejected_messages.labels(reason).inc()
        logger.error(
            "rejected a message for %s/%s %r: %s",
            invocation.namespace,
            invocation.function,
            invocation.address_id,
            detail,
        )

    # ---------------------------------------------------------------- task functions

    async def _task_function(self, invocation: Invocation, outbox: Outbox) -> None:
        typename, payloads = self._unpacked(invocation)
        if typename != wire.TASK_REQUEST:
            self._reject("unknown_type", invocation, f"unexpected message type {typename!r}")
            return
        for payload in payloads:
            self._start_task(invocation, payload, outbox)

    def _start_task(self, invocation: Invocation, payload: bytes, outbox: Outbox) -> None:
        try:
            request = messages_pb2.TaskRequest.FromString(payload)
        except DecodeError as err:
            self._reject("unparsable", invocation, f"cannot parse a task request: {err}")
            return
        reply_to = request.reply_id or request.pipeline_id
        if not reply_to:
            self._reject(
                "no_reply_address",
                invocation,
                f"task request {request.task_id!r} names no pipeline",
            )
            return
        run = inline_steps.chained(self._run_task) if request.inline_next else self._run_task
        attempt = self._attempts.start(reply_to, request, run)
        started: list[Attempt] | None = outbox.scratch.get("attempts")
        if started is None:
            # a batch's tasks run concurrently: each invocation starts its task, the batch end
            # waits for them together (StateFun sends one batch per address at a time)
            started = outbox.scratch["attempts"] = []
            outbox.at_batch_end_async(lambda: self._answer_batch(started, outbox))
        started.append(attempt)

    async def _answer_batch(self, started: list[Attempt], outbox: Outbox) -> None:
        """Results of the batch's tasks done within the inline wait (the batch wait at a task
        bucket); a lease for each other one (its result follows on the task-reports topic), so
        a slow task holds the batch's call for at most that much of its running time
        (`attempts.hold`)."""
        self.metrics.task_batch_size.observe(len(started))
        if self.reports is None:
            await asyncio.wait({attempt.future for attempt in started})  # never cancels them
        else:
            shared = any(attempt.request.batched for attempt in started)
            wait = self.batch_wait_s if shared else self.inline_wait_s
            await hold(started, wait, self.queue_wait_s)
        results: dict[str, list[bytes]] = {}
        for attempt in started:
            future = attempt.future
            # still running: leased; abandoned (cancelled by a stopping worker) while this call
            # held it: leased too, so its lease runs out and the pipeline decides
            if not future.done() or (future.cancelled() and self.reports is not None):
                assert self.reports is not None
                if attempt.reporter is None:
                    self.metrics.tasks_detached.labels(attempt.request.task_type).inc()
                waits = (self.inline_wait_s, self.queue_wait_s)
                report = attempt.detach(self.reports, self.lease_ms, waits)
                outbox.send(wire.PIPELINE_FUNCTION, attempt.reply_to, wire.WORKER_REPORT, report)
                continue
            payload = attempt.future.result().SerializeToString()
            results.setdefault(attempt.reply_to, []).append(payload)
        # one message per pipeline address (up to PACK_BYTES), however many tasks this call ran
        for reply_to, payloads in results.items():
            _send_packed(outbox, wire.PIPELINE_FUNCTION, reply_to, wire.TASK_RESULT, payloads)

    async def _run_task(
        self, request: messages_pb2.TaskRequest, on_start: Callable[[], None]
    ) -> messages_pb2.TaskResult:
        series = self.metrics.task_series(request.task_type)
        if request.attempt > 1:
            series.retries.inc()
        series.in_progress.inc()
        received = time.perf_counter()
        began: float | None = None  # None: the body never started (refused, or the pool closed)

        def body_starts() -> None:  # from a pool thread, for the thread pool
            nonlocal began
            began = time.perf_counter()
            on_start()

        try:
            result = await self.runner.run(request, body_starts)
        finally:
            series.in_progress.dec()
        if began is not None:
            series.queue_wait.observe(began - received)
        duration = series.failed if result.WhichOneof("outcome") == "error" else series.succeeded
        duration.observe(time.perf_counter() - (received if began is None else began))
        return result

    async def drain(self, timeout: float) -> None:
        """Let detached tasks finish and report (up to `timeout` s), then cancel the rest:
        their leases expire and the pipelines apply their retry policies."""
        await self._attempts.drain(timeout)
        if self.reports is not None:
            await asyncio.to_thread(self.reports.close)

"""A stand-in for the pipeline function, for the client's TRANSPORT tests only.

It is not the engine and it does not run tasks. It reads the requests and actions topics with
kafka-python, looks only at the first task entry of each pipeline, and produces `Reply` records
(and a few events) the way the pipeline function does on the wire, so that the client's
transport (producing, reply matching, decoding, errors, timeouts) can be tested against a real
broker without the engine. Pipeline behaviour is tested elsewhere, with the real runtime.

Task types it understands (the first entry's ``task_type``):

- ``transport.echo``: replies with its one argument (or the tuple of its arguments).
- ``transport.fail``: replies with an error: ``builtins.ValueError``, its first argument as the
  message, a traceback, and the pipeline's initial state.
- ``transport.pickled``: replies with a pickled value (the client must refuse it by default).
- ``transport.silent``: never replies (the pipeline stays RUNNING).
"""

from __future__ import annotations

import contextlib
import pickle
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from flink_tasks import serialization
from flink_tasks._proto import events_pb2, messages_pb2, values_pb2
from flink_tasks.errors import ACTION_ERROR, NOT_FOUND_ERROR

FAKE_TRACEBACK = (
    'Traceback (most recent call last):\n  File "tasks.py", line 3, in fail\n'
    "    raise ValueError(message)\nValueError: {message}\n"
)


@dataclass(frozen=True)
class Topics:
    """The topics of one test."""

    requests: str
    actions: str
    replies: str
    events: str


@dataclass
class _Run:
    request: messages_pb2.PipelineRequest
    status: int
    outcome: messages_pb2.Reply | None = None


@dataclass
class PipelineFunctionStandIn:
    """Answers requests and actions on the test's topics (see the module docstring)."""

    bootstrap_servers: str
    topics: Topics
    reply_delay: float = 0.0
    requests_seen: list[tuple[bytes | None, messages_pb2.PipelineRequest]] = field(
        default_factory=list
    )
    actions_seen: list[messages_pb2.ActionRequest] = field(default_factory=list)
    runs: dict[str, _Run] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pipeline-stand-in", daemon=True)
        self.producer = KafkaProducer(bootstrap_servers=self.bootstrap_servers, linger_ms=0)

    def __enter__(self) -> PipelineFunctionStandIn:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the stand-in did not start")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(30)
        self.producer.close(timeout=5)

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.requests_seen) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"saw {len(self.requests_seen)} requests, not {count}")
            time.sleep(0.05)

    # --- the loop -----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap_servers, group_id=None, enable_auto_commit=False
            )
            partitions = [
                TopicPartition(topic, p)
                for topic in (self.topics.requests, self.topics.actions)
                for p in sorted(consumer.partitions_for_topic(topic))
            ]
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            for tp in partitions:
                consumer.position(tp)
        except BaseException as err:
            self._error = err
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._stop.is_set():
                for records in consumer.poll(timeout_ms=50).values():
                    for record in records:
                        if record.topic == self.topics.requests:
                            self._on_request(record.key, record.value)
                        else:
                            self._on_action(record.value)
                self.producer.flush()
        finally:
            with contextlib.suppress(Exception):
                consumer.close()

    def _reply(self, topic: str, key: str, reply: messages_pb2.Reply) -> None:
        if self.reply_delay:
            time.sleep(self.reply_delay)
        self.producer.send(topic, key=key.encode(), value=reply.SerializeToString())

    def _event(self, request: messages_pb2.PipelineRequest, **fields: Any) -> None:
        if not request.events_topic:
            return
        pid = request.pipeline.id
        event = events_pb2.PipelineEvent(
            pipeline_id=pid, root_pipeline_id=pid, timestamp_ms=int(time.time() * 1000), **fields
        )
        self.producer.send(request.events_topic, key=pid.encode(), value=event.SerializeToString())

    def _status_event(self, request: messages_pb2.PipelineRequest, status: int) -> None:
        self._event(request, status_changed=events_pb2.PipelineStatusChanged(status=status))  # type: ignore[arg-type]

    # --- requests -----------------------------------------------------------------------------

    def _on_request(self, key: bytes | None, value: bytes) -> None:
        request = messages_pb2.PipelineRequest()
        request.ParseFromString(value)
        self.requests_seen.append((key, request))
        pipeline = request.pipeline
        task = pipeline.entries[0].task
        args = serialization.decode_args(task.args)
        run = _Run(request=request, status=messages_pb2.PIPELINE_STATUS_RUNNING)
        self.runs[pipeline.id] = run
        self._event(request, pipeline_created=events_pb2.PipelineCreated(pipeline=pipeline))
        self._status_event(request, messages_pb2.PIPELINE_STATUS_RUNNING)
        reply = messages_pb2.Reply(reply_id=request.reply_id, pipeline_id=pipeline.id)
        if task.task_type == "transport.silent":
            return
        if task.task_type == "transport.echo":
            result = args[0] if len(args) == 1 else tuple(args)
            reply.result.CopyFrom(serialization.encode(result))
            run.status = messages_pb2.PIPELINE_STATUS_COMPLETED
        elif task.task_type == "transport.pickled":
            reply.result.CopyFrom(values_pb2.Value(pickled=pickle.dumps(args[0])))
            run.status = messages_pb2.PIPELINE_STATUS_COMPLETED
        elif task.task_type == "transport.fail":
            message = str(args[0])
            error = reply.error
            error.id = task.task_id
            error.type = task.task_type
            error.exception_type = "builtins.ValueError"
            error.exception_message = message
            error.stacktrace = FAKE_TRACEBACK.format(message=message)
            if pipeline.initial.has_state:
                error.state.CopyFrom(pipeline.initial.state)
                error.has_state = True
            run.status = messages_pb2.PIPELINE_STATUS_FAILED
        else:
            raise AssertionError(f"the stand-in does not know {task.task_type!r}")
        run.outcome = reply
        self._status_event(request, run.status)
        self._reply(request.reply_topic, pipeline.id, reply)

    # --- actions ------------------------------------------------------------------------------

    def _on_action(self, value: bytes) -> None:
        action = messages_pb2.ActionRequest()
        action.ParseFromString(value)
        self.actions_seen.append(action)
        reply = messages_pb2.Reply(reply_id=action.reply_id, pipeline_id=action.pipeline_id)
        run = self.runs.get(action.pipeline_id)
        finished = run is not None and run.status in (
            messages_pb2.PIPELINE_STATUS_COMPLETED,
            messages_pb2.PIPELINE_STATUS_FAILED,
            messages_pb2.PIPELINE_STATUS_CANCELLED,
        )

        def error(exception_type: str, message: str) -> None:
            reply.error.id = action.pipeline_id
            reply.error.exception_type = exception_type
            reply.error.exception_message = message

        kind = action.action
        if kind == messages_pb2.ACTION_GET_STATUS:
            reply.status = run.status if run else messages_pb2.PIPELINE_STATUS_PENDING  # type: ignore[assignment]
        elif run is None:
            error(NOT_FOUND_ERROR, f"no pipeline {action.pipeline_id!r} is known")
        elif kind == messages_pb2.ACTION_GET_REQUEST:
            reply.request.CopyFrom(run.request)
        elif kind == messages_pb2.ACTION_GET_RESULT:
            if run.outcome is None:
                error(NOT_FOUND_ERROR, f"pipeline {action.pipeline_id!r} has not finished")
            else:
                reply.MergeFrom(run.outcome)
                reply.reply_id = action.reply_id
        elif finished:
            error(ACTION_ERROR, f"pipeline {action.pipeline_id!r} has finished")
        elif kind == messages_pb2.ACTION_PAUSE:
            run.status = messages_pb2.PIPELINE_STATUS_PAUSED
            reply.status = run.status
        elif kind == messages_pb2.ACTION_UNPAUSE:
            run.status = messages_pb2.PIPELINE_STATUS_RUNNING
            reply.status = run.status
        elif kind == messages_pb2.ACTION_CANCEL:
            run.status = messages_pb2.PIPELINE_STATUS_CANCELLED
            reply.status = run.status
            self._status_event(run.request, run.status)
        self._reply(action.reply_topic, action.pipeline_id, reply)

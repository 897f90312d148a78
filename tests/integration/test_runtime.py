"""Smoke tests of the local runtime: Kafka ingress -> StateFun -> Python endpoint -> Kafka egress.

The endpoint here is a throwaway aiohttp app using the ``statefun`` SDK that answers
``flink_tasks/pipeline`` by counting messages per id (in StateFun state) and echoing each
message to the replies topic through the ``flink_tasks/kafka`` egress.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from flink_tasks.runtime import (
    LocalRuntime,
    LocalRuntimeSettings,
    PortInUseError,
    SettingsMismatchError,
    StartupError,
    ToolMissingError,
    render_module_yaml,
)
from flink_tasks.runtime.process import ManagedProcess, port_is_free
from flink_tasks.runtime.settings import KEYED_TOPIC_CONFIG
from flink_tasks.wire import ACTION_REQUEST as ACTION_REQUEST_TYPE
from flink_tasks.wire import EGRESS_ID, PIPELINE_FUNCTION
from flink_tasks.wire import PIPELINE_REQUEST as PIPELINE_REQUEST_TYPE

# the session fixture ``local_runtime`` (also fine if a conftest registers the plugin too)
pytest_plugins = ["flink_tasks.runtime.pytest_plugin"]

# kafka-python 3.0 on Python 3.11 calls importlib.resources.read_text, whose DeprecationWarning is
# attributed to importlib (not kafka), so the project-wide kafka.* filter does not catch it.
pytestmark = pytest.mark.filterwarnings(
    "ignore:.*is deprecated. Use files\\(\\) instead:DeprecationWarning"
)

# state name chosen not to clash with the real pipeline function's state
COUNT_STATE = "runtime_smoke_test_count"


class EchoWorker:
    """A StateFun HTTP endpoint for ``flink_tasks/pipeline`` in a background thread."""

    def __init__(self, host: str, port: int, reply_topic: str) -> None:
        self.host, self.port, self.reply_topic = host, port, reply_topic
        self.invocations = 0
        self._thread = threading.Thread(target=self._run, name="echo-worker", daemon=True)
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    def _app(self) -> Any:
        from aiohttp import web
        from statefun import (
            Context,
            IntType,
            Message,
            RequestReplyHandler,
            StatefulFunctions,
            ValueSpec,
            kafka_egress_message,
        )

        functions = StatefulFunctions()

        @functions.bind(  # type: ignore[misc]
            typename=PIPELINE_FUNCTION, specs=[ValueSpec(name=COUNT_STATE, type=IntType)]
        )
        def pipeline(ctx: Context, message: Message) -> None:
            self.invocations += 1
            count = (getattr(ctx.storage, COUNT_STATE) or 0) + 1
            setattr(ctx.storage, COUNT_STATE, count)
            body = f"{count}|{message.value_typename()}|".encode() + (message.raw_value() or b"")
            ctx.send_egress(
                kafka_egress_message(
                    typename=EGRESS_ID, topic=self.reply_topic, key=ctx.address.id, value=body
                )
            )

        handler = RequestReplyHandler(functions)

        async def handle(request: web.Request) -> web.Response:
            reply = await handler.handle_async(await request.read())
            return web.Response(body=reply, content_type="application/octet-stream")

        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.add_routes([web.post("/statefun/{name}", handle)])
        return app

    def _run(self) -> None:
        from aiohttp import web

        async def serve() -> None:
            runner = web.AppRunner(self._app())
            await runner.setup()
            try:
                await web.TCPSite(runner, self.host, self.port).start()
                self._stop = asyncio.Event()
                self._loop = asyncio.get_running_loop()
                self._started.set()
                await self._stop.wait()
            finally:
                await runner.cleanup()

        try:
            asyncio.run(serve())
        except BaseException as exc:
            self._error = exc
            self._started.set()

    def __enter__(self) -> EchoWorker:
        self._thread.start()
        self._started.wait(30)
        if self._error is not None:
            raise RuntimeError(f"echo worker failed to start: {self._error!r}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


def produce(bootstrap: str, records: list[tuple[str, str, bytes]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        for topic, key, value in records:
            producer.send(topic, key=key.encode(), value=value)
        producer.flush(timeout=30)
    finally:
        producer.close()


class ReplyReader:
    """Reads the replies topic from its current end, keeping only our keys."""

    def __init__(self, bootstrap: str, topic: str, *, read_committed: bool) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed" if read_committed else "read_uncommitted",
        )
        parts = self.consumer.partitions_for_topic(topic) or {0}
        tps = [TopicPartition(topic, p) for p in parts]
        self.consumer.assign(tps)
        self.consumer.seek_to_end(*tps)
        for tp in tps:
            self.consumer.position(tp)  # resolve the end offsets now, before producing

    def read(self, keys: set[str], expected: int, timeout: float) -> list[tuple[str, str]]:
        got: list[tuple[str, str]] = []
        deadline = time.monotonic() + timeout
        while len(got) < expected and time.monotonic() < deadline:
            for batch in self.consumer.poll(timeout_ms=500).values():
                for rec in batch:
                    key = rec.key.decode() if rec.key else ""
                    if key in keys:
                        got.append((key, rec.value.decode()))
        return got

    def drain(self, keys: set[str], seconds: float) -> list[tuple[str, str]]:
        return self.read(keys, sys.maxsize, seconds)

    def close(self) -> None:
        self.consumer.close()


def free_ports(n: int) -> list[int]:
    """Free ports below Linux's ephemeral range (32768+), so that no client connection of this
    session can take them between now and the runtime's start."""
    rng = random.Random()
    ports: list[int] = []
    while len(ports) < n:
        port = rng.randrange(20000, 32000)
        if port not in ports and port_is_free(port):
            ports.append(port)
    return ports


# --- fast checks (no runtime) ------------------------------------------------------------------


def test_module_yaml_has_the_three_components() -> None:
    settings = LocalRuntimeSettings(
        delivery_semantic="exactly-once", extra_function_namespaces=("other",)
    )
    text = render_module_yaml(settings)
    docs = [d for d in text.split("\n---\n") if "kind:" in d]
    assert text.count("kind: io.statefun.endpoints.v2/http") == 2
    assert 'functions: "flink_tasks/*"' in text and 'functions: "other/*"' in text
    assert "http://127.0.0.1:18000/statefun/{function.name}" in text
    assert "call: 10min" in text and "connect: 2min" in text
    assert "payload_max_bytes: 33554432" in text and "maxNumBatchRequests: 1000" in text
    assert "id: flink_tasks/ingress" in text and "consumerGroupId: flink-tasks" in text
    assert f"valueType: {PIPELINE_REQUEST_TYPE}" in text
    assert f"valueType: {ACTION_REQUEST_TYPE}" in text
    assert "type: group-offsets" in text and "autoOffsetResetPosition: earliest" in text
    assert "id: flink_tasks/kafka" in text and "transactionTimeout: 5min" in text
    assert len(docs) == 4
    plain = render_module_yaml(LocalRuntimeSettings())
    assert "type: at-least-once" in plain and "transactionTimeout" not in plain


def test_settings_from_env() -> None:
    env = {
        "FLINK_TASKS_RUNTIME_DIR": "/tmp/x-runtime",
        "FLINK_TASKS_PARALLELISM": "2",
        "FLINK_TASKS_EGRESS": "exactly-once",
        "FLINK_TASKS_CHECKPOINT_INTERVAL": "500ms",
        "FLINK_TASKS_EXTRA_FUNCTION_NAMESPACES": "a, b",
        "FLINK_TASKS_WAIT_FOR_CHECKPOINT": "false",
        "OTHER": "1",
    }
    s = LocalRuntimeSettings.from_env(environ=env)
    assert s.run_dir == Path("/tmp/x-runtime")
    assert s.parallelism == 2 and s.delivery_semantic == "exactly-once"
    assert s.checkpoint_interval == timedelta(milliseconds=500)
    assert s.extra_function_namespaces == ("a", "b") and s.wait_for_checkpoint is False
    assert LocalRuntimeSettings.from_identity(s.recorded()) == s.replace(wait_for_checkpoint=True)
    assert "java" in s.recorded() and "java" not in s.identity()
    assert "statefun_start_timeout" not in s.recorded()


def test_cli_parser_builds() -> None:
    from flink_tasks.cli import build_parser

    args = build_parser().parse_args(
        [
            "local",
            "up",
            "--parallelism",
            "2",
            "--egress",
            "exactly-once",
            "--checkpoint-interval",
            "2s",
        ]
    )
    assert args.parallelism == 2 and args.egress == "exactly-once"
    assert args.checkpoint_interval == timedelta(seconds=2)


def test_local_up_restores_when_it_can_unless_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flink_tasks.cli import build_parser
    from flink_tasks.cli.local import RESTORE_VAR, up_settings

    monkeypatch.delenv(RESTORE_VAR, raising=False)

    def restores(*flags: str) -> bool:
        args = build_parser().parse_args(["local", "up", "--run-dir", str(tmp_path), *flags])
        return up_settings(args).restore_from_checkpoint

    assert not restores()  # nothing retained yet
    chk = tmp_path / "statefun" / "checkpoints" / "0123abcd" / "chk-7"
    chk.mkdir(parents=True)
    assert not restores()  # a checkpoint still being written (no _metadata) is not one
    (chk / "_metadata").write_bytes(b"")
    assert restores() and not restores("--fresh") and restores("--from-checkpoint")
    monkeypatch.setenv(RESTORE_VAR, "false")
    assert not restores() and restores("--from-checkpoint")


def test_only_the_job_holding_the_newest_checkpoint_keeps_its_directory(tmp_path: Path) -> None:
    from flink_tasks.runtime.statefun import latest_checkpoint, prune_checkpoints

    day_one, day_two, day_three = ("1" * 32, "2" * 32, "3" * 32)  # Flink's job ids

    def checkpoint(job: str, n: int, *, complete: bool = True, mtime: float) -> Path:
        chk = tmp_path / job / f"chk-{n}"
        (chk.parent / "shared").mkdir(parents=True, exist_ok=True)
        chk.mkdir()
        if complete:
            (chk / "_metadata").write_bytes(b"")
            os.utime(chk / "_metadata", (mtime, mtime))
        return chk

    assert prune_checkpoints(tmp_path / "missing") == []
    checkpoint(day_one, 9, mtime=1_000)
    (tmp_path / "notes").mkdir()  # not Flink's: never deleted
    assert prune_checkpoints(tmp_path) == []  # the only job
    # restored from day one, stopped before its first checkpoint completed: day one stays
    checkpoint(day_two, 1, complete=False, mtime=2_000)
    assert prune_checkpoints(tmp_path) == [tmp_path / day_two]
    assert latest_checkpoint(tmp_path) == tmp_path / day_one / "chk-9"
    # restored again, and this time it checkpointed: day one is not needed any more
    checkpoint(day_three, 2, mtime=3_000)
    assert prune_checkpoints(tmp_path) == [tmp_path / day_one]
    assert sorted(p.name for p in tmp_path.iterdir()) == [day_three, "notes"]
    assert latest_checkpoint(tmp_path) == tmp_path / day_three / "chk-2"


def test_port_in_use_is_reported_before_starting(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rt = LocalRuntime(LocalRuntimeSettings(run_dir=tmp_path, kafka_port=port))
        with pytest.raises(PortInUseError, match=f"127.0.0.1:{port}"):
            rt.kafka.start(rt.java(for_flink=False))
    assert not rt.kafka.process.pid_file.exists()


def test_a_process_dying_at_start_up_reports_its_log(tmp_path: Path) -> None:
    proc = ManagedProcess("dummy", tmp_path / "dummy.pid", tmp_path / "logs" / "dummy.log")
    proc.start(["sh", "-c", "echo something went wrong >&2; exit 3"], cwd=tmp_path)
    deadline = time.monotonic() + 10
    while proc.is_running() and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(StartupError) as caught:
        proc.check_alive()
    assert "exit code 3" in str(caught.value)
    assert "something went wrong" in str(caught.value)
    assert str(tmp_path / "logs" / "dummy.log") in str(caught.value)


def test_stop_reaches_the_whole_process_group(tmp_path: Path) -> None:
    proc = ManagedProcess("sleeper", tmp_path / "sleeper.pid", tmp_path / "sleeper.log")
    proc.start(["sh", "-c", "sleep 600 & sleep 600; wait"], cwd=tmp_path)
    pid = proc.pid
    assert pid is not None
    children: list[str] = []
    deadline = time.monotonic() + 10
    while len(children) < 2 and time.monotonic() < deadline:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        time.sleep(0.05)
    assert len(children) == 2
    assert proc.stop(grace=5)
    assert not proc.is_running() and not proc.pid_file.exists()
    deadline = time.monotonic() + 10  # SIGKILLed children may take a moment to exit
    while time.monotonic() < deadline:
        states = [_proc_state(int(child)) for child in children]
        if all(state in ("gone", "Z", "X") for state in states):
            break
        time.sleep(0.05)
    assert all(state in ("gone", "Z", "X") for state in states), states


def _proc_state(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "gone"
    return raw[raw.rindex(")") + 2 :].split()[0]


def test_missing_maven_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from flink_tasks.runtime.tools import find_maven

    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ToolMissingError, match="Maven"):
        find_maven()


def test_reuse_requires_the_same_settings(tmp_path: Path) -> None:
    """A runtime recorded with other settings in the run dir is not silently reused."""
    proc = ManagedProcess("kafka", tmp_path / "kafka.pid", tmp_path / "kafka.log")
    proc.start(["sleep", "60"], cwd=tmp_path)  # stands in for a running broker
    try:
        recorded = LocalRuntimeSettings(run_dir=tmp_path)
        (tmp_path / "runtime.json").write_text(
            json.dumps({"identity": recorded.identity(), "settings": recorded.recorded()})
        )
        other = LocalRuntime(recorded.replace(parallelism=2))
        with pytest.raises(SettingsMismatchError, match="parallelism"):
            other.start()
        same_namespaces = recorded.replace(extra_function_namespaces=("flink_tasks",))
        assert same_namespaces.identity() == recorded.identity()
        attached = LocalRuntime.attach(LocalRuntimeSettings(run_dir=tmp_path))
        assert attached.settings.parallelism == 1
    finally:
        proc.stop(grace=5)


# --- the real runtime ----------------------------------------------------------------------------


@pytest.mark.integration
def test_local_runtime_fixture(local_runtime: LocalRuntime) -> None:
    """The session runtime (started here, or reused from `flink-tasks local up`) is ready and
    visible to `flink-tasks local status` from another process."""
    status = local_runtime.status()
    assert status.ready, status
    assert status.kafka.pid and status.statefun.pid
    assert status.kafka.log_file.is_file() and status.statefun.log_file.is_file()
    assert local_runtime.latest_checkpoint() is not None
    cmd = [sys.executable, "-m", "flink_tasks", "local", "status", "--json"]
    cmd += ["--run-dir", str(local_runtime.run_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert '"state": "RUNNING"' in proc.stdout


@pytest.mark.integration
def test_every_start_gives_the_ingress_topics_the_key_check(local_runtime: LocalRuntime) -> None:
    """Topics of a run dir from before the key check (docs/reliability.md) get it on the next
    start: checked in the broker's config (test_02 shows the broker then refuses keyless
    records; none is sent here, on the session's runtime)."""
    s = local_runtime.settings
    admin = KafkaAdminClient(bootstrap_servers=s.bootstrap_servers)
    topic = ConfigResourceType.TOPIC
    try:
        admin.alter_configs([ConfigResource(topic, s.actions_topic, {"cleanup.policy": "delete"})])
        assert _topic_config(admin, s.actions_topic)["cleanup.policy"] == "delete"
        local_runtime.kafka.create_topics()
        for name in s.ingress_topics:
            config = _topic_config(admin, name)
            assert {key: config.get(key) for key in KEYED_TOPIC_CONFIG} == KEYED_TOPIC_CONFIG
        assert "cleanup.policy" not in _topic_config(admin, s.replies_topic)
    finally:
        admin.close()


def _topic_config(admin: KafkaAdminClient, name: str) -> dict[str, str]:
    """The topic's config overrides (what differs from the broker's defaults)."""
    found = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    (entries,) = (by_name[name] for by_name in found.values())
    return {key: str(data["value"]) for key, data in entries.items()}


@contextlib.contextmanager
def isolated_runtime(base: Path, **changes: Any) -> Iterator[LocalRuntime]:
    """A runtime of its own (run dir, ports, worker port), so its echo worker never competes
    with the session's real worker for a port; checks that stopping it leaves nothing behind."""
    kafka, controller, rest, worker = free_ports(4)
    settings = LocalRuntimeSettings(
        run_dir=base / "runtime",
        kafka_port=kafka,
        kafka_controller_port=controller,
        rest_port=rest,
        worker_port=worker,
        call_timeout=timedelta(minutes=2),
        **changes,
    )
    with LocalRuntime(settings) as runtime:
        yield runtime
    status = runtime.status()
    assert not status.kafka.running and not status.statefun.running


@pytest.mark.integration
def test_round_trip_at_least_once(tmp_path: Path) -> None:
    """Kafka ingress (both topics) -> StateFun -> Python endpoint (with state) -> egress."""
    with isolated_runtime(tmp_path) as rt:
        s = rt.settings
        run = uuid.uuid4().hex[:8]
        k1, k2, k3 = f"smoke-{run}-1", f"smoke-{run}-2", f"smoke-{run}-3"
        reader = ReplyReader(s.bootstrap_servers, s.replies_topic, read_committed=False)
        try:
            with EchoWorker(s.worker_host, s.worker_port, s.replies_topic):
                produce(
                    s.bootstrap_servers,
                    [
                        (s.requests_topic, k1, b"a"),
                        (s.requests_topic, k2, b"b"),
                        (s.actions_topic, k3, b"c"),
                        (s.requests_topic, k1, b"d"),
                    ],
                )
                got = reader.read({k1, k2, k3}, expected=4, timeout=120)
        finally:
            reader.close()
    assert sorted(got) == sorted(
        [
            (k1, f"1|{PIPELINE_REQUEST_TYPE}|a"),
            (k1, f"2|{PIPELINE_REQUEST_TYPE}|d"),
            (k2, f"1|{PIPELINE_REQUEST_TYPE}|b"),
            (k3, f"1|{ACTION_REQUEST_TYPE}|c"),
        ]
    )


@pytest.mark.integration
def test_exactly_once_egress_survives_kill_9(tmp_path: Path) -> None:
    """read_committed sees each result once, also across kill -9 + restore from checkpoint."""
    with isolated_runtime(tmp_path, delivery_semantic="exactly-once") as rt:
        s = rt.settings
        k1, k2 = "eo-1", "eo-2"
        committed = ReplyReader(s.bootstrap_servers, s.replies_topic, read_committed=True)
        try:
            with EchoWorker(s.worker_host, s.worker_port, s.replies_topic):
                produce(
                    s.bootstrap_servers,
                    [
                        (s.requests_topic, k1, b"a"),
                        (s.requests_topic, k1, b"b"),
                        (s.requests_topic, k2, b"c"),
                    ],
                )
                first = committed.read({k1, k2}, expected=3, timeout=120)
                assert sorted(first) == [
                    (k1, f"1|{PIPELINE_REQUEST_TYPE}|a"),
                    (k1, f"2|{PIPELINE_REQUEST_TYPE}|b"),
                    (k2, f"1|{PIPELINE_REQUEST_TYPE}|c"),
                ]
                # committed output means a checkpoint covering the state updates completed
                rt.kill_statefun()
                assert not rt.status().statefun.running
                checkpoint = rt.latest_checkpoint()
                assert checkpoint is not None and (checkpoint / "_metadata").is_file()
                rt.restart_statefun(from_checkpoint=True)
                produce(
                    s.bootstrap_servers,
                    [(s.requests_topic, k1, b"d"), (s.requests_topic, k2, b"e")],
                )
                second = committed.read({k1, k2}, expected=2, timeout=120)
                second += committed.drain({k1, k2}, seconds=3)  # and nothing duplicated
        finally:
            committed.close()
        log_text = s.statefun_log_file.read_text()
    assert sorted(second) == [
        (k1, f"3|{PIPELINE_REQUEST_TYPE}|d"),
        (k2, f"2|{PIPELINE_REQUEST_TYPE}|e"),
    ]
    assert "Restoring job" in log_text and checkpoint.name in log_text

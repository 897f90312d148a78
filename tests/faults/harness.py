"""Helpers of the fault-injection suite: isolated runtimes, a worker in its own process that can
be SIGKILLed by pid (the test worker, or the product's `serve --workers N`), Flink REST probes,
and a raw reply-topic reader that counts duplicates."""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from flink_tasks._proto import messages_pb2
from flink_tasks.runtime import LocalRuntime, LocalRuntimeSettings
from flink_tasks.runtime.kafka_secure import ensure_material, role_security, secured
from flink_tasks.runtime.process import port_is_free
from flink_tasks.runtime.workers import WorkerProcesses

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Port blocks of this suite: 61000-62999. A runtime takes base+0 (worker), +81 (REST), +92
# (Kafka), +93 (Kafka controller); blocks are 100 apart and skipped when a port is taken.
PORT_RANGE = (61000, 63000)


def port_block(preferred: int) -> int:
    """The first block base at or after `preferred` whose four ports are all free."""
    base = preferred
    for _ in range((PORT_RANGE[1] - PORT_RANGE[0]) // 100):
        if base + 100 > PORT_RANGE[1]:
            base = PORT_RANGE[0]
        if all(port_is_free(base + offset) for offset in (0, 49, 81, 92, 93)):
            return base
        base += 100
    raise RuntimeError("no free port block in 61000-62999")


def runtime_settings(
    run_dir: Path, base: int, *, flink_metrics: bool = False, **overrides: Any
) -> LocalRuntimeSettings:
    """Settings of an isolated runtime: its own run dir and ports (block `base`); with
    `flink_metrics`, Flink's Prometheus reporter on base+49 (it binds every interface)."""
    return LocalRuntimeSettings.from_env(
        run_dir=run_dir,
        kafka_port=base + 92,
        kafka_controller_port=base + 93,
        rest_port=base + 81,
        metrics_port=base + 49 if flink_metrics else 0,
        worker_port=base,
        **overrides,
    )


# ------------------------------------------------------------------------------ the worker


class _KillableWorker:
    """What both worker kinds share: a port on loopback, a log, the log of task bodies run, and
    a start that waits for the port to be free (a killed predecessor's), launches, waits until
    it answers and returns the seconds it took."""

    def __init__(self, port: int, log_file: Path, exec_log: Path, host: str) -> None:
        self.host, self.port = host, port
        self.log_file, self.exec_log = log_file, exec_log
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        raise NotImplementedError

    def _launch(self, timeout: float) -> None:
        """Start the process(es) and return when they answer."""
        raise NotImplementedError

    def start(self, timeout: float = 60.0) -> float:
        """Start and wait until it answers; returns the seconds it took."""
        assert self.pid is None, "already running"
        started = time.monotonic()
        deadline = started + 10
        while not port_is_free(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._launch(timeout)
        self.starts += 1
        return time.monotonic() - started

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as resp:
            body = resp.read().decode()
        return json.loads(body) if path != "/metrics" else body

    def metrics(self) -> dict[str, int]:
        """/metrics as {'name{reason="x"}': value}."""
        out: dict[str, int] = {}
        for line in self.get("/metrics").splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = int(float(value))
        return out

    def executions(self, kind: str | None = None) -> Counter[str]:
        """How often each recorded task body ran (all runs of this worker, across restarts)."""
        return Counter(key for k, key, _ in self._runs() if kind is None or k == kind)

    def runs_by_process(self) -> Counter[int]:
        """How many recorded task bodies each worker process (by pid) started."""
        return Counter(pid for _, _, pid in self._runs())

    def _runs(self) -> list[tuple[str, str, int]]:
        """Every recorded run as (kind, key, pid): fault_tasks.record_run's lines."""
        with contextlib.suppress(FileNotFoundError):
            lines = self.exec_log.read_text().splitlines()
            return [(k, key, int(pid)) for k, key, pid in (line.split(" ") for line in lines)]
        return []


class WorkerProcess(_KillableWorker):
    """`python -m tests.faults.worker_main` in its own process (and session): started, killed
    with SIGKILL by its own pid, restarted on the same port."""

    def __init__(
        self,
        port: int,
        log_file: Path,
        exec_log: Path,
        egress_topics: tuple[str, ...],
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(port, log_file, exec_log, host)
        self.egress_topics = egress_topics
        self.popen: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None and self.popen.poll() is None else None

    def _launch(self, timeout: float) -> None:
        env = {
            **os.environ,
            "FLINK_TASKS_FAULTS_EXEC_LOG": str(self.exec_log),
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        started = time.monotonic()
        with self.log_file.open("ab") as out:
            self.popen = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.faults.worker_main",
                    "--host",
                    self.host,
                    "--port",
                    str(self.port),
                    *(f"--egress-topic={t}" for t in self.egress_topics),
                ],
                cwd=PROJECT_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        while True:
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"the worker exited with {self.popen.returncode}; see {self.log_file}"
                )
            with contextlib.suppress(OSError, ValueError):
                if self.get("/healthz")["status"] == "ok":
                    return
            if time.monotonic() - started > timeout:
                raise RuntimeError(
                    f"the worker did not answer /healthz within {timeout}s; see {self.log_file}"
                )
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL, by the process's own pid."""
        assert self.popen is not None and self.popen.poll() is None, "not running"
        os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 10 s); idempotent."""
        if self.popen is None or self.popen.poll() is not None:
            return
        os.kill(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)

    def rejected(self, reason: str) -> int:
        return self.metrics().get(f'flink_tasks_rejected_messages_total{{reason="{reason}"}}', 0)

    def set_fault(self, mode: str, seconds: float, delay: float = 0.0) -> None:
        data = json.dumps({"mode": mode, "seconds": seconds, "delay": delay}).encode()
        req = urllib.request.Request(
            self.url + "/_faults", data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=5):
            pass

    def fault_hits(self) -> int:
        return int(self.get("/_faults")["hits"])


TARGET = "tests.faults.worker_main:ALL_TASKS"


class ServeProcess(_KillableWorker):
    """The worker as users run it: ``python -m flink_tasks serve TARGET --workers N`` in a session
    of its own (the supervisor leads the process group). ``kill()`` SIGKILLs the whole group,
    supervisor and workers at once, by the supervisor's own pid (= the group id)."""

    def __init__(
        self,
        port: int,
        log_file: Path,
        exec_log: Path,
        egress_topics: tuple[str, ...],
        workers: int = 2,
        host: str = "127.0.0.1",
        serve_args: tuple[str, ...] = (),
        target: str = TARGET,
    ) -> None:
        super().__init__(port, log_file, exec_log, host)
        self.workers = workers
        self.processes = WorkerProcesses(
            target,
            host=host,
            port=port,
            workers=workers,
            log_file=log_file,
            cwd=PROJECT_ROOT,
            extra_args=serve_args,
            env={
                "FLINK_TASKS_EGRESS_TOPICS": ",".join(egress_topics),
                "FLINK_TASKS_FAULTS_EXEC_LOG": str(exec_log),
                "PYTHONUNBUFFERED": "1",
            },
        )
        self.env = self.processes.env

    @property
    def pid(self) -> int | None:
        proc = self.processes.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def worker_pids(self) -> set[int]:
        return self.processes.worker_pids()

    def _launch(self, timeout: float) -> None:
        """Returns when every worker process answers."""
        self.processes.start(timeout=timeout)

    def kill(self) -> set[int]:
        """SIGKILL the supervisor and its workers (the process group); returns the pids killed."""
        proc = self.processes.proc
        assert proc is not None and proc.poll() is None, "not running"
        killed = {proc.pid, *self.worker_pids()}
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        self.processes.proc = None
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in killed - {proc.pid}):
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker processes {killed} still exist after SIGKILL")
            time.sleep(0.05)
        return killed

    def stop(self) -> None:
        """SIGTERM (the group is SIGKILLed after 30 s); idempotent."""
        self.processes.stop()


# ------------------------------------------------------------------------------ Flink REST


def rest_get(runtime: LocalRuntime, path: str) -> Any:
    with urllib.request.urlopen(runtime.rest_url + path, timeout=5) as resp:
        return json.loads(resp.read())


def restart_strategy(runtime: LocalRuntime) -> dict[str, str]:
    """The restart-strategy options the running JobManager was configured with."""
    entries = rest_get(runtime, "/jobmanager/config")
    return {e["key"]: e["value"] for e in entries if e["key"].startswith("restart-strategy")}


@dataclass(frozen=True)
class JobHealth:
    jid: str
    state: str
    restarts: int
    root_exception: str | None


def job_health(runtime: LocalRuntime) -> JobHealth:
    """The job's state, its restart count (`numRestarts`) and last root exception."""
    deadline = time.monotonic() + 120
    while True:  # the metric appears a few seconds after the job starts
        status = runtime.job_status()
        assert status is not None, "the Flink REST API lists no job"
        metrics = rest_get(runtime, f"/jobs/{status.jid}/metrics?get=numRestarts")
        if metrics or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    restarts = int(float(metrics[0]["value"])) if metrics else -1
    exceptions = rest_get(runtime, f"/jobs/{status.jid}/exceptions")
    return JobHealth(status.jid, status.state, restarts, exceptions.get("root-exception"))


# ------------------------------------------------------------------------------ replies


@dataclass
class ReplyLog:
    """Every `Reply` seen on the reply topic since `start()`, by reply id and pipeline id."""

    by_reply_id: Counter[str] = field(default_factory=Counter)
    by_pipeline: Counter[str] = field(default_factory=Counter)
    records: int = 0
    replies: dict[str, messages_pb2.Reply] = field(default_factory=dict)  # the last, by reply id


class ReplyReader:
    """A plain consumer (no group) of the reply topic from its current end, in a thread; with
    `read_committed` it sees only committed (exactly-once) output, as the client does."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        read_committed: bool,
        security: dict[str, Any] | None = None,
    ) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.log = ReplyLog()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed" if read_committed else "read_uncommitted",
            auto_offset_reset="latest",
            fetch_max_wait_ms=100,
            **(security or {}),
        )
        partitions = [
            TopicPartition(topic, p)
            for p in sorted(self._consumer.partitions_for_topic(topic) or [])
        ]
        self._consumer.assign(partitions)
        self._consumer.seek_to_end(*partitions)
        for tp in partitions:  # resolve the positions now, before anything is submitted
            self._consumer.position(tp)
        self._thread = threading.Thread(target=self._run, name="reply-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                batches = self._consumer.poll(timeout_ms=200)
            except Exception:  # the broker may be down in a Kafka scenario: keep trying
                time.sleep(0.5)
                continue
            for records in batches.values():
                for record in records:
                    reply = messages_pb2.Reply.FromString(record.value)
                    with self._lock:
                        self.log.records += 1
                        self.log.by_reply_id[reply.reply_id] += 1
                        self.log.by_pipeline[reply.pipeline_id] += 1
                        self.log.replies[reply.reply_id] = reply

    def snapshot(self) -> ReplyLog:
        with self._lock:
            return ReplyLog(
                Counter(self.log.by_reply_id),
                Counter(self.log.by_pipeline),
                self.log.records,
                dict(self.log.replies),
            )

    def final_reply_counts(self, pipeline_ids: list[str]) -> dict[str, int]:
        """Copies of each pipeline's final reply (result or error) seen so far; the replies to
        status lookups (the client's ``reuse="attach"``) are not counted."""
        log = self.snapshot()
        return {
            p: sum(
                log.by_reply_id[reply_id]
                for reply_id, reply in log.replies.items()
                if reply.pipeline_id == p and reply.WhichOneof("outcome") in ("result", "error")
            )
            for p in pipeline_ids
        }

    def wait_for(self, pipeline_ids: list[str], timeout: float) -> ReplyLog:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            snap = self.snapshot()
            if all(snap.by_pipeline[p] >= 1 for p in pipeline_ids):
                return snap
            time.sleep(0.2)
        return self.snapshot()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        with contextlib.suppress(Exception):
            self._consumer.close()


# ------------------------------------------------------------------------------ the stack


def worker_env(settings: LocalRuntimeSettings) -> dict[str, str]:
    """What a worker process of this runtime needs: its broker, topics and Kafka user."""
    return {
        "FLINK_TASKS_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "FLINK_TASKS_TASK_REPORTS_TOPIC": settings.task_reports_topic,
        "FLINK_TASKS_REPLIES_TOPIC": settings.replies_topic,
        "FLINK_TASKS_EVENTS_TOPIC": settings.events_topic,
        **role_security(settings, "worker").environment(),
    }


def client_security(settings: LocalRuntimeSettings, role: str = "submitter") -> dict[str, Any]:
    """`ClientSettings` security fields of a role of this runtime's broker (none if plaintext)."""
    return dataclasses.asdict(role_security(settings, role))


class FaultStack:
    """An isolated runtime (Kafka + StateFun) + a worker process + a client, started in that
    order and stopped in reverse; every process is found and stopped by its own pid."""

    def __init__(
        self,
        tmp: Path,
        base: int,
        *,
        serve_workers: int | None = None,
        serve_args: tuple[str, ...] = (),
        serve_target: str = TARGET,
        serve_env: dict[str, str] | None = None,
        **settings: Any,
    ) -> None:
        self.settings = runtime_settings(tmp / "runtime", base, **settings)
        budget = settings.get("call_timeout")
        if budget is not None and "--queue-wait" not in serve_args:
            # the short call budget that keeps a test short needs a shorter queue wait than
            # serve's default, as it would in production (docs/reliability.md)
            serve_args = (*serve_args, "--queue-wait", f"{budget.total_seconds() / 3:g}s")
        worker_args = (
            self.settings.worker_port,
            tmp / "worker.log",
            tmp / "executions.log",
            (self.settings.replies_topic, self.settings.events_topic),
        )
        # `serve_workers`: the product's `serve --workers N` instead of the test worker
        self.worker: Any = (
            WorkerProcess(*worker_args)
            if serve_workers is None
            else ServeProcess(
                *worker_args, workers=serve_workers, serve_args=serve_args, target=serve_target
            )
        )
        self.worker.env.update(worker_env(self.settings))
        self.worker.env.update(serve_env or {})
        self.runtime = LocalRuntime(self.settings)
        self.client: Any = None

    def new_client(self, role: str = "submitter", **options: Any) -> Any:
        """A started client of this runtime (as ``role`` on a secured broker)."""
        from flink_tasks_client import FlinkTasksClient

        client = FlinkTasksClient(**self.client_options(role, **options))
        try:
            client.wait_ready()
        except BaseException:
            client.close()  # its I/O thread and sockets, now rather than at exit
            raise
        return client

    def client_options(self, role: str = "submitter", **options: Any) -> dict[str, Any]:
        """`FlinkTasksClient` keyword arguments for this runtime, ``options`` on top."""
        s = self.settings
        kwargs: dict[str, Any] = {
            "bootstrap_servers": s.bootstrap_servers,
            **client_security(s, role),
            "request_topic": s.requests_topic,
            "action_topic": s.actions_topic,
            "reply_topic": s.replies_topic,
            "events_topic": s.events_topic,
            "default_timeout": timedelta(seconds=180),
            "read_committed": s.delivery_semantic == "exactly-once",
            # the suite checks the engine's own id rules and counts every reply on the reply
            # topic: no status lookup before a submit (test_12 opts in to "attach")
            "pipeline_reuse": "allow",
        }
        kwargs.update(options)
        return kwargs

    def start(self) -> FaultStack:
        if secured(self.settings):  # the worker reads its Kafka password when it starts
            ensure_material(self.settings)
        # The worker starts while Kafka and StateFun do: nothing calls it before a client
        # submits, and its task-reports producer connects to Kafka lazily.
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="worker-start") as pool:
            worker_started = pool.submit(self.worker.start)
            try:
                self.runtime.start()
                worker_started.result()
                self.client = self.new_client()
            except BaseException:
                concurrent.futures.wait([worker_started])
                self.stop()
                raise
        return self

    def stop(self) -> None:
        """Stop everything, the JVMs with SIGKILL: the run dir is thrown away, so a graceful
        shutdown (seconds per JVM) would buy nothing. Idempotent."""
        with contextlib.suppress(Exception):
            if self.client is not None:
                self.client.close()
        self.client = None
        try:
            self.runtime.statefun.stop(kill=True)
            self.runtime.kafka.stop(kill=True)
        finally:
            self.worker.stop()

    def reply_reader(self) -> ReplyReader:
        return ReplyReader(
            self.settings.bootstrap_servers,
            self.settings.replies_topic,
            read_committed=self.settings.delivery_semantic == "exactly-once",
            security=role_security(self.settings, "admin").kafka_python_options(),
        )


@contextlib.contextmanager
def fault_stack(tmp: Path, base: int, **options: Any) -> Iterator[FaultStack]:
    """A started `FaultStack` (options as its), in the first free port block at or after
    `base`; stopped at the end."""
    stack = FaultStack(tmp, port_block(base), **options)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


# ------------------------------------------------------------------------------ results table

RESULTS: list[dict[str, Any]] = []


def record_result(**row: Any) -> None:
    """A row of the reliability table (printed at the end of the session, see conftest)."""
    RESULTS.append(row)


@dataclass(frozen=True)
class ObservedStack:
    """The shared runtime of the observability scenarios (test_13 metrics, test_15 traces and
    the dashboard): `serve --workers 2 --pool-size 1 --tracing` with span-exporting hooks."""

    stack: FaultStack
    metrics_dir: Path
    """PROMETHEUS_MULTIPROC_DIR of the worker processes."""
    spans_dir: Path
    """Where the hooks write the workers' spans."""

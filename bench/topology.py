"""B1, B2, B3 and B5 in the topology users run (issue 16): `flink-tasks serve --workers 2` as the
worker, every client its own OS process with its own `FlinkTasksClient`, the local Kafka +
StateFun (`LocalRuntime`) with its own run dir and ports.

  B1: fan-out of 1,000 tasks, tasks/s (one client process);
  B2: 10-step chain, submit-to-result latency one run after another (one client process);
  B3: orchestrator fan-out + count per size (one client process per size);
  B5: 10,000 single-task pipelines from 4 client processes at once, throughput from the first
      submit to the last result, latency p50/p95/p99 over every pipeline; once per client
      `pipeline_reuse` policy (`attach`, the client's default, looks the id up before sending).
Every phase records the peak worker RSS (sum over serve's processes), the StateFun JVM's RSS and
heap used, and the checkpoint size (bench._memory). Every process started is stopped at the end,
also on failure, SIGTERM or Ctrl-C.

Run: python -m bench.topology --out FILE [options]; see --help.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path
from types import FrameType
from typing import Any

from bench import _clients, realtime
from bench import tasks as bench_tasks
from bench._cpu import CpuMeter, pids_cpu_seconds, session_cpu
from bench._memory import MemorySampler
from flink_tasks.config import DEFAULT_TASK_BUCKETS, INLINE_CHAIN_STEPS_VAR
from flink_tasks.runtime import LocalRuntime, LocalRuntimeSettings
from flink_tasks.runtime.workers import WorkerProcesses

log = logging.getLogger("bench.topology")
ROOT = Path(__file__).resolve().parent.parent
SERVE_TARGET = "bench.tasks:tasks"


def _settings(args: argparse.Namespace) -> LocalRuntimeSettings:
    realtime._set_buffer_timeout(args.buffer_timeout_ms)
    settings = realtime.settings_for(args, "at-least-once", args.checkpoint_ms, "topology")
    namespaces = set(settings.extra_function_namespaces) | set(bench_tasks.tasks.namespaces)
    return settings.replace(extra_function_namespaces=tuple(sorted(namespaces)))


def _worker_env(settings: LocalRuntimeSettings, inline_chain_steps: int) -> dict[str, str]:
    return {
        INLINE_CHAIN_STEPS_VAR: str(inline_chain_steps),
        "FLINK_TASKS_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "FLINK_TASKS_TASK_REPORTS_TOPIC": settings.task_reports_topic,
        "FLINK_TASKS_EGRESS_TOPICS": f"{settings.replies_topic},{settings.events_topic}",
        "PYTHONUNBUFFERED": "1",
    }


class Topology:
    """The runtime, `serve --workers N` and the memory sampler; phases run client processes."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.settings = _settings(args)
        self.log_dir = Path(args.log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.workers = WorkerProcesses(
            SERVE_TARGET,
            port=self.settings.worker_port,
            workers=args.workers,
            log_file=self.log_dir / "topology-serve.log",
            cwd=ROOT,
            extra_args=("--pool", args.pool, "--task-buckets", str(args.task_buckets)),
            env=_worker_env(self.settings, args.inline_chain_steps),
        )
        self.runtime = LocalRuntime(self.settings)
        self.sampler: MemorySampler | None = None
        self.cpu: CpuMeter | None = None

    def start(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        self.workers.start(timeout=120)
        self.runtime.start()
        status = self.runtime.status()
        job = self.runtime.job_status()
        jvm_pids = [
            pid for pid in (status.statefun.pid, *status.taskmanagers.values()) if pid is not None
        ]
        assert self.workers.proc is not None
        self.sampler = MemorySampler(
            self.workers.proc.pid, jvm_pids, self.runtime.rest_url, job.jid if job else None
        ).start()
        self.cpu = CpuMeter(
            {
                "statefun_jvm": pids_cpu_seconds(jvm_pids),
                "kafka": pids_cpu_seconds([status.kafka.pid] if status.kafka.pid else []),
                "serve": session_cpu(self.workers.proc.pid),
            }
        )
        return {
            "startup_s": time.perf_counter() - t0,
            "serve_command": " ".join(self.workers.command()[1:]),
            "worker_pids": sorted(self.workers.worker_pids()),
        }

    def stop(self) -> None:
        try:
            if self.sampler is not None:
                self.sampler.stop()
        finally:
            try:
                self.workers.stop()
            finally:
                self.runtime.stop(force=True)

    def spec(self, mode: str, **extra: Any) -> dict[str, Any]:
        s, a = self.settings, self.args
        return {
            "mode": mode,
            "bootstrap_servers": s.bootstrap_servers,
            "requests_topic": s.requests_topic,
            "actions_topic": s.actions_topic,
            "replies_topic": s.replies_topic,
            "events_topic": s.events_topic,
            "timeout": a.timeout,
            "reuse": a.reuse,
            "reps": a.reps,
            "b1_n": a.b1_n,
            "b2_steps": a.b2_steps,
            "b2_runs": a.b2_runs,
            "b2_warmup": a.b2_warmup,
            **extra,
        }

    def run(self, name: str, specs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Any]:
        """Client processes for `specs`, released together; their results and the phase's
        figures: `memory` peaks and, from GO to the last client's exit, the CPU seconds of each
        process group and the task attempts serve ran (`cpu`)."""
        assert self.sampler is not None and self.cpu is not None
        cpu, tasks_at_go = self.cpu, {}

        def go() -> None:
            cpu.mark()
            tasks_at_go["calls"] = _task_calls_or_none(self)

        self.sampler.window()
        parts = _clients.run_clients(
            [sys.executable, "-m", "bench.topology_client"],
            specs,
            self.log_dir,
            f"topology-{name}",
            cwd=ROOT,
            run_timeout=self.args.timeout + 120,
            on_go=go,
        )
        used = cpu.since()
        used["clients"] = sum(part.pop("cpu_s", 0.0) for part in parts)
        before, after = tasks_at_go.get("calls"), _task_calls_or_none(self)
        tasks = after["tasks"] - before["tasks"] if before and after else None
        cpu_figures = {"seconds": used, "task_attempts": tasks}
        return parts, {"memory": self.sampler.peaks(), "cpu": cpu_figures}


def task_calls(top: Topology) -> dict[str, float]:
    """Task attempts and the HTTP requests that carried them, so far (serve's /metrics, all
    worker processes: `flink_tasks_task_batch_size` sum and count)."""
    url = f"http://127.0.0.1:{top.settings.worker_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    found = {"tasks": 0.0, "requests": 0.0}
    for line in text.splitlines():
        for key, name in (("tasks", "_sum"), ("requests", "_count")):
            if line.startswith(f"flink_tasks_task_batch_size{name} "):
                found[key] += float(line.split()[1])
    return found


def _task_calls_or_none(top: Topology) -> dict[str, float] | None:
    try:
        return task_calls(top)
    except OSError as err:  # the count is extra: the phase's timings stand without it
        log.warning("no task call count from serve's /metrics: %s", err)
        return None


def _b1(top: Topology, args: argparse.Namespace, results: dict[str, Any]) -> None:
    before = _task_calls_or_none(top)
    (part,), figures = top.run("b1", [top.spec("b1")])
    after = _task_calls_or_none(top)
    calls = None
    if before is not None and after is not None:
        calls = {key: after[key] - before[key] for key in after}
        log.warning("B1 topology: %.0f task attempts in %.0f requests", *calls.values())
    results["b1"] = {**part, **figures, "task_calls": calls}
    log.warning("B1 topology: %s", {k: round(v["median_tasks_per_s"]) for k, v in part.items()})


def _b2(top: Topology, args: argparse.Namespace, results: dict[str, Any]) -> None:
    (part,), figures = top.run("b2", [top.spec("b2")])
    results["b2"] = {**part, **figures}
    log.warning(
        "B2 topology: p50 %.1f p95 %.1f p99 %.1f ms", part["p50_ms"], part["p95_ms"], part["p99_ms"]
    )


def _b3(top: Topology, args: argparse.Namespace, results: dict[str, Any]) -> None:
    results.setdefault("b3", {})
    for n in args.b3_sizes:
        variants = args.b3_variants if n <= 100_000 else args.b3_big_variants
        (part,), figures = top.run(f"b3-{n}", [top.spec("b3", b3_sizes=[n], b3_variants=variants)])
        for key, row in part.items():
            results["b3"][key] = {**row, **figures}
            log.warning(
                "B3 topology %s: %.2f s, %.0f us/child",
                key,
                row["median_wall_s"],
                row["us_per_child"],
            )
        _save(args, results)


def _b5(policies: str) -> Any:
    def phase(top: Topology, args: argparse.Namespace, results: dict[str, Any]) -> None:
        results.setdefault("b5", {})
        per_client = args.b5_n // args.b5_clients
        for reuse in policies.split(","):
            specs = [
                top.spec(
                    "b5", n=per_client, offset=i * per_client, warmup=args.b5_warmup, reuse=reuse
                )
                for i in range(args.b5_clients)
            ]
            parts, figures = top.run(f"b5-{reuse}", specs)
            merged = _clients.merge_b5(parts)
            results["b5"][reuse] = {**merged, "reuse": reuse, **figures}
            log.warning(
                "B5 topology reuse=%s: %d pipelines from %d processes, %.0f tasks/s, "
                "p50 %.1f p95 %.1f p99 %.1f ms",
                reuse,
                merged["n"],
                merged["clients"],
                merged["tasks_per_s"],
                merged["p50_ms"],
                merged["p95_ms"],
                merged["p99_ms"],
            )
            _save(args, results)

    return phase


def run_phases(top: Topology, args: argparse.Namespace, results: dict[str, Any]) -> None:
    """The phases in the order `--only` names them."""
    phases = {
        "b1": _b1,
        "b2": _b2,
        "b3": _b3,
        "b5": _b5(args.b5_reuse),
        "b5-extra": _b5(args.b5_extra_reuse),
    }
    for name in args.only.split(","):
        phases[name](top, args, results)
        _save(args, results)


def _save(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Written after each phase, so that a later failure keeps what was measured."""
    Path(args.out).write_text(json.dumps(results, indent=1))


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the `finally` that stops every process


def build_parser(description: str | None = __doc__) -> argparse.ArgumentParser:
    """The options of the topology (runtime, serve, clients) and of its phases."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", required=True)
    parser.add_argument("--log-dir", default=str(ROOT / "bench" / "out"))
    realtime.add_runtime_options(parser)
    parser.add_argument(
        "--only",
        default="b5,b1,b2,b3,b5-extra",
        help="comma list of b1,b2,b3,b5,b5-extra, run in this order",
    )
    parser.add_argument("--workers", type=int, default=2, help="serve --workers")
    parser.add_argument(
        "--pool",
        choices=["process", "thread"],
        default="process",
        help="serve --pool (default: serve's own default, process)",
    )
    parser.add_argument(
        "--task-buckets",
        type=int,
        default=DEFAULT_TASK_BUCKETS,
        metavar="N",
        help="serve --task-buckets (default: serve's, 8; 0: a request per task)",
    )
    parser.add_argument(
        "--reuse",
        choices=["attach", "reject", "allow"],
        default="allow",
        help="the clients' pipeline_reuse for B1-B3 (allow: as start_local, no status lookup)",
    )
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--checkpoint-ms", type=int, default=1000)
    parser.add_argument("--buffer-timeout-ms", type=int, default=None)
    parser.add_argument(
        "--inline-chain-steps",
        type=int,
        default=0,
        help="EngineSettings.inline_chain_steps of the workers (0: off, the default)",
    )
    parser.add_argument("--b1-n", type=int, default=1000)
    parser.add_argument("--b2-steps", type=int, default=10)
    parser.add_argument("--b2-runs", type=int, default=200)
    parser.add_argument("--b2-warmup", type=int, default=20)
    parser.add_argument(
        "--b3-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 10_000]
    )
    parser.add_argument(
        "--b3-variants",
        type=lambda s: s.split(","),
        default=["auto", "num_stages"],
        help="B3's fan-out shapes: auto (automatic staging), num_stages (num_stages=10)",
    )
    parser.add_argument(
        "--b3-big-variants",
        type=lambda s: s.split(","),
        default=["auto", "num_stages"],
        help="B3's shapes above 100,000 children (one run each: ~4 min at 1,000,000 here)",
    )
    parser.add_argument("--b5-n", type=int, default=10_000)
    parser.add_argument("--b5-clients", type=int, default=4)
    parser.add_argument("--b5-warmup", type=int, default=20, help="pipelines per client before GO")
    parser.add_argument(
        "--b5-reuse",
        default="allow",
        help="phase b5: once per pipeline_reuse policy listed (allow: no lookup, as apply_async)",
    )
    parser.add_argument(
        "--b5-extra-reuse",
        default="attach",
        help="phase b5-extra: the same with these policies (attach: the client's default, "
        "a status lookup per submit)",
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    signal.signal(signal.SIGTERM, _terminate)
    results: dict[str, Any] = {
        "workers": args.workers,
        "pool": args.pool,
        "task_buckets": args.task_buckets,
        "reuse": args.reuse,
        "reps": args.reps,
        "checkpoint_interval_ms": args.checkpoint_ms,
        "buffer_timeout_ms": args.buffer_timeout_ms,
        "inline_chain_steps": args.inline_chain_steps,
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
        "ports": {
            "kafka": args.kafka_port,
            "controller": args.kafka_controller_port,
            "rest": args.rest_port,
            "worker": args.worker_port,
        },
        "cpu_count": os.cpu_count(),
    }
    top = Topology(args)
    try:
        results.update(top.start())
        log.warning("topology up in %.1f s: %s", results["startup_s"], results["serve_command"])
        _save(args, results)
        run_phases(top, args, results)
    finally:
        top.stop()
        results["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
        _save(args, results)


if __name__ == "__main__":
    main()

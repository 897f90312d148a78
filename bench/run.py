"""`make bench`: every benchmark, flink-tasks and its peers measured in the same run.

Steps (each a subprocess writing JSON into --work-dir, default bench/out/):
  1. bench/setup.sh: redis-server, the peers' venvs (bench/.venvs/), matplotlib;
  2. B4 flink-tasks in-process (upb protobuf, and the pure-Python protobuf for a like-for-like
     comparison), with a cProfile of the pipeline function;
  3. B4 statefun-tasks 0.9.93 (its own venv);
  4. B1/B2/B3 flink-tasks on the real local runtime (own run dir and ports);
  5. B1/B2/B3 Celery + Redis (own redis port, worker subprocess);
  6. "topology": B1/B2/B3/B5 with `flink-tasks serve --workers 2` and clients in their own
     processes (bench.topology; same ports as step 4, which has stopped by then);
  7. "celery-b5": B5 on Celery from 4 client processes (bench.peers.celery_topology);
then bench/results.md, bench/b3_scale.png and bench/latency_cdf.png (bench.report). Every process
started is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from flink_tasks.config import DEFAULT_TASK_BUCKETS

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENVS = HERE / ".venvs"


def _machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
        info["loadavg_start"] = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        pass
    try:
        java = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
        info["java"] = (java.stderr or java.stdout).splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        info["java"] = "?"
    return info


def _step(
    name: str,
    cmd: list[str],
    out: Path,
    log_dir: Path,
    timeout: float,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    print(f"== {name}: {' '.join(cmd[:4])} ...", flush=True)
    t0 = time.monotonic()
    log_path = log_dir / f"{name}.log"
    out.unlink(missing_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()  # its own clean-up (runtimes, redis, workers) runs on SIGTERM
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
            code = -1
    took = time.monotonic() - t0
    for line in log_path.read_text(errors="replace").splitlines():
        if (
            line.startswith(("B1", "B2", "B3", "B4", "B5"))
            or " bench.realtime " in line
            or (" bench.topology " in line)
        ):
            print("   " + line, flush=True)
    if not out.exists():
        print(f"   {name} FAILED (exit {code}); see {log_path}", flush=True)
        return {"error": f"exit {code}; log {log_path}", "took_s": took}
    data: dict[str, Any] = json.loads(out.read_text())  # phases measured before a failure count
    if code != 0:
        print(f"   {name} FAILED (exit {code}) after some phases; see {log_path}", flush=True)
        data["error"] = f"exit {code}; log {log_path}"
    data["took_s"] = took
    return data


#: the opt-in row's setting: `FLINK_TASKS_INLINE_CHAIN_STEPS` (task buckets as in the main row)
OPT_IN_INLINE_CHAIN_STEPS = 9


def _topology_cmd(args: argparse.Namespace, out: Path, log_dir: Path, *extra: str) -> list[str]:
    """`bench.topology` on the bench's ports and run dir, with `extra` options."""
    return [
        *(sys.executable, "-m", "bench.topology", "--out", str(out), "--log-dir", str(log_dir)),
        *("--run-dir", args.run_dir, "--kafka-port", str(args.kafka_port)),
        *("--kafka-controller-port", str(args.kafka_controller_port)),
        *("--rest-port", str(args.rest_port), "--worker-port", str(args.worker_port)),
        *("--reps", str(args.reps), "--b2-runs", str(args.b2_runs), "--b5-n", str(args.b5_n)),
        *("--b5-clients", str(args.b5_clients), "--workers", str(args.topology_workers)),
        *("--pool", args.topology_pool),
        *(
            ("--buffer-timeout-ms", str(args.buffer_timeout_ms))
            if args.buffer_timeout_ms is not None
            else ()
        ),
        *extra,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work-dir", default=str(HERE / "out"))
    parser.add_argument("--results", default=str(HERE / "results.md"))
    parser.add_argument("--skip-setup", action="store_true")
    parser.add_argument(
        "--report-only", action="store_true", help="re-render from --work-dir/all.json"
    )
    parser.add_argument(
        "--only",
        default="b4,sft,realtime,celery,topology,topology-opt-in,celery-b5",
        help="comma list of b4,sft,realtime,celery,topology,topology-opt-in,celery-b5",
    )
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--run-dir", default="/tmp/ft-bench-rt")
    parser.add_argument("--kafka-port", type=int, default=21092)
    parser.add_argument("--kafka-controller-port", type=int, default=21093)
    parser.add_argument("--rest-port", type=int, default=21081)
    parser.add_argument("--worker-port", type=int, default=21000)
    parser.add_argument("--redis-port", type=int, default=21379)
    parser.add_argument("--b3-sizes", default="1000,10000,100000", help="start_local and Celery")
    parser.add_argument(
        "--topology-b3-sizes",
        default="1000,10000,100000,1000000",
        help="B3 in the users' topology (above 100,000: one run of each variant)",
    )
    parser.add_argument("--b2-runs", type=int, default=200)
    parser.add_argument(
        "--b5-n", type=int, default=10_000, help="B5 pipelines (tasks), all clients"
    )
    parser.add_argument("--b5-clients", type=int, default=4, help="B5 client processes")
    parser.add_argument(
        "--topology-workers", type=int, default=2, help="serve --workers (topology)"
    )
    parser.add_argument(
        "--topology-pool",
        choices=["process", "thread"],
        default="process",
        help="serve --pool in the topology step (serve's default: process)",
    )
    parser.add_argument(
        "--topology-task-buckets",
        type=int,
        default=DEFAULT_TASK_BUCKETS,
        metavar="N",
        help="serve --task-buckets in the topology step (default: serve's, 8; 0: a request "
        "per task)",
    )
    parser.add_argument(
        "--pool",
        choices=["thread", "process"],
        default="thread",
        help="where the flink-tasks worker runs sync task bodies (realtime B1-B3)",
    )
    parser.add_argument(
        "--sft-reps",
        type=int,
        default=2,
        help="statefun-tasks B4 repetitions (its engine is O(N^2))",
    )
    parser.add_argument(
        "--buffer-timeout-ms",
        type=int,
        default=None,
        help="Flink execution.buffer-timeout for the real runtime",
    )
    parser.add_argument(
        "--inline-chain-steps",
        type=int,
        default=0,
        help="EngineSettings.inline_chain_steps for realtime and topology (0: off, the default)",
    )
    args = parser.parse_args()
    if args.report_only:
        from bench import report

        saved = json.loads((Path(args.work_dir) / "all.json").read_text())
        report.write(saved, Path(args.results), Path(args.results).with_name("b3_scale.png"))
        return
    only = set(args.only.split(","))
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if not args.skip_setup:
        subprocess.run(
            ["bash", str(HERE / "setup.sh")],
            cwd=ROOT,
            check=True,
            env={**os.environ, "PY": sys.executable},
        )
    results: dict[str, Any] = {
        "machine": _machine(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": "python -m bench.run " + " ".join(sys.argv[1:]),
    }
    py = sys.executable
    peer_env = {"PYTHONPATH": str(ROOT)}
    if "b4" in only:
        results["b4_upb"] = _step(
            "b4-flink-tasks",
            [
                py,
                "-m",
                "bench.b4_engine",
                "--out",
                str(work / "b4.json"),
                "--reps",
                str(args.reps),
                "--profile",
                str(work / "profile"),
            ],
            work / "b4.json",
            work,
            900,
        )
        results["b4_python"] = _step(
            "b4-flink-tasks-pure-python-protobuf",
            [
                py,
                "-m",
                "bench.b4_engine",
                "--out",
                str(work / "b4py.json"),
                "--reps",
                str(args.reps),
                "--skip-e2e",
                "--shapes",
                "fanout:1000,chain:1000",
            ],
            work / "b4py.json",
            work,
            900,
            env={"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"},
        )
    if "sft" in only:
        results["b4_sft"] = _step(
            "b4-statefun-tasks",
            [
                str(VENVS / "statefun-tasks" / "bin" / "python"),
                "-m",
                "bench.peers.sft_b4",
                "--out",
                str(work / "sft.json"),
                "--reps",
                str(args.sft_reps),
                "--warmup",
                "0",
            ],
            work / "sft.json",
            work,
            1200,
            env=peer_env,
        )
    if "realtime" in only:
        cmd = [
            py,
            "-m",
            "bench.realtime",
            "--out",
            str(work / "realtime.json"),
            "--reps",
            str(args.reps),
            "--run-dir",
            args.run_dir,
            "--kafka-port",
            str(args.kafka_port),
            "--kafka-controller-port",
            str(args.kafka_controller_port),
            "--rest-port",
            str(args.rest_port),
            "--worker-port",
            str(args.worker_port),
            "--b3-sizes",
            args.b3_sizes,
            "--b2-runs",
            str(args.b2_runs),
            "--pool",
            args.pool,
        ]
        if args.buffer_timeout_ms is not None:
            cmd += ["--buffer-timeout-ms", str(args.buffer_timeout_ms)]
        cmd += ["--inline-chain-steps", str(args.inline_chain_steps)]
        results["realtime"] = _step("realtime-flink-tasks", cmd, work / "realtime.json", work, 1500)
    if "celery" in only:
        results["celery"] = _step(
            "celery",
            [
                str(VENVS / "celery" / "bin" / "python"),
                "-m",
                "bench.peers.celery_bench",
                "--out",
                str(work / "celery.json"),
                "--reps",
                str(args.reps),
                "--redis-port",
                str(args.redis_port),
                "--log-dir",
                str(work),
                "--b3-sizes",
                args.b3_sizes,
                "--b2-runs",
                str(args.b2_runs),
            ],
            work / "celery.json",
            work,
            1200,
            env=peer_env,
        )
    if "topology" in only:
        results["topology"] = _step(
            "topology-flink-tasks",
            _topology_cmd(
                args,
                work / "topology.json",
                work,
                *("--b3-sizes", args.topology_b3_sizes, "--timeout", "3600"),
                *("--task-buckets", str(args.topology_task_buckets)),
                *("--inline-chain-steps", str(args.inline_chain_steps)),
            ),
            work / "topology.json",
            work,
            7200,
        )
    if "topology-opt-in" in only:
        # the opt-in settings that trade semantics for speed (docs/deploy.md), as extra rows
        (work / "opt-in").mkdir(exist_ok=True)
        results["topology_opt_in"] = _step(
            "topology-opt-in",
            _topology_cmd(
                args,
                work / "topology_opt_in.json",
                work / "opt-in",
                *("--only", "b1,b2", "--task-buckets", str(args.topology_task_buckets)),
                *("--inline-chain-steps", str(OPT_IN_INLINE_CHAIN_STEPS)),
            ),
            work / "topology_opt_in.json",
            work,
            1800,
        )
    if "celery-b5" in only:
        results["celery_b5"] = _step(
            "celery-b5",
            [
                *(str(VENVS / "celery" / "bin" / "python"), "-m", "bench.peers.celery_topology"),
                *("--out", str(work / "celery_b5.json"), "--log-dir", str(work)),
                *("--redis-port", str(args.redis_port), "--n", str(args.b5_n)),
                *("--clients", str(args.b5_clients)),
            ],
            work / "celery_b5.json",
            work,
            1200,
            env=peer_env,
        )
    results["profile_file"] = str(work / "profile.fanout-10000.txt")
    results["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    results["total_s"] = time.monotonic() - started
    (work / "all.json").write_text(json.dumps(results, indent=1))
    from bench import report

    report.write(results, Path(args.results), Path(args.results).with_name("b3_scale.png"))
    print(
        f"wrote {args.results} and its plots in {results['total_s'] / 60:.1f} min",
        flush=True,
    )


if __name__ == "__main__":
    main()

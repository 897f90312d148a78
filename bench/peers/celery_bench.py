# ruff: noqa: SIM115
"""The Celery peer: B1/B2/B3 shapes with group / chain / chord, Redis broker and result backend.

Starts Debian's redis-server on a loopback port and a Celery worker subprocess (prefork, 2
processes for 2 cores), runs the shapes, stops both. Runs in bench/.venvs/celery:
  bench/.venvs/celery/bin/python -m bench.peers.celery_bench --out FILE [options]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench._clients import percentile, stop_group


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def _stop(proc: subprocess.Popen[bytes] | None, grace: float = 15) -> None:
    if proc is not None:
        stop_group(proc, grace)


def run(args: argparse.Namespace) -> dict[str, Any]:
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        raise SystemExit("redis-server is missing: run bench/setup.sh")
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    redis_url = f"redis://127.0.0.1:{args.redis_port}"
    env = dict(os.environ, BENCH_REDIS_URL=redis_url)
    redis_proc = worker = None
    out: dict[str, Any] = {
        "reps": args.reps,
        "warmup": args.warmup,
        "concurrency": args.concurrency,
        "pool": args.pool,
    }
    try:
        redis_log = open(os.path.join(workdir, "redis.log"), "wb")
        redis_proc = subprocess.Popen(
            [
                redis_bin,
                "--port",
                str(args.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
                "--protected-mode",
                "yes",
            ],
            stdout=redis_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait_port(args.redis_port, 20)
        os.environ["BENCH_REDIS_URL"] = redis_url
        import celery
        import kombu
        import redis as redis_py
        from celery import chain, group

        from bench.peers.celery_app import app, inc

        app.backend.client.flushall()
        worker_log = open(os.path.join(args.log_dir, "celery-worker.log"), "wb")
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "bench.peers.celery_app",
                "worker",
                "--pool",
                args.pool,
                "--concurrency",
                str(args.concurrency),
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel",
                "WARNING",
            ],
            env=env,
            stdout=worker_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while not app.control.ping(timeout=0.5):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the Celery worker did not start; see {args.log_dir}/celery-worker.log"
                )
        redis_version = redis_py.Redis.from_url(redis_url).info()["redis_version"]
        out["versions"] = {
            "celery": celery.__version__,
            "kombu": kombu.__version__,
            "redis-py": redis_py.__version__,
            "redis-server": redis_version,
            "python": sys.version.split()[0],
        }
        for _ in range(3):  # warm-up
            group(inc.s(i) for i in range(200)).apply_async().get(timeout=args.timeout)
            chain(inc.s(0), *[inc.s() for _ in range(args.b2_steps - 1)]).apply_async().get(
                timeout=args.timeout
            )

        # B1: fan-out of trivial tasks, submit to result
        runs = []
        for rep in range(args.warmup + args.reps):
            t0 = time.perf_counter()
            result = (
                group(inc.s(i) for i in range(args.b1_n)).apply_async().get(timeout=args.timeout)
            )
            wall = time.perf_counter() - t0
            assert len(result) == args.b1_n and result[-1] == args.b1_n
            if rep >= args.warmup:
                runs.append(wall)
        rates = [args.b1_n / w for w in runs]
        out["b1"] = {
            "n": args.b1_n,
            "wall_s": runs,
            "tasks_per_s": rates,
            "median_tasks_per_s": statistics.median(rates),
        }
        print(f"B1 celery: {statistics.median(rates):.0f} tasks/s", flush=True)

        # B2: a 10-step chain, latency
        latencies = []
        for rep in range(args.b2_warmup + args.b2_runs):
            t0 = time.perf_counter()
            result = (
                chain(inc.s(0), *[inc.s() for _ in range(args.b2_steps - 1)])
                .apply_async()
                .get(timeout=args.timeout)
            )
            wall = time.perf_counter() - t0
            assert result == args.b2_steps
            if rep >= args.b2_warmup:
                latencies.append(wall * 1000)
        out["b2"] = {
            "steps": args.b2_steps,
            "runs": len(latencies),
            "p50_ms": percentile(latencies, 50),
            "p95_ms": percentile(latencies, 95),
            "p99_ms": percentile(latencies, 99),
            "mean_ms": statistics.fmean(latencies),
            "min_ms": min(latencies),
            "latencies_ms": [round(x, 3) for x in latencies],  # for the CDF plot
        }
        print(f"B2 celery: p50 {out['b2']['p50_ms']:.1f} ms", flush=True)

        # B3: group of n, per size. (A chord(group)(count) stalled at n=10,000 with Celery 5.7.0 and
        # the Redis backend in our trials: the callback never ran; so the fan-in is the client's.)
        out["b3"] = {}
        for n in args.b3_sizes:
            reps = args.reps if n <= 10_000 else args.b3_big_reps
            warm = 1 if n <= 10_000 else 0
            runs = []
            for rep in range(warm + reps):
                t0 = time.perf_counter()
                result = len(
                    group(inc.s(i) for i in range(n)).apply_async().get(timeout=args.timeout)
                )
                wall = time.perf_counter() - t0
                assert result == n, result
                if rep >= warm:
                    runs.append(wall)
                app.backend.client.flushdb()
            median = statistics.median(runs)
            out["b3"][f"group/{n}"] = {
                "n": n,
                "variant": "group",
                "wall_s": runs,
                "median_wall_s": median,
                "us_per_child": median / n * 1e6,
            }
            print(f"B3 celery n={n}: {median:.2f} s, {median / n * 1e6:.0f} us/child", flush=True)
    finally:
        _stop(worker)
        _stop(redis_proc)
        shutil.rmtree(workdir, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--log-dir", default=tempfile.gettempdir())
    parser.add_argument("--redis-port", type=int, default=21379)
    parser.add_argument("--pool", default="prefork")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--b1-n", type=int, default=1000)
    parser.add_argument("--b2-steps", type=int, default=10)
    parser.add_argument("--b2-runs", type=int, default=200)
    parser.add_argument("--b2-warmup", type=int, default=20)
    parser.add_argument(
        "--b3-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 10_000, 100_000]
    )
    parser.add_argument("--b3-big-reps", type=int, default=1)
    args = parser.parse_args()

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # bench.run's step timeout: run()'s clean-up stops redis

    signal.signal(signal.SIGTERM, terminate)
    results = run(args)
    with open(args.out, "w") as fh:
        json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()

"""The Celery side of B5 (issue 16): 10,000 single tasks `inc.apply_async` from 4 client
processes at once, against the worker setup of bench/peers/celery_bench.py (redis-server on a
loopback port, a Celery worker subprocess, prefork, concurrency 2). Runs in bench/.venvs/celery:

  bench/.venvs/celery/bin/python -m bench.peers.celery_topology --out FILE [options]

Latency per task: from just before `apply_async` to the moment the result's message reaches the
client process. Celery's Redis backend stores a result and PUBLISHes it on the channel
`celery-task-meta-<id>` its result consumer listens on; each client process also listens on that
pattern from a thread of its own and stamps each arrival there, so a result is timed when it
arrives, not when the client gets round to `get()` it (the client's own thread is busy submitting
meanwhile). Every result is then also collected through Celery (`ResultSet.join_native`) and
checked.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench import _clients
from bench._cpu import CpuMeter, pids_cpu_seconds, session_cpu
from bench.peers.celery_bench import _stop, _wait_port

ROOT = Path(__file__).resolve().parents[2]
CHANNEL_PREFIX = "celery-task-meta-"


def client(spec: dict[str, Any]) -> None:
    os.environ["BENCH_REDIS_URL"] = spec["redis_url"]
    import redis as redis_py
    from celery.result import ResultSet

    from bench.peers.celery_app import app, inc

    n, offset, timeout = spec["n"], spec["offset"], spec["timeout"]
    for i in range(spec["warmup"]):
        assert inc.delay(i).get(timeout=timeout) == i + 1
    arrived: dict[str, float] = {}
    pubsub = redis_py.Redis.from_url(spec["redis_url"]).pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(CHANNEL_PREFIX + "*")
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            message = pubsub.get_message(timeout=0.5)
            if message is None:
                continue
            now = time.time()
            task_id = message["channel"].decode()[len(CHANNEL_PREFIX) :]
            if json.loads(message["data"]).get("status") == "SUCCESS":
                arrived.setdefault(task_id, now)

    listener = threading.Thread(target=listen, name="result-arrivals", daemon=True)
    listener.start()
    went = _clients.handshake()
    ids = [uuid.uuid4().hex for _ in range(n)]
    submitted_at = [0.0] * n
    results = []
    for i, task_id in enumerate(ids):
        submitted_at[i] = time.time()
        results.append(inc.apply_async((offset + i,), task_id=task_id))
    values = ResultSet(results, app=app).join_native(timeout=timeout)
    deadline = time.monotonic() + 30
    while any(task_id not in arrived for task_id in ids):  # the listener may lag behind get()
        if time.monotonic() > deadline:
            raise TimeoutError("results were collected but not all seen on the channel")
        time.sleep(0.01)
    stop.set()
    listener.join(5)
    pubsub.close()
    wrong = [(i, v) for i, v in enumerate(values) if v != offset + i + 1]
    if wrong:
        raise AssertionError(f"{len(wrong)} wrong results, e.g. {wrong[:3]}")
    done_at = [arrived[task_id] for task_id in ids]
    pairs = zip(submitted_at, done_at, strict=True)
    with open(spec["out"], "w") as fh:
        json.dump(
            {
                "n": n,
                "first_submit": submitted_at[0],
                "last_submit": submitted_at[-1],
                "last_result": max(done_at),
                "latencies_ms": [(d - s) * 1000 for s, d in pairs],
                "cpu_s": time.process_time() - went,
            },
            fh,
        )


def run(args: argparse.Namespace) -> dict[str, Any]:
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        raise SystemExit("redis-server is missing: run bench/setup.sh")
    workdir = tempfile.mkdtemp(prefix="bench-redis-topology-")
    redis_url = f"redis://127.0.0.1:{args.redis_port}"
    env = dict(os.environ, BENCH_REDIS_URL=redis_url)
    log_dir = Path(args.log_dir)
    redis_proc = worker = None
    out: dict[str, Any] = {
        "concurrency": args.concurrency,
        "pool": args.pool,
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
    }
    try:
        with open(log_dir / "celery-topology-redis.log", "wb") as redis_log:
            redis_proc = subprocess.Popen(
                [
                    *(redis_bin, "--port", str(args.redis_port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no", "--dir", workdir),
                    *("--protected-mode", "yes"),
                ],
                stdout=redis_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_port(args.redis_port, 20)
        os.environ["BENCH_REDIS_URL"] = redis_url
        import celery

        from bench.peers.celery_app import app

        app.backend.client.flushall()
        with open(log_dir / "celery-topology-worker.log", "wb") as worker_log:
            worker = subprocess.Popen(
                [
                    *(sys.executable, "-m", "celery", "-A", "bench.peers.celery_app", "worker"),
                    *("--pool", args.pool, "--concurrency", str(args.concurrency)),
                    *("--without-gossip", "--without-mingle", "--without-heartbeat"),
                    *("--loglevel", "WARNING"),
                ],
                env=env,
                stdout=worker_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while not app.control.ping(timeout=0.5):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Celery worker did not start; see {log_dir}")
        out["celery"] = celery.__version__
        per_client = args.n // args.clients
        specs = [
            {
                "redis_url": redis_url,
                "n": per_client,
                "offset": i * per_client,
                "warmup": args.warmup,
                "timeout": args.timeout,
            }
            for i in range(args.clients)
        ]
        cpu = CpuMeter(
            {
                "redis": pids_cpu_seconds([redis_proc.pid]),
                "celery_worker": session_cpu(worker.pid),
            }
        )
        parts = _clients.run_clients(
            [sys.executable, "-m", "bench.peers.celery_topology", "client"],
            specs,
            log_dir,
            "celery-b5",
            env={"PYTHONPATH": str(ROOT)},
            cwd=ROOT,
            run_timeout=args.timeout + 120,
            on_go=cpu.mark,
        )
        used = cpu.since()
        used["clients"] = sum(part.pop("cpu_s", 0.0) for part in parts)
        out["b5"] = _clients.merge_b5(parts)
        out["b5"]["cpu"] = {"seconds": used, "task_attempts": per_client * args.clients}
        b5 = out["b5"]
        print(
            f"B5 celery: {b5['n']} tasks from {b5['clients']} processes, {b5['tasks_per_s']:.0f} "
            f"tasks/s, p50 {b5['p50_ms']:.1f} p95 {b5['p95_ms']:.1f} p99 {b5['p99_ms']:.1f} ms",
            flush=True,
        )
    finally:
        _stop(worker)
        _stop(redis_proc)
        shutil.rmtree(workdir, ignore_errors=True)
        out["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    return out


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "client":
        client(json.loads(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--log-dir", default=tempfile.gettempdir())
    parser.add_argument("--redis-port", type=int, default=21379)
    parser.add_argument("--pool", default="prefork")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=20, help="tasks per client before GO")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    import signal

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through run()'s clean-up

    signal.signal(signal.SIGTERM, terminate)
    results = run(args)
    with open(args.out, "w") as fh:
        json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()

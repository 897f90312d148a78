"""Client processes of the users'-topology benchmarks, started and merged (stdlib only: the
Celery side imports it from its own venv).

A client process is started with a JSON spec as its last argument, gets ready (imports,
connections, warm-up), prints `READY` on stdout, waits for `GO` on stdin, runs, writes its JSON
result to the spec's `out` file and exits 0. The parent starts them all, releases them at once
and merges: B5's throughput runs from the earliest submit in any process to the latest result in
any process (wall clock `time.time()`, one machine), latency percentiles over every pipeline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

READY = "READY"
GO = "GO"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def latency_summary(latencies_ms: list[float]) -> dict[str, Any]:
    return {
        "runs": len(latencies_ms),
        "p50_ms": percentile(latencies_ms, 50),
        "p95_ms": percentile(latencies_ms, 95),
        "p99_ms": percentile(latencies_ms, 99),
        "mean_ms": sum(latencies_ms) / len(latencies_ms) if latencies_ms else float("nan"),
        "max_ms": max(latencies_ms, default=float("nan")),
    }


def handshake() -> float:
    """In a client process: say ready, wait for the go; returns the process's CPU time then
    (`time.process_time()`), from which the client reports its own CPU for the phase."""
    print(READY, flush=True)
    line = sys.stdin.readline().strip()
    if line != GO:
        raise SystemExit(f"expected {GO!r} on stdin, got {line!r}")
    return time.process_time()


def stop_group(proc: subprocess.Popen[Any], grace: float = 15) -> None:
    """SIGTERM the process group led by `proc` (its own session), SIGKILL after `grace`."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


def run_clients(
    cmd: list[str],
    specs: list[dict[str, Any]],
    log_dir: Path,
    name: str,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    ready_timeout: float = 180,
    run_timeout: float = 1800,
    on_go: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Start one process per spec (`cmd + [json spec]`), release them together (calling
    `on_go` just before), return their results in spec order. Every process is stopped on the
    way out, whatever happens."""
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    procs: list[subprocess.Popen[str]] = []
    logs = []
    try:
        for i, spec in enumerate(specs):
            spec = {**spec, "out": str(tmp / f"{i}.json"), "index": i}
            log = open(log_dir / f"{name}-client-{i}.log", "w")  # noqa: SIM115
            logs.append(log)
            procs.append(
                subprocess.Popen(
                    [*cmd, json.dumps(spec)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                    cwd=cwd,
                    env={**os.environ, **(env or {})},
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + ready_timeout
        for i, proc in enumerate(procs):
            assert proc.stdout is not None
            line = _readline(proc, deadline)
            if line.strip() != READY:
                raise RuntimeError(
                    f"{name} client {i} did not get ready ({line!r}); "
                    f"see {log_dir}/{name}-client-{i}.log"
                )
        if on_go is not None:
            on_go()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(GO + "\n")
            proc.stdin.flush()
        results = []
        deadline = time.monotonic() + run_timeout
        for i, proc in enumerate(procs):
            code = proc.wait(max(1.0, deadline - time.monotonic()))
            if code != 0:
                raise RuntimeError(
                    f"{name} client {i} exited {code}; see {log_dir}/{name}-client-{i}.log"
                )
            results.append(json.loads((tmp / f"{i}.json").read_text()))
        return results
    finally:
        for proc in procs:
            stop_group(proc)
        for log in logs:
            log.close()
        for path in tmp.glob("*"):
            path.unlink()
        tmp.rmdir()


def _readline(proc: subprocess.Popen[str], deadline: float) -> str:
    """A line of the client's stdout, or '' if it exits or the deadline passes first."""
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(timeout=0.5):
                return proc.stdout.readline()
            if proc.poll() is not None:
                return ""
    return ""


def merge_b5(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One B5 result from the client processes' parts (`first_submit`, `last_result` wall-clock
    seconds, `latencies_ms`, `n`)."""
    latencies = [x for part in parts for x in part["latencies_ms"]]
    first = min(part["first_submit"] for part in parts)
    last = max(part["last_result"] for part in parts)
    n = sum(part["n"] for part in parts)
    return {
        "n": n,
        "clients": len(parts),
        "wall_s": last - first,
        "tasks_per_s": n / (last - first),
        **latency_summary(latencies),
        "latencies_ms": [round(x, 3) for x in latencies],
        "per_client_wall_s": [part["last_result"] - part["first_submit"] for part in parts],
        # how long each process took to hand all its pipelines over (submit calls only)
        "per_client_submit_s": [part["last_submit"] - part["first_submit"] for part in parts],
    }

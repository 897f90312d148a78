"""Savepoints and rescaling of the local runtime's StateFun job, the way Flink does it anywhere:
take a savepoint and stop the job, start it again from that savepoint with another parallelism.

A savepoint holds every pipeline's state, the Kafka offsets of the ingresses and the exactly-once
egress's pending transactions; pipelines in flight carry on after the restart (StateFun sends
the calls that were in flight again). State is split in key groups: the job's max parallelism
(``pipeline.max-parallelism``, fixed when the job first starts) is the upper bound of any later
parallelism.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from flink_tasks.runtime.errors import RuntimeLauncherError
from flink_tasks.runtime.local import LocalRuntime

log = logging.getLogger(__name__)


class SavepointError(RuntimeLauncherError):
    """A savepoint could not be taken (no running job, or Flink reported a failure)."""


def _rest(runtime: LocalRuntime, path: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        runtime.rest_url + path,
        data=data,
        method="GET" if body is None else "POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read() or b"{}")


def take_savepoint(runtime: LocalRuntime, *, stop: bool, timeout: float = 300.0) -> Path:
    """A savepoint of the running job in ``<run dir>/statefun/savepoints``; with `stop`, the job
    is cancelled once it is written. Returns the savepoint's directory."""
    job = runtime.job_status()
    if job is None or job.state != "RUNNING":
        state = "no job" if job is None else f"the job is {job.state}"
        raise SavepointError(f"no savepoint: {state} at {runtime.rest_url}")
    savepoints = (runtime.settings.run_dir / "statefun" / "savepoints").resolve()
    target = savepoints.as_uri()
    triggered_at = time.time()
    # `stop`: a savepoint, then the job cancelled. Not Flink's stop-with-savepoint: with StateFun's
    # Kafka ingress (the legacy FlinkKafkaConsumer) on Flink 1.16 its source fails while
    # stopping (Handover$ClosedException) and the job restarts instead of stopping. Output after
    # the savepoint is undone on restore (exactly-once egress) or repeated (at-least-once).
    body = {"target-directory": target, "cancel-job": stop}
    trigger = _rest(runtime, f"/jobs/{job.jid}/savepoints", body)
    request_id = trigger["request-id"]
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = _rest(runtime, f"/jobs/{job.jid}/savepoints/{request_id}")
        except (OSError, urllib.error.URLError) as exc:
            # a MiniCluster ends with its job: the savepoint it finished is on disk
            written = _newest_savepoint(savepoints, since=triggered_at)
            if written is None or runtime.statefun.process.is_running():
                raise SavepointError(f"the JobManager stopped answering: {exc}") from exc
            return written
        if answer.get("status", {}).get("id") == "COMPLETED":
            operation = answer.get("operation") or {}
            if "failure-cause" in operation:
                cause = operation["failure-cause"].get("stack-trace", "")
                first = cause.splitlines()[0] if cause else "unknown cause"
                raise SavepointError(f"savepoint of job {job.jid} failed: {first}")
            path = Path(urlparse(operation["location"]).path)
            log.info("savepoint of job %s: %s", job.jid, path)
            return path
        if time.monotonic() > deadline:
            raise SavepointError(f"savepoint of job {job.jid} not done within {timeout:.0f}s")
        time.sleep(0.25)


def _newest_savepoint(directory: Path, *, since: float) -> Path | None:
    done = [m for m in directory.glob("savepoint-*/_metadata") if m.stat().st_mtime >= since]
    return max(done, key=lambda m: m.stat().st_mtime).parent if done else None


def rescale(
    runtime: LocalRuntime, parallelism: int, *, taskmanagers: int | None = None
) -> tuple[Path, float]:
    """Stop the job with a savepoint and start it again from it at `parallelism` (in cluster
    mode with `taskmanagers` TaskManagers, default unchanged). Kafka and the workers keep
    running; clients keep waiting for their pipelines. Returns the savepoint and the seconds
    from the stop to the restored job running."""
    if parallelism < 1:
        raise ValueError("parallelism must be >= 1")
    changes: dict[str, Any] = {"parallelism": parallelism, "restore_from_checkpoint": False}
    if taskmanagers is not None:
        if not runtime.settings.taskmanagers:
            raise ValueError("--taskmanagers needs the cluster mode (local up --taskmanagers N)")
        changes["taskmanagers"] = taskmanagers
    if runtime.settings.taskmanager_slots and taskmanagers is not None:
        changes["taskmanager_slots"] = 0  # just enough slots for the new parallelism
    settings = runtime.settings.replace(**changes)  # checked before anything stops
    started = time.monotonic()
    savepoint = take_savepoint(runtime, stop=True)
    runtime.restart_statefun_from(savepoint, settings)
    return savepoint, time.monotonic() - started

"""Memory figures of the users'-topology benchmarks, sampled while a phase runs.

- worker RSS: the sum of VmRSS over every process in `serve`'s session (supervisor, worker
  processes, their fork servers and pool children), from /proc, every second (each sample scans
  all of /proc: at 4 a second that cost ~5% of a core on a busy machine); forked children share
  pages, so the sum counts shared pages once per process (an upper bound);
- JVM: the StateFun JVM's RSS from /proc, and the heap used as Flink's REST API reports it
  (`/taskmanagers/<id>/metrics?get=Status.JVM.Memory.Heap.Used`, summed over TaskManagers;
  Flink refreshes these at most every `metrics.fetcher.update-interval`, 10 s by default, so a
  short phase gets one or two samples);
- checkpoint size: `state_size` of the latest completed checkpoint (`/jobs/<jid>/checkpoints`).
"""

from __future__ import annotations

import json
import os
import threading
import urllib.request
from pathlib import Path
from typing import Any

from bench._cpu import stat_fields

PAGE = os.sysconf("SC_PAGE_SIZE")


def _session_of(pid: int) -> int | None:
    fields = stat_fields(pid)
    return int(fields[3]) if fields is not None else None


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def session_rss(session: int) -> tuple[int, int]:
    """(sum of RSS, number of processes) over the processes of a session."""
    total = count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and _session_of(int(entry.name)) == session:
            total += rss_bytes(int(entry.name))
            count += 1
    return total, count


def _rest(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=3) as resp:
        return json.loads(resp.read())


def jvm_heap_used(rest_url: str) -> int | None:
    try:
        total = 0
        for tm in _rest(f"{rest_url}/taskmanagers")["taskmanagers"]:
            metrics = _rest(
                f"{rest_url}/taskmanagers/{tm['id']}/metrics?get=Status.JVM.Memory.Heap.Used"
            )
            total += int(float(metrics[0]["value"])) if metrics else 0
        return total
    except (OSError, ValueError, KeyError, IndexError):
        return None


def checkpoint_state_size(rest_url: str, jid: str) -> int | None:
    try:
        latest = _rest(f"{rest_url}/jobs/{jid}/checkpoints")["latest"]["completed"]
        return int(latest["state_size"]) if latest else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


class MemorySampler:
    """Samples in a thread of its own; `window()` starts a new set of peaks, `peaks()` reads it."""

    def __init__(
        self, serve_session: int, jvm_pids: list[int], rest_url: str, jid: str | None
    ) -> None:
        self.serve_session = serve_session
        self.jvm_pids = jvm_pids
        self.rest_url = rest_url
        self.jid = jid
        self._lock = threading.Lock()
        self._peaks: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def start(self) -> MemorySampler:
        self.window()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def window(self) -> None:
        with self._lock:
            self._peaks = {
                "worker_rss_peak_bytes": 0,
                "worker_processes_max": 0,
                "jvm_rss_peak_bytes": 0,
                "jvm_heap_used_peak_bytes": None,
                "jvm_heap_samples": 0,
                "checkpoint_state_size_peak_bytes": None,
                "checkpoint_state_size_last_bytes": None,
            }

    def peaks(self) -> dict[str, Any]:
        self._sample(slow=True)
        with self._lock:
            return dict(self._peaks)

    def _run(self) -> None:
        tick = 0
        while not self._stop.wait(1.0):
            self._sample(slow=tick % 2 == 0)
            tick += 1

    def _sample(self, slow: bool) -> None:
        rss, count = session_rss(self.serve_session)
        jvm = sum(rss_bytes(pid) for pid in self.jvm_pids)
        heap = jvm_heap_used(self.rest_url) if slow else None
        state = checkpoint_state_size(self.rest_url, self.jid) if slow and self.jid else None
        with self._lock:
            p = self._peaks
            p["worker_rss_peak_bytes"] = max(p["worker_rss_peak_bytes"], rss)
            p["worker_processes_max"] = max(p["worker_processes_max"], count)
            p["jvm_rss_peak_bytes"] = max(p["jvm_rss_peak_bytes"], jvm)
            if heap is not None:
                p["jvm_heap_used_peak_bytes"] = max(p["jvm_heap_used_peak_bytes"] or 0, heap)
                p["jvm_heap_samples"] += 1
            if state is not None:
                p["checkpoint_state_size_peak_bytes"] = max(
                    p["checkpoint_state_size_peak_bytes"] or 0, state
                )
                p["checkpoint_state_size_last_bytes"] = state

"""CPU seconds per process group over a benchmark phase: where a task's CPU goes.

A group is a list of pids or a session id (every process in it, e.g. `serve`'s supervisor,
worker processes and pool children). From /proc/<pid>/stat: user + system time of the process
and of its children that it has waited for (a pool child that exited counts in its parent).
A process that exits between two readings without being waited for loses its share, so the
figures are lower bounds. Clients measure their own CPU (`time.process_time()` from GO) and
report it in their result.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command (state ppid pgrp session ...), or None
    when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command may contain spaces and parentheses: split after its last ")"
    return stat.rsplit(")", 1)[1].split()


def _cpu_of(fields: list[str]) -> float:
    # utime stime cutime cstime: stat fields 14-17 (1-based), [11:15] after the command
    return sum(int(value) for value in fields[11:15]) / TICKS


def cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of `pid`, in seconds (0 if it is gone)."""
    fields = stat_fields(pid)
    return _cpu_of(fields) if fields is not None else 0.0


def session_cpu_seconds(session: int) -> float:
    total = 0.0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = stat_fields(int(entry.name))
            if fields is not None and int(fields[3]) == session:
                total += _cpu_of(fields)
    return total


def pids_cpu_seconds(pids: list[int]) -> Callable[[], float]:
    return lambda: sum(cpu_seconds(pid) for pid in pids)


def session_cpu(session: int) -> Callable[[], float]:
    return lambda: session_cpu_seconds(session)


class CpuMeter:
    """`mark()` reads every group; `since()` is what each used from the mark to now."""

    def __init__(self, groups: dict[str, Callable[[], float]]) -> None:
        self.groups = groups
        self._marked: dict[str, float] = {}

    def mark(self) -> None:
        self._marked = {name: read() for name, read in self.groups.items()}

    def since(self) -> dict[str, float]:
        return {name: read() - self._marked.get(name, 0.0) for name, read in self.groups.items()}

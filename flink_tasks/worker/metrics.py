"""Counters the worker exposes at /metrics (Prometheus text format)."""

from __future__ import annotations

import threading
from collections import Counter


class Metrics:
    """Thread-safe named counters with one optional label."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()

    def inc(self, name: str, label: str = "", amount: int = 1) -> None:
        with self._lock:
            self._counts[(name, label)] += amount

    def get(self, name: str, label: str = "") -> int:
        with self._lock:
            return self._counts[(name, label)]

    def render(self) -> str:
        """The counters in Prometheus text exposition format."""
        with self._lock:
            items = sorted(self._counts.items())
        lines = []
        for (name, label), value in items:
            labels = f'{{reason="{label}"}}' if label else ""
            lines.append(f"flink_tasks_{name}{labels} {value}")
        return "\n".join(lines) + "\n"

"""The Grafana dashboard (deploy/grafana) is valid JSON whose worker queries name metrics the
worker declares (Flink's names are checked against a live reporter in tests/faults/test_12)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest

from flink_tasks.worker.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "flink-tasks.json"
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
}


def declared_worker_metrics() -> set[str]:
    """Every sample name the worker's families can have (HELP/TYPE come from the library)."""
    text = generate_latest(Metrics().registry).decode()
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        if name.endswith("_created"):
            continue
        names.update(f"{name.removesuffix('_total')}{suffix}" for suffix in SUFFIXES[kind])
    return names


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, query) of every target."""
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]


def metric_names(query: str) -> set[str]:
    return set(re.findall(r"\bflink_[A-Za-z0-9_:]+", query))


def test_dashboard_worker_queries_name_declared_metrics() -> None:
    declared = declared_worker_metrics()
    queries = dashboard_queries()
    assert len(queries) >= 15
    worker_names = set()
    for title, query in queries:
        names = metric_names(query)
        assert names, f"{title}: {query} names no metric"
        for name in names:
            if name.startswith("flink_tasks_"):
                assert name in declared, f"{title}: {name} is not a worker metric"
                worker_names.add(name)
    # every worker family is on the dashboard
    families = {n.rsplit("_", 1)[0] if n.endswith(("_bucket", "_sum")) else n for n in declared}
    shown = {n.rsplit("_", 1)[0] if n.endswith(("_bucket", "_sum")) else n for n in worker_names}
    assert {f.removesuffix("_count") for f in families} <= {s.removesuffix("_count") for s in shown}


def test_worker_metrics_follow_prometheus_conventions() -> None:
    text = generate_latest(Metrics().registry).decode()
    helps = re.findall(r"^# HELP (\S+) ", text, re.MULTILINE)
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))
    assert set(helps) == set(types)
    for name, kind in types.items():
        assert name.startswith("flink_tasks_")
        if kind == "histogram" and "duration" in name:
            assert name.endswith("_seconds"), name

"""Metrics on the real runtime: `flink-tasks serve --workers 2` (two worker processes behind one
port, prometheus_client's multiprocess mode) answers any scrape with the counts of both processes,
exact for a known workload; Flink's own Prometheus reporter shows the job's checkpoints; and every
query of the Grafana dashboard (deploy/grafana) names a metric one of the two serves."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from flink_tasks_client import list_pipelines
from prometheus_client.parser import text_string_to_metric_families

from flink_tasks import TaskError, in_parallel
from flink_tasks.types import PipelineStatus
from tests.faults import fault_tasks as ft
from tests.faults import long_tasks as lt
from tests.faults.harness import ObservedStack, job_health
from tests.unit.test_dashboard import dashboard_queries, declared_worker_metrics, metric_names

pytestmark = [pytest.mark.integration]

FANOUT, GOOD, BAD = 20, 3, 2


def scrape(url: str) -> dict[str, float]:
    """{'name{label="v",...}': value} of one scrape (labels sorted)."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        return parse_exposition(resp.read().decode())


def parse_exposition(text: str) -> dict[str, float]:
    """{'name{label="v",...}': value} of a text exposition (labels sorted)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def total(samples: dict[str, float], name: str, **labels: str) -> float:
    """Sum of `name`'s samples whose labels include `labels`."""
    found = 0.0
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        if base == name and all(f'{k}="{v}"' in rest for k, v in labels.items()):
            found += value
    return found


def test_two_processes_one_scrape_exact_counts(observed_stack: ObservedStack) -> None:
    stack, multiproc = observed_stack.stack, observed_stack.metrics_dir
    before = job_health(stack.runtime)
    fan_outs = [
        in_parallel([lt.quick.send(i) for i in range(FANOUT)]).continue_with(ft.total)
        for _ in range(GOOD)
    ]
    failing = [ft.unserializable_result.send() for _ in range(BAD - 1)]
    failing.append(ft.hang_retried.send(5.0))  # 3 attempts, each times out after 1 s
    futures = [stack.client.submit(p, timeout=120) for p in [*fan_outs, *failing]]
    assert [f.result(timeout=120) for f in futures[:GOOD]] == [2470] * GOOD
    for future in futures[GOOD:]:
        with pytest.raises(TaskError):
            future.result(timeout=120)

    url = f"{stack.worker.url}/metrics"
    quick, add_up = lt.quick.type_name, ft.total.type_name
    unser, hang = ft.unserializable_result.type_name, ft.hang_retried.type_name
    # the last pipeline-function batches may still be on their way: wait for the counts
    deadline = time.monotonic() + 120
    while True:
        samples = scrape(url)
        finished = total(samples, "flink_tasks_pipeline_duration_seconds_count", level="root")
        if finished == GOOD + BAD or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    count = "flink_tasks_task_duration_seconds_count"
    assert total(samples, count, task_type=quick, outcome="succeeded") == GOOD * FANOUT
    assert total(samples, count, task_type=add_up, outcome="succeeded") == GOOD
    assert total(samples, count, task_type=unser, outcome="failed") == 1
    assert total(samples, count, task_type=hang, outcome="failed") == 3
    assert total(samples, count) == GOOD * FANOUT + GOOD + 1 + 3
    assert total(samples, "flink_tasks_task_retries_total", task_type=hang) == 2
    assert total(samples, "flink_tasks_task_retries_total") == 2
    assert total(samples, "flink_tasks_tasks_in_progress") == 0
    assert total(samples, "flink_tasks_pipelines_started_total", level="root") == GOOD + BAD
    duration = "flink_tasks_pipeline_duration_seconds_count"
    assert total(samples, duration, level="root", outcome="completed") == GOOD
    assert total(samples, duration, level="root", outcome="failed") == BAD
    assert total(samples, "flink_tasks_rejected_messages_total") == 0
    # every pipeline-function invocation is in exactly one batch
    assert total(samples, "flink_tasks_pipeline_batch_size_sum") == total(
        samples, "flink_tasks_pipeline_messages_total"
    )
    assert total(samples, "flink_tasks_pipeline_batch_size_count") >= 1

    # whichever process answers, the same merged counts (each scrape is a new connection)
    for _ in range(6):
        again = scrape(url)
        assert total(again, count) == total(samples, count)

    # the two processes' own files add up to the scrape
    pids = stack.worker.worker_pids()
    assert len(pids) == 2
    by_pid = {pid: per_process(multiproc, pid) for pid in pids}
    split = {pid: total(s, count) for pid, s in by_pid.items()}
    assert sum(split.values()) == total(samples, count)
    print(f"task attempts by worker process: {split}")

    after = job_health(stack.runtime)
    assert after.jid == before.jid and after.restarts == before.restarts == 0


def test_list_finds_exactly_the_failed_pipelines(observed_stack: ObservedStack) -> None:
    stack = observed_stack.stack
    settings = stack.client.settings
    hour = timedelta(hours=1)

    def ids(**filters: object) -> set[str]:
        return {p.pipeline_id for p in list_pipelines(settings, **filters)}  # type: ignore[arg-type]

    failed_before = ids(status=PipelineStatus.FAILED, since=hour)
    completed_before = ids(status=PipelineStatus.COMPLETED, since=hour)
    ok = [ft.total.send([i, 1]) for i in range(3)]
    bad = [ft.unserializable_result.send() for _ in range(2)]
    ok_futures = [stack.client.submit(p) for p in ok]
    bad_futures = [stack.client.submit(p) for p in bad]
    assert [f.result(timeout=60) for f in ok_futures] == [1, 2, 3]
    for future in bad_futures:
        with pytest.raises(TaskError):
            future.result(timeout=60)
    bad_ids, ok_ids = {p.id for p in bad}, {p.id for p in ok}

    # the reply and the event travel on different topics: wait until the events are read
    deadline = time.monotonic() + 120
    failed = ids(status=PipelineStatus.FAILED, since=hour)
    while not bad_ids <= failed and time.monotonic() < deadline:
        time.sleep(0.2)
        failed = ids(status=PipelineStatus.FAILED, since=hour)
    assert failed == failed_before | bad_ids
    assert ids(status=PipelineStatus.COMPLETED, since=hour) == completed_before | ok_ids
    by_type = list_pipelines(settings, task_type=ft.unserializable_result.type_name)
    assert bad_ids <= {p.pipeline_id for p in by_type}
    assert all(ft.unserializable_result.type_name in p.task_types for p in by_type)
    assert len(list_pipelines(settings, limit=2)) == 2

    # the same through the CLI
    command = [sys.executable, "-m", "flink_tasks", "list", "--status", "failed"]
    command += ["--since", "1h", "--json", "--bootstrap-servers", settings.bootstrap_servers]
    command += ["--events-topic", settings.events_topic]
    out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert {r["pipeline_id"] for r in rows} == failed
    assert {r["status"] for r in rows} == {"failed"}
    print(f"list --status failed --since 1h: {len(rows)} pipelines")


def per_process(directory: Path, pid: int) -> dict[str, float]:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    class OneProcess(MultiProcessCollector):
        def collect(self):  # type: ignore[no-untyped-def]
            files = [str(p) for p in directory.glob(f"*_{pid}.db")]
            return self.merge(files, accumulate=True)

    registry = CollectorRegistry()
    OneProcess(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return parse_exposition(generate_latest(registry).decode())


def test_flink_reporter_shows_checkpoints(observed_stack: ObservedStack) -> None:
    stack = observed_stack.stack
    url = f"http://127.0.0.1:{stack.settings.metrics_port}/metrics"
    deadline = time.monotonic() + 60
    while True:
        samples = scrape(url)
        completed = total(samples, "flink_jobmanager_job_numberOfCompletedCheckpoints")
        if completed >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert completed >= 2
    assert total(samples, "flink_jobmanager_job_lastCheckpointDuration") >= 0
    assert total(samples, "flink_jobmanager_job_lastCheckpointSize") > 0
    # checkpoints triggered while the job's tasks were still starting count as failed
    # ("Failed to trigger checkpoint ... not running"); none fail once it runs
    failed = total(samples, "flink_jobmanager_job_numberOfFailedCheckpoints")
    deadline = time.monotonic() + 120
    while True:  # two more checkpoints of the running job
        later = scrape(url)
        done = total(later, "flink_jobmanager_job_numberOfCompletedCheckpoints")
        if done >= completed + 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert done >= completed + 2
    assert total(later, "flink_jobmanager_job_numberOfFailedCheckpoints") == failed
    print(f"checkpoints: {completed:g} completed, {failed:g} failed at job start")
    assert total(samples, "flink_jobmanager_job_numRestarts") == 0


def test_every_dashboard_query_names_a_served_metric(
    observed_stack: ObservedStack,
) -> None:
    stack = observed_stack.stack
    flink = {
        key.partition("{")[0]
        for key in scrape(f"http://127.0.0.1:{stack.settings.metrics_port}/metrics")
    }
    worker = {key.partition("{")[0] for key in scrape(f"{stack.worker.url}/metrics")}
    # a family with labels has no sample before its first value: the worker's declared ones
    served = flink | worker | declared_worker_metrics()
    for title, query in dashboard_queries():
        missing = metric_names(query) - served
        assert not missing, (title, missing)
    assert any(
        name.startswith("flink_jobmanager_")
        for _, q in dashboard_queries()
        for name in metric_names(q)
    )

"""Seeing what runs, on the real runtime with `flink-tasks serve --workers 2 --tracing`:

- tracing: the client's submit span and the task-attempt spans of both worker processes form one
  trace per submit, with the expected parent links (fan-outs of 40 with a continuation, and a
  task that returns a child pipeline);
- the dashboard (`flink-tasks dashboard`) in a real headless Chromium: it lists a running
  pipeline, its progress rises, a failed task's traceback shows, and its cancel button cancels.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flink_tasks import TaskError, in_parallel
from flink_tasks.errors import PipelineCancelledError
from flink_tasks.types import PipelineStatus
from tests.faults import fault_tasks as ft
from tests.faults import long_tasks as lt
from tests.faults.harness import ObservedStack
from tests.faults.trace_export import hex_id, memory_exporter, read_spans

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings(
        "ignore:.*is deprecated. Use files\\(\\) instead:DeprecationWarning"
    ),
]

FANOUT = 40
FAN_OUT_ROUNDS = 4
FAN_OUTS_PER_ROUND = 4
ROOT = Path(__file__).resolve().parents[2]
#: screenshots of the dashboard test for a person to look at (gitignored)
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)


def spans_of_trace(folder: Path, trace_id: str, count: int) -> list[dict[str, Any]]:
    """The worker spans of `trace_id`, once `count` of them are written (or 60 s passed)."""
    deadline = time.monotonic() + 60
    while True:
        found = [s for s in read_spans(folder) if s["context"]["trace_id"] == trace_id]  # type: ignore[index]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def check_fan_out_trace(folder: Path, fan_out: Any, submit: Any) -> set[int]:
    """The fan-out's attempts and its continuation are children of its submit span, in one
    trace; returns the pids of the worker processes that wrote them."""
    trace_id = hex_id(submit.context.trace_id, 32)
    spans = spans_of_trace(folder, trace_id, FANOUT + 1)
    assert sorted(s["name"] for s in spans) == sorted(
        [lt.square_slowly.type_name] * FANOUT + [ft.total.type_name]
    )
    assert {s["parent_id"] for s in spans} == {hex_id(submit.context.span_id, 16)}
    assert {s["attributes"]["flink_tasks.root_pipeline_id"] for s in spans} == {fan_out.id}
    assert {s["attributes"]["flink_tasks.outcome"] for s in spans} == {"succeeded"}
    assert {s["kind"] for s in spans} == {"SpanKind.CONSUMER"}
    assert len({s["attributes"]["flink_tasks.task_id"] for s in spans}) == FANOUT + 1
    return {s["pid"] for s in spans}


def test_a_submit_and_its_tasks_are_one_trace(observed_stack: ObservedStack) -> None:
    stack, folder = observed_stack.stack, observed_stack.spans_dir
    worker_pids = stack.worker.worker_pids()
    assert len(worker_pids) == 2
    exporter = memory_exporter()
    client = stack.new_client(tracing=True)
    pids: set[int] = set()
    try:
        # StateFun pools its connections and reuses the oldest first, so the few calls of one
        # fan-out (one per task bucket) may all reach one worker process; a round of several
        # fan-outs at once needs more connections than earlier tests left idle
        fan_outs = []
        for _ in range(FAN_OUT_ROUNDS):
            round_ = [
                in_parallel([lt.square_slowly.send(i) for i in range(FANOUT)]).continue_with(
                    ft.total
                )
                for _ in range(FAN_OUTS_PER_ROUND)
            ]
            futures = [client.submit(fan_out) for fan_out in round_]
            expected = sum(i * i for i in range(FANOUT))
            assert [f.result(timeout=120) for f in futures] == [expected] * len(round_)
            fan_outs += round_
            submits = {
                s.attributes["flink_tasks.pipeline_id"]: s for s in exporter.get_finished_spans()
            }
            for fan_out in round_:
                pids |= check_fan_out_trace(folder, fan_out, submits[fan_out.id])
            if pids == worker_pids:
                break
        orchestrated = ft.recurse.send(0, 2)  # returns a child pipeline, which returns another
        failing = ft.unserializable_result.send()
        assert client.submit(orchestrated).result(timeout=120) == 2
        with pytest.raises(TaskError):
            client.submit(failing).result(timeout=120)
    finally:
        client.close()

    submits = {s.attributes["flink_tasks.pipeline_id"]: s for s in exporter.get_finished_spans()}
    assert set(submits) == {f.id for f in fan_outs} | {orchestrated.id, failing.id}

    # a task that returns a pipeline is the parent of that child pipeline's task spans
    submit = submits[orchestrated.id]
    spans = spans_of_trace(folder, hex_id(submit.context.trace_id, 32), 3)
    assert len(spans) == 3
    by_parent = {s["parent_id"]: s for s in spans}
    first = by_parent[hex_id(submit.context.span_id, 16)]
    second = by_parent[first["context"]["span_id"]]
    third = by_parent[second["context"]["span_id"]]
    assert [s["attributes"]["flink_tasks.outcome"] for s in (first, second, third)] == [
        "pipeline",
        "pipeline",
        "succeeded",
    ]
    assert first["attributes"]["flink_tasks.pipeline_id"] == orchestrated.id
    assert third["attributes"]["flink_tasks.pipeline_id"].startswith(orchestrated.id + ":")
    pids |= {s["pid"] for s in spans}

    # a failed attempt: outcome, exception type and its traceback on the span
    submit = submits[failing.id]
    (span,) = spans_of_trace(folder, hex_id(submit.context.trace_id, 32), 1)
    assert span["status"]["status_code"] == "ERROR"
    assert span["attributes"]["flink_tasks.outcome"] == "failed"
    assert span["attributes"]["flink_tasks.exception_type"] == "flink_tasks.SerializationError"
    (event,) = span["events"]
    assert "Traceback" in event["attributes"]["exception.stacktrace"]
    pids |= {span["pid"]}

    assert pids == worker_pids, f"spans from {sorted(pids)}, workers {sorted(worker_pids)}"
    print(f"task spans written by worker processes: {sorted(pids)} of {sorted(worker_pids)}")


# ------------------------------------------------------------------------------------ dashboard


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str) -> Any:
    import json

    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def dashboard(observed_stack: ObservedStack) -> Iterator[str]:
    """`flink-tasks dashboard` (as ``python -m``) on this runtime; its base URL."""
    stack = observed_stack.stack
    s = stack.settings
    port = free_port()
    log = (stack.worker.log_file.parent / "dashboard.log").open("w")
    command = [
        *(sys.executable, "-m", "flink_tasks_client.dashboard"),
        *("--bootstrap-servers", s.bootstrap_servers, "--port", str(port)),
        *("--request-topic", s.requests_topic, "--action-topic", s.actions_topic),
        *("--reply-topic", s.replies_topic, "--events-topic", s.events_topic),
    ]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "the dashboard exited; see dashboard.log"
            try:
                if get_json(url + "api/pipelines")["problem"] == "":
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the dashboard did not start reading events"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Debian's headless Chromium, driven by its chromedriver (nothing is downloaded)."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.fail("chromium and chromedriver are missing: run scripts/ensure-tools.sh")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or ""
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(
        options=options, service=Service(executable_path=shutil.which("chromedriver"))
    )
    try:
        yield driver
    finally:
        driver.quit()


def save_screenshot(driver: Any, tmp_path: Path, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(tmp_path / name))
    shutil.copy(tmp_path / name, ARTIFACTS / name)
    return ARTIFACTS / name


# The page redraws its rows and tree on every change: read them in one script call (no element
# handle can go stale between finding and reading it), and retry a click on a redrawn row.


def text(driver: Any, selector: str) -> str | None:
    return driver.execute_script(  # type: ignore[no-any-return]
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
        selector,
    )


def attribute(driver: Any, selector: str, name: str) -> str | None:
    return driver.execute_script(  # type: ignore[no-any-return]
        "const e = document.querySelector(arguments[0]); "
        "return e ? e.getAttribute(arguments[1]) : null;",
        selector,
        name,
    )


def click(driver: Any, selector: str) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    for _ in range(50):
        try:
            driver.find_element(By.CSS_SELECTOR, selector).click()
            return
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"{selector} kept being redrawn")


def test_b_dashboard_in_a_browser(
    observed_stack: ObservedStack, dashboard: str, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    stack = observed_stack.stack
    client = stack.client
    started = time.monotonic()
    marks: dict[str, float] = {}
    wait = WebDriverWait(browser, 60, poll_frequency=0.1)
    browser.get(dashboard)
    wait.until(lambda d: (text(d, "#conn") or "").startswith("live"))
    marks["page live"] = time.monotonic() - started

    # pipelines submitted while the page is open show up there
    failing = ft.unserializable_result.send()
    with pytest.raises(TaskError):
        client.submit(failing).result(timeout=120)
    # 100 chains one at a time, 0.6 s each: a minute unless cancelled
    running = in_parallel([ft.slow.send(0.6, i) for i in range(100)], max_parallelism=1)
    result = client.submit(running, timeout=180)

    # the running pipeline is listed, and its progress bars in the list and in its tree rise
    row = f'tr.pipeline[data-id="{running.id}"]'
    wait.until(lambda d: text(d, f"{row} td.status") == "RUNNING")
    marks["running listed"] = time.monotonic() - started
    click(browser, row)
    bar = '#tree .entry.group progress[data-total="100"]'

    def completed(d: Any) -> int:
        return int(attribute(d, bar, "data-completed") or -1)

    first = wait.until(lambda d: completed(d) if completed(d) >= 1 else None)
    later = wait.until(lambda d: completed(d) if completed(d) > first else None)
    marks["progress rose"] = time.monotonic() - started
    assert first < later < 100
    assert 1 <= int(attribute(browser, f"{row} progress", "data-completed") or 0) < 100
    save_screenshot(browser, tmp_path, "dashboard-running.png")

    # cancel from the page: the pipeline is CANCELLED (asked through the client API)
    browser.find_element(By.ID, "cancel").click()
    wait.until(lambda d: (text(d, "#action-result") or "").startswith("cancel: "))
    deadline = time.monotonic() + 60
    while client.get_status_sync(running.id) != PipelineStatus.CANCELLED:
        assert time.monotonic() < deadline, "not cancelled"
        time.sleep(0.2)
    with pytest.raises(PipelineCancelledError):
        result.result(timeout=60)
    wait.until(lambda d: text(d, "#detail-status") == "CANCELLED")
    marks["cancelled"] = time.monotonic() - started
    assert completed(browser) < 100
    assert attribute(browser, "#cancel", "disabled") is not None
    # another origin cannot press the buttons: an action without the page's header is refused
    forged = urllib.request.Request(f"{dashboard}api/pipelines/{running.id}/pause", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(forged, timeout=10)
    assert refused.value.code == 403

    # the failed pipeline: its failing task's traceback is shown
    click(browser, f'tr.pipeline[data-id="{failing.id}"]')
    wait.until(lambda d: "Traceback" in (text(d, "#traceback") or ""))
    head = text(browser, "#failure-head") or ""
    assert head.startswith(f"{ft.unserializable_result.type_name} (")
    assert "flink_tasks.SerializationError" in head
    assert text(browser, f'tr.pipeline[data-id="{failing.id}"] td.status') == "FAILED"
    marks["traceback shown"] = time.monotonic() - started
    shot = save_screenshot(browser, tmp_path, "dashboard-failed.png")
    print(f"screenshots: {tmp_path} and {shot.parent}; seconds: {marks}")

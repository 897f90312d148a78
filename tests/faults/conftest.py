"""Fixtures of the fault-injection suite. Every runtime here is isolated: its own run dir under
pytest's tmp dir and its own ports in 61000-62999; everything is stopped at the end.

Four runtimes are shared by several modules (package scope): `stack` (at-least-once),
`eo_stack` (exactly-once), `observed_stack` (metrics, traces, the dashboard) and
`secured_stack` (SASL_SSL with ACLs). The modules that use one run next to each other, and each
shared runtime is stopped right after the last test that uses it, so no idle runtime competes
for the CPU with the scenarios after it."""

from __future__ import annotations

import functools
import gc
import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.faults.harness import FaultStack, ObservedStack, fault_stack
from tests.faults.trace_export import SPAN_DIR_VAR

HERE = os.path.dirname(__file__)

# kafka-python (3.0.12) leaks sockets of connections to a broker that was killed (they surface
# as ResourceWarnings when collected, in whatever test runs then); the suite kills brokers on
# purpose, so these are expected here and flushed before the package ends. It also still calls
# importlib.resources' deprecated open_text/read_text.
_KAFKA_WARNINGS = (
    "ignore::pytest.PytestUnraisableExceptionWarning",
    "ignore::ResourceWarning",
    "ignore:.*is deprecated. Use files\\(\\) instead:DeprecationWarning",
)

#: the package-scoped runtimes, in the order their modules run (then the other modules)
SHARED_STACKS = ("eo_stack", "stack", "observed_stack", "secured_stack")
_started: dict[str, FaultStack] = {}


def _group(item: pytest.Item) -> int:
    names = set(getattr(item, "fixturenames", ()))
    return next((i for i, name in enumerate(SHARED_STACKS) if name in names), len(SHARED_STACKS))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    positions = [i for i, item in enumerate(items) if str(item.path).startswith(HERE)]
    ours = [items[i] for i in positions]
    for item in ours:
        for spec in _KAFKA_WARNINGS:
            item.add_marker(pytest.mark.filterwarnings(spec))
    # whole modules move (a module's tests keep their order); stable otherwise
    module_group: dict[str, int] = {}
    for item in ours:
        module = str(item.path)
        module_group[module] = min(module_group.get(module, len(SHARED_STACKS)), _group(item))
    ours.sort(key=lambda item: module_group[str(item.path)])
    for i, item in zip(positions, ours, strict=True):
        items[i] = item


@functools.cache
def _last_users(session: pytest.Session) -> dict[str, str]:
    """Shared runtime -> the nodeid of the last test to run that uses it (after -k, -m ...)."""
    last: dict[str, str] = {}
    for item in session.items:
        for name in SHARED_STACKS:
            if name in getattr(item, "fixturenames", ()):
                last[name] = item.nodeid
    return last


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    result = yield
    for name, nodeid in _last_users(item.session).items():
        if item.nodeid == nodeid and name in _started:
            _started.pop(name).stop()  # the fixture's own stop at the package's end is a no-op
    return result


@pytest.fixture(scope="package", autouse=True)
def _flush_leaked_sockets() -> Iterator[None]:
    yield
    for _ in range(3):
        gc.collect()


def _shared(
    name: str, tmp: pytest.TempPathFactory, base: int, **settings: Any
) -> Iterator[FaultStack]:
    with fault_stack(tmp.mktemp(f"faults-{name}"), base, **settings) as s:
        _started[name] = s
        yield s
        _started.pop(name, None)


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    """The shared fault runtime: at-least-once egress, worker in its own process."""
    yield from _shared("stack", tmp_path_factory, 61000)


@pytest.fixture(scope="package")
def eo_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    """The shared exactly-once runtime (test_01's StateFun/Kafka kills, test_12_client's broker
    outages): each scenario leaves it running and uses pipeline ids of its own."""
    yield from _shared("eo_stack", tmp_path_factory, 61100, delivery_semantic="exactly-once")


@pytest.fixture(scope="package")
def observed_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObservedStack]:
    """Two worker processes of one slot each, with tracing, the span-exporting hooks, the
    multi-process Prometheus directory and Flink's metrics reporter."""
    tmp = tmp_path_factory.mktemp("faults-observed")
    metrics, spans = tmp / "prometheus", tmp / "spans"
    spans.mkdir()
    with fault_stack(
        tmp,
        61800,
        serve_workers=2,
        serve_args=("--pool-size", "1", "--tracing", "--hooks", "tests.faults.trace_export:hooks"),
        serve_env={"PROMETHEUS_MULTIPROC_DIR": str(metrics), SPAN_DIR_VAR: str(spans)},
        flink_metrics=True,
    ) as s:
        _started["observed_stack"] = s
        yield ObservedStack(s, metrics, spans)
        _started.pop("observed_stack", None)


@pytest.fixture(scope="package")
def secured_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    """Kafka with SASL_SSL (SCRAM and mutual TLS) and ACLs per role (test_12_secured,
    test_12_acls)."""
    yield from _shared(
        "secured_stack", tmp_path_factory, 61500, kafka_security="sasl_ssl", kafka_acls=True
    )

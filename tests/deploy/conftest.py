"""tests/deploy: offline checks of the deployment files, serve, scale-out; compose when asked.

``--flink-env=compose`` (or ``FLINK_TASKS_TEST_ENV=compose``) brings docker-compose.yml up with
testcontainers and runs the acceptance tests against it; without Docker those are skipped with
the reason. The default, ``local``, skips them: the local runtime runs the acceptance tests in
tests/acceptance/.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV_VAR = "FLINK_TASKS_TEST_ENV"


def pytest_addoption(parser: pytest.Parser) -> None:
    with contextlib.suppress(ValueError):  # already added by a root conftest
        parser.addoption(
            "--flink-env",
            choices=["local", "compose"],
            default=None,
            help="where acceptance tests run: local (default) or compose (docker-compose.yml "
            f"via testcontainers; needs Docker). Also ${ENV_VAR}.",
        )


@pytest.fixture(scope="session")
def flink_env_name(request: pytest.FixtureRequest) -> str:
    value = request.config.getoption("--flink-env", default=None)
    return str(value or os.environ.get(ENV_VAR) or "local")


def docker_unavailable_reason() -> str | None:
    """None when a Docker engine answers ``GET /_ping``; otherwise why not."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: Any = host[len("unix://") :]
        elif host.startswith("tcp://"):
            name, _, port = host[len("tcp://") :].partition(":")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            address = (name, int(port or 2375))
        else:
            return f"DOCKER_HOST={host} is not checked here"
        with sock:
            sock.settimeout(5)
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            answer = sock.recv(64)
    except OSError as exc:
        return f"no Docker engine at {host} ({exc})"
    if b" 200 " not in answer:
        return f"the Docker engine at {host} answered {answer[:40]!r}"
    return None


def _wait_for_statefun_job(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/jobs/overview", timeout=3) as resp:
                if b'"state":"RUNNING"' in resp.read():
                    return
        except OSError:
            pass
        time.sleep(2)
    raise TimeoutError(f"the StateFun job at {url} was not RUNNING within {timeout:g} s")


@pytest.fixture(scope="session")
def compose_env(flink_env_name: str) -> Iterator[object]:
    """docker-compose.yml up (kafka, topics, worker, StateFun), a client on localhost:19092."""
    if flink_env_name != "compose":
        pytest.skip("compose acceptance tests run with --flink-env=compose (Docker needed)")
    reason = docker_unavailable_reason()
    if reason is not None:
        pytest.skip(f"--flink-env=compose: {reason}")
    from flink_tasks_client import ClientSettings, FlinkTasksClient
    from testcontainers.compose import DockerCompose

    from flink_tasks.runtime.module_yaml import read_env_file
    from flink_tasks.testing import PipelineEnvironment

    services = ["kafka", "kafka-init", "worker", "jobmanager", "taskmanager"]
    compose = DockerCompose(
        ROOT, compose_file_name="docker-compose.yml", build=True, services=services
    )
    compose.start()
    try:
        _wait_for_statefun_job("http://localhost:18081", timeout=300)
        env = read_env_file(ROOT / "deploy" / "compose" / "settings.env")
        settings = ClientSettings.from_env(
            environ=env, bootstrap_servers="localhost:19092", default_timeout=timedelta(minutes=2)
        )
        client = FlinkTasksClient(settings=settings)
        client.wait_ready()
        environment = PipelineEnvironment(client)
        try:
            yield environment
        finally:
            client.close()
    finally:
        compose.stop()

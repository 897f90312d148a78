"""Ports for the tests of tests/deploy (and other runtimes of a test's own): 63000-63999, free
when picked."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from flink_tasks.runtime.process import port_is_free
from flink_tasks.runtime.settings import LocalRuntimeSettings


def free_ports(n: int, low: int = 63000, high: int = 63999) -> list[int]:
    rng = random.Random()
    ports: list[int] = []
    for _ in range(2000):
        port = rng.randrange(low, high)
        if port not in ports and port_is_free(port):
            ports.append(port)
            if len(ports) == n:
                return ports
    raise RuntimeError(f"no {n} free ports in {low}-{high}")


def isolated_settings(
    run_dir: Path, *, low: int = 63000, high: int = 63999, **changes: Any
) -> LocalRuntimeSettings:
    """Settings of a runtime of a test's own: its run dir, and free Kafka, controller, REST,
    JobManager RPC and worker ports; `changes` on top (from the environment as usual)."""
    kafka, controller, rest, rpc, worker = free_ports(5, low=low, high=high)
    return LocalRuntimeSettings.from_env(
        run_dir=run_dir,
        kafka_port=kafka,
        kafka_controller_port=controller,
        rest_port=rest,
        jobmanager_rpc_port=rpc,
        worker_port=worker,
        **changes,
    )

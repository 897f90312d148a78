"""Ports for the tests of tests/deploy: 63000-63999, free when picked."""

from __future__ import annotations

import random

from flink_tasks.runtime.process import port_is_free


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

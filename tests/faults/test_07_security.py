"""Security properties: no unpickling of wire bytes unless the task opts in; every server the
runtime and the worker start listens on loopback only; actions are only read from the
configured action topic."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from flink_tasks import FlinkTasks, TaskError
from flink_tasks._proto import messages_pb2
from flink_tasks.runtime import LocalRuntimeSettings, render_module_yaml
from flink_tasks.types import PipelineStatus
from flink_tasks.worker import Worker, WorkerServer
from tests.faults import fault_tasks as ft
from tests.faults.harness import FaultStack

pytestmark = [pytest.mark.integration]


class _Exploit:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (open, (self.path, "w"))


def test_pickled_arguments_are_refused_unless_the_task_opts_in(
    stack: FaultStack, tmp_path: Path
) -> None:
    # a sender that pickles: the same task type as the worker's safe_echo, bound with pickle
    sender = FlinkTasks()

    @sender.bind(name=ft.safe_echo.type_name, allow_pickle=True)
    def safe_echo(value: Any) -> Any: ...

    proof = tmp_path / "pwned"
    with pytest.raises(TaskError) as caught:
        stack.client.submit_sync(safe_echo.send(_Exploit(str(proof))), timeout=60)
    assert caught.value.exception_type == "flink_tasks.SerializationError"
    assert "pickle" in caught.value.exception_message.lower()
    assert not proof.exists()
    # a task bound with allow_pickle=True accepts pickled values
    assert stack.client.submit_sync(ft.pickle_echo.send(Fraction(1, 3)), timeout=60) == (
        "Fraction(1, 3)"
    )


def _listening(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket the process listens on."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            hex_addr, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_addr)
            if family == socket.AF_INET:
                addr = socket.inet_ntop(family, raw[::-1])
            else:
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                addr = socket.inet_ntop(family, words)
            out.append((addr, int(hex_port, 16)))
    return out


def _loopback(addr: str) -> bool:
    return addr in ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def test_every_server_listens_on_loopback_only(stack: FaultStack) -> None:
    pids = {
        "kafka": stack.runtime.kafka.process.pid,
        "statefun": stack.runtime.statefun.process.pid,
        "worker": stack.worker.pid,
    }
    seen = {}
    for name, pid in pids.items():
        assert pid is not None, name
        sockets = _listening(pid)
        assert sockets, f"{name} listens on nothing?"
        seen[name] = sockets
        assert all(_loopback(addr) for addr, _ in sockets), (name, sockets)
    assert stack.settings.rest_port in {p for _, p in seen["statefun"]}
    assert stack.settings.kafka_port in {p for _, p in seen["kafka"]}
    # the defaults say loopback too
    assert LocalRuntimeSettings().worker_host == "127.0.0.1"


async def test_worker_server_binds_loopback_by_default() -> None:
    server = WorkerServer(Worker(ft.tasks), port=0)
    assert server.host == "127.0.0.1"
    await server.start()
    try:
        assert server._runner is not None
        addresses = [
            s.getsockname()[0] for site in server._runner.sites for s in site._server.sockets
        ]  # type: ignore[attr-defined]
        assert addresses and all(_loopback(a) for a in addresses), addresses
    finally:
        await server.stop()
    await asyncio.sleep(0)


def test_actions_are_read_only_from_the_configured_topic(stack: FaultStack) -> None:
    s = stack.settings
    yaml = render_module_yaml(s)
    ingress = yaml[yaml.index("io.statefun.kafka.v1/ingress") :]
    ingress = ingress[: ingress.find("---") if "---" in ingress else None]
    # requests, actions, and the workers' task reports: nothing else reaches the pipeline function
    assert ingress.count("topic:") == 3
    assert s.requests_topic in ingress and s.actions_topic in ingress
    assert s.task_reports_topic in ingress
    rogue = "flink-tasks.rogue-actions"
    admin = KafkaAdminClient(bootstrap_servers=s.bootstrap_servers)
    try:
        admin.create_topics([NewTopic(rogue, num_partitions=1, replication_factor=1)])
    finally:
        admin.close()
    pipeline = ft.slow.send(3.0, "untouched")
    future = stack.client.submit(pipeline, timeout=60)
    deadline = time.monotonic() + 120
    while stack.client.get_status_sync(pipeline.id) != PipelineStatus.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    cancel = messages_pb2.ActionRequest(
        pipeline_id=pipeline.id, action=messages_pb2.ACTION_CANCEL, reply_topic=s.replies_topic
    ).SerializeToString()
    producer = KafkaProducer(bootstrap_servers=s.bootstrap_servers)
    try:
        for topic in (rogue, s.replies_topic, s.events_topic):
            producer.send(topic, key=pipeline.id.encode(), value=cancel).get(30)
    finally:
        producer.close()
    assert future.result(timeout=60) == "untouched"
    assert stack.client.get_status_sync(pipeline.id) == PipelineStatus.COMPLETED

"""Fixtures of the client tests: a real Kafka broker and per-test topics.

The broker comes from the local runtime launcher (`flink_tasks.runtime`), Kafka only, in its
own run dir and on free ports, so it never collides with a runtime started by `flink-tasks local
up` or by another test session. Set ``FLINK_TASKS_CLIENT_TEST_BOOTSTRAP=host:port`` to use an
existing broker instead.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import uuid
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

# kafka-python 3.0.12 reads its protocol schemas with importlib.resources' legacy API at import,
# which warns on Python 3.11 from inside importlib (so the root `ignore::DeprecationWarning:kafka.*`
# filter does not match). Import it once here, with that warning ignored.
with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", message=r".* is deprecated\. Use files\(\) instead", category=DeprecationWarning
    )
    import kafka  # noqa: F401

from _stand_in import PipelineFunctionStandIn, Topics
from flink_tasks_client import ClientSettings
from kafka.admin import KafkaAdminClient, NewTopic


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def bootstrap_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Kafka broker for the session (KRaft, from the launcher's Maven jars)."""
    existing = os.environ.get("FLINK_TASKS_CLIENT_TEST_BOOTSTRAP")
    if existing:
        yield existing
        return
    from flink_tasks.runtime.kafka import KafkaBroker
    from flink_tasks.runtime.settings import LocalRuntimeSettings
    from flink_tasks.runtime.tools import find_java

    run_dir: Path = tmp_path_factory.mktemp("client-kafka")
    settings = LocalRuntimeSettings(
        run_dir=run_dir,
        kafka_port=_free_port(),
        kafka_controller_port=_free_port(),
        rest_port=_free_port(),
        kafka_heap_mb=384,
    )
    broker = KafkaBroker(settings)
    broker.start(find_java(settings.java, for_flink=False))
    # The launcher polls the broker while it starts; kafka-python 3.0.12 leaks the sockets of
    # failed connection attempts. Collect them now, not in the middle of a test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    try:
        yield settings.bootstrap_servers
    finally:
        broker.stop()


def create_topics(bootstrap: str, names: list[str], partitions: int = 1) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names],
            timeout_ms=30_000,
        )
    finally:
        with contextlib.suppress(Exception):
            admin.close()


@pytest.fixture
def topics(bootstrap_servers: str) -> Topics:
    """Fresh topics for one test, so no test sees another's records."""
    suffix = uuid.uuid4().hex[:10]
    created = Topics(
        requests=f"t-{suffix}.requests",
        actions=f"t-{suffix}.actions",
        replies=f"t-{suffix}.replies",
        events=f"t-{suffix}.events",
    )
    # Several partitions where the real runtime has them, so matching across partitions is tested.
    create_topics(bootstrap_servers, [created.requests, created.actions], partitions=2)
    create_topics(bootstrap_servers, [created.replies], partitions=2)
    create_topics(bootstrap_servers, [created.events], partitions=1)
    return created


@pytest.fixture
def settings(bootstrap_servers: str, topics: Topics) -> ClientSettings:
    """Client settings for the test's topics, with short timeouts."""
    return ClientSettings(
        bootstrap_servers=bootstrap_servers,
        request_topic=topics.requests,
        action_topic=topics.actions,
        reply_topic=topics.replies,
        events_topic=topics.events,
        default_timeout=timedelta(seconds=30),
        connect_timeout=timedelta(seconds=10),
        send_timeout=timedelta(seconds=10),
        # the transport tests count what one submit sends: no status lookup before it (the
        # reuse policies are tested in test_reuse.py)
        pipeline_reuse="allow",
    )


@pytest.fixture
def stand_in(bootstrap_servers: str, topics: Topics) -> Iterator[PipelineFunctionStandIn]:
    """The pipeline function's stand-in, for these transport tests only."""
    with PipelineFunctionStandIn(bootstrap_servers, topics) as responder:
        yield responder

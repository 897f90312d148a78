"""KRaft cluster ids that begin with ``-`` (issue 17): one random id in 64 did, and
``kafka-storage format -t <id>`` read it as an option, so a fresh run dir failed at random."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import pytest

from flink_tasks.runtime import LocalRuntime, LocalRuntimeSettings
from flink_tasks.runtime.kafka import CLUSTER_ID_FILE, new_cluster_id
from tests.deploy._ports import free_ports

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*is deprecated. Use files\\(\\) instead:DeprecationWarning"
)

#: a valid Kafka cluster id (16 bytes, URL-safe base64, unpadded) whose first character is "-"
DASH_ID = base64.urlsafe_b64encode(b"\xfb" + uuid.uuid4().bytes[1:]).decode().rstrip("=")


def test_new_cluster_ids_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    assert DASH_ID.startswith("-") and len(DASH_ID) == 22
    draws = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x01" + bytes(15))])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(draws))
    # the first draw encodes to "-AAAA...": it is drawn again
    assert new_cluster_id() == base64.urlsafe_b64encode(b"\x01" + bytes(15)).decode().rstrip("=")


def test_the_run_dir_keeps_its_cluster_id(tmp_path: Path) -> None:
    rt = LocalRuntime(LocalRuntimeSettings(run_dir=tmp_path))
    first = rt.kafka.cluster_id()
    assert (tmp_path / "kafka" / CLUSTER_ID_FILE).read_text().strip() == first
    assert LocalRuntime(LocalRuntimeSettings(run_dir=tmp_path)).kafka.cluster_id() == first


@pytest.mark.integration
def test_broker_starts_from_a_run_dir_whose_cluster_id_begins_with_a_dash(
    tmp_path: Path,
) -> None:
    kafka_port, controller_port, rest_port = free_ports(3)
    settings = LocalRuntimeSettings(
        run_dir=tmp_path / "runtime",
        kafka_port=kafka_port,
        kafka_controller_port=controller_port,
        rest_port=rest_port,
    )
    id_file = settings.run_dir / "kafka" / CLUSTER_ID_FILE
    id_file.parent.mkdir(parents=True)
    id_file.write_text(DASH_ID + "\n")
    rt = LocalRuntime(settings)
    try:
        rt.kafka.start(rt.java(for_flink=False))
        assert rt.kafka.list_topics() == set(settings.topic_partitions)
    finally:
        rt.kafka.stop()
    meta = (rt.kafka.data_dir / "meta.properties").read_text().splitlines()
    assert f"cluster.id={DASH_ID}" in meta

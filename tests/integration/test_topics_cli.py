"""`flink-tasks topics check|create` against the real broker, as a user runs it before the first
deployment on a Kafka they manage: topics of their own names (FLINK_TASKS_*_TOPIC), one of them
made by hand without the key check."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from kafka import KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
from kafka.errors import InvalidRecordError

from flink_tasks.runtime.settings import KEYED_TOPIC_CONFIG, LocalRuntimeSettings
from flink_tasks.testing import PipelineEnvironment

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def topics(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flink_tasks", "topics", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def lines_of(out: str) -> dict[str, str]:
    """Topic name -> its status line (problem lines are indented)."""
    return {line.split()[0]: line for line in out.splitlines() if not line.startswith(" ")}


def test_check_then_create_then_fix(local_env: PipelineEnvironment) -> None:
    run = uuid.uuid4().hex[:8]
    names = {kind: f"topics-{run}.{kind}" for kind in ("req", "act", "rep", "ev", "tr")}
    env = dict(os.environ)
    env.update(
        FLINK_TASKS_REQUESTS_TOPIC=names["req"],
        FLINK_TASKS_ACTIONS_TOPIC=names["act"],
        FLINK_TASKS_REPLIES_TOPIC=names["rep"],
        FLINK_TASKS_EVENTS_TOPIC=names["ev"],
        FLINK_TASKS_TASK_REPORTS_TOPIC=names["tr"],
        FLINK_TASKS_REQUESTS_PARTITIONS="3",
    )
    settings = LocalRuntimeSettings.from_env(environ=env)
    bootstrap = settings.bootstrap_servers
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        # nothing yet
        check = topics(env, "check")
        assert check.returncode == 1, check.stderr
        assert {name: "MISSING" in line for name, line in lines_of(check.stdout).items()} == {
            name: True for name in names.values()
        }

        # the actions topic made by hand, as a Kafka admin would by default: no key check
        admin.create_topics([NewTopic(names["act"], num_partitions=2, replication_factor=1)])
        create = topics(env, "create")
        assert create.returncode == 1, create.stderr  # the hand-made one is still wrong
        created = {
            line.split()[1] for line in create.stdout.splitlines() if line.startswith("created")
        }
        assert created == set(names.values()) - {names["act"]}
        status = lines_of(create.stdout.split("\n", len(created))[-1])
        assert status[names["act"]].startswith(f"{names['act']}  PROBLEM")
        assert "cleanup.policy=delete" in create.stdout
        fix = f"--entity-name {names['act']} --add-config cleanup.policy=[compact,delete]"
        assert fix in create.stdout
        for kind in ("req", "tr"):
            assert "ok, " in status[names[kind]] and "without a key refused" in status[names[kind]]
        assert "3 partitions" in status[names["req"]]

        # what `create` made refuses a record without a key (so StateFun never sees one)
        for key, refused in ((None, True), (b"p1", False)):
            producer = KafkaProducer(bootstrap_servers=bootstrap)  # a refusal ends a producer
            try:
                sent = producer.send(names["req"], key=key, value=b"a request")
                if refused:
                    with pytest.raises(InvalidRecordError, match="without key"):
                        sent.get(30)
                else:
                    assert sent.get(30).offset == 0
            finally:
                producer.close()
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, names["tr"])])
        (entries,) = (by_name[names["tr"]] for by_name in described.values())
        assert {k: str(entries[k]["value"]) for k in KEYED_TOPIC_CONFIG} == KEYED_TOPIC_CONFIG

        # fixed as the check says: all fine
        resource = ConfigResource(ConfigResourceType.TOPIC, names["act"], dict(KEYED_TOPIC_CONFIG))
        admin.alter_configs([resource])
        check = topics(env, "check")
        assert check.returncode == 0, check.stdout + check.stderr
        assert all(" ok, " in line for line in lines_of(check.stdout).values())

        # no broker there: exit code 2 and what was tried
        down = topics(env, "check", "--bootstrap-servers", "127.0.0.1:9")
        assert down.returncode == 2
        assert "no broker of 127.0.0.1:9 accepts connections" in down.stderr
    finally:
        admin.delete_topics(list(names.values()))
        admin.close()

"""The ACLs of the local broker's roles (``LocalRuntimeSettings.kafka_acls``, with SASL_SSL).

The broker runs KRaft's ``StandardAuthorizer`` and denies what no ACL allows. ``admin`` (the
broker itself and the launcher) is the only super user. The table is the one in docs/deploy.md:

* submitter: write requests; read replies and events;
* operator: that, and write actions (status, result, pause, unpause, cancel);
* statefun: read requests, actions, task-reports (group ``consumer_group_id``); write replies
  and events; transactional ids (exactly-once egress);
* worker: write task-reports.

Kafka authorizes per topic, not per action: whoever may write the actions topic may cancel, and
a principal without that right can also not ask for a status or result over Kafka.
"""

from __future__ import annotations

from typing import Any

from flink_tasks.runtime.settings import LocalRuntimeSettings

READ, WRITE, DESCRIBE = "READ", "WRITE", "DESCRIBE"


def role_acls(settings: LocalRuntimeSettings) -> dict[str, list[tuple[str, str, str]]]:
    """role -> (resource type, resource name, operation); ``*`` names every resource."""
    s = settings
    readers = [(kind, topic, op) for topic in (s.replies_topic, s.events_topic)
               for kind, op in (("TOPIC", READ), ("TOPIC", DESCRIBE))]  # fmt: skip
    submitter = [
        ("TOPIC", s.requests_topic, WRITE),
        ("TOPIC", s.requests_topic, DESCRIBE),
        # metadata only (the client loads it at start); writing actions is the operator's
        ("TOPIC", s.actions_topic, DESCRIBE),
        *readers,
    ]
    statefun = [
        *[(kind, topic, op) for topic in (s.requests_topic, s.actions_topic, s.task_reports_topic)
          for kind, op in (("TOPIC", READ), ("TOPIC", DESCRIBE))],
        ("GROUP", s.consumer_group_id, READ),
        *[("TOPIC", topic, op) for topic in (s.replies_topic, s.events_topic)
          for op in (WRITE, DESCRIBE)],
        ("TRANSACTIONAL_ID", "*", WRITE),
        ("TRANSACTIONAL_ID", "*", DESCRIBE),
    ]  # fmt: skip
    return {
        "submitter": submitter,
        "operator": [*submitter, ("TOPIC", s.actions_topic, WRITE)],
        "statefun": statefun,
        "worker": [
            ("TOPIC", s.task_reports_topic, WRITE),
            ("TOPIC", s.task_reports_topic, DESCRIBE),
        ],
    }


def grant(admin: Any, settings: LocalRuntimeSettings) -> int:
    """Create every role's ACLs (creating an existing ACL changes nothing); returns how many."""
    from kafka.admin import (
        ACL,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourceType,
    )

    acls = [
        ACL(
            principal=f"User:{role}",
            host="*",
            operation=ACLOperation[operation],
            permission_type=ACLPermissionType.ALLOW,
            resource_pattern=ResourcePattern(
                ResourceType[kind], name, ACLResourcePatternType.LITERAL
            ),
        )
        for role, entries in role_acls(settings).items()
        for kind, name, operation in entries
    ]
    result = admin.create_acls(acls)
    failed = result.get("failed") if isinstance(result, dict) else None
    if failed:
        raise RuntimeError(f"creating the Kafka ACLs failed: {failed}")
    return len(acls)

"""``flink-tasks topics check|create``: the five topics on a Kafka you run or a managed one."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flink_tasks.cli.local import Subparsers
from flink_tasks.kafka_security import KafkaSecurity


def register_topics(subparsers: Subparsers) -> None:
    cmd = subparsers.add_parser(
        "topics",
        help="check or create the Kafka topics on a Kafka you run (or a managed one)",
        description="Check the five topics (names and partitions from the settings) on the "
        "target's Kafka: that they exist and that the three StateFun reads refuse records "
        "without a key (compacted, the compaction lag not below the retention); `create` also "
        "creates the missing ones that way. Existing topics are never changed: the check prints "
        "the command that fixes one. Settings: --target local reads the FLINK_TASKS_* "
        "environment (security too), compose and kubernetes read settings.env (--dir). Exit "
        "code 0: all fine, 1: a topic is missing or misconfigured, 2: Kafka not reachable.",
    )
    cmd.add_argument("action", choices=["check", "create"])
    cmd.add_argument("--target", choices=["local", "compose", "kubernetes"], default="local")
    cmd.add_argument("--dir", type=Path, help="compose/kubernetes: the folder with settings.env")
    cmd.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT",
        help="the brokers as seen from here (default: the target's, e.g. FLINK_TASKS_"
        "BOOTSTRAP_SERVERS of settings.env)",
    )
    cmd.add_argument(
        "--replication-factor",
        type=int,
        default=-1,
        metavar="N",
        help="create: replicas of each new topic (default -1: the broker's default)",
    )
    cmd.set_defaults(handler=cmd_topics)


def cmd_topics(args: argparse.Namespace) -> int:
    from kafka.errors import KafkaError

    from flink_tasks.runtime import kafka_secure
    from flink_tasks.runtime.module_yaml import deploy_target
    from flink_tasks.runtime.topics import (
        TopicsError,
        admin_client,
        create_missing,
        fix_command,
        inspect_topics,
    )

    try:
        target = deploy_target(args.target, directory=args.dir)
    except (OSError, ValueError) as exc:
        print(f"flink-tasks topics: error: {exc}", file=sys.stderr)
        return 2
    settings = target.settings
    if target.kafka_security is not None:
        security = target.kafka_security
    elif kafka_secure.secured(settings):
        security = kafka_secure.role_security(settings, "admin")
    else:
        security = KafkaSecurity.from_env()
    bootstrap = args.bootstrap_servers or target.kafka_address
    try:
        with admin_client(bootstrap, security) as admin:
            reports = inspect_topics(admin, settings)
            if args.action == "create":
                created = create_missing(admin, settings, reports, args.replication_factor)
                for name in created:
                    print(f"created {name}")
                if created:
                    reports = inspect_topics(admin, settings)
    except TopicsError as exc:
        print(f"flink-tasks topics: {exc}", file=sys.stderr)
        return 2
    except KafkaError as exc:  # e.g. not authorized to describe or create topics
        print(f"flink-tasks topics: Kafka at {bootstrap} refused: {exc}", file=sys.stderr)
        return 2
    width = max(len(r.name) for r in reports)
    for report in reports:
        if report.partitions is None:
            state = "MISSING, or not visible to this user (create it: flink-tasks topics create)"
        else:
            state = "ok" if report.ok else "PROBLEM"
            state += f", {report.partitions} partition{'s' if report.partitions != 1 else ''}"
            if report.partitions < report.wanted_partitions:
                state += f" (settings ask for {report.wanted_partitions})"
            if report.ingress and report.ok:
                state += ", records without a key refused"
        print(f"{report.name:<{width}}  {state}")
        for problem in report.problems:
            print(f"{'':<{width}}    {problem}")
            if report.configs:
                print(f"{'':<{width}}    fix: {fix_command(report, bootstrap)}")
    return 0 if all(r.ok for r in reports) else 1

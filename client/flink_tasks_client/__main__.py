"""``python -m flink_tasks_client``: the client's commands without the core ``flink-tasks``."""

from flink_tasks_client.cli import main

raise SystemExit(main())

"""``python -m flink_tasks_client.dashboard``: `flink-tasks dashboard` without the entry point."""

import sys

from flink_tasks_client.dashboard import main

sys.exit(main())

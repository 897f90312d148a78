"""``python -m flink_tasks`` is the ``flink-tasks`` command."""

from flink_tasks.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

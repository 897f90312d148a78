"""Benchmarks of flink-tasks against Celery and statefun-tasks: `make bench`."""

"""Test helpers for users (and for flink-tasks' own tests): `PipelineEnvironment`."""

from flink_tasks.testing.environment import InProcessClient, PipelineClient, PipelineEnvironment

__all__ = ["InProcessClient", "PipelineClient", "PipelineEnvironment"]

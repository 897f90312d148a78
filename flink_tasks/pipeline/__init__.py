"""Pipeline building: pure values, no I/O."""

from flink_tasks.pipeline.builder import (
    Group,
    Initial,
    PipelineBuilder,
    TaskCall,
    TaskOptions,
    in_parallel,
)

__all__ = ["Group", "Initial", "PipelineBuilder", "TaskCall", "TaskOptions", "in_parallel"]

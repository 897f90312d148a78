"""The pipeline engine: `step()` and its settings (see engine/step.py)."""

from flink_tasks.engine.context import EngineSettings, random_ids, system_clock
from flink_tasks.engine.step import EngineMessage, step

__all__ = ["EngineMessage", "EngineSettings", "random_ids", "step", "system_clock"]

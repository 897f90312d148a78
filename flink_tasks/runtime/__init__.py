"""Local runtime launcher: a real Kafka broker and Apache StateFun 3.3.0 (Flink 1.16.2),
without Docker. See docs/runtime.md.

    from flink_tasks.runtime import LocalRuntime, LocalRuntimeSettings

    with LocalRuntime(LocalRuntimeSettings.from_env()) as rt:
        print(rt.bootstrap_servers, rt.rest_url)
"""

from flink_tasks.config import parse_duration
from flink_tasks.runtime.errors import (
    BuildError,
    PortInUseError,
    RuntimeLauncherError,
    SettingsMismatchError,
    StartupError,
    ToolMissingError,
)
from flink_tasks.runtime.local import LocalRuntime, ProcessStatus, RuntimeStatus
from flink_tasks.runtime.module_yaml import render_module_yaml
from flink_tasks.runtime.settings import LocalRuntimeSettings, format_duration
from flink_tasks.runtime.statefun import JobStatus, latest_checkpoint

__all__ = [
    "BuildError",
    "JobStatus",
    "LocalRuntime",
    "LocalRuntimeSettings",
    "PortInUseError",
    "ProcessStatus",
    "RuntimeLauncherError",
    "RuntimeStatus",
    "SettingsMismatchError",
    "StartupError",
    "ToolMissingError",
    "format_duration",
    "latest_checkpoint",
    "parse_duration",
    "render_module_yaml",
]

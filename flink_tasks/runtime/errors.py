"""Errors raised by the local runtime launcher."""

from __future__ import annotations

from pathlib import Path


class RuntimeLauncherError(RuntimeError):
    """Base class of every error the local runtime launcher raises."""


class ToolMissingError(RuntimeLauncherError):
    """Java or Maven is not installed (or not usable)."""


class PortInUseError(RuntimeLauncherError):
    """A port the runtime needs is already taken by another process."""

    def __init__(self, port: int, what: str) -> None:
        super().__init__(
            f"port 127.0.0.1:{port} ({what}) is already in use by another process; "
            f"stop it, or choose another port (see `flink-tasks local up --help`)"
        )
        self.port = port
        self.what = what


class BuildError(RuntimeLauncherError):
    """The Maven build of a runtime classpath failed."""


class StartupError(RuntimeLauncherError):
    """A runtime process died or did not become ready in time."""

    def __init__(self, message: str, log_file: Path | None = None, log_tail: str = "") -> None:
        text = message
        if log_file is not None:
            text += f"\n  log file: {log_file}"
        if log_tail:
            text += "\n  last lines of the log:\n" + _indent(log_tail, "    | ")
        super().__init__(text)
        self.log_file = log_file
        self.log_tail = log_tail


class SettingsMismatchError(RuntimeLauncherError):
    """A runtime is already running in the run directory, but with other settings."""


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in text.rstrip("\n").splitlines())

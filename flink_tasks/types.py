"""Public value types: retry policies and pipeline statuses."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from flink_tasks._proto import messages_pb2, pipeline_pb2


def type_name_of(exception_type: type[BaseException]) -> str:
    """The `module.Class` name that identifies an exception type on the wire."""
    return f"{exception_type.__module__}.{exception_type.__qualname__}"


@dataclass(frozen=True)
class RetryPolicy:
    """When and how often a failed task is retried.

    `max_retries=n` allows n retries (n+1 attempts). Delays are `delay`, then `2*delay`,
    `4*delay`... with `exponential_back_off`, capped by `max_delay`.
    """

    retry_for: Sequence[type[BaseException]] = field(default=(Exception,))
    max_retries: int = 1
    delay: timedelta = timedelta(0)
    exponential_back_off: bool = False
    max_delay: timedelta | None = None

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if self.delay < timedelta(0):
            raise ValueError("delay must not be negative")
        for exception_type in self.retry_for:
            if not (isinstance(exception_type, type) and issubclass(exception_type, BaseException)):
                raise ValueError(f"retry_for must list exception types, got {exception_type!r}")

    def to_proto(self) -> pipeline_pb2.RetryPolicy:
        """The wire form."""
        return pipeline_pb2.RetryPolicy(
            retry_for=[type_name_of(t) for t in self.retry_for],
            max_retries=self.max_retries,
            delay_ms=int(self.delay / timedelta(milliseconds=1)),
            exponential_back_off=self.exponential_back_off,
            max_delay_ms=0
            if self.max_delay is None
            else int(self.max_delay / timedelta(milliseconds=1)),
        )


def retry_delay_ms(policy: pipeline_pb2.RetryPolicy, failed_attempts: int) -> int:
    """The delay before the next attempt, after `failed_attempts` failures (>= 1)."""
    delay = policy.delay_ms
    if policy.exponential_back_off:
        delay = delay * (2 ** (failed_attempts - 1))
    if policy.max_delay_ms > 0:
        delay = min(delay, policy.max_delay_ms)
    return int(delay)


class PipelineStatus(enum.Enum):
    """The life cycle of a pipeline."""

    PENDING = messages_pb2.PIPELINE_STATUS_PENDING
    RUNNING = messages_pb2.PIPELINE_STATUS_RUNNING
    PAUSED = messages_pb2.PIPELINE_STATUS_PAUSED
    COMPLETED = messages_pb2.PIPELINE_STATUS_COMPLETED
    FAILED = messages_pb2.PIPELINE_STATUS_FAILED
    CANCELLING = messages_pb2.PIPELINE_STATUS_CANCELLING
    CANCELLED = messages_pb2.PIPELINE_STATUS_CANCELLED

    @property
    def is_finished(self) -> bool:
        """True once the pipeline can no longer change."""
        return self in (PipelineStatus.COMPLETED, PipelineStatus.FAILED, PipelineStatus.CANCELLED)


_MEMORY_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_memory_size(value: int | str) -> int:
    """Bytes from an int or a string such as ``"512MiB"``, ``"1.5GB"`` or ``"800000"``."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"a memory size is an int (bytes) or a string like '512MiB', not {value!r}")
    if isinstance(value, int):
        size = value
    else:
        text = value.strip().lower().replace(" ", "")
        number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = text[len(number) :]
        if unit not in _MEMORY_UNITS or not number:
            raise ValueError(
                f"cannot read {value!r} as a memory size: use bytes or a number with one of "
                "B, KB, KiB, MB, MiB, GB, GiB (e.g. '512MiB')"
            )
        try:
            size = int(float(number) * _MEMORY_UNITS[unit])
        except ValueError:
            raise ValueError(f"cannot read {value!r} as a memory size (e.g. '512MiB')") from None
    if size <= 0:
        raise ValueError(f"a memory limit must be positive, not {value!r}")
    return size

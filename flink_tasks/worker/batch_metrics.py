"""The pipeline function's per-batch metrics, tallied in plain ints and handed to
``prometheus_client`` in bulk.

A chain sends one message per batch, and a labelled ``Counter.inc`` plus a ``Histogram.observe``
cost about 190 Python opcodes (locks, observability checks, the bucket walk): a tenth of a chain
step. So the pipeline function only adds to two dicts here, and `flush` passes the differences on
at most `FLUSH_S` later (a timer armed by the first batch after a flush) and before every read
through `Metrics` (`value`, `render`): reads in the worker's own process are exact; a scrape
answered by another process of ``serve --workers N`` may miss the last `FLUSH_S` of batches.

Only the pipeline function's thread adds (one writer); `flush` may run in any thread (the
``/metrics`` handler renders in a thread) and only reads the tallies, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import bisect
import threading
from typing import Any

#: seconds between a batch and the flush that hands it to prometheus_client
FLUSH_S = 1.0


class BatchTally:
    """Counts of messages by type and of batches by size, since this worker started."""

    __slots__ = (
        "_batch_size",
        "_flushed_messages",
        "_flushed_sizes",
        "_lock",
        "_message_series",
        "_messages_family",
        "armed",
        "batch_sizes",
        "messages",
    )

    def __init__(self, messages_family: Any, batch_size_family: Any) -> None:
        #: message typename -> messages handled; batch size -> batches (cumulative)
        self.messages: dict[str, int] = {}
        self.batch_sizes: dict[int, int] = {}
        #: a flush is due (its timer is armed)
        self.armed = False
        self._messages_family = messages_family
        self._batch_size = batch_size_family
        self._message_series: dict[str, Any] = {}
        self._flushed_messages: dict[str, int] = {}
        self._flushed_sizes: dict[int, int] = {}
        self._lock = threading.Lock()

    def batch_done(self, size: int) -> None:
        """Count one batch of `size` invocations (their types were added to `messages`)."""
        sizes = self.batch_sizes
        sizes[size] = sizes.get(size, 0) + 1
        if not self.armed:
            self.armed = True
            asyncio.get_running_loop().call_later(FLUSH_S, self.flush)

    def flush(self) -> None:
        """Hand what was counted since the last flush to prometheus_client."""
        with self._lock:
            self.armed = False
            flushed = self._flushed_messages
            for typename, total in list(self.messages.items()):
                new = total - flushed.get(typename, 0)
                if new:
                    flushed[typename] = total
                    self._series(typename).inc(new)
            self._flush_sizes()

    def _flush_sizes(self) -> None:
        flushed = self._flushed_sizes
        histogram = self._batch_size
        # Histogram.observe takes one value at a time; N batches of one size go into their
        # bucket and the sum at once (prometheus_client is pinned: tests/unit/test_batch_metrics.py
        # checks the result against observe())
        bounds = histogram._upper_bounds
        added_sum = 0
        for size, total in list(self.batch_sizes.items()):
            new = total - flushed.get(size, 0)
            if new:
                flushed[size] = total
                added_sum += size * new
                histogram._buckets[bisect.bisect_left(bounds, size)].inc(new)
        if added_sum:
            histogram._sum.inc(added_sum)

    def _series(self, typename: str) -> Any:
        series = self._message_series.get(typename)
        if series is None:
            label = typename.rpartition("/")[2]
            series = self._message_series[typename] = self._messages_family.labels(label)
        return series

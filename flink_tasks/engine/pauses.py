"""Pause points: `.wait()` on an entry, or a task's `TaskContext.pause_pipeline()`.

The address where the entry completed pauses and holds (it starts nothing after the entry, and
does not finish either); if it is a child, it asks its root to pause, and the root passes the
pause on to every running child as a client's pause would. `unpause` at the root releases all.
"""

from __future__ import annotations

import logging

from flink_tasks._proto import messages_pb2
from flink_tasks.engine.common import S
from flink_tasks.engine.context import Context

logger = logging.getLogger(__name__)


def reach_pause_point(ctx: Context) -> None:
    """The entry (or group chain) that just completed is a pause point."""
    run = ctx.run
    if run.cancelling:
        return
    run.held = True
    if not run.paused:
        run.paused = True
        run.status = S.PIPELINE_STATUS_PAUSED
        ctx.emit_status(run.status)
    ctx.state.touch_run()
    logger.info("pipeline %s reached a pause point", ctx.address_id)
    if run.parent_id and run.root_pipeline_id:
        pause = messages_pb2.ChildControl(action=S.ACTION_PAUSE)
        ctx.send(run.root_pipeline_id, messages_pb2.PipelineMessage(control=pause))


def holds(run: messages_pb2.Run) -> bool:
    """True while the address waits at a pause point for `unpause`."""
    return run.held and run.paused and not run.finalizing and not run.cancelling

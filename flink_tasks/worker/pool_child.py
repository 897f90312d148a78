"""The body of a process-pool child: import the registry, then run one task at a time.

Messages on the pipe are bytes, never pickles: the parent sends a `TaskRequest`, the child answers
``R`` + `TaskResult` bytes; at start it answers ``K`` (ready) or ``E`` + a message (the registry
could not be imported).
"""

from __future__ import annotations

import contextlib
import signal
import traceback
from multiprocessing.connection import Connection

READY = b"K"
RESULT = b"R"
START_ERROR = b"E"


def child_main(target: str, conn: Connection, max_result_bytes: int) -> None:
    """Serve tasks of ``MODULE:ATTR`` over `conn` until the parent closes it."""
    _die_with_parent()
    # Ctrl-C reaches the whole process group; the parent decides when children stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from flink_tasks._proto import messages_pb2
    from flink_tasks.worker.execute import execute_sync
    from flink_tasks.worker.serve import load_registry

    try:
        tasks = load_registry(target)
    except BaseException as exc:
        message = f"cannot import {target}: {exc}\n{traceback.format_exc()}"
        conn.send_bytes(START_ERROR + message.encode())
        return
    conn.send_bytes(READY)
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        request = messages_pb2.TaskRequest.FromString(data)
        result = execute_sync(tasks, request, max_result_bytes)
        conn.send_bytes(RESULT + result.SerializeToString())


def _die_with_parent() -> None:
    """Linux: SIGKILL this child when its parent (the fork server) exits."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

"""B4's handler work, counted so that a loaded machine cannot move it.

For one tree (the first on ``sys.path``: its ``flink_tasks`` *and* its ``bench`` package, so an
older tree runs with its own `bench.b4_engine.pipeline_only`, router and codec), per shape:

- **opcodes**: Python opcodes executed inside ``Worker.handle`` during one warm pipeline-only run
  (``sys.settrace`` with ``f_trace_opcodes``; frames outside ``Worker.handle``, i.e. the router
  and the codec, are not counted), with ``--top N`` the N functions that execute most of them;
- **CPU-clock rate**: completions/s of pipeline-only runs (median of ``--reps`` after a warm-up)
  with the router's clock on the thread's CPU time (``time.thread_time``), not wall time.

Run it by file path so that the tree under test, not this one, is imported:

    PYTHONPATH=/tmp/b4base-e08988d:/tmp/b4base-e08988d/client \\
        python bench/b4_work.py --shapes chain:300,fanout:1000 --top 25 --out base.json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import importlib
import json
import statistics
import sys
import time
import types
from collections.abc import Callable
from typing import Any

# (file, first line, function name) of a code object
CodeKey = tuple[str, int, str]


class OpcodeCounter:
    """Counts opcode events per code object in frames that run inside `target`'s frames."""

    def __init__(self, target: types.CodeType) -> None:
        self.target = target
        self.by_code: collections.Counter[CodeKey] = collections.Counter()

    def _inside_target(self, frame: types.FrameType | None) -> bool:
        while frame is not None:
            if frame.f_code is self.target:
                return True
            frame = frame.f_back
        return False

    def _on_call(self, frame: types.FrameType, event: str, arg: object) -> Any:
        if event != "call" or not self._inside_target(frame):
            return None
        frame.f_trace_opcodes = True
        code = frame.f_code
        key = (code.co_filename, code.co_firstlineno, code.co_name)
        counter = self.by_code

        def local(frame: types.FrameType, event: str, arg: object) -> Any:
            if event == "opcode":
                counter[key] += 1
            return local

        return local

    def __enter__(self) -> OpcodeCounter:
        sys.settrace(self._on_call)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.settrace(None)

    @property
    def total(self) -> int:
        return sum(self.by_code.values())


def _run_once(b4: types.ModuleType, shape: tuple[str, int], max_batch: int) -> dict[str, Any]:
    name, n = shape
    pipeline = b4._shape(name, n)
    gc.collect()
    result: dict[str, Any] = asyncio.run(b4.pipeline_only(pipeline, n, max_batch))
    return result


def count_opcodes(
    b4: types.ModuleType, handle: Callable[..., Any], shape: tuple[str, int], max_batch: int
) -> OpcodeCounter:
    _run_once(b4, shape, max_batch)  # warm: imports, caches, metric series
    counter = OpcodeCounter(handle.__code__)
    with counter:
        _run_once(b4, shape, max_batch)
    return counter


def cpu_clock_rates(
    b4: types.ModuleType,
    router: types.ModuleType,
    shape: tuple[str, int],
    reps: int,
    max_batch: int,
) -> list[float]:
    # the router reads `time.perf_counter` at each run: give only the router a `time` whose
    # perf_counter is the thread's CPU clock, so the neighbours' load does not count
    names = vars(router)
    router_time = names["time"]
    names["time"] = types.SimpleNamespace(perf_counter=time.thread_time)
    try:
        _run_once(b4, shape, max_batch)
        return [_run_once(b4, shape, max_batch)["completions_per_s"] for _ in range(reps)]
    finally:
        names["time"] = router_time


def _shapes(text: str) -> list[tuple[str, int]]:
    return [(part.split(":")[0], int(part.split(":")[1])) for part in text.split(",") if part]


def _short(key: CodeKey) -> str:
    filename, line, name = key
    for marker in ("/flink_tasks/", "/site-packages/"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
            break
    return f"{filename}:{line}({name})"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--shapes", default="chain:300,fanout:1000")
    parser.add_argument("--reps", type=int, default=3, help="CPU-clock runs per shape (0: none)")
    parser.add_argument("--no-opcodes", action="store_true")
    parser.add_argument("--top", type=int, default=0, help="list the N busiest functions")
    parser.add_argument("--max-batch", type=int, default=1000)
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    import flink_tasks
    from flink_tasks.worker.functions import Worker

    b4 = importlib.import_module("bench.b4_engine")
    router = importlib.import_module("bench._router")
    print(f"flink_tasks: {flink_tasks.__file__}\nbench: {b4.__file__}", flush=True)
    out: dict[str, Any] = {"flink_tasks": flink_tasks.__file__, "shapes": {}}
    for shape in _shapes(args.shapes):
        label = f"{shape[0]}:{shape[1]}"
        entry: dict[str, Any] = {}
        out["shapes"][label] = entry
        if not args.no_opcodes:
            counter = count_opcodes(b4, Worker.handle, shape, args.max_batch)
            entry["opcodes"] = counter.total
            top = counter.by_code.most_common(args.top)
            entry["top"] = {_short(key): count for key, count in top}
            print(f"{label}: {counter.total:,} opcodes inside Worker.handle", flush=True)
            for key, count in top:
                print(f"  {count:>10,}  {_short(key)}")
        if args.reps:
            rates = cpu_clock_rates(b4, router, shape, args.reps, args.max_batch)
            entry["cpu_clock_per_s"] = rates
            shown = " · ".join(f"{r:,.0f}" for r in rates)
            print(f"{label}: CPU clock {shown}/s (median {statistics.median(rates):,.0f})")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()

"""The pipeline function's state at one address, split so that one task result costs O(1).

Cells (each a separate StateFun value, shipped only when set):
- `run`: the small control record (`Run`): status, cursor, counters, current input and state.
- `definition`: the address's compiled pipeline, immutable once written. Large groups were
  staged into child addresses when it was compiled, so it holds at most a bounded fan-out.
- `slots`: the aggregation of the group that is running, one slot per chain (bounded likewise).
- `result`: a finished root pipeline's reply, for `get_result`.
- `request`: the original request, kept at the `<id>~request` address for `get_request`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from flink_tasks._proto import messages_pb2, pipeline_pb2

CELLS = ("run", "definition", "slots", "result", "request")
_UNPARSED = object()


@dataclass(frozen=True)
class CompiledDefinition:
    """A parsed definition, cached by its bytes (a definition never changes once written)."""

    pipeline: pipeline_pb2.Pipeline


@functools.lru_cache(maxsize=256)
def parse_definition(raw: bytes) -> CompiledDefinition:
    """Parse a stored definition once for a run of steps that need it."""
    return CompiledDefinition(pipeline_pb2.Pipeline.FromString(raw))


class AddressState:
    """The cells of one address: raw bytes in (read through `load` when first needed), parsed
    when first needed, dirty cells written back.

    `run` is parsed at once (every step reads it, many times); the other cells are read and
    parsed only by the steps that need them (a chain's task result never reads `slots`,
    `result` or `request`). A plain class with slots: the shell makes one per batch.

    Args:
        raw: cells already read (name -> bytes, None: empty).
        load: reads a cell that `raw` does not hold yet (None: such a cell is empty).
    """

    __slots__ = ("_definition", "_slots", "dirty", "load", "raw", "run")

    def __init__(
        self,
        raw: dict[str, bytes | None] | None = None,
        *,
        load: Callable[[str], bytes | None] | None = None,
    ) -> None:
        self.raw: dict[str, bytes | None] = {} if raw is None else raw
        self.load = load
        self.dirty: set[str] = set()
        self._slots: messages_pb2.GroupSlots | None | object = _UNPARSED
        # the compiled definition and the bytes it was parsed from (reused while they are the same)
        self._definition: tuple[bytes, CompiledDefinition] | None = None
        data = self.cell("run")
        #: the parsed `run` cell; replaced with `set_run`
        self.run: messages_pb2.Run | None = messages_pb2.Run.FromString(data) if data else None

    def __repr__(self) -> str:
        return f"AddressState(run={self.run!r}, dirty={sorted(self.dirty)})"

    def cell(self, name: str) -> bytes | None:
        """The raw bytes of cell `name` (None: empty)."""
        raw = self.raw
        if name in raw:
            return raw[name]
        data = raw[name] = self.load(name) if self.load is not None else None
        return data

    def set_run(self, run: messages_pb2.Run) -> None:
        self.run = run
        self.dirty.add("run")

    def touch_run(self) -> None:
        self.dirty.add("run")

    @property
    def definition(self) -> CompiledDefinition | None:
        data = self.cell("definition")
        if not data:
            return None
        cached = self._definition
        if cached is not None and cached[0] is data:
            return cached[1]
        compiled = parse_definition(data)
        self._definition = (data, compiled)
        return compiled

    def set_definition(self, pipeline: pipeline_pb2.Pipeline) -> CompiledDefinition:
        data = pipeline.SerializeToString()
        self.raw["definition"] = data
        self.dirty.add("definition")
        return parse_definition(data)

    @property
    def slots(self) -> messages_pb2.GroupSlots | None:
        slots = self._slots
        if slots is _UNPARSED:
            data = self.cell("slots")
            slots = self._slots = messages_pb2.GroupSlots.FromString(data) if data else None
        return slots  # type: ignore[return-value]

    def set_slots(self, slots: messages_pb2.GroupSlots | None) -> None:
        self._slots = slots
        self.dirty.add("slots")

    def touch_slots(self) -> None:
        self.dirty.add("slots")

    def get_message(
        self, cell: str, message_type: type[messages_pb2.Reply]
    ) -> messages_pb2.Reply | None:
        data = self.cell(cell)
        return message_type.FromString(data) if data else None

    def set_raw(self, cell: str, data: bytes | None) -> None:
        self.raw[cell] = data
        if cell == "run":
            self.run = messages_pb2.Run.FromString(data) if data else None
        elif cell == "slots":
            self._slots = _UNPARSED
        self.dirty.add(cell)

    def clear(self, keep_request: bool = False) -> None:
        """Delete every cell of this address (but the `request` cell if `keep_request`: left as
        it is, not rewritten)."""
        for cell in CELLS:
            if not (keep_request and cell == "request"):
                self.raw[cell] = None
                self.dirty.add(cell)
        self.run = None
        self._slots = None

    def encoded(self) -> dict[str, bytes | None]:
        """The dirty cells' new bytes (None: delete)."""
        out: dict[str, bytes | None] = {}
        for cell in self.dirty:
            if cell == "run":
                run = self.run
                out[cell] = run.SerializeToString() if run is not None else None
            elif cell == "slots":
                slots = self.slots
                out[cell] = slots.SerializeToString() if slots is not None else None
            else:
                out[cell] = self.cell(cell)
        return out

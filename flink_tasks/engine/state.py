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
from dataclasses import dataclass, field

from flink_tasks._proto import messages_pb2, pipeline_pb2

CELLS = ("run", "definition", "slots", "result", "request")


@dataclass(frozen=True)
class CompiledDefinition:
    """A parsed definition, cached by its bytes (a definition never changes once written)."""

    pipeline: pipeline_pb2.Pipeline


@functools.lru_cache(maxsize=256)
def parse_definition(raw: bytes) -> CompiledDefinition:
    """Parse a stored definition once for a run of steps that need it."""
    return CompiledDefinition(pipeline_pb2.Pipeline.FromString(raw))


@dataclass
class AddressState:
    """The cells of one address: raw bytes in, parsed lazily, dirty cells written back."""

    raw: dict[str, bytes | None] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)
    _run: messages_pb2.Run | None = None
    _slots: messages_pb2.GroupSlots | None = None
    _parsed: set[str] = field(default_factory=set)

    @property
    def run(self) -> messages_pb2.Run | None:
        if "run" not in self._parsed:
            data = self.raw.get("run")
            self._run = messages_pb2.Run.FromString(data) if data else None
            self._parsed.add("run")
        return self._run

    def set_run(self, run: messages_pb2.Run) -> None:
        self._run = run
        self._parsed.add("run")
        self.dirty.add("run")

    def touch_run(self) -> None:
        self.dirty.add("run")

    @property
    def definition(self) -> CompiledDefinition | None:
        data = self.raw.get("definition")
        return parse_definition(data) if data else None

    def set_definition(self, pipeline: pipeline_pb2.Pipeline) -> CompiledDefinition:
        data = pipeline.SerializeToString()
        self.raw["definition"] = data
        self.dirty.add("definition")
        return parse_definition(data)

    @property
    def slots(self) -> messages_pb2.GroupSlots | None:
        if "slots" not in self._parsed:
            data = self.raw.get("slots")
            self._slots = messages_pb2.GroupSlots.FromString(data) if data else None
            self._parsed.add("slots")
        return self._slots

    def set_slots(self, slots: messages_pb2.GroupSlots | None) -> None:
        self._slots = slots
        self._parsed.add("slots")
        self.dirty.add("slots")

    def touch_slots(self) -> None:
        self.dirty.add("slots")

    def get_message(
        self, cell: str, message_type: type[messages_pb2.Reply]
    ) -> messages_pb2.Reply | None:
        data = self.raw.get(cell)
        return message_type.FromString(data) if data else None

    def set_raw(self, cell: str, data: bytes | None) -> None:
        self.raw[cell] = data
        self._parsed.discard(cell)
        self.dirty.add(cell)

    def clear(self) -> None:
        """Delete every cell of this address."""
        for cell in CELLS:
            self.raw[cell] = None
            self.dirty.add(cell)
        self._run = None
        self._slots = None
        self._parsed.update(("run", "slots"))

    def encoded(self) -> dict[str, bytes | None]:
        """The dirty cells' new bytes (None: delete)."""
        out: dict[str, bytes | None] = {}
        for cell in self.dirty:
            if cell == "run":
                out[cell] = self._run.SerializeToString() if self._run is not None else None
            elif cell == "slots":
                out[cell] = self._slots.SerializeToString() if self._slots is not None else None
            else:
                out[cell] = self.raw.get(cell)
        return out

"""A single-threaded stand-in for StateFun's dispatch, for measuring a pipeline function alone.

Stdlib only: it drives flink-tasks (main venv) and statefun-tasks (its own venv) the same way.
StateFun's rules that matter for cost are kept: one call in flight per address, and whatever
arrives for an address meanwhile goes out as its next batch (at most `max_batch` invocations);
every call ships all registered state of the address; missing state specs are registered on the
first call. Addresses are served round-robin (a FIFO of ready addresses), one call at a time, so
the handler time measured is the pipeline function's own time. Messages to task functions never
reach the handler: `intercept` answers them at once (no user code runs).
"""

from __future__ import annotations

import collections
import importlib.util
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

# (caller typename, caller id, value typename, payload)
Invocation = tuple[str | None, str | None, str, bytes]
# (target typename, target id, value typename, payload, delay ms)
Outgoing = tuple[str, str, str, bytes, int]


@dataclass
class Decoded:
    missing: list[tuple[str, str]]  # (state name, typename)
    mutations: dict[str, bytes | None]
    messages: list[Outgoing]
    egress: list[tuple[str, bytes]]  # (topic, payload)


@dataclass
class _Address:
    typename: str
    address_id: str
    state: dict[str, bytes | None] = field(default_factory=dict)
    backlog: collections.deque[Invocation] = field(default_factory=collections.deque)
    queued: bool = False


Encode = Callable[[str, str, dict[str, tuple[str, bytes | None]], Iterable[Invocation]], bytes]
Decode = Callable[[bytes], Decoded]
# returns the answer messages (target typename, id, value typename, payload) or None: deliver
Intercept = Callable[
    [str, str, str, bytes, tuple[str, str] | None], list[tuple[str, str, str, bytes]] | None
]


@dataclass
class RouterStats:
    calls: int = 0
    invocations: int = 0
    handler_s: float = 0.0
    codec_s: float = 0.0
    state_bytes: int = 0
    intercepted: int = 0
    delayed_dropped: int = 0
    max_batch_seen: int = 0


class Router:
    def __init__(
        self,
        handler: Callable[[bytes], Awaitable[bytes]],
        encode: Encode,
        decode: Decode,
        intercept: Intercept,
        *,
        max_batch: int = 1000,
    ) -> None:
        self.handler = handler
        self.encode = encode
        self.decode = decode
        self.intercept = intercept
        self.max_batch = max_batch
        self.addresses: dict[tuple[str, str], _Address] = {}
        self.specs: dict[str, dict[str, str]] = collections.defaultdict(dict)
        self.ready: collections.deque[_Address] = collections.deque()
        self.egress: list[tuple[str, bytes]] = []
        self.stats = RouterStats()

    def route(
        self,
        typename: str,
        address_id: str,
        value_typename: str,
        payload: bytes,
        caller: tuple[str, str] | None = None,
    ) -> None:
        answers = self.intercept(typename, address_id, value_typename, payload, caller)
        if answers is not None:
            self.stats.intercepted += 1
            origin = (typename, address_id)
            for target, target_id, answer_type, answer in answers:
                self.route(target, target_id, answer_type, answer, origin)
            return
        key = (typename, address_id)
        address = self.addresses.get(key)
        if address is None:
            address = self.addresses[key] = _Address(typename, address_id)
        address.backlog.append(
            (caller[0] if caller else None, caller[1] if caller else None, value_typename, payload)
        )
        if not address.queued:
            address.queued = True
            self.ready.append(address)

    async def run(self, done: Callable[[], bool] = lambda: False) -> None:
        """Serve ready addresses until none is left or `done()`."""
        clock = time.perf_counter
        while self.ready and not done():
            address = self.ready.popleft()
            take = min(self.max_batch, len(address.backlog))
            batch = [address.backlog.popleft() for _ in range(take)]
            specs = self.specs[address.typename]
            while True:
                t0 = clock()
                state = {
                    name: (typename, address.state.get(name)) for name, typename in specs.items()
                }
                body = self.encode(address.typename, address.address_id, state, batch)
                t1 = clock()
                reply_body = await self.handler(body)
                t2 = clock()
                reply = self.decode(reply_body)
                t3 = clock()
                self.stats.handler_s += t2 - t1
                self.stats.codec_s += (t1 - t0) + (t3 - t2)
                if reply.missing:
                    for name, typename in reply.missing:
                        specs[name] = typename
                    continue
                break
            self.stats.calls += 1
            self.stats.invocations += take
            self.stats.max_batch_seen = max(self.stats.max_batch_seen, take)
            self.stats.state_bytes += sum(len(data) for _, data in state.values() if data)
            for name, data in reply.mutations.items():
                if data is None:
                    address.state.pop(name, None)
                else:
                    address.state[name] = data
            origin = (address.typename, address.address_id)
            for typename, target_id, value_typename, payload, delay_ms in reply.messages:
                if delay_ms > 0:
                    self.stats.delayed_dropped += 1  # expiry timers etc.: not part of the run
                    continue
                self.route(typename, target_id, value_typename, payload, origin)
            self.egress.extend(reply.egress)
            address.queued = False
            if address.backlog:
                address.queued = True
                self.ready.append(address)

    def summary(self, tasks: int) -> dict[str, Any]:
        s = self.stats
        return {
            "calls": s.calls,
            "invocations": s.invocations,
            "mean_batch": round(s.invocations / s.calls, 2) if s.calls else 0,
            "max_batch": s.max_batch_seen,
            "handler_s": s.handler_s,
            "codec_s": s.codec_s,
            "state_bytes_shipped": s.state_bytes,
            "tasks_answered": s.intercepted,
            "completions_per_s": tasks / s.handler_s if s.handler_s else 0.0,
        }


def wire_codec() -> ModuleType:
    """flink_tasks/testing/wire_codec.py, loaded by path (it needs only the StateFun SDK): both
    benchmarks encode batches and decode replies with flink-tasks' own codec, in either venv."""
    name = "flink_tasks_wire_codec"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "flink_tasks" / "testing" / "wire_codec.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def encode(
    typename: str,
    address_id: str,
    state: dict[str, tuple[str, bytes | None]],
    invocations: Iterable[Invocation],
) -> bytes:
    """A `ToFunction` batch (`wire_codec.encode_batch`)."""
    encoded: bytes = wire_codec().encode_batch(typename, address_id, state, invocations)
    return encoded


def decode(data: bytes) -> Decoded:
    """A `FromFunction` reply as the router's `Decoded` (`wire_codec.decode_reply`)."""
    reply = wire_codec().decode_reply(data)
    return Decoded(
        missing=[(c.name, c.typename) for c in reply.missing],
        mutations=reply.mutations,
        messages=[
            (m.typename, m.address_id, m.value_typename, m.payload, m.delay_ms)
            for m in reply.messages
        ],
        egress=[(e.topic, e.payload) for e in reply.egress],
    )

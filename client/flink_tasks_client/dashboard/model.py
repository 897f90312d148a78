"""What the dashboard knows: root pipelines folded from their events (pure, no I/O).

The events topic carries, per pipeline address, its creation (the structure, arguments left out),
each status change, skipped tasks and group progress, keyed by the root pipeline id. A `Board`
folds them into one `RootView` per root pipeline; the web app turns those into JSON.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from flink_tasks._proto import events_pb2, pipeline_pb2
from flink_tasks.types import PipelineStatus

#: chains listed per group in a pipeline's tree (the rest are counted)
CHAINS_SHOWN = 12

TERMINAL = frozenset({PipelineStatus.COMPLETED, PipelineStatus.FAILED, PipelineStatus.CANCELLED})


@dataclass
class ChildView:
    """A child pipeline that a task returned (its own structure, its own status)."""

    pipeline_id: str
    parent_id: str
    structure: pipeline_pb2.Pipeline
    status: PipelineStatus = PipelineStatus.RUNNING


@dataclass
class RootView:
    """One root pipeline as its events tell it."""

    pipeline_id: str
    status: PipelineStatus = PipelineStatus.RUNNING
    created_ms: int = 0
    updated_ms: int = 0
    task_count: int = 0
    structure: pipeline_pb2.Pipeline | None = None
    truncated: bool = False
    #: group id -> (completed, total); stage groups are ``<group id>.<stage>``
    groups: dict[str, tuple[int, int]] = field(default_factory=dict)
    children: dict[str, ChildView] = field(default_factory=dict)
    skipped: int = 0
    #: the failure that ended it (from its result), once looked up
    error: dict[str, str] | None = None

    def progress(self) -> tuple[int, int]:
        """Chains finished / chains in the groups seen so far (stage groups not counted twice)."""
        done = total = 0
        for group_id, (completed, size) in self.groups.items():
            if any(g.startswith(group_id + ".") for g in self.groups):
                continue  # a staged group: its stages are counted instead
            done, total = done + completed, total + size
        return done, total


class Board:
    """Root pipelines by id, updated from events; thread-safe (a Kafka thread writes it)."""

    def __init__(self, limit: int = 500) -> None:
        self.limit = limit
        self.version = 0
        self._lock = threading.Lock()
        self._roots: dict[str, RootView] = {}

    def apply(self, event: events_pb2.PipelineEvent) -> None:
        """Fold one event in."""
        with self._lock:
            self._apply(event)
            self.version += 1
            if len(self._roots) > self.limit:
                self._forget_oldest()

    def _apply(self, event: events_pb2.PipelineEvent) -> None:
        root_id = event.root_pipeline_id or event.pipeline_id
        root = self._roots.get(root_id)
        if root is None:
            root = self._roots[root_id] = RootView(root_id)
        root.updated_ms = max(root.updated_ms, event.timestamp_ms)
        is_root = event.pipeline_id == root_id
        kind = event.WhichOneof("event")
        if kind == "pipeline_created":
            created = event.pipeline_created
            if is_root:
                # a re-run of a finished id starts over
                fresh = RootView(root_id, created_ms=event.timestamp_ms)
                fresh.updated_ms = event.timestamp_ms
                fresh.structure = created.pipeline
                fresh.task_count = created.task_count
                fresh.truncated = created.truncated
                self._roots[root_id] = fresh
            else:
                root.children[event.pipeline_id] = ChildView(
                    event.pipeline_id, created.parent_id, created.pipeline
                )
        elif kind == "status_changed":
            status = PipelineStatus(event.status_changed.status)
            if is_root:
                root.status = status
            elif event.pipeline_id in root.children:
                root.children[event.pipeline_id].status = status
        elif kind == "tasks_skipped":
            root.skipped += len(event.tasks_skipped.task_ids)
        elif kind == "group_progress":
            p = event.group_progress
            root.groups[p.group_id] = (p.completed, p.total)

    def _forget_oldest(self) -> None:
        finished = sorted(
            (r for r in self._roots.values() if r.status in TERMINAL), key=lambda r: r.updated_ms
        )
        for root in finished[: len(self._roots) - self.limit]:
            del self._roots[root.pipeline_id]

    def get(self, pipeline_id: str) -> RootView | None:
        with self._lock:
            return self._roots.get(pipeline_id)

    def set_error(self, pipeline_id: str, error: dict[str, str]) -> None:
        with self._lock:
            root = self._roots.get(pipeline_id)
            if root is not None:
                root.error = error
                self.version += 1

    def summaries(self, limit: int) -> list[dict[str, Any]]:
        """The list view: newest update first."""
        with self._lock:
            roots = sorted(self._roots.values(), key=lambda r: r.updated_ms, reverse=True)
            return [summary(r) for r in roots[:limit]]

    def detail(self, pipeline_id: str) -> dict[str, Any] | None:
        """One pipeline's tree, progress and failure."""
        with self._lock:
            root = self._roots.get(pipeline_id)
            if root is None:
                return None
            out = summary(root)
            out["skipped"] = root.skipped
            out["truncated"] = root.truncated
            out["structure"] = (
                entries(root.structure, root.groups) if root.structure is not None else []
            )
            out["children"] = [
                {
                    "id": child.pipeline_id,
                    "parent_id": child.parent_id,
                    "status": child.status.name,
                    "structure": entries(child.structure, root.groups),
                }
                for child in root.children.values()
            ]
            out["error"] = root.error
            return out


def summary(root: RootView) -> dict[str, Any]:
    done, total = root.progress()
    return {
        "id": root.pipeline_id,
        "status": root.status.name,
        "created_ms": root.created_ms or None,
        "updated_ms": root.updated_ms,
        "tasks": root.task_count,
        "task_types": sorted(task_types(root.structure)) if root.structure is not None else [],
        "completed": done,
        "total": total,
    }


def entries(
    pipeline: pipeline_pb2.Pipeline, groups: dict[str, tuple[int, int]]
) -> list[dict[str, Any]]:
    """A pipeline's entries as the page draws them: tasks, groups (with their chains and
    progress) and references to stored children."""
    out: list[dict[str, Any]] = []
    for entry in pipeline.entries:
        kind = entry.WhichOneof("kind")
        if kind == "task":
            task = entry.task
            out.append(
                {
                    "kind": "task",
                    "label": task.display_name or task.task_type,
                    "task_type": task.task_type,
                    "task_id": task.task_id,
                    "role": pipeline_pb2.EntryKind.Name(task.kind)
                    .removeprefix("ENTRY_KIND_")
                    .lower(),
                }
            )
        elif kind == "group":
            group = entry.group
            progress = groups.get(group.group_id)
            stages = sorted(
                (g for g in groups if g.startswith(group.group_id + ".")),
                key=lambda g: int(g.rpartition(".")[2]) if g.rpartition(".")[2].isdigit() else 0,
            )
            out.append(
                {
                    "kind": "group",
                    "group_id": group.group_id,
                    "size": len(group.chains),
                    "max_parallelism": group.max_parallelism,
                    "completed": progress[0] if progress else 0,
                    "total": progress[1] if progress else len(group.chains),
                    "stages": [
                        {"group_id": g, "completed": groups[g][0], "total": groups[g][1]}
                        for g in stages
                    ],
                    "chains": [entries(chain, groups) for chain in group.chains[:CHAINS_SHOWN]],
                    "more_chains": max(0, len(group.chains) - CHAINS_SHOWN),
                }
            )
        else:
            out.append({"kind": "child", "child_id": entry.child.child_id})
    return out


def task_types(pipeline: pipeline_pb2.Pipeline) -> set[str]:
    found: set[str] = set()
    for entry in pipeline.entries:
        kind = entry.WhichOneof("kind")
        if kind == "task":
            found.add(entry.task.task_type)
        elif kind == "group":
            for chain in entry.group.chains:
                found |= task_types(chain)
    return found

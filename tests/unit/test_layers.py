"""The package layout is the architecture, read statically from the source (every import,
lazy and TYPE_CHECKING ones included): a module imports only its own layer or lower ones, the
core distribution never imports the client distribution, and low layers stay free of I/O
libraries."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {
    "flink_tasks": ROOT / "flink_tasks",
    "flink_tasks_client": ROOT / "client" / "flink_tasks_client",
}

# Lower number: lower layer. The longest matching prefix decides a module's layer.
LAYERS: dict[str, int] = {
    # the contract and plain values: no project imports above this line
    "flink_tasks._proto": 0,
    "flink_tasks.wire": 0,
    "flink_tasks.errors": 0,
    "flink_tasks.types": 0,
    "flink_tasks.config": 0,
    "flink_tasks.logs": 0,
    "flink_tasks.context": 0,
    "flink_tasks.serialization": 0,
    "flink_tasks.value_types": 0,
    # what users build and what replies mean
    "flink_tasks.pipeline": 1,
    "flink_tasks.registry": 1,
    "flink_tasks.replies": 1,
    "flink_tasks": 1,  # the package's public API (__init__)
    # the pure engine, and the one module that speaks StateFun's protocol
    "flink_tasks.engine": 2,
    "flink_tasks.statefun": 2,
    # processes: the worker and the local runtime
    "flink_tasks.worker": 3,
    "flink_tasks.runtime": 3,
    # what users run: test environments and the command line
    "flink_tasks.testing": 4,
    "flink_tasks.cli": 4,
    "flink_tasks.__main__": 4,
    # the client distribution sits on the core's lower layers only
    "flink_tasks_client": 5,
}
CLIENT_MAY_USE_CORE_UP_TO = 1  # no worker, runtime, engine or StateFun SDK in the client

THIRD_PARTY_FORBIDDEN: dict[str, tuple[str, ...]] = {
    "flink_tasks._proto": ("aiohttp", "kafka", "statefun"),
    "flink_tasks.wire": ("aiohttp", "kafka", "statefun"),
    "flink_tasks.errors": ("aiohttp", "kafka", "statefun"),
    "flink_tasks.types": ("aiohttp", "kafka", "statefun"),
    "flink_tasks.config": ("aiohttp", "kafka", "statefun"),
    "flink_tasks.serialization": ("aiohttp", "kafka", "statefun"),
    "flink_tasks.value_types": ("aiohttp", "kafka", "statefun"),
    "flink_tasks.pipeline": ("aiohttp", "kafka", "statefun"),
    "flink_tasks.registry": ("aiohttp", "kafka", "statefun"),
    "flink_tasks.replies": ("aiohttp", "kafka", "statefun"),
    "flink_tasks.engine": ("aiohttp", "kafka", "statefun"),
    "flink_tasks.statefun": ("aiohttp", "kafka"),
    "flink_tasks_client": ("aiohttp", "statefun"),
}


def _layer(module: str) -> int | None:
    best = None
    for prefix, layer in LAYERS.items():
        if (module == prefix or module.startswith(prefix + ".")) and (
            best is None or len(prefix) > len(best[0])
        ):
            best = (prefix, layer)
    return None if best is None else best[1]


def _forbidden(module: str) -> tuple[str, ...]:
    for prefix in sorted(THIRD_PARTY_FORBIDDEN, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return THIRD_PARTY_FORBIDDEN[prefix]
    return ()


def _module_name(path: Path) -> str:
    for package, root in SOURCES.items():
        if path.is_relative_to(root):
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    raise AssertionError(path)


def _is_module(name: str) -> bool:
    package, _, rest = name.partition(".")
    root = SOURCES.get(package)
    if root is None:
        return False
    base = root.joinpath(*rest.split(".")) if rest else root
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def imports_of(module: str, source: str, *, is_package: bool = False) -> set[str]:
    """Every module `source` imports, anywhere in it; `from pkg import mod` counts as pkg.mod."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if _is_module(candidate) else base)
    return found


def _all_sources() -> list[Path]:
    return sorted(
        p for root in SOURCES.values() for p in root.rglob("*.py") if "_pb2" not in p.name
    )


def violations(module: str, source: str, *, is_package: bool = False) -> list[str]:
    own = _layer(module)
    assert own is not None, f"{module} has no layer: add it to LAYERS"
    problems = []
    for imported in sorted(imports_of(module, source, is_package=is_package)):
        top = imported.partition(".")[0]
        if top in _forbidden(module):
            problems.append(f"{module} imports {imported} (an I/O library this layer must not use)")
        if top not in SOURCES:
            continue
        layer = _layer(imported)
        assert layer is not None, f"{imported} has no layer"
        if module.startswith("flink_tasks.") or module == "flink_tasks":
            if top == "flink_tasks_client":
                problems.append(f"{module} imports {imported}: the core never imports the client")
            elif layer > own:
                problems.append(f"{module} (layer {own}) imports {imported} (layer {layer})")
        elif top == "flink_tasks" and layer > CLIENT_MAY_USE_CORE_UP_TO:
            problems.append(f"{module} imports {imported}: the client uses the core's model only")
    return problems


@pytest.mark.parametrize("path", _all_sources(), ids=lambda p: _module_name(p))
def test_imports_point_down(path: Path) -> None:
    module = _module_name(path)
    assert violations(module, path.read_text(), is_package=path.name == "__init__.py") == []


def test_the_checker_sees_lazy_and_type_checking_imports() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from flink_tasks.worker import Worker\n"
        "def f():\n    import flink_tasks_client\n    from flink_tasks import testing\n"
        "    from . import state\n    import aiohttp\n"
    )
    assert violations("flink_tasks.engine.context", source) == [
        "flink_tasks.engine.context imports aiohttp (an I/O library this layer must not use)",
        "flink_tasks.engine.context (layer 2) imports flink_tasks.testing (layer 4)",
        "flink_tasks.engine.context (layer 2) imports flink_tasks.worker (layer 3)",
        "flink_tasks.engine.context imports flink_tasks_client: the core never imports the client",
    ]
    assert violations("flink_tasks_client.x", "from flink_tasks.worker import Worker") == [
        "flink_tasks_client.x imports flink_tasks.worker: the client uses the core's model only"
    ]


def test_public_api() -> None:
    import flink_tasks

    assert {"FlinkTasks", "in_parallel", "RetryPolicy", "TaskError", "PipelineBuilder"} <= set(
        flink_tasks.__all__
    )
    from flink_tasks.testing import PipelineEnvironment

    assert hasattr(PipelineEnvironment, "in_process") and hasattr(
        PipelineEnvironment, "start_local"
    )

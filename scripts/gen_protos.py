"""Regenerate flink_tasks/_proto from proto/ with the pinned generator.

The generator is grpcio-tools + mypy-protobuf, pinned in pyproject.toml.

Usage: python scripts/gen_protos.py [--check]
--check regenerates into a temporary folder and fails if the committed files differ.
"""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE_DIR = Path("flink_tasks") / "_proto"


def generate(out_root: Path) -> None:
    sources = sorted(
        str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto")
    )
    (out_root / PACKAGE_DIR).mkdir(parents=True, exist_ok=True)
    plugin = shutil.which("protoc-gen-mypy", path=str(Path(sys.executable).parent))
    if plugin is None:
        sys.exit("protoc-gen-mypy not found: install the dev dependencies (make install)")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"--python_out={out_root}",
            f"--mypy_out={out_root}",
            f"--plugin=protoc-gen-mypy={plugin}",
            *sources,
        ],
        check=True,
        cwd=PROTO_ROOT,
    )
    init = out_root / PACKAGE_DIR / "__init__.py"
    init.write_text('"""Generated protobuf code; do not edit. Regenerate with `make proto`."""\n')


def main() -> int:
    if "--check" not in sys.argv:
        generate(ROOT)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = Path(tmp) / PACKAGE_DIR
        committed = ROOT / PACKAGE_DIR
        names = {p.name for p in fresh.iterdir()} | {
            p.name for p in committed.iterdir() if p.suffix in {".py", ".pyi"}
        }
        stale = [
            n
            for n in sorted(names)
            if not (fresh / n).exists()
            or not (committed / n).exists()
            or not filecmp.cmp(fresh / n, committed / n, shallow=False)
        ]
        if stale:
            print("generated protobuf code is stale; run `make proto`:", ", ".join(stale))
            return 1
    print("generated protobuf code is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())

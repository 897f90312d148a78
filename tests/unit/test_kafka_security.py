"""`KafkaSecurity`: validation, kafka-python options (secrets from files), Java properties
(secrets as ${dir:...} references), environment; the client's settings carry the same fields."""

from __future__ import annotations

from pathlib import Path

import pytest
from flink_tasks_client import ClientSettings

from flink_tasks.kafka_security import KafkaSecurity


def _scram(tmp_path: Path, **changes: str | bool) -> KafkaSecurity:
    password = tmp_path / "kafka.password"
    password.write_text("s3cret\n")
    values: dict[str, str | bool] = {
        "security_protocol": "SASL_SSL",
        "ssl_cafile": "/etc/kafka/ca.pem",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "submitter",
        "sasl_password_file": str(password),
    }
    values.update(changes)
    return KafkaSecurity(**values)  # type: ignore[arg-type]


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    assert KafkaSecurity().kafka_python_options() == {"security_protocol": "PLAINTEXT"}
    assert KafkaSecurity().java_properties() == {}
    assert KafkaSecurity().environment() == {}


def test_scram_options_read_the_password_file(tmp_path: Path) -> None:
    options = _scram(tmp_path).kafka_python_options()
    assert options == {
        "security_protocol": "SASL_SSL",
        "ssl_check_hostname": True,
        "ssl_cafile": "/etc/kafka/ca.pem",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "submitter",
        "sasl_plain_password": "s3cret",
    }


def test_java_properties_reference_the_secret_never_contain_it(tmp_path: Path) -> None:
    props = _scram(tmp_path).java_properties()
    assert "s3cret" not in repr(props)
    assert props["sasl.jaas.config"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="submitter" password="${{dir:{tmp_path}:kafka.password}}";'
    )
    assert props["ssl.truststore.type"] == "PEM"
    assert props["config.providers.dir.class"].endswith("DirectoryConfigProvider")


def test_mutual_tls(tmp_path: Path) -> None:
    key_password = tmp_path / "key.password"
    key_password.write_text("k")
    security = KafkaSecurity(
        security_protocol="SSL",
        ssl_cafile="ca.pem",
        ssl_certfile="client.pem",
        ssl_password_file=str(key_password),
    )
    options = security.kafka_python_options()
    assert (options["ssl_certfile"], options["ssl_keyfile"], options["ssl_password"]) == (
        "client.pem",
        "client.pem",
        "k",
    )
    props = security.java_properties()
    assert props["ssl.keystore.location"] == "client.pem"
    assert props["ssl.key.password"] == f"${{dir:{tmp_path}:key.password}}"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"security_protocol": "TLS"}, "security_protocol must be one of"),
        ({"sasl_mechanism": "GSSAPI"}, "sasl_mechanism must be one of"),
        ({"sasl_password_file": ""}, "needs sasl_username and sasl_password_file"),
        ({"security_protocol": "SSL"}, "SASL settings are given"),
    ],
)
def test_invalid_combinations(tmp_path: Path, changes: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _scram(tmp_path, **changes)


def test_unreadable_password_file_names_the_file_only(tmp_path: Path) -> None:
    security = _scram(tmp_path, sasl_password_file=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match=r"cannot read sasl_password_file .*missing"):
        security.kafka_python_options()


def test_client_settings_from_env(tmp_path: Path) -> None:
    password = tmp_path / "p"
    password.write_text("x")
    env = {
        "FLINK_TASKS_SECURITY_PROTOCOL": "SASL_SSL",
        "FLINK_TASKS_SASL_MECHANISM": "SCRAM-SHA-256",
        "FLINK_TASKS_SASL_USERNAME": "operator",
        "FLINK_TASKS_SASL_PASSWORD_FILE": str(password),
        "FLINK_TASKS_SSL_CHECK_HOSTNAME": "false",
    }
    settings = ClientSettings.from_env(environ=env)
    assert settings.security == KafkaSecurity.from_env(environ=env)
    assert settings.security.environment() == env
    assert settings.replace(sasl_username="other").security.sasl_username == "other"
    assert ClientSettings.from_env(environ=env, sasl_username="o").security.sasl_username == "o"
    with pytest.raises(ValueError, match="SASL settings are given"):
        ClientSettings.from_env(environ={}, sasl_username="x")
    with pytest.raises(ValueError, match="SASL settings are given"):
        ClientSettings().replace(sasl_username="x")


def test_module_yaml_carries_the_security_to_ingress_and_egress(tmp_path: Path) -> None:
    from flink_tasks.runtime.module_yaml import module_components
    from flink_tasks.runtime.settings import LocalRuntimeSettings

    security = _scram(tmp_path)
    docs = module_components(LocalRuntimeSettings(run_dir=tmp_path), kafka_security=security)
    expected = [{key: value} for key, value in security.java_properties().items()]
    ingress, egress = (d["spec"] for d in docs if str(d["kind"]).startswith("io.statefun.kafka"))
    assert ingress["properties"] == [{"isolation.level": "read_committed"}, *expected]  # type: ignore[index]
    # at least once, the egress still ends an exactly-once checkpoint's transactions on restore,
    # within the transaction timeout the broker allows (Flink's default, 1 h, it refuses)
    timeout = {"transaction.timeout.ms": "300000"}
    assert egress["properties"] == [timeout, *expected]  # type: ignore[index]
    assert "s3cret" not in repr(docs)

    def egress_of(**changes: object) -> dict[str, object]:
        docs = module_components(LocalRuntimeSettings(run_dir=tmp_path, **changes))  # type: ignore[arg-type]
        return next(d["spec"] for d in docs if d["kind"] == "io.statefun.kafka.v1/egress")  # type: ignore[return-value]

    assert egress_of()["properties"] == [timeout]
    exactly_once = egress_of(delivery_semantic="exactly-once")
    assert "properties" not in exactly_once
    assert exactly_once["deliverySemantic"] == {
        "type": "exactly-once",
        "transactionTimeout": "5min",
    }

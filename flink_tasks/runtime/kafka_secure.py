"""The local broker on SASL_SSL (``LocalRuntimeSettings.kafka_security="sasl_ssl"``).

Made on the broker's first start, in ``<run_dir>/kafka/security`` (folder 0700, secrets 0600):

* a CA, the broker's certificate (for ``127.0.0.1`` and ``localhost``) signed by it, and a client
  certificate for mutual TLS, all PEM, made with ``openssl`` (private keys encrypted, their
  password in a file: Kafka's PEM key stores need one);
* one SCRAM-SHA-512 (and SCRAM-SHA-256) user per role (`ROLES`), with a random password each in
  ``<role>.password``; the users are created when the storage is formatted (``kafka-storage
  format --add-scram``, passed in a Java argument file, not on the command line).

`role_security` gives the `KafkaSecurity` of a role: the launcher uses ``admin``, the StateFun
job ``statefun``, workers ``worker``, clients ``submitter`` or ``operator``.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

from flink_tasks.kafka_security import KafkaSecurity
from flink_tasks.runtime.errors import StartupError
from flink_tasks.runtime.settings import LocalRuntimeSettings

#: The SCRAM users of the local broker; admin is the broker's own (inter-broker) user and the
#: launcher's, and the only super user.
ROLES = ("admin", "submitter", "operator", "statefun", "worker")
MECHANISM = "SCRAM-SHA-512"
_DAYS = "825"


def security_dir(settings: LocalRuntimeSettings) -> Path:
    return settings.run_dir / "kafka" / "security"


def secured(settings: LocalRuntimeSettings) -> bool:
    return settings.kafka_security == "sasl_ssl"


def password_file(settings: LocalRuntimeSettings, role: str) -> Path:
    return security_dir(settings) / f"{role}.password"


def role_security(
    settings: LocalRuntimeSettings, role: str, *, mutual_tls: bool = False
) -> KafkaSecurity:
    """How ``role`` connects to the local broker (PLAINTEXT unless the broker is secured)."""
    if not secured(settings):
        return KafkaSecurity()
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; the local broker has {', '.join(ROLES)}")
    folder = security_dir(settings)
    return KafkaSecurity(
        security_protocol="SASL_SSL",
        ssl_cafile=str(folder / "ca.pem"),
        ssl_certfile=str(folder / "client.pem") if mutual_tls else "",
        ssl_password_file=str(folder / "client-key.password") if mutual_tls else "",
        sasl_mechanism=MECHANISM,
        sasl_username=role,
        sasl_password_file=str(password_file(settings, role)),
    )


def ensure_material(settings: LocalRuntimeSettings) -> None:
    """Make the CA, certificates and passwords that are missing (idempotent)."""
    folder = security_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    for role in ROLES:
        _secret_file(password_file(settings, role))
    if not (folder / "ca.pem").is_file():
        _openssl(
            folder,
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", _DAYS,
            "-subj", "/CN=flink-tasks local CA", "-keyout", "ca.key", "-out", "ca.pem",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
        (folder / "ca.key").chmod(0o600)
    for name, subject in (("broker", "/CN=127.0.0.1"), ("client", "/CN=flink-tasks-client")):
        if not (folder / f"{name}.pem").is_file():
            _signed_pair(folder, name, subject)


def _signed_pair(folder: Path, name: str, subject: str) -> None:
    """``<name>.pem``: an encrypted PKCS#8 key and its certificate signed by the CA."""
    key_password = _secret_file(folder / f"{name}-key.password")
    extensions = folder / f"{name}.ext"
    san = "subjectAltName=IP:127.0.0.1,DNS:localhost\n" if name == "broker" else ""
    extensions.write_text(f"{san}extendedKeyUsage=serverAuth,clientAuth\n")
    _openssl(
        folder,
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
        "-keyout", f"{name}.key.plain", "-out", f"{name}.csr",
    )  # fmt: skip
    try:
        _openssl(
            folder,
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", _DAYS, "-extfile", extensions.name, "-out", f"{name}.crt",
        )  # fmt: skip
        # PBE-SHA1-3DES: an encryption both Java's EncryptedPrivateKeyInfo and OpenSSL read
        _openssl(
            folder,
            "pkcs8", "-topk8", "-v1", "PBE-SHA1-3DES", "-in", f"{name}.key.plain",
            "-passout", f"file:{key_password.name}", "-out", f"{name}.key",
        )  # fmt: skip
    finally:
        (folder / f"{name}.key.plain").unlink(missing_ok=True)
    pem = (folder / f"{name}.key").read_text() + (folder / f"{name}.crt").read_text()
    target = folder / f"{name}.pem"
    target.write_text(pem)
    target.chmod(0o600)
    for leftover in (f"{name}.key", f"{name}.csr", f"{name}.ext"):
        (folder / leftover).unlink(missing_ok=True)


def _secret_file(path: Path) -> Path:
    if not path.is_file():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(24))  # no newline: Java reads the file as it is
    return path


def _openssl(folder: Path, *args: str) -> None:
    try:
        proc = subprocess.run(
            ["openssl", *args],
            cwd=folder,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=False,
        )
    except FileNotFoundError:
        raise StartupError(
            "kafka_security=sasl_ssl makes its certificates with openssl, which is not installed"
        ) from None
    if proc.returncode != 0:
        raise StartupError(f"openssl {args[0]} failed: {proc.stderr.decode(errors='replace')}")


def broker_properties(settings: LocalRuntimeSettings) -> dict[str, str | int]:
    """The listener and security part of ``server.properties`` for a SASL_SSL broker."""
    folder = security_dir(settings)
    admin = password_file(settings, "admin").read_text()
    key_password = (folder / "broker-key.password").read_text()
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required"
    host = "127.0.0.1"
    return {
        "listeners": (
            f"SASL_SSL://{host}:{settings.kafka_port},"
            f"CONTROLLER://{host}:{settings.kafka_controller_port}"
        ),
        "advertised.listeners": f"SASL_SSL://{host}:{settings.kafka_port}",
        "inter.broker.listener.name": "SASL_SSL",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512,SCRAM-SHA-256",
        "sasl.mechanism.inter.broker.protocol": MECHANISM,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
            f'{scram} username="admin" password="{admin}";'
        ),
        "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": f"{scram};",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(folder / "broker.pem"),
        "ssl.key.password": key_password,
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(folder / "ca.pem"),
        # mutual TLS: a client that presents a certificate must present one the CA signed
        "ssl.client.auth": "requested",
        **(_authorizer() if settings.kafka_acls else {}),
    }


def _authorizer() -> dict[str, str | int]:
    return {
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        # ANONYMOUS: the broker's own requests to its controller, over the loopback-only
        # CONTROLLER listener (PLAINTEXT), which serves controller requests only
        "super.users": "User:admin;User:ANONYMOUS",
        "allow.everyone.if.no.acl.found": "false",
    }


def scram_argument_file(settings: LocalRuntimeSettings, command: list[str]) -> Path:
    """A Java argument file (``java @file``) with ``command`` (main class and arguments) and the
    ``--add-scram`` arguments of ``kafka-storage format``: 0600, since the passwords must not be
    on a command line; the caller deletes it. (Passwords are URL-safe: no quoting needed.)"""
    lines = list(command)
    for role in ROLES:
        password = password_file(settings, role).read_text()
        for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256"):
            lines.append("--add-scram")
            lines.append(f"{mechanism}=[name={role},password={password}]")
    path = security_dir(settings) / "format.args"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")
    return path

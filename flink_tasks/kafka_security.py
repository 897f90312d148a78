"""How every flink-tasks Kafka client authenticates: TLS (server verification, mutual TLS) and
SASL (PLAIN, SCRAM-SHA-256/512), one set of settings for the Python clients (kafka-python) and
the StateFun job's Kafka ingress and egress (Java client properties).

Secrets are never settings values: passwords are read from files (``sasl_password_file``,
``ssl_password_file``), so they appear on no command line, in no environment and in no log. The
Java side reads the same files through Kafka's ``DirectoryConfigProvider``, so a rendered
``module.yaml`` names the file, never the password.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flink_tasks.config import settings_from_env

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

_LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}
_DIRECTORY_PROVIDER = "org.apache.kafka.common.config.provider.DirectoryConfigProvider"


@dataclass(frozen=True, kw_only=True)
class KafkaSecurity:
    """The security settings of a Kafka client.

    Attributes:
        security_protocol: ``PLAINTEXT`` (default), ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``.
        ssl_cafile: PEM file of the CA(s) that signed the brokers' certificates; empty: the
            system's trusted CAs.
        ssl_certfile: PEM client certificate (chain), for mutual TLS.
        ssl_keyfile: PEM private key of ``ssl_certfile`` (it may be the same file). The StateFun
            job (Java) needs key and certificate chain in this one file.
        ssl_password_file: A file holding the private key's password, if it is encrypted.
        ssl_check_hostname: Check that the broker's certificate names the address connected to.
        sasl_mechanism: ``PLAIN``, ``SCRAM-SHA-256`` or ``SCRAM-SHA-512``.
        sasl_username: The SASL user.
        sasl_password_file: A file holding the SASL password (without a trailing newline: the
            Java clients read the file as it is).
    """

    security_protocol: str = "PLAINTEXT"
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_password_file: str = ""
    ssl_check_hostname: bool = True
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password_file: str = ""

    def __post_init__(self) -> None:
        problem = security_problem(self)
        if problem:
            raise ValueError(problem)

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @classmethod
    def from_env(
        cls, prefix: str = "FLINK_TASKS_", environ: Mapping[str, str] | None = None
    ) -> KafkaSecurity:
        """From ``<prefix><FIELD_NAME>`` variables, e.g. ``FLINK_TASKS_SECURITY_PROTOCOL``."""
        return settings_from_env(cls, prefix, environ, {})

    def kafka_python_options(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python's producer, consumer and admin client.

        Reads the password files (each call, so a rotated secret is picked up by a rebuilt
        client). Raises `ValueError` naming a file that cannot be read, never its content.
        """
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.uses_ssl:
            options["ssl_check_hostname"] = self.ssl_check_hostname
            if self.ssl_cafile:
                options["ssl_cafile"] = self.ssl_cafile
            if self.ssl_certfile:
                options["ssl_certfile"] = self.ssl_certfile
                options["ssl_keyfile"] = self.ssl_keyfile or self.ssl_certfile
            if self.ssl_password_file:
                options["ssl_password"] = read_secret(self.ssl_password_file, "ssl_password_file")
        if self.uses_sasl:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = read_secret(
                self.sasl_password_file, "sasl_password_file"
            )
        return options

    def java_properties(self) -> dict[str, str]:
        """Kafka Java client properties (StateFun's ingress and egress ``properties``).

        Passwords are references to their files (``${dir:<folder>:<file>}``, resolved by
        Kafka's ``DirectoryConfigProvider`` when the client starts).
        """
        if self.security_protocol == "PLAINTEXT":
            return {}
        props = {"security.protocol": self.security_protocol}
        secret_dirs: set[str] = set()

        def secret(path: str) -> str:
            folder, name = os.path.split(os.path.abspath(path))
            secret_dirs.add(folder)
            return "${dir:" + folder + ":" + name + "}"

        if self.uses_ssl:
            props["ssl.endpoint.identification.algorithm"] = (
                "https" if self.ssl_check_hostname else ""
            )
            if self.ssl_cafile:
                props["ssl.truststore.type"] = "PEM"
                props["ssl.truststore.location"] = self.ssl_cafile
            if self.ssl_certfile:
                props["ssl.keystore.type"] = "PEM"
                props["ssl.keystore.location"] = self.ssl_keyfile or self.ssl_certfile
                if self.ssl_password_file:
                    props["ssl.key.password"] = secret(self.ssl_password_file)
        if self.uses_sasl:
            props["sasl.mechanism"] = self.sasl_mechanism
            props["sasl.jaas.config"] = (
                f'{_LOGIN_MODULES[self.sasl_mechanism]} required username="{self.sasl_username}" '
                f'password="{secret(self.sasl_password_file)}";'
            )
        if secret_dirs:
            props["config.providers"] = "dir"
            props["config.providers.dir.class"] = _DIRECTORY_PROVIDER
            props["config.providers.dir.param.allowed.paths"] = ",".join(sorted(secret_dirs))
        return props

    def environment(self, prefix: str = "FLINK_TASKS_") -> dict[str, str]:
        """These settings as ``FLINK_TASKS_*`` variables (file names only, no secret)."""
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value != f.default:
                out[prefix + f.name.upper()] = str(value).lower() if f.type == "bool" else value
        return out


def security_problem(security: Any) -> str:
    """Why these security settings cannot work (empty if they can); takes any object with the
    `KafkaSecurity` fields (the client's settings too)."""
    protocol = security.security_protocol
    if protocol not in SECURITY_PROTOCOLS:
        return f"security_protocol must be one of {', '.join(SECURITY_PROTOCOLS)}, got {protocol!r}"
    sasl = protocol in ("SASL_PLAINTEXT", "SASL_SSL")
    if sasl:
        if security.sasl_mechanism not in SASL_MECHANISMS:
            return (
                f"sasl_mechanism must be one of {', '.join(SASL_MECHANISMS)} with "
                f"{protocol}, got {security.sasl_mechanism!r}"
            )
        if not security.sasl_username or not security.sasl_password_file:
            return f"{protocol} needs sasl_username and sasl_password_file"
    elif security.sasl_mechanism or security.sasl_username or security.sasl_password_file:
        return f"SASL settings are given but security_protocol is {protocol}: use SASL_SSL"
    ssl_files = (security.ssl_cafile, security.ssl_certfile, security.ssl_keyfile)
    if protocol not in ("SSL", "SASL_SSL") and any(ssl_files):
        return f"TLS files are given but security_protocol is {protocol}: use SSL or SASL_SSL"
    if security.ssl_keyfile and not security.ssl_certfile:
        return "ssl_keyfile needs ssl_certfile"
    return ""


def read_secret(path: str, what: str) -> str:
    """A secret from a file (a trailing newline is dropped); the error names the file only."""
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as err:
        raise ValueError(f"cannot read {what} {path!r}: {err.strerror}") from None

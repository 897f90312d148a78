"""The client names a refused login even when kafka-python loses the broker's answer.

The end-to-end case (a real SCRAM broker, a wrong password) is
tests/faults/test_12_secured.py; the race it met about once in ten runs (the broker's error and
its close read together, kafka-python logging only "socket disconnected") is built here from
kafka-python's own request parser, so a kafka-python upgrade that moves it fails this test.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
from flink_tasks_client import ClientSettings
from flink_tasks_client._kafka import RefusalWatch
from kafka.protocol.metadata import ApiVersionsRequest
from kafka.protocol.parser import KafkaProtocol
from kafka.protocol.sasl import SaslAuthenticateRequest, SaslHandshakeRequest

from flink_tasks.errors import TransportError


@pytest.fixture
def settings(tmp_path: Path) -> ClientSettings:
    password = tmp_path / "password"
    password.write_text("secret")
    return ClientSettings(bootstrap_servers="broker:9094", client_id="refusals").replace(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="app",
        sasl_password_file=str(password),
    )


def _disconnect_with(settings: ClientSettings, *requests: object) -> list[TransportError]:
    parser = KafkaProtocol(client_id="refusals")
    for request in requests:
        parser.send_request(request)
    transport = SimpleNamespace(_protocol=SimpleNamespace(parser=parser))
    record = logging.LogRecord(
        "kafka.net.transport", logging.ERROR, __file__, 1, "%s: socket disconnected",
        (transport,), None,
    )  # fmt: skip
    record.threadName = "kafka-io-refusals-replies"
    refused: list[TransportError] = []
    RefusalWatch(settings, refused.append).emit(record)
    return refused


def test_a_close_in_answer_to_the_credentials_is_a_refusal(settings: ClientSettings) -> None:
    refused = _disconnect_with(
        settings,
        SaslHandshakeRequest(mechanism="SCRAM-SHA-512", version=1),
        SaslAuthenticateRequest(b"client-proof", version=1),
    )
    assert len(refused) == 1
    assert "Kafka at broker:9094 refused the client's credentials" in str(refused[0])
    assert "SCRAM-SHA-512" in str(refused[0])


def test_a_close_before_the_credentials_is_not(settings: ClientSettings) -> None:
    assert _disconnect_with(settings, ApiVersionsRequest(version=3)) == []
    assert (
        _disconnect_with(settings, SaslHandshakeRequest(mechanism="SCRAM-SHA-512", version=1)) == []
    )
    assert _disconnect_with(settings) == []

"""kafka-python producer and consumers, with Kafka failures turned into `TransportError`."""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import (
    AuthorizationError,
    KafkaError,
    KafkaTimeoutError,
    SaslAuthenticationFailedError,
)
from kafka.protocol.sasl import SaslAuthenticateRequest

from flink_tasks.errors import TransportError
from flink_tasks.logs import quiet_kafka_close_race
from flink_tasks_client.settings import RECORD_HEADROOM_BYTES, ClientSettings

logger = logging.getLogger(__name__)
quiet_kafka_close_race()  # kafka-python's benign close race would log a traceback


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def security_options(settings: ClientSettings) -> dict[str, Any]:
    """TLS / SASL options for kafka-python; a password file that cannot be read is a clear
    `TransportError` (naming the file, never the secret)."""
    try:
        return settings.security.kafka_python_options()
    except ValueError as err:
        raise TransportError(str(err)) from None


def wait_reachable(settings: ClientSettings) -> None:
    """Wait until a bootstrap server accepts a TCP connection, or raise `TransportError`.

    kafka-python 3.0.12 leaks its I/O thread and sockets when a consumer cannot bootstrap, so a
    broker that is down is detected here, before any kafka-python object is created.
    """
    addresses = _addresses(settings)
    deadline = time.monotonic() + settings.connect_timeout.total_seconds()
    last: BaseException | None = None
    while True:
        for host, port in addresses:
            remaining = deadline - time.monotonic()
            try:
                with socket.create_connection((host, port), timeout=max(0.05, min(remaining, 2.0))):
                    return
            except OSError as err:
                last = err
        if time.monotonic() >= deadline:
            raise unreachable(settings, last or TimeoutError("no address answered"))
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


def probe(settings: ClientSettings) -> None:
    """One quick TCP connection attempt to each bootstrap server; raises `TransportError`."""
    last: BaseException | None = None
    for host, port in _addresses(settings):
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as err:
            last = err
    raise TransportError(
        f"no broker of {settings.bootstrap_servers} accepts connections "
        f"({type(last).__name__}: {last})"
    )


def connected(client: Any) -> bool:
    """Whether a kafka-python consumer or producer has a connection to some broker now."""
    network = getattr(client, "_client", None)
    if network is None:
        return False
    try:
        return any(network.connected(_node_id(broker)) for broker in network.cluster.brokers())
    except Exception:  # kafka-python internals: never let a health check fail the I/O thread
        return False


def _node_id(broker: Any) -> Any:
    # kafka-python 3 names it node_id, older versions nodeId
    return getattr(broker, "node_id", None) if hasattr(broker, "node_id") else broker.nodeId


def _addresses(settings: ClientSettings) -> list[tuple[str, int]]:
    return [_split_address(a) for a in settings.bootstrap_servers.split(",") if a.strip()]


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.strip().rpartition(":")
    if not host or not port.isdigit():
        raise TransportError(f"bootstrap server {address.strip()!r} is not host:port")
    return host.strip("[]"), int(port)


def create_producer(settings: ClientSettings) -> Any:
    """A thread-safe producer whose metadata for the request and action topics is loaded.

    Loading the metadata here means a later ``send`` does not block its caller (an event loop,
    possibly) waiting for it, and a missing topic is reported at start-up.
    """
    connect_s = settings.connect_timeout.total_seconds()
    send_ms = _ms(settings.send_timeout.total_seconds())
    try:
        producer = _construct(
            KafkaProducer,
            bootstrap_servers=settings.bootstrap_servers,
            client_id=f"{settings.client_id}-producer",
            acks="all",
            linger_ms=1,
            max_request_size=settings.max_request_bytes + RECORD_HEADROOM_BYTES,
            delivery_timeout_ms=send_ms,
            request_timeout_ms=max(1, min(send_ms - 10, 30_000)),
            max_block_ms=_ms(connect_s),
            bootstrap_timeout_ms=_ms(connect_s),
            reconnect_backoff_max_ms=_ms(settings.reconnect_backoff_max.total_seconds()),
            allow_auto_create_topics=False,
            **security_options(settings),
        )
    except KafkaError as err:
        raise unreachable(settings, err) from err
    try:
        for topic in (settings.request_topic, settings.action_topic):
            _producer_topic_ready(producer, topic, settings)
    except BaseException:
        with contextlib.suppress(Exception):
            producer.close(timeout=0)
        raise
    return producer


def _construct(cls: Any, **config: Any) -> Any:
    """``cls(**config)``, but a producer or consumer whose constructor fails (it bootstraps
    there: e.g. the broker refused its login) has its I/O thread and sockets closed:
    kafka-python 3.0.12 starts them before bootstrapping and leaves them running on failure."""
    client = cls.__new__(cls)
    try:
        client.__init__(**config)
    except BaseException:
        network = getattr(client, "_client", None)
        if network is not None:
            with contextlib.suppress(Exception):
                network.close()
        raise
    return client


def _producer_topic_ready(producer: Any, topic: str, settings: ClientSettings) -> None:
    try:
        partitions = producer.partitions_for(topic)
    except KafkaError as err:
        raise missing_topic(settings, topic, err) from err
    if not partitions:
        raise missing_topic(settings, topic, None)


def create_consumer(settings: ClientSettings, *, purpose: str) -> Any:
    """A consumer without a consumer group (partitions are assigned by hand, nothing committed)."""
    connect_ms = _ms(settings.connect_timeout.total_seconds())
    try:
        return _construct(
            KafkaConsumer,
            bootstrap_servers=settings.bootstrap_servers,
            client_id=f"{settings.client_id}-{purpose}",
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed" if settings.read_committed else "read_uncommitted",
            auto_offset_reset="latest",
            fetch_max_wait_ms=100,
            request_timeout_ms=max(connect_ms, 1000),
            bootstrap_timeout_ms=connect_ms,
            reconnect_backoff_max_ms=_ms(settings.reconnect_backoff_max.total_seconds()),
            allow_auto_create_topics=False,
            **security_options(settings),
        )
    except KafkaError as err:
        raise unreachable(settings, err) from err


def assign_all(
    consumer: Any,
    topic: str,
    settings: ClientSettings,
    *,
    from_beginning: bool = False,
    positions: dict[Any, int] | None = None,
) -> dict[Any, int]:
    """Assign every partition of ``topic`` and resolve the start position of each.

    The positions are resolved (not only requested) before returning, so that a record produced
    after this returns is seen, and none produced before it is (unless ``from_beginning``).
    A partition found in ``positions`` (a rebuilt consumer's) starts at that offset instead.
    Returns the resolved position of every partition.
    """
    deadline = time.monotonic() + settings.connect_timeout.total_seconds()
    try:
        partition_ids = consumer.partitions_for_topic(topic)
    except KafkaError as err:
        raise missing_topic(settings, topic, err) from err
    if not partition_ids:
        raise missing_topic(settings, topic, None)
    partitions = [TopicPartition(topic, p) for p in sorted(partition_ids)]
    consumer.assign(partitions)
    known = positions or {}
    fresh = [tp for tp in partitions if tp not in known]
    if from_beginning:
        consumer.seek_to_beginning(*fresh)
    elif fresh:
        consumer.seek_to_end(*fresh)
    for tp in partitions:
        if tp in known:
            consumer.seek(tp, known[tp])
    resolved: dict[Any, int] = {}
    for tp in partitions:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransportError(
                    f"could not find the end of {topic}[{tp.partition}] on "
                    f"{settings.bootstrap_servers} within {settings.connect_timeout}: is the "
                    "partition's leader available? Check the broker's log."
                )
            try:
                position = consumer.position(tp, timeout_ms=_ms(min(remaining, 1.0)))
            except KafkaError as err:
                raise TransportError(
                    f"could not seek {topic}[{tp.partition}] on {settings.bootstrap_servers}: {err}"
                ) from err
            if position is not None:
                logger.debug("assigned %s[%d] at offset %d", topic, tp.partition, position)
                resolved[tp] = position
                break
    return resolved


def send_expired(err: BaseException) -> bool:
    """Whether a send failed because its record was not delivered within the send timeout."""
    return isinstance(err, KafkaTimeoutError)


def send_failure(
    settings: ClientSettings, what: str, topic: str, err: BaseException
) -> TransportError:
    """The error for a record Kafka failed: refused by an ACL, or not accepted in time."""
    if isinstance(err, AuthorizationError):
        user = settings.security.sasl_username or "this client's principal"
        return TransportError(
            f"Kafka refused {what}: {user} is not allowed to write to {topic!r} "
            f"({type(err).__name__}). Nothing was sent; use the credentials of a role that may "
            "(see the ACLs in docs/deploy.md)."
        )
    return TransportError(
        f"Kafka did not accept {what} on {topic!r} within {settings.send_timeout}: "
        f"{type(err).__name__}: {err}"
    )


def unreachable(settings: ClientSettings, err: BaseException) -> TransportError:
    """The error for a broker that cannot be reached."""
    return TransportError(
        f"cannot reach Kafka at {settings.bootstrap_servers} within {settings.connect_timeout} "
        f"({type(err).__name__}: {err}). Is the broker running and bootstrap_servers right? "
        "Raise connect_timeout if it is slow to start."
    )


def missing_topic(
    settings: ClientSettings, topic: str, err: BaseException | None
) -> TransportError:
    """The error for a topic that does not exist (the client never creates topics)."""
    cause = "" if err is None else f" ({type(err).__name__}: {err})"
    return TransportError(
        f"topic {topic!r} was not found on {settings.bootstrap_servers}{cause}. Create it (the "
        "local runtime creates the default topics), or check the topic names in ClientSettings."
    )


class RefusalWatch(logging.Handler):
    """Reports a broker's refusal of this client's credentials or TLS as it happens.

    kafka-python 3.0.12 retries a connection refused for bad credentials or an untrusted
    certificate until its bootstrap timeout and then reports only "Unable to bootstrap"; it logs
    the real cause on ``kafka.net.*`` loggers from its I/O thread (named after the client id).
    This handler picks those records up, so the client can fail within seconds, naming the cause.
    """

    def __init__(self, settings: ClientSettings, on_refused: Callable[[TransportError], None]):
        super().__init__(level=logging.WARNING)
        self._settings = settings
        self._threads = {
            f"kafka-io-{settings.client_id}-{purpose}" for purpose in ("replies", "producer")
        }
        self._on_refused = on_refused

    def emit(self, record: logging.LogRecord) -> None:
        if record.threadName not in self._threads or not isinstance(record.args, tuple):
            return
        for arg in record.args:
            if isinstance(arg, BaseException):
                error = refusal(self._settings, arg)
            elif record.msg == _DISCONNECTED and _awaits_sasl_verdict(arg):
                error = _closed_on_credentials(self._settings)
            else:
                continue
            if error is not None:
                self._on_refused(error)
                return

    def __enter__(self) -> RefusalWatch:
        logging.getLogger(_KAFKA_NET_LOGGER).addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger(_KAFKA_NET_LOGGER).removeHandler(self)


_KAFKA_NET_LOGGER = "kafka.net"
_DISCONNECTED = "%s: socket disconnected"  # kafka.net.transport's record, its arg the transport


def _awaits_sasl_verdict(transport: object) -> bool:
    """Whether the connection closed while its SaslAuthenticate request awaited an answer.

    A broker refusing credentials answers with an error and closes the connection; when both
    arrive in one read, kafka-python 3.0.12 drops the answer and logs only "socket disconnected"
    (seen about once in ten runs). A close in answer to the credentials themselves is the
    refusal. Read from kafka-python's internals defensively: if they change, this says False
    and the client falls back to its connect timeout.
    """
    protocol = getattr(transport, "_protocol", None)
    pending = getattr(getattr(protocol, "parser", None), "in_flight_requests", ())
    return any(
        getattr(header, "request_api_key", None) == SaslAuthenticateRequest.API_KEY
        for header in pending
    )


def _closed_on_credentials(settings: ClientSettings) -> TransportError:
    return TransportError(
        f"Kafka at {settings.bootstrap_servers} refused the client's credentials (it closed the "
        f"connection in answer to the {settings.security.sasl_mechanism} authentication). "
        "Check sasl_mechanism, sasl_username and the password in sasl_password_file."
    )


def refusal(settings: ClientSettings, err: BaseException) -> TransportError | None:
    """The clear error for a refused authentication or TLS handshake, else None."""
    where = settings.bootstrap_servers
    if isinstance(err, SaslAuthenticationFailedError):
        return TransportError(
            f"Kafka at {where} refused the client's credentials ({type(err).__name__}: {err}). "
            "Check sasl_mechanism, sasl_username and the password in sasl_password_file."
        )
    # kafka-python wraps a failed TLS handshake in KafkaConnectionError("Handshake failed: ...")
    text = str(err)
    if isinstance(err, ssl.SSLError) or "Handshake failed" in text:
        hint = (
            "the broker's certificate is not signed by a CA in ssl_cafile (or does not name "
            "the address connected to)"
            if "CERTIFICATE_VERIFY_FAILED" in text
            else "check ssl_cafile, ssl_certfile / ssl_keyfile and security_protocol"
        )
        return TransportError(
            f"the TLS handshake with Kafka at {where} failed ({type(err).__name__}: {err}): {hint}."
        )
    return None

"""How to reach a Kafka cluster, mapped once to librdkafka (Bytewax's source and sink) and once to
kafka-python (the `topics`, `produce` and `tail` tools), plus the start-up check of a topic.

The password is a `SecretStr`: it is handed to the clients and never appears in a repr, a log line
or an error message (`describe()` names servers, protocol, mechanism and user only).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from schemas.errors import ConfigError, FlowkeeperError

# Each optional connection setting: attribute, librdkafka property, kafka-python argument.
_OPTIONS = (
    ("sasl_mechanism", "sasl.mechanism", "sasl_mechanism"),
    ("sasl_username", "sasl.username", "sasl_plain_username"),
    ("sasl_password", "sasl.password", "sasl_plain_password"),
    ("ssl_ca", "ssl.ca.location", "ssl_cafile"),
    ("ssl_cert", "ssl.certificate.location", "ssl_certfile"),
    ("ssl_key", "ssl.key.location", "ssl_keyfile"),
)
_QUIET = logging.getLogger("flowkeeper.kafka.check")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False  # the check reports the last error itself, not librdkafka's retry noise


class KafkaUnavailableError(FlowkeeperError):
    """The cluster could not be reached or refused a write; the message names the servers and
    what to check."""


@dataclass(frozen=True)
class KafkaConnection:
    """Bootstrap servers and security settings, as given by flags or `FLOWKEEPER_KAFKA_*`."""

    servers: tuple[str, ...]
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca: Path | None = None
    ssl_cert: Path | None = None
    ssl_key: Path | None = None
    timeout_s: float = 10.0

    @classmethod
    def parse(cls, servers: str, **options: Any) -> KafkaConnection:
        """From a comma-separated server list, e.g. `"kafka-1:9092,kafka-2:9092"`."""
        found = tuple(s.strip() for s in servers.split(",") if s.strip())
        if not found:
            raise ConfigError("no Kafka servers given: set --kafka-brokers host:port[,host:port]")
        return cls(found, **options)

    def librdkafka(self) -> dict[str, str]:
        """Properties for confluent-kafka clients (Bytewax's KafkaSource and KafkaSink)."""
        config = {"bootstrap.servers": ",".join(self.servers),
                  "security.protocol": self.security_protocol}
        config.update({name: self._text(attr) for attr, name, _ in _OPTIONS
                       if getattr(self, attr) is not None})
        return config

    def kafka_python(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python clients (admin, producer, consumer)."""
        timeout_ms = int(self.timeout_s * 1000)
        kwargs: dict[str, Any] = {"bootstrap_servers": list(self.servers),
                                  "security_protocol": self.security_protocol,
                                  "bootstrap_timeout_ms": timeout_ms,
                                  "request_timeout_ms": timeout_ms}
        kwargs.update({name: self._text(attr) for attr, _, name in _OPTIONS
                       if getattr(self, attr) is not None})
        return kwargs

    def describe(self) -> str:
        """Servers and security, for messages; never the password."""
        how = self.security_protocol
        if self.sasl_mechanism:
            how += f", {self.sasl_mechanism} as {self.sasl_username!r}"
        return f"{','.join(self.servers)} ({how})"

    def unreachable(self, problem: str) -> KafkaUnavailableError:
        """The error for a cluster that did not answer, with what to check."""
        return KafkaUnavailableError(
            f"cannot reach Kafka at {self.describe()} within {self.timeout_s:g} s: {problem}; "
            "check --kafka-brokers (FLOWKEEPER_KAFKA__BROKERS), that the brokers run and are "
            "reachable from here, and that --kafka-security-protocol and the SASL/TLS settings "
            "match their listener")

    def _text(self, attr: str) -> str:
        value = getattr(self, attr)
        return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


def topic_partitions(connection: KafkaConnection, topic: str) -> list[int]:
    """The partition ids of `topic`, checked at start-up so a bad setting fails in seconds.

    Lists every topic instead of asking for this one: a metadata request that names a missing
    topic creates it on brokers with auto-creation on (Tansu, many dev clusters).
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    errors: list[str] = []
    config: dict[str, Any] = {**connection.librdkafka(), "logger": _QUIET,
                              "error_cb": lambda err: errors.append(err.str())}
    client = AdminClient(config)
    try:
        metadata = client.list_topics(timeout=connection.timeout_s)
    except KafkaException as e:
        raise connection.unreachable(errors[-1] if errors else e.args[0].str()) from e
    found = metadata.topics.get(topic)
    if found is None:
        raise ConfigError(f"Kafka topic {topic!r} does not exist on {connection.describe()}; "
                          f"create it (`flowkeeper topics create {topic} --partitions N`) or check "
                          "the name")
    if found.error is not None:
        raise KafkaUnavailableError(f"Kafka topic {topic!r} on {connection.describe()}: "
                                    f"{found.error.str()}")
    return sorted(found.partitions)


def offset_range(connection: KafkaConnection, topic: str, partition: int) -> tuple[int, int]:
    """The (low, high) watermarks of one partition: the offsets a consumer may resume from."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**connection.librdkafka(), "group.id": "flowkeeper-offset-check",
                         "enable.auto.commit": "false", "logger": _QUIET})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                   timeout=connection.timeout_s)
    finally:
        consumer.close()
    return int(low), int(high)


def serves_offset(connection: KafkaConnection, topic: str, partition: int, offset: int) -> bool:
    """Whether the partition hands out a record at `offset` or after it, by fetching it.

    The check behind a high watermark that some brokers under-report: Tansu answers the first
    offset of the partition's last batch, plus one, so a consumer that read the whole batch holds
    an offset beyond it.
    """
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**connection.librdkafka(), "group.id": "flowkeeper-offset-check",
                         "enable.auto.commit": "false", "enable.partition.eof": "true",
                         "auto.offset.reset": "error", "logger": _QUIET})
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + connection.timeout_s
        while (left := deadline - time.monotonic()) > 0:
            message = consumer.poll(left)
            if message is not None:
                found = message.offset()
                return message.error() is None and found is not None and found >= offset
        return False
    finally:
        consumer.close()

"""Settings to Kafka connectors: the connection, the input topic, and the topic of each table."""

from __future__ import annotations

from bytewax.dataflow import Stream

from connectors.kafka_connection import KafkaConnection, topic_partitions
from connectors.kafka_sink import send_to_kafka
from connectors.kafka_source import KafkaInput
from dataflows.settings import Settings
from state.durations import to_ms
from state.output import Row


def kafka_connection(settings: Settings) -> KafkaConnection:
    """The cluster of `--kafka-brokers` with its security settings (one place for both clients)."""
    return KafkaConnection.parse(
        settings.kafka.brokers,
        security_protocol=settings.kafka.security_protocol,
        sasl_mechanism=settings.kafka.sasl_mechanism,
        sasl_username=settings.kafka.sasl_username,
        sasl_password=settings.kafka.sasl_password,
        ssl_ca=settings.kafka.ssl_ca,
        ssl_cert=settings.kafka.ssl_cert,
        ssl_key=settings.kafka.ssl_key,
        timeout_s=settings.kafka.timeout.total_seconds(),
    )


def kafka_input(settings: Settings) -> KafkaInput:
    """Source 'kafka': the partitions of `--kafka-topic`."""
    return KafkaInput(kafka_connection(settings), settings.kafka.topic, start=settings.kafka.start,
                      tail=settings.kafka.tail, fetch_wait_ms=to_ms(settings.kafka.fetch_wait))


def check_kafka_topics(settings: Settings) -> None:
    """Fail in seconds, naming what to fix, when the cluster, the input topic or an output topic
    is missing (the dataflow would otherwise fail later, inside Bytewax)."""
    connection = kafka_connection(settings)
    inputs = [settings.kafka.topic] if settings.source.kind == "kafka" else []
    for topic in dict.fromkeys([*inputs, *output_topics(settings).values()]):
        topic_partitions(connection, topic)


def output_topics(settings: Settings) -> dict[str, str]:
    """Table → topic for every table with a topic; none without `--kafka-brokers`."""
    if not settings.kafka.brokers:
        return {}
    topics = {"commands": settings.kafka.commands_topic, "outcomes": settings.kafka.outcomes_topic,
              "corrections": settings.kafka.corrections_topic,
              "dead_letters": settings.kafka.dead_letters_topic}
    return {table: topic for table, topic in topics.items() if topic}


def kafka_outputs(rows: Stream[Row], settings: Settings) -> None:
    """Send the tables that have a topic to Kafka (see `connectors.kafka_sink`)."""
    topics = output_topics(settings)
    if topics:
        send_to_kafka("kafka_out", rows, kafka_connection(settings), topics)

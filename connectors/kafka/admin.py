"""Create StreamForge's Kafka topics with their configured partitions and retention.

>>> from connectors.kafka.sink_config import KafkaSinkConfig
>>> from schemas.settings import Settings
>>> admin = admin_client(Settings().kafka_bootstrap_servers)
>>> ensure_topics(admin, KafkaSinkConfig().topic_specs())  # doctest: +SKIP
{'streamforge.telemetry': 'created', ..., 'streamforge.dead_letters': 'created'}

What it is given, one spec per topic (configured name, partitions and
retention), and that an empty request sends nothing:

>>> spec = KafkaSinkConfig().topic_specs()[0]
>>> spec.name, spec.partitions, spec.configs()
('streamforge.telemetry', 3, {'retention.ms': '604800000'})
>>> ensure_topics(admin, [])
{}

:func:`ensure_topics` is idempotent: a topic that exists is left as it is,
except that its ``retention.ms`` is set to the configured value when it
differs (an incremental config change, safe at any time). Its partition
count is never changed: adding partitions moves keys to other partitions,
which breaks the per-device order of everything written before, so a topic
with fewer partitions than configured is only reported (a warning naming
both numbers). Two processes creating the same topic at once is fine: the
loser sees "already exists" and treats it as success.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from connectors.kafka.sink_config import TopicSpec
from connectors.runtime.logs import get_logger

log = get_logger("connectors.kafka.admin")


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """What the broker says about one topic."""

    name: str
    partitions: int
    retention_ms: int | None


def admin_client(
    bootstrap_servers: str, extra: dict[str, str | int | float | bool] | None = None
) -> AdminClient:
    """An admin client for these brokers (extra: librdkafka settings such as security)."""
    config: dict[str, str | int | float | bool] = {"bootstrap.servers": bootstrap_servers}
    config.update(extra or {})
    return AdminClient(config)


def describe_topic(admin: AdminClient, name: str, timeout: float = 10.0) -> TopicInfo | None:
    """Partitions and retention of a topic, None when it does not exist."""
    # All topics, not list_topics(topic=name): asking for one topic by name
    # creates it on a broker with auto.create.topics.enable.
    metadata = admin.list_topics(timeout=timeout)
    topic = metadata.topics.get(name)
    if topic is None:
        return None
    if topic.error is not None:
        if topic.error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise KafkaException(topic.error)
        return None
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    configs = admin.describe_configs([resource], request_timeout=timeout)[resource].result(
        timeout=timeout
    )
    entry = configs.get("retention.ms")
    retention = int(entry.value) if entry is not None and entry.value is not None else None
    return TopicInfo(name, len(topic.partitions), retention)


def topic_max_message_bytes(admin: AdminClient, name: str, timeout: float = 10.0) -> int | None:
    """The topic's ``max.message.bytes`` (the broker's default unless set), None if unknown."""
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    try:
        configs = admin.describe_configs([resource], request_timeout=timeout)[resource].result(
            timeout=timeout
        )
    except KafkaException:
        return None
    entry = configs.get("max.message.bytes")
    return int(entry.value) if entry is not None and entry.value is not None else None


def ensure_topics(
    admin: AdminClient,
    specs: Iterable[TopicSpec],
    timeout: float = 30.0,
    *,
    align_existing: bool = True,
) -> dict[str, str]:
    """Create missing topics, align retention of existing ones; topic -> what was done.

    With ``align_existing=False`` existing topics are not even inspected
    (a source must not change the retention of a topic others write).

    The result says ``created``, ``exists``, ``retention updated`` or
    ``exists (N partitions < M configured)`` per topic. Raises
    :class:`confluent_kafka.KafkaException` when the broker refuses (for
    example a replication factor above the number of brokers), with the
    broker's reason.
    """
    # One spec per name: confluent-kafka 2.16 crashes (SIGSEGV in its
    # background thread) on an admin request naming a topic twice.
    specs = list({s.name: s for s in specs}.values())
    if not specs:
        return {}
    result: dict[str, str] = {}
    metadata = admin.list_topics(timeout=timeout)
    missing = [s for s in specs if s.name not in metadata.topics]
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(
                    s.name,
                    num_partitions=s.partitions,
                    replication_factor=s.replication_factor,
                    config=s.configs(),
                )
                for s in missing
            ],
            request_timeout=timeout,
        )
        for name, future in futures.items():
            try:
                future.result(timeout=timeout)
                result[name] = "created"
                log.info("kafka topic created", extra={"step": "admin", "topic": name})
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
                result[name] = "exists"
        _wait_for_metadata(admin, [s.name for s in missing], timeout)
    for spec in specs:
        if spec.name in result:
            continue
        result[spec.name] = _align_existing(admin, spec, timeout) if align_existing else "exists"
    return result


def _align_existing(admin: AdminClient, spec: TopicSpec, timeout: float) -> str:
    info = describe_topic(admin, spec.name, timeout)
    if info is None:  # deleted meanwhile: create it on the next start
        return "missing"
    status = "exists"
    if info.retention_ms != spec.retention_ms:
        resource = ConfigResource(
            ConfigResource.Type.TOPIC,
            spec.name,
            incremental_configs=[
                ConfigEntry(
                    "retention.ms",
                    str(spec.retention_ms),
                    incremental_operation=AlterConfigOpType.SET,
                )
            ],
        )
        admin.incremental_alter_configs([resource], request_timeout=timeout)[resource].result(
            timeout=timeout
        )
        log.info(
            "kafka topic retention updated",
            extra={
                "step": "admin",
                "topic": spec.name,
                "retention_ms": spec.retention_ms,
                "was": info.retention_ms,
            },
        )
        status = "retention updated"
    if info.partitions < spec.partitions:
        log.warning(
            "kafka topic has fewer partitions than configured; not changed, because adding "
            "partitions would move keys and break per-device order",
            extra={
                "step": "admin",
                "topic": spec.name,
                "partitions": info.partitions,
                "configured": spec.partitions,
            },
        )
        status += f" ({info.partitions} partitions < {spec.partitions} configured)"
    return status


def _wait_for_metadata(admin: AdminClient, names: list[str], timeout: float) -> None:
    # CreateTopics returns before every broker knows the leaders; a producer
    # started right away would log "unknown partition" errors for a moment.
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending and time.monotonic() < deadline:
        metadata = admin.list_topics(timeout=timeout)
        for name in list(pending):
            topic = metadata.topics.get(name)
            if (
                topic is not None
                and topic.error is None
                and topic.partitions
                and all(p.leader >= 0 for p in topic.partitions.values())
            ):
                pending.discard(name)
        if pending:
            time.sleep(0.05)

"""Operators' alarm actions as a flow input: the API's acknowledgements and clears.

The API stores an acknowledgement or a manual clear as the alarm's next
transition and writes the same :class:`schemas.models.Alarm` record to the
operator actions topic (default ``streamforge.alarm_actions``, key
``tenant/device``). :class:`AlarmActionSource` reads that topic, one Bytewax
partition per Kafka partition with offsets in the recovery store (it is a
:class:`connectors.kafka.source.KafkaRawSource`), and yields each record
wrapped in a :class:`schemas.models.AlarmAction`; the decode step routes it
to the bucket of its series and the series step applies it to the alarm's
tracker (:mod:`flows.alarm_lifecycle` explains why the flow must know).

A message that is not an operator's transition becomes a dead letter (step
``alarm_actions``) with the reason; the flow goes on:

>>> from datetime import UTC, datetime
>>> def message(payload: bytes) -> RawMessage:
...     return RawMessage(payload=payload, source="kafka", received_at=datetime.now(UTC))
>>> parse_action(message(b'{"id": 1}')).reason
'not an alarm record: id: Input should be a valid string'
>>> parse_action(message(b"not json")).step
'alarm_actions'

Without recovery state a partition starts at the end of the topic: a flow
starting afresh has no alarm to apply older actions to.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from connectors.kafka.source import KafkaPartition, KafkaRawSource
from connectors.kafka.source_config import KafkaSourceConfig
from schemas.config import OperatorActionsConfig
from schemas.decode_reasons import payload_text
from schemas.models import Alarm, AlarmAction, DeadLetter, RawMessage, adapter
from schemas.settings import Settings

__all__ = ["AlarmActionSource", "parse_action"]

_ACTIONS = frozenset(("acknowledged", "shelved", "unshelved", "cleared"))


def parse_action(raw: RawMessage) -> AlarmAction | DeadLetter:
    """The operator's alarm transition in one message, or a dead letter saying why not."""
    try:
        alarm: Alarm = adapter(Alarm).validate_json(raw.payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(message)"
        return _dead(raw, f"not an alarm record: {where}: {first['msg']}")
    if alarm.transition not in _ACTIONS:
        return _dead(raw, f"transition {alarm.transition!r} is not an operator action")
    return AlarmAction(alarm)


def _dead(raw: RawMessage, reason: str) -> DeadLetter:
    text, encoding = payload_text(raw.payload)
    return DeadLetter(
        received_at=raw.received_at,
        source="kafka",
        reason=reason,
        payload=text,
        payload_encoding=encoding,
        origin=raw.origin,
        step="alarm_actions",
    )


class _ActionPartition(KafkaPartition):
    def next_batch(self) -> list[Any]:
        """The partition's next messages as alarm actions (or dead letters)."""
        return [
            parse_action(raw) if type(raw) is RawMessage else raw for raw in super().next_batch()
        ]


class AlarmActionSource(KafkaRawSource):
    """Operators' alarm actions from their topic (see the module docstring)."""

    def __init__(self, config: OperatorActionsConfig, settings: Settings | None = None) -> None:
        super().__init__(
            KafkaSourceConfig(
                name="operator_actions",
                topic=config.topic,
                bootstrap_servers=config.bootstrap_servers,
                start="latest",
                partitions=3,
                retention="7d",
                idle_wait=0.05,
            ),
            settings,
        )

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> KafkaPartition:
        """Read one partition from ``resume_state`` (the next offset) or from its end."""
        _topic, _, index = for_part.rpartition("/")
        if _topic != self.config.topic:
            raise ValueError(
                f"partition {for_part!r} is not of topic {self.config.topic!r}: the recovery "
                "store belongs to a flow with another operator actions topic"
            )
        return _ActionPartition(self.config, self.bootstrap, int(index), resume_state)

"""The dataflow's own operators, each returning named streams instead of raising.

``decode`` turns what the sources emit into chunks of readings keyed by
series bucket on one stream and dead letters (with their reason) on the
other, as Bytewax's own ``kafka.operators.input`` returns
``KafkaSourceOut(oks, errs)``:

>>> from datetime import UTC, datetime
>>> import bytewax.operators as op
>>> from bytewax.dataflow import Dataflow
>>> from bytewax.testing import TestingSink, TestingSource, run_main
>>> from schemas.config import DecodeConfig
>>> def message(payload: bytes) -> RawMessage:
...     return RawMessage(payload=payload, source="http", received_at=datetime.now(UTC))
>>> flow = Dataflow("decode_example")
>>> raw = op.input("in", flow, TestingSource([
...     message(b'{"device": "press-1", "metric": "rpm", "value": 1200}'),
...     message(b'{"device": "press-1", "value": 7}'),
... ]))
>>> decoded = decode("decode", raw, DecodeConfig(), buckets=4)
>>> readings, dead = [], []
>>> op.output("readings", decoded.readings, TestingSink(readings))
>>> op.output("dead", decoded.dead_letters, TestingSink(dead))
>>> run_main(flow)
>>> [(bucket, [r.value for r in chunk]) for bucket, chunk in readings]
[('1', [1200])]
>>> [(key, kind, [d.step for d in letters]) for key, (kind, letters) in dead]
[('dead_letter', 'dead_letter', ['decode'])]
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Stream, operator

from connectors.runtime.logs import get_logger
from connectors.runtime.metrics import counter
from connectors.runtime.outputs import RoutedOutput
from flows.decode import decode_payload
from flows.series import bucket_of
from schemas.config import DecodeConfig
from schemas.models import AlarmAction, DeadLetter, RawMessage, Reading

log = get_logger("flows.operators")

READINGS_IN = counter("streamforge_readings_total", "Valid readings entering the flow, by source")
DEAD_LETTERS_IN = counter(
    "streamforge_decode_dead_letters_total", "Payloads or items rejected by decode, by source"
)

Keyed = tuple[str, list[Reading | AlarmAction]]
"""A chunk of readings (and operators' alarm actions) of one bucket of series, keyed by it."""

DEAD_LETTER_KEY = "dead_letter"


class Decoder:
    """The ``decode`` step: readings grouped into chunks per series bucket, dead letters apart.

    A batch of source items becomes one ``(bucket, [readings])`` item per
    bucket it touches plus one ``("dead_letter", ("dead_letter", [dead letters]))``
    item (a routed output, :data:`connectors.runtime.outputs.RoutedOutput`), so
    the keyed step downstream is handed a few chunks instead of one item
    per reading (see :mod:`connectors.runtime.outputs` on why chunks).
    """

    def __init__(self, config: DecodeConfig, buckets: int) -> None:
        self.config = config
        self.buckets = buckets
        # (tenant, device, metric) -> bucket key; bounded by the number of
        # series (crc32 once each)
        self._bucket: dict[tuple[str, str, str], str] = {}

    def _key(self, reading: Reading | AlarmAction) -> str:
        series = (reading.tenant, reading.device, reading.metric)
        bucket = self._bucket.get(series)
        if bucket is None:
            bucket = self._bucket[series] = bucket_of("/".join(series), self.buckets)
        return bucket

    def __call__(self, items: list[Any]) -> list[tuple[str, Any]]:
        """Decode a batch of source items (``Reading``, ``RawMessage``, or operators'
        ``AlarmAction``, which are routed like readings of their series)."""
        # bucket -> its chunk; defaultdict: no throwaway list per item, as
        # setdefault(key, []) would make
        chunks: defaultdict[str, list[Reading | AlarmAction]] = defaultdict(list)
        dead_letters: list[Any] = []
        key = self._key
        decoded: dict[str, int] = {}
        rejected: dict[str, int] = {}
        for item in items:
            if type(item) is Reading:
                decoded[item.source] = decoded.get(item.source, 0) + 1
                chunks[key(item)].append(item)
            elif type(item) is RawMessage:
                readings, dead = decode_payload(item, self.config)
                for r in readings:
                    chunks[key(r)].append(r)
                dead_letters.extend(dead)
                decoded[item.source] = decoded.get(item.source, 0) + len(readings)
                if dead:
                    rejected[item.source] = rejected.get(item.source, 0) + len(dead)
            elif type(item) is AlarmAction:
                # An operator's action (connectors.kafka.alarm_actions): to its series' bucket.
                chunks[key(item)].append(item)
            elif type(item) is DeadLetter:
                dead_letters.append(item)
            else:
                # A connector bug, not bad data: still never crash the flow.
                log.error(
                    "unexpected item from a source",
                    extra={"step": "decode", "type": type(item).__name__},
                )
        # Counted once per batch and source: a locked counter per item would
        # cost more than passing a trusted reading through.
        for source, n in decoded.items():
            READINGS_IN.inc(n, source=source)
        for source, n in rejected.items():
            DEAD_LETTERS_IN.inc(n, source=source)
        out: list[tuple[str, Any]] = list(chunks.items())
        if dead_letters:
            out.append((DEAD_LETTER_KEY, ("dead_letter", dead_letters)))
        return out


def _is_readings(item: tuple[str, Any]) -> bool:
    return item[0] != DEAD_LETTER_KEY


@dataclass(frozen=True)
class DecodeOut:
    """The two streams out of :func:`decode`."""

    readings: Stream[Keyed]
    """Chunks of readings (and operators' alarm actions), keyed by series bucket."""
    dead_letters: Stream[RoutedOutput]
    """What could not be decoded, as routed ``dead_letter`` outputs with the reason."""


@operator
def decode(step_id: str, up: Stream[Any], config: DecodeConfig, buckets: int) -> DecodeOut:
    """Decode and validate source items: readings keyed by bucket, and dead letters apart.

    ``up`` carries what sources emit: ``Reading`` (trusted sources pass
    straight through), ``RawMessage`` (parsed and validated by
    :func:`flows.decode.decode_payload`), ``AlarmAction`` and ``DeadLetter``.
    Nothing raises: a bad item becomes a dead letter, an unknown one a log line.
    """
    decoded = op.flat_map_batch("decode", up, Decoder(config, buckets))
    split = op.branch("split", decoded, _is_readings)
    return DecodeOut(readings=split.trues, dead_letters=split.falses)

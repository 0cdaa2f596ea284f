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
>>> from schemas.models import RawMessage
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

from dataclasses import dataclass
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Stream, operator

from connectors.runtime.outputs import RoutedOutput
from flows.kernels.decoder import Decoder, Keyed, is_readings
from schemas.config import DecodeConfig


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
    split = op.branch("split", decoded, is_readings)
    return DecodeOut(readings=split.trues, dead_letters=split.falses)

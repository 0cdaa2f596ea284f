"""The compiled loop of the decode step: source items into chunks of readings per series bucket.

:func:`flows.operators.decode` runs a :class:`Decoder` over each batch of
what the sources emit; trusted readings pass straight through, raw
payloads are parsed and validated by :func:`flows.decode.decode_payload`,
and each reading lands in the chunk of its series' bucket:

>>> from datetime import UTC, datetime
>>> from schemas.config import DecodeConfig
>>> decoder = Decoder(DecodeConfig(), buckets=4)
>>> at = datetime(2026, 1, 1, tzinfo=UTC)
>>> raw = RawMessage(payload=b"not json", source="http", received_at=at)
>>> out = decoder([Reading(device="press-1", metric="rpm", ts=at, value=1200), raw])
>>> [(key, len(chunk) if key != DEAD_LETTER_KEY else chunk[0]) for key, chunk in out]
[('1', 1), ('dead_letter', 'dead_letter')]
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from connectors.runtime.logs import get_logger
from connectors.runtime.metrics import counter
from flows.decode import decode_payload
from flows.kernels.series import bucket_of
from schemas.config import DecodeConfig
from schemas.models import AlarmAction, DeadLetter, RawMessage, Reading

log = get_logger("flows.decode")

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
        # (tenant, device) -> bucket key; bounded by the number of devices
        # (crc32 once each)
        self._bucket: dict[tuple[str, str], str] = {}

    def _key(self, reading: Reading | AlarmAction) -> str:
        # By device: all the series of a device share a bucket, so its run
        # state and active alarms can hold off the alarms of the others
        # (flows.kernels.series.DeviceContext).
        device = (reading.tenant, reading.device)
        bucket = self._bucket.get(device)
        if bucket is None:
            bucket = self._bucket[device] = bucket_of("/".join(device), self.buckets)
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


def is_readings(item: tuple[str, Any]) -> bool:
    return item[0] != DEAD_LETTER_KEY

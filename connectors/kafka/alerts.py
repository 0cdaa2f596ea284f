"""Follow the alarms topic: print every alarm transition, or POST it to a webhook.

    python -m connectors.kafka.alerts                          # readable lines on stdout
    python -m connectors.kafka.alerts --webhook https://hooks.slack.com/services/T0/B0/XX
    python -m connectors.kafka.alerts --from-beginning --max-messages 10 --group audit

A message of the alarms topic becomes a printed line like this one
(:func:`connectors.runtime.outputs.format_text`):

>>> from datetime import UTC, datetime
>>> from schemas.models import to_json
>>> t = datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)
>>> value = to_json(Alarm(id="a1", tenant="default", device="press-1", metric="temperature",
...     rule="hot", kind="threshold", severity="major", state="raised", transition="raised",
...     seq=1, ts=t, raised_at=t, value=96.5, threshold=90.0,
...     message="temperature 96.5 above 90"))
>>> print(alarm_line(parse_alarm(value)))
2026-01-01T00:00:05.000Z *** ALARM RAISED *** [major] default/press-1 rule=hot
    state=raised value=96.5 -- temperature 96.5 above 90
>>> parse_alarm(b'{"id": "a1"}')
Traceback (most recent call last):
    ...
ValueError: not an alarm: Field required

With ``--webhook`` each transition is POSTed as JSON, Slack-compatible: a
top-level ``"text"`` (the line above) plus ``"alarm"`` (the full record as
on the topic). Failed POSTs (connection errors, HTTP 5xx, 408, 429) are
retried with exponential backoff (``--retry-initial`` doubling, at most 30
s, honouring ``Retry-After``) up to ``--retries`` times.

**Delivery.** The follower is a consumer group member (``--group``): several
followers in one group share the partitions, each group gets every alarm.
A message's offset is stored for commit only after it was printed or
POSTed, so an alarm is never skipped: when a webhook still fails after all
retries (or answers 4xx), the follower exits with status 1 *without*
committing that alarm, and a restart delivers it again. A message that is
not a valid alarm is reported on stderr (topic/partition/offset and the
reason) and skipped. ``--from-beginning`` re-reads the whole topic
regardless of the group's committed offsets.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition
from pydantic import ValidationError

from connectors.kafka.dedupe import Deduplicator
from connectors.kafka.sink_config import KafkaSinkConfig
from connectors.runtime.metrics import counter
from connectors.runtime.outputs import format_text
from schemas.models import Alarm, adapter, to_dict
from schemas.settings import Settings

ALERTS = counter("streamforge_alerts_total", "Alarm transitions delivered, by output")
DUPLICATES = counter(
    "streamforge_alerts_duplicates_total",
    "Alarm transitions seen again (a flow's replay after a crash) and not told twice",
)
INVALID = counter(
    "streamforge_alerts_invalid_total", "Messages on the alarms topic that are not alarms"
)

_RETRY_STATUS = {408, 429, 500, 502, 503, 504}


class WebhookError(RuntimeError):
    """A webhook POST that failed for good (after retries, or a 4xx answer)."""


def parse_alarm(value: bytes | None) -> Alarm:
    """An alarm from a message value (JSON of :class:`schemas.models.Alarm`); raises ValueError."""
    if not value:
        raise ValueError("empty message")
    try:
        alarm: Alarm = adapter(Alarm).validate_json(value)
    except ValidationError as exc:
        raise ValueError(f"not an alarm: {exc.errors()[0]['msg']}") from None
    return alarm


def alarm_line(alarm: Alarm) -> str:
    """The readable one-line form of an alarm transition."""
    return format_text("alarm", alarm)


def webhook_body(alarm: Alarm) -> bytes:
    """Slack-compatible JSON: ``text`` for chat tools, ``alarm`` for machines."""
    return json.dumps({"text": alarm_line(alarm), "alarm": to_dict(alarm)}).encode()


def post_with_retry(
    url: str,
    body: bytes,
    *,
    retries: int = 5,
    retry_initial: float = 1.0,
    retry_max: float = 30.0,
    timeout: float = 10.0,
) -> int:
    """POST ``body`` as JSON; retry transient failures with backoff. Returns the HTTP status."""
    delay = retry_initial
    attempt = 0
    while True:
        attempt += 1
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        wait = delay
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status: int = response.status
                return status
        except urllib.error.HTTPError as exc:
            if exc.code not in _RETRY_STATUS:
                raise WebhookError(f"webhook {url} answered {exc.code} {exc.reason}") from exc
            reason = f"HTTP {exc.code}"
            retry_after = exc.headers.get("Retry-After") if exc.headers else None
            if retry_after and retry_after.isdigit():
                wait = min(float(retry_after), retry_max)
        except (urllib.error.URLError, OSError) as exc:
            reason = str(getattr(exc, "reason", exc))
        if attempt > retries:
            raise WebhookError(f"webhook {url} failed {attempt} times, last: {reason}")
        print(
            f"alerts: webhook attempt {attempt} failed ({reason}); retrying in {wait:.1f}s",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(wait)
        delay = min(delay * 2, retry_max)


def _consumer(args: argparse.Namespace) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "auto.offset.reset": "earliest" if args.from_beginning else "latest",
            # Commit only what was handled: offsets are stored after print/POST.
            "enable.auto.commit": True,
            "enable.auto.offset.store": False,
        }
    )

    rewound: set[int] = set()

    def on_assign(c: Consumer, partitions: list[TopicPartition]) -> None:
        # Rewind each partition once: a later rebalance must not replay everything.
        if args.from_beginning:
            for tp in partitions:
                if tp.partition not in rewound:
                    rewound.add(tp.partition)
                    tp.offset = OFFSET_BEGINNING
        c.assign(partitions)

    consumer.subscribe([args.topic], on_assign=on_assign)
    return consumer


def _handle(msg: Message, args: argparse.Namespace, seen: Deduplicator) -> None:
    where = f"{msg.topic()}/{msg.partition()}/{msg.offset()}"
    try:
        alarm = parse_alarm(msg.value())
    except ValueError as exc:
        INVALID.inc()
        print(f"alerts: skipped {where}: {exc}", file=sys.stderr, flush=True)
        return
    if not seen.is_new("alarm", {"id": alarm.id, "seq": alarm.seq}):
        DUPLICATES.inc()  # a transition the flow wrote again after a crash: told once
        return
    if args.webhook:
        post_with_retry(
            args.webhook,
            webhook_body(alarm),
            retries=args.retries,
            retry_initial=args.retry_initial,
        )
        ALERTS.inc(output="webhook")
    else:
        print(alarm_line(alarm), flush=True)
        ALERTS.inc(output="stdout")


def follow(args: argparse.Namespace) -> int:
    """Consume alarms until ``--max-messages`` (or forever); the exit status."""
    consumer = _consumer(args)
    seen = Deduplicator()
    handled = 0
    last_error = 0.0
    try:
        while args.max_messages is None or handled < args.max_messages:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                # Broker down and the like: librdkafka reconnects by itself.
                if error.code() != KafkaError._PARTITION_EOF and time.monotonic() - last_error > 10:
                    last_error = time.monotonic()
                    print(f"alerts: kafka error (retrying): {error.str()}", file=sys.stderr)
                continue
            try:
                _handle(msg, args, seen)
            except WebhookError as exc:
                print(f"alerts: {exc}; exiting without committing this alarm", file=sys.stderr)
                return 1
            consumer.store_offsets(message=msg)
            handled += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()  # commits the stored offsets
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    settings = Settings()
    parser = argparse.ArgumentParser(
        prog="python -m connectors.kafka.alerts", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--bootstrap", default=settings.kafka_bootstrap_servers)
    parser.add_argument("--topic", default=KafkaSinkConfig().topic_for("alarm"))
    parser.add_argument("--group", default="streamforge-alerts")
    parser.add_argument("--from-beginning", action="store_true")
    parser.add_argument("--max-messages", type=int, default=None, metavar="N")
    parser.add_argument("--webhook", metavar="URL", help="POST each alarm as JSON here")
    parser.add_argument("--retries", type=int, default=5, help="webhook retries (default 5)")
    parser.add_argument(
        "--retry-initial", type=float, default=1.0, help="first retry wait in s (default 1)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m connectors.kafka.alerts``."""
    return follow(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

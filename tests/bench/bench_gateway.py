"""Benchmark: the edge gateway (``flows.gateway``): its disk spool, and MQTT -> gateway -> Kafka.

    .venv/bin/python -m tests.bench.bench_gateway            # default sizes, under 3 min
    .venv/bin/python -m tests.bench.bench_gateway --quick    # small sizes, to check it works

Prints the figures and writes ``tests/bench/reports/gateway.json``; nothing
is asserted on them. Spools live in a temporary directory (the same disk as
``/tmp``), removed at the end; Kafka topics are unique to the run
(``sf-bench-gw-<random>``) and deleted at the end.

What is spooled is what the gateway spools: :func:`connectors.kafka.gateway.spooled`
records holding a JSON array of 100 readings of one device, made by
:class:`flows.gateway.ReadingsEncoder` (about 19 kB each). Every spool has
the default settings (``--segment-bytes`` changes the segment size).

1. **Spool write** (``spool_write``): :meth:`Spool.append` of batches of 1,
   10 and 100 records (the gateway appends once per Bytewax batch), with
   ``fsync`` on (the default: an append returns once its records are on
   disk) and off. Each case appends until ``--write-messages`` records or
   ``--write-seconds`` s, into a fresh spool; messages/s, readings/s, MB/s
   (on-disk bytes, 16-byte headers included).
2. **Spool drain** (``spool_drain``): a spool prefilled with
   ``--drain-messages`` records (x 100 readings), then

   * ``disk_only``: :meth:`Spool.read` (the forwarder's batch: up to
     ``forward_batch`` records or 4 MiB) and :meth:`Spool.commit` until it
     is empty, no Kafka (the records come from the page cache: just written);
   * ``to_kafka``: a :class:`SpoolForwarder` started on it (idempotent
     producer, acks=all, the gateway's defaults), timed until
     ``pending_records == 0`` (every record confirmed by Kafka). The topic
     is created before the clock starts (the producer's connection is in the
     time: ``readings_per_s_after_first_send`` leaves it out). Best of ``--repeat``.
3. **End to end** (``end_to_end``): the real gateway as a subprocess
   (``python -m bytewax.run flows.gateway -s 1``, topology ``split``, one
   MQTT source on the local Mosquitto, ``format: array``, topic template
   ``bench/gw-<run>/{device}``, spool in the temporary directory). Once a
   warm-up message went all the way to Kafka (the gateway is subscribed and
   its producer connected), ``--e2e-messages`` JSON arrays of 100 readings
   are published at QoS 1 as fast as the broker takes them (paho, 1,000 in
   flight), and a consumer thread sums the array lengths of the gateway's
   topic. readings/s = readings / (first publish -> the consumer saw the
   last reading). Also given: the same measured to the largest Kafka
   message timestamp (the gateway's producer stamps it), how long the
   broker took to accept everything, and the gateway's start-up time. Best
   of ``--repeat``.

Kafka may be stopped meanwhile by fault tests sharing it: each Kafka case
first waits until Kafka answers (the wait is reported), and a case that
times out, or whose gateway exited under it, is tried once more
(``attempt``). A run during such an outage measures it too: look at
``kafka_waited_s`` and the spread of the runs. All processes (the gateway,
Kafka, Mosquitto, this script, and whatever else runs) share the machine's
cores: the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from connectors.kafka.admin import admin_client, ensure_topics
from connectors.kafka.gateway import SpoolForwarder, spooled, unspool
from connectors.kafka.gateway_config import GatewayConfig
from connectors.kafka.sink_config import TopicSpec, retention_ms
from connectors.mqtt.client import parse_broker_url
from connectors.mqtt.config import MqttSourceConfig
from connectors.mqtt.source import MqttSource
from connectors.runtime.spool import HEADER, Spool, SpoolConfig
from flows.gateway import ReadingsEncoder
from schemas.models import Reading
from schemas.settings import Settings
from schemas.sizes import parse_size
from tests.support.kafka_tools import delete_topics

ROOT = Path(__file__).resolve().parents[2]
REPORT = Path(__file__).with_name("reports") / "gateway.json"
COMMAND = "python -m tests.bench.bench_gateway"
PER_MESSAGE = 100
DEVICES = 50
T0 = datetime(2026, 1, 1, tzinfo=UTC)
MB = 1e6
STALL_S = 60.0  # no progress this long while Kafka answers: the case failed
SEGMENT_BYTES = 16 * 1024**2
"""Spool segment size of every case: the spool's default."""


class RetryableError(RuntimeError):
    """A case that did not finish for an outside reason: tried once more."""


class KafkaUnavailableError(RetryableError):
    """Kafka did not answer in time, or a case did not finish while it was away."""


class GatewayStoppedError(RetryableError):
    """The gateway subprocess exited during a case (something else signalled it?)."""


class StalledError(RuntimeError):
    """Records pending with no progress while Kafka answers: records lost, or stuck."""


# -- what the gateway spools -------------------------------------------------------


def spooled_messages(count: int, topic: str) -> list[bytes]:
    """``count`` spooled records, each a JSON array of 100 readings of one device."""
    encoder = ReadingsEncoder(topic, PER_MESSAGE)
    messages: list[bytes] = []
    for i in range(count):
        ts = T0 + timedelta(seconds=i)
        readings = [
            Reading(f"press-{i % DEVICES}", f"m{j}", ts, 20.0 + j * 0.5 + i % 97, source="mqtt")
            for j in range(PER_MESSAGE)
        ]
        _bucket, encoded = encoder((str(i % 64), readings))
        messages.extend(encoded)
    return messages


def disk_bytes(records: list[bytes]) -> int:
    return sum(HEADER.size + len(r) for r in records)


def rates(messages: int, size: int, seconds: float) -> dict[str, Any]:
    return {
        "messages": messages,
        "seconds": round(seconds, 3),
        "messages_per_s": round(messages / seconds),
        "readings_per_s": round(messages * PER_MESSAGE / seconds),
        "MB_per_s": round(size / MB / seconds, 1),
    }


# -- 1. spool write ------------------------------------------------------------------


def bench_spool_write(
    pool: list[bytes],
    fsync: bool,
    batch: int,
    max_messages: int,
    max_seconds: float,
    tmp: Path,
    segment_bytes: int,
) -> dict[str, Any]:
    """Append ``batch`` records at a time into a fresh spool until a count or a time is reached."""
    batches = [pool[i : i + batch] for i in range(0, len(pool) - batch + 1, batch)]
    sizes = [disk_bytes(b) for b in batches]
    path = Path(tempfile.mkdtemp(prefix="write-", dir=tmp))
    config = SpoolConfig(path=str(path), fsync=fsync, segment_bytes=segment_bytes)
    spool = Spool(config, name="bench-write")
    written = size = appends = 0
    try:
        start = time.perf_counter()
        deadline = start + max_seconds
        while written < max_messages and time.perf_counter() < deadline:
            k = appends % len(batches)
            spool.append(batches[k])
            written += batch
            size += sizes[k]
            appends += 1
        seconds = time.perf_counter() - start
    finally:
        spool.close()
        shutil.rmtree(path, ignore_errors=True)
    return {
        "fsync": fsync,
        "messages_per_append": batch,
        "appends": appends,
        **rates(written, size, seconds),
        "ms_per_append": round(seconds / appends * 1000, 3),
    }


# -- 2. spool drain ------------------------------------------------------------------


def prefilled_spool(
    pool: list[bytes], count: int, path: Path, name: str, segment_bytes: int
) -> Spool:
    spool = Spool(SpoolConfig(path=str(path), segment_bytes=segment_bytes), name=name)
    for i in range(0, count, 100):
        spool.append(pool[i : min(i + 100, count)])
    return spool


def bench_drain_disk(
    pool: list[bytes], count: int, tmp: Path, segment_bytes: int
) -> dict[str, Any]:
    """read + commit, as the forwarder does, without sending anything."""
    path = Path(tempfile.mkdtemp(prefix="drain-", dir=tmp))
    forward_batch = GatewayConfig().forward_batch
    spool = prefilled_spool(pool, count, path, "bench-drain", segment_bytes)
    read = size = reads = 0
    try:
        start = time.perf_counter()
        while spool.pending_records:
            batch = spool.read(max_records=forward_batch)
            if not batch.count:
                raise StalledError(
                    f"spool read returned nothing with {spool.pending_records} of {count} records "
                    f"pending ({read} read): records skipped"
                )
            spool.commit(batch)
            read += len(batch.records)
            size += disk_bytes(batch.records)
            reads += 1
        seconds = time.perf_counter() - start
    finally:
        spool.close()
        shutil.rmtree(path, ignore_errors=True)
    return {**rates(read, size, seconds), "reads": reads}


def bench_drain_kafka(
    pool: list[bytes],
    count: int,
    tmp: Path,
    bootstrap: str,
    topics: list[str],
    timeout: float,
    segment_bytes: int,
) -> dict[str, Any]:
    """A SpoolForwarder on a prefilled spool: time until Kafka confirmed every record."""
    topic = f"sf-bench-gw-{uuid.uuid4().hex[:8]}"
    topics.append(topic)
    path = Path(tempfile.mkdtemp(prefix="forward-", dir=tmp))
    spool_config = {"path": str(path), "segment_bytes": segment_bytes}
    config = GatewayConfig(id="bench-gateway", topic=topic, spool=spool_config)
    records = [spooled(topic, *unspool(r)[1:]) for r in pool[:count]]
    size = disk_bytes(records)
    spool = prefilled_spool(records, count, path, "bench-forward", segment_bytes)
    spec = TopicSpec(topic, config.partitions, retention_ms=retention_ms(config.retention))
    ensure_topics(admin_client(bootstrap), [spec], timeout=30.0)
    forwarder = None
    try:
        start = time.perf_counter()
        forwarder = SpoolForwarder(spool, config, bootstrap)
        deadline = start + timeout
        first: tuple[float, int] | None = None  # when the first send was confirmed, what was left
        last = (start, count)  # the last change of pending_records
        while spool.pending_records and time.perf_counter() < deadline:
            pending, now = spool.pending_records, time.perf_counter()
            if first is None and pending < count:
                first = (now, pending)
            if pending != last[1]:
                last = (now, pending)
            elif now - last[0] > STALL_S and kafka_answers(bootstrap):
                raise StalledError(
                    f"forwarder: {pending} of {count} records pending, none forwarded for "
                    f"{STALL_S:.0f} s while Kafka answers: records skipped or stuck"
                )
            time.sleep(0.002)
        end = time.perf_counter()
        seconds = end - start
        if spool.pending_records:
            raise KafkaUnavailableError(
                f"forwarder: {spool.pending_records} of {count} records left after {timeout:.0f} s"
            )
    finally:
        if forwarder is not None:
            forwarder.stop(timeout=1.0)
        spool.close()
        shutil.rmtree(path, ignore_errors=True)
    after_first = {}
    if first is not None and first[1] and end > first[0]:
        after_first = {
            "first_send_confirmed_s": round(first[0] - start, 3),
            "readings_per_s_after_first_send": round(first[1] * PER_MESSAGE / (end - first[0])),
        }
    return {
        **rates(count, size, seconds),
        **after_first,
        "messages_in_kafka": topic_messages(bootstrap, topic),
        "forward_batch": config.forward_batch,
        "linger_ms": round(config.linger * 1000),
        "compression": config.compression,
        "partitions": config.partitions,
    }


# -- 3. end to end -------------------------------------------------------------------


def mqtt_payloads(count: int) -> list[bytes]:
    """JSON arrays of 100 readings (device from the topic), distinct timestamps."""
    payloads = []
    for i in range(count):
        ts = (T0 + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        items = [
            {"metric": f"m{j}", "value": 20.0 + j * 0.5 + i % 97, "ts": ts}
            for j in range(PER_MESSAGE)
        ]
        payloads.append(orjson.dumps(items))
    return payloads


class TopicCounter:
    """A thread reading a topic from the beginning: readings (array lengths), messages, times."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.readings = 0
        self.messages = 0
        self.dead_letters = 0
        self.max_timestamp_ms = 0
        self.target: int | None = None
        self.reached_at: float | None = None
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="topic-counter", daemon=True)
        self._thread.start()

    def _partitions(self) -> list[int]:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        while not self._stop.is_set():
            try:
                meta = admin.list_topics(self.topic, timeout=5).topics[self.topic]
                if meta.error is None and meta.partitions:
                    return sorted(meta.partitions)
            except KafkaException:
                pass
            self._stop.wait(0.2)  # the gateway's forwarder creates the topic
        return []

    def _run(self) -> None:
        try:
            parts = self._partitions()
            if not parts:
                return
            consumer = Consumer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "group.id": f"sf-bench-gw-{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False,
                    "fetch.wait.max.ms": 10,
                }
            )
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in parts])
            try:
                while not self._stop.is_set():
                    for msg in consumer.consume(1000, 0.05):
                        if msg.error():
                            continue
                        self._count(msg)
            finally:
                consumer.close()
        except Exception as exc:  # reported by the waiting side
            self.error = repr(exc)

    def _count(self, msg: Any) -> None:
        self.messages += 1
        self.max_timestamp_ms = max(self.max_timestamp_ms, msg.timestamp()[1])
        headers = dict(msg.headers() or [])
        if headers.get("kind") != b"readings":
            self.dead_letters += 1
            return
        self.readings += len(orjson.loads(msg.value()))
        if self.target is not None and self.reached_at is None and self.readings >= self.target:
            self.reached_at = time.perf_counter()

    def wait_for(self, readings: int, timeout: float, alive: Callable[[], bool]) -> float:
        """perf_counter() when ``readings`` had arrived; raises after ``timeout`` s."""
        self.target = readings
        if self.readings >= readings and self.reached_at is None:
            self.reached_at = time.perf_counter()
        deadline = time.monotonic() + timeout
        last = (time.monotonic(), self.readings)  # the last progress
        while self.reached_at is None:
            now = time.monotonic()
            if self.readings != last[1]:
                last = (now, self.readings)
            elif now - last[0] > STALL_S and kafka_answers(self.bootstrap):
                raise StalledError(
                    f"{self.readings} of {readings} readings on {self.topic}, none more for "
                    f"{STALL_S:.0f} s while Kafka answers: readings lost or stuck in the spool"
                )
            if self.error is not None:
                raise RuntimeError(f"topic counter failed: {self.error}")
            if not alive():
                raise GatewayStoppedError("the gateway exited")
            if time.monotonic() > deadline:
                raise KafkaUnavailableError(
                    f"{self.readings} of {readings} readings on {self.topic} after {timeout:.0f} s"
                )
            time.sleep(0.005)
        reached = self.reached_at
        self.target, self.reached_at = None, None
        return reached

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


class Publisher:
    """A paho MQTT 5 client publishing QoS 1 with 1,000 messages in flight."""

    def __init__(self, url: str) -> None:
        address = parse_broker_url(url)
        self.acked = 0
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"sf-bench-gw-pub-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.max_inflight_messages_set(1000)
        self.client.on_publish = self._on_publish
        self.client.connect(address.host, address.port, 30)
        self.client.loop_start()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self.acked += 1

    def publish_all(self, messages: list[tuple[str, bytes]], timeout: float = 120.0) -> None:
        """Publish every message, then wait until the broker acknowledged them all."""
        target = self.acked + len(messages)
        for topic, payload in messages:
            self.client.publish(topic, payload, qos=1)
        deadline = time.monotonic() + timeout
        while self.acked < target:
            if time.monotonic() > deadline:
                raise RuntimeError(f"broker acknowledged {self.acked} of {target} messages")
            time.sleep(0.001)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def gateway_config(
    uid: str, topic: str, tmp: Path, settings: Settings, segment_bytes: int
) -> dict[str, Any]:
    return {
        "topology": "split",
        "gateway": {
            "id": "bench-gateway",
            "topic": topic,
            "bootstrap_servers": settings.kafka_bootstrap_servers,
            "spool": {"path": str(tmp / "spool"), "segment_bytes": segment_bytes},
        },
        "sources": [
            {
                "type": "mqtt",
                "name": "bench",
                "url": settings.mqtt_url,
                "client_id": f"sf-bench-gw-{uid}",
                "session_expiry": 60,  # a shared broker: no day-long session left behind
                "subscriptions": [
                    {"topic": f"bench/gw-{uid}/{{device}}", "format": "array", "qos": 1}
                ],
            }
        ],
    }


def bench_end_to_end(
    settings: Settings,
    messages: int,
    tmp: Path,
    topics: list[str],
    timeout: float,
    segment_bytes: int,
) -> dict[str, Any]:
    """MQTT -> the gateway subprocess -> Kafka, from the first publish to the last reading."""
    uid = uuid.uuid4().hex[:8]
    topic = f"sf-bench-gw-{uid}"
    topics.append(topic)
    workdir = Path(tempfile.mkdtemp(prefix="e2e-", dir=tmp))
    config_path = workdir / "gateway.json"
    config = gateway_config(uid, topic, workdir, settings, segment_bytes)
    config_path.write_text(json.dumps(config, indent=2))
    # The gateway's MQTT session exists before it starts: the broker keeps what comes first.
    MqttSource(MqttSourceConfig(**config["sources"][0])).build_part("mqtt", "0", None).close()
    payloads = mqtt_payloads(messages)
    batch = [(f"bench/gw-{uid}/press-{i % DEVICES}", p) for i, p in enumerate(payloads)]
    warmup = [(f"bench/gw-{uid}/warmup", mqtt_payloads(1)[0])]
    env = {
        **os.environ,
        "STREAMFORGE_CONFIG": str(config_path),
        "STREAMFORGE_METRICS_PORT": "off",
        "PYTHONUNBUFFERED": "1",
    }
    log_path = workdir / "gateway.log"
    log = open(log_path, "wb")  # noqa: SIM115 (closed in the finally)
    command = [sys.executable, "-m", "bytewax.run", "flows.gateway", "-s", "1"]
    launched = time.perf_counter()
    gateway = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    counter = TopicCounter(settings.kafka_bootstrap_servers, topic)
    publisher = None

    def alive() -> bool:
        return gateway.poll() is None

    try:
        publisher = Publisher(settings.mqtt_url)
        publisher.publish_all(warmup)
        counter.wait_for(PER_MESSAGE, timeout, alive)
        ready_s = time.perf_counter() - launched
        wall_start = time.time()
        start = time.perf_counter()
        publisher.publish_all(batch)
        published = time.perf_counter()
        total = (messages + 1) * PER_MESSAGE
        done = counter.wait_for(total, timeout, alive)
        time.sleep(0.5)  # anything doubled would show now
        seconds = done - start
        by_timestamp = counter.max_timestamp_ms / 1000 - wall_start
    except Exception:
        log.flush()
        tail = log_path.read_bytes()[-3000:].decode(errors="replace")
        print(f"gateway log (tail):\n{tail}", file=sys.stderr, flush=True)
        raise
    finally:
        if publisher is not None:
            publisher.close()
        stop_process(gateway)
        counter.stop()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)
    readings = messages * PER_MESSAGE
    return {
        "messages": messages,
        "readings": readings,
        "seconds": round(seconds, 3),
        "readings_per_s": round(readings / seconds),
        "messages_per_s": round(messages / seconds),
        "seconds_to_last_kafka_timestamp": round(by_timestamp, 3),
        "readings_per_s_to_last_kafka_timestamp": round(readings / by_timestamp),
        "broker_accepted_all_s": round(published - start, 3),
        "gateway_ready_s": round(ready_s, 2),
        "readings_in_kafka": counter.readings - PER_MESSAGE,
        "kafka_messages": counter.messages - 1,
        "dead_letters": counter.dead_letters,
    }


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the gateway's process group (it drains for up to 5 s), then SIGKILL."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


# -- Kafka helpers -------------------------------------------------------------------


def wait_for_kafka(bootstrap: str, timeout: float = 300.0) -> float:
    """Seconds waited until Kafka answered a metadata request (0 when it was up)."""
    start = time.monotonic()
    admin = AdminClient({"bootstrap.servers": bootstrap})
    warned = False
    while True:
        try:
            if admin.list_topics(timeout=5).brokers:
                return round(time.monotonic() - start, 1)
        except KafkaException:
            pass
        if time.monotonic() - start > timeout:
            raise KafkaUnavailableError(f"Kafka at {bootstrap} unreachable for {timeout:.0f} s")
        if not warned:
            print(f"Kafka at {bootstrap} unreachable; waiting (up to {timeout:.0f} s)")
            warned = True
        time.sleep(2)


def kafka_answers(bootstrap: str) -> bool:
    try:
        return bool(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=5).brokers)
    except KafkaException:
        return False


def topic_messages(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "sf-bench-gw-watermarks"})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts
        )
    finally:
        consumer.close()


def with_kafka(bootstrap: str, case: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a Kafka case once Kafka answers; once more if Kafka or the gateway went away."""
    for attempt in (1, 2):
        waited = wait_for_kafka(bootstrap)
        try:
            return {**case(), "kafka_waited_s": waited, "attempt": attempt}
        except RetryableError as exc:
            if attempt == 2:
                raise
            print(f"{exc}; trying again once Kafka answers", flush=True)
    raise AssertionError("not reached")


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    top = max(runs, key=lambda run: run["readings_per_s"])
    return {**top, "runs_readings_per_s": [run["readings_per_s"] for run in runs]}


# -- main ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog=COMMAND)
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each")
    parser.add_argument("--write-messages", type=int, help="most records per spool write case")
    parser.add_argument("--write-seconds", type=float, help="most seconds per spool write case")
    parser.add_argument("--drain-messages", type=int, help="records (x100 readings) to drain")
    parser.add_argument("--e2e-messages", type=int, help="MQTT messages (x100 readings)")
    parser.add_argument("--repeat", type=int, help="runs of the Kafka cases (best reported)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per Kafka case")
    parser.add_argument(
        "--segment-bytes", type=parse_size, default=SEGMENT_BYTES, help="spool segments (16MiB)"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    write_messages = args.write_messages or (500 if quick else 5_000)
    write_seconds = args.write_seconds or (1.0 if quick else 3.0)
    drain_messages = args.drain_messages or (200 if quick else 2_000)
    e2e_messages = args.e2e_messages or (200 if quick else 5_000)
    repeat = args.repeat or (1 if quick else 3)
    segment = args.segment_bytes
    timeout = args.timeout
    settings = Settings()
    bootstrap = settings.kafka_bootstrap_servers

    began = time.perf_counter()
    load_start = os.getloadavg()[0]
    pool = spooled_messages(max(drain_messages, 100), "sf-bench-gw-topic")
    sizes = [len(m) for m in pool]
    topics: list[str] = []
    results: dict[str, Any] = {}
    failed: list[str] = []

    def section(name: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """A case's figures, or its error (the others still run)."""
        try:
            return run()
        except (StalledError, RetryableError) as exc:
            print(f"{name}: FAILED: {exc}", flush=True)
            failed.append(name)
            return {"error": str(exc)}

    try:
        with tempfile.TemporaryDirectory(prefix="sf-bench-gw-") as tmp_name:
            tmp = Path(tmp_name)
            write = []
            for fsync in (True, False):
                for batch in (1, 10, 100):
                    case = bench_spool_write(
                        pool, fsync, batch, write_messages, write_seconds, tmp, segment
                    )
                    write.append(case)
                    print(
                        f"spool write  fsync={'on ' if fsync else 'off'} {batch:>3}/append "
                        f"{case['messages_per_s']:>9,} msg/s {case['readings_per_s']:>11,} "
                        f"readings/s {case['MB_per_s']:>7,.1f} MB/s "
                        f"({case['ms_per_append']} ms/append)",
                        flush=True,
                    )
            results["spool_write"] = write

            disk = section(
                "spool_drain.disk_only",
                lambda: bench_drain_disk(pool, drain_messages, tmp, segment),
            )
            if "error" not in disk:
                print(
                    f"spool drain  disk only (read+commit)      {disk['readings_per_s']:>11,} "
                    f"readings/s {disk['MB_per_s']:>7,.1f} MB/s",
                    flush=True,
                )

            def forward_case() -> dict[str, Any]:
                return bench_drain_kafka(
                    pool, drain_messages, tmp, bootstrap, topics, timeout, segment
                )

            forward = section(
                "spool_drain.to_kafka",
                lambda: best([with_kafka(bootstrap, forward_case) for _ in range(repeat)]),
            )
            if "error" not in forward:
                print(
                    f"spool drain  SpoolForwarder -> Kafka      {forward['readings_per_s']:>11,} "
                    f"readings/s {forward['MB_per_s']:>7,.1f} MB/s (runs "
                    f"{forward['runs_readings_per_s']}; after the first send "
                    f"{forward.get('readings_per_s_after_first_send', '-')}; "
                    f"{forward['messages_in_kafka']} messages in Kafka)",
                    flush=True,
                )
            results["spool_drain"] = {"disk_only": disk, "to_kafka": forward}

            def e2e_case() -> dict[str, Any]:
                return bench_end_to_end(settings, e2e_messages, tmp, topics, timeout, segment)

            e2e = section(
                "end_to_end",
                lambda: best([with_kafka(bootstrap, e2e_case) for _ in range(repeat)]),
            )
            if "error" not in e2e:
                print(
                    f"end to end   MQTT -> gateway -> Kafka     {e2e['readings_per_s']:>11,} "
                    f"readings/s (runs {e2e['runs_readings_per_s']}; to the last Kafka "
                    f"timestamp {e2e['readings_per_s_to_last_kafka_timestamp']:,}; broker took "
                    f"all in {e2e['broker_accepted_all_s']} s; gateway ready in "
                    f"{e2e['gateway_ready_s']} s; {e2e['readings_in_kafka']:,} readings in "
                    f"Kafka)",
                    flush=True,
                )
            results["end_to_end"] = e2e
    finally:
        if topics:
            try:
                wait_for_kafka(bootstrap, timeout=60)
                delete_topics(bootstrap, topics)
            except KafkaUnavailableError:
                print(f"could not delete topics {topics}: Kafka unreachable", file=sys.stderr)

    report = {
        "benchmark": "gateway",
        "command": " ".join([COMMAND, *(argv if argv is not None else sys.argv[1:])]),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1m_at_start": round(load_start, 2),
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
            "spool_filesystem": filesystem_of(Path(tempfile.gettempdir())),
        },
        "spooled_message": {
            "readings": PER_MESSAGE,
            "bytes_mean": round(sum(sizes) / len(sizes)),
            "devices": DEVICES,
        },
        "sizes": {
            "write_messages_max": write_messages,
            "write_seconds_max": write_seconds,
            "drain_messages": drain_messages,
            "e2e_messages": e2e_messages,
            "repeat": repeat,
            "segment_bytes": segment,
        },
        **results,
        "failed": failed,
        "seconds_total": round(time.perf_counter() - began, 1),
        "notes": (
            "spool: connectors.runtime.spool defaults, segment_bytes and fsync as given; "
            "MB/s counts on-disk bytes (16-byte record headers included); drain disk_only "
            "reads from the page cache; forwarder and gateway: GatewayConfig defaults "
            "(acks=all, idempotent, linger 10 ms, lz4, forward_batch 10000, 3 partitions); "
            "end to end: MQTT 5 QoS 1, ack: epoch, Bytewax snapshot interval 1 s, metrics "
            "off; the gateway, Kafka, Mosquitto and this script share the machine's cores"
        ),
    }
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {REPORT} ({report['seconds_total']} s)")
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")
    return report


def filesystem_of(path: Path) -> str:
    """The type of the file system ``path`` is on, from /proc/mounts (best match)."""
    try:
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "unknown"
    target = str(path.resolve())
    found = ("", "unknown")
    for fields in mounts:
        point = fields[1]
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(found[0]):
            found = (point, fields[2])
    return found[1]


if __name__ == "__main__":
    main()

"""Benchmark: readings/s from Mosquitto into a flow on one process (source -> decode -> count).

    .venv/bin/python -m tests.bench.bench_mqtt            # ~3 min, private brokers
    .venv/bin/python -m tests.bench.bench_mqtt --quick    # smaller backlogs, one run each

Each case publishes a backlog into a persistent session of a private
Mosquitto (``mosquitto_pub -l``, C, so the publisher is not what is
measured), then runs ``MqttSource -> flat_map_batch(decode_many) -> a
counting sink`` with Bytewax ``run_main`` (one worker, epoch 1 s) until
every message is taken; readings/s = readings / (last sink write - connect).

Cases (best of 2 runs each): one reading per message (JSON object) and 100
per message (JSON array), QoS 1 with ``ack: epoch`` and QoS 0, MQTT 5; one
reading per message over MQTT 3.1.1; the QoS 1 cases again against a broker
with ``set_tcp_nodelay true`` (``make up``'s broker leaves Nagle on). And the
parts alone, to show what bounds the end-to-end figure: paho draining the
same kind of backlog (QoS 0) without Bytewax, decoding or acks, and
``decode_many`` on ready-made RawMessages. The machine's load average is recorded too: the
figures are only as quiet as the machine was. Prints the figures and writes
``tests/bench/reports/mqtt.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import paho.mqtt.client as mqtt
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main

from connectors.mqtt.client import build_client, connect_arguments, parse_broker_url
from connectors.mqtt.config import MqttSourceConfig
from connectors.mqtt.source import MqttSource
from flows.decode import decode_many
from schemas.config import DecodeConfig
from schemas.models import RawMessage, Reading
from tests.support.mqtt_broker import Mosquitto

REPORT = Path(__file__).parent / "reports" / "mqtt.json"
TS = "2026-01-01T00:00:00Z"


def payload(index: int, per_message: int) -> str:
    """One JSON line: an object (1 reading) or an array of ``per_message`` readings."""
    items = [
        {"device": f"press-{index % 50}", "metric": f"m{j}", "value": index + j * 0.5, "ts": TS}
        for j in range(per_message)
    ]
    return json.dumps(items[0] if per_message == 1 else items, separators=(",", ":"))


def publish_backlog(port: int, topic: str, messages: int, per_message: int, qos: int) -> float:
    """Publish with ``mosquitto_pub -l`` (one message per stdin line); returns seconds taken."""
    lines = "\n".join(payload(i, per_message) for i in range(messages)) + "\n"
    start = time.perf_counter()
    subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-V", "5", "-q", str(qos),
         "-t", topic, "-l"],
        input=lines.encode(), check=True,
    )  # fmt: skip
    return time.perf_counter() - start


class _Count(StatelessSinkPartition[Any]):
    def __init__(self, stats: dict[str, Any]) -> None:
        self.stats = stats

    def write_batch(self, items: list[Any]) -> None:
        now = time.perf_counter()
        stats = self.stats
        stats["last"] = now
        stats["readings"] += sum(1 for item in items if type(item) is Reading)
        stats["other"] += sum(1 for item in items if type(item) is not Reading)


class CountingSink(DynamicSink[Any]):
    """Counts readings and other items, and when the last batch came."""

    def __init__(self, stats: dict[str, Any]) -> None:
        self.stats = stats

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Count:
        return _Count(self.stats)


class TimedSource(MqttSource):
    """MqttSource noting when its partition starts connecting (the clock starts there)."""

    def __init__(self, config: MqttSourceConfig, stats: dict[str, Any]) -> None:
        super().__init__(config)
        self.stats = stats

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> Any:
        self.stats["start"] = time.perf_counter()
        return super().build_part(step_id, for_part, resume_state)


def create_session(config: MqttSourceConfig) -> None:
    """Connect once and disconnect, so the broker queues the backlog for this session."""
    MqttSource(config).build_part("mqtt", "0", None).close()


def bench_flow(
    broker: Mosquitto,
    name: str,
    messages: int,
    per_message: int,
    qos: int,
    protocol: str = "5",
    repeats: int = 2,
) -> dict[str, Any]:
    """End to end, best of ``repeats`` runs: backlog -> MqttSource -> decode -> counting sink."""
    runs = [
        _flow_once(broker, f"{name}-{i}", messages, per_message, qos, protocol)
        for i in range(repeats)
    ]
    return max(runs, key=lambda run: run["readings_per_s"])


def _flow_once(
    broker: Mosquitto, name: str, messages: int, per_message: int, qos: int, protocol: str
) -> dict[str, Any]:
    config = MqttSourceConfig(
        url=broker.url,
        client_id=f"bench-{name}",
        protocol=protocol,
        subscriptions=[{"topic": f"bench/{name}", "format": "auto", "qos": qos}],
        limit=messages,
        session_expiry=600,
    )
    create_session(config)
    publish_s = publish_backlog(broker.port, f"bench/{name}", messages, per_message, qos)
    stats: dict[str, Any] = {"readings": 0, "other": 0}
    decode = DecodeConfig()
    flow = Dataflow(f"bench_{name}")
    raw = op.input("mqtt", flow, TimedSource(config, stats))
    decoded = op.flat_map_batch("decode", raw, lambda batch: decode_many(batch, decode))
    op.output("count", decoded, CountingSink(stats))
    run_main(flow, epoch_interval=timedelta(seconds=1))
    seconds = stats["last"] - stats["start"]
    assert stats["readings"] == messages * per_message, stats
    return {
        "messages": messages,
        "readings_per_message": per_message,
        "qos": qos,
        "protocol": protocol,
        "seconds": round(seconds, 3),
        "readings_per_s": round(stats["readings"] / seconds),
        "messages_per_s": round(messages / seconds),
        "publish_backlog_s": round(publish_s, 2),
    }


def bench_paho_alone(broker: Mosquitto, messages: int, per_message: int) -> dict[str, Any]:
    """The source's paho client alone draining a QoS 0 backlog: its receive path, nothing else."""
    topic = f"bench/paho-{per_message}"
    config = MqttSourceConfig(
        url=broker.url, subscriptions=[{"topic": topic, "qos": 0}], session_expiry=600
    )
    address = parse_broker_url(broker.url)
    client_id = f"bench-paho-{per_message}"
    create_session(config.model_copy(update={"client_id": client_id}))
    publish_backlog(broker.port, topic, messages, per_message, 0)
    done = threading.Event()
    count = [0]

    def on_message(c: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        count[0] += 1
        if count[0] == messages:
            done.set()

    stats: dict[str, float] = {}

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        stats.setdefault("start", time.perf_counter())

    client = build_client(config, f"{client_id}-0", address)
    client.on_message = on_message
    client.on_connect = on_connect
    client.connect(address.host, address.port, 30, **connect_arguments(config))
    client.loop_start()
    done.wait(300)
    seconds = time.perf_counter() - stats["start"]
    client.disconnect()
    client.loop_stop()
    return {
        "messages": messages,
        "messages_per_s": round(count[0] / seconds),
        "readings_per_s": round(count[0] * per_message / seconds),
    }


def bench_decode_alone(per_message: int, messages: int) -> dict[str, Any]:
    """``decode_many`` on RawMessages already in memory (what decoding costs per reading)."""
    now = datetime.now(UTC)
    raws = [
        RawMessage(payload(i, per_message).encode(), "mqtt", now, "bench/x", None, "auto")
        for i in range(messages)
    ]
    config = DecodeConfig()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for i in range(0, messages, 1000):
            decode_many(raws[i : i + 1000], config, now)
        best = min(best, time.perf_counter() - start)
    return {"readings_per_s": round(messages * per_message / best)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller backlogs, one run each")
    args = parser.parse_args()
    single, batched = (20_000, 1_000) if args.quick else (40_000, 5_000)
    repeats = 1 if args.quick else 2

    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": _cpus()},
        "broker": _mosquitto_version(),
        "load_average_at_start": _load(),
    }
    # Like `make up`'s broker (Nagle on, no per-message log lines); the QoS 0 backlog
    # must be kept for the offline session too (off by default).
    like_make_up = "queue_qos0_messages true"
    logs = "error warning notice information"
    with tempfile.TemporaryDirectory() as tmp:
        with Mosquitto(Path(tmp) / "a", listener=like_make_up, log_types=logs) as broker:
            flow = functools.partial(bench_flow, broker, repeats=repeats)
            results["flow_1_per_message_qos1"] = flow("s1", single, 1, 1)
            results["flow_100_per_message_qos1"] = flow("b1", batched, 100, 1)
            results["flow_1_per_message_qos0"] = flow("s0", single, 1, 0)
            results["flow_100_per_message_qos0"] = flow("b0", batched, 100, 0)
            results["flow_1_per_message_qos1_mqtt311"] = flow("s311", single, 1, 1, "3.1.1")
            results["paho_alone_1_per_message_qos0"] = bench_paho_alone(broker, single, 1)
            results["paho_alone_100_per_message_qos0"] = bench_paho_alone(broker, batched, 100)
        nodelay = like_make_up + "\nset_tcp_nodelay true"
        with Mosquitto(Path(tmp) / "b", listener=nodelay, log_types=logs) as broker:
            flow = functools.partial(bench_flow, broker, repeats=repeats)
            results["flow_1_per_message_qos1_broker_nodelay"] = flow("n1", single, 1, 1)
            results["flow_100_per_message_qos1_broker_nodelay"] = flow("nb1", batched, 100, 1)
    results["decode_alone_1_per_message"] = bench_decode_alone(1, 20_000)
    results["decode_alone_100_per_message"] = bench_decode_alone(100, 500)
    results["load_average_at_end"] = _load()

    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {REPORT}")


def _load() -> list[float]:
    import os

    return [round(x, 2) for x in os.getloadavg()]


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def _mosquitto_version() -> str:
    out = subprocess.run(["/usr/sbin/mosquitto", "-h"], capture_output=True, text=True)
    return (out.stdout or out.stderr).splitlines()[0]


if __name__ == "__main__":
    main()

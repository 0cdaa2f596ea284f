"""``python -m connectors.kafka.alerts`` against the real broker: printed lines, webhook POSTs."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from connectors.kafka.alerts import WebhookError, post_with_retry
from connectors.kafka.producer import KafkaRecordWriter
from connectors.kafka.sink_config import KafkaSinkConfig
from schemas.models import Alarm
from tests.support.kafka_tools import alarm, delete_topics, unique

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def alarms_topic(kafka_bootstrap: str) -> Iterator[tuple[str, list[Alarm]]]:
    """An alarms topic (written by the Kafka sink) holding three transitions."""
    config = KafkaSinkConfig(topic_prefix=unique("sf-alerts") + ".", kinds=["alarm"], partitions=2)
    alarms = [alarm("press-1", 1), alarm("press-2", 1), alarm("press-1", 2, "cleared")]
    writer = KafkaRecordWriter(config, kafka_bootstrap)
    writer.ensure_topics(kafka_bootstrap)
    writer.write([("alarm", a) for a in alarms])
    writer.close()
    topic = config.topic_for("alarm")
    yield topic, alarms
    delete_topics(kafka_bootstrap, [topic])


def follow(bootstrap: str, topic: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable, "-m", "connectors.kafka.alerts", "--bootstrap", bootstrap,
            "--topic", topic, "--group", unique("sf-alerts-group"), "--from-beginning",
            "--max-messages", "3", *extra,
        ],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )  # fmt: skip


def test_prints_one_readable_line_per_transition(
    kafka_bootstrap: str, alarms_topic: tuple[str, list[Alarm]]
) -> None:
    topic, _ = alarms_topic
    done = follow(kafka_bootstrap, topic)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3
    assert sum("*** ALARM RAISED *** [major] default/press-1 rule=hot" in ln for ln in lines) == 1
    assert sum("*** ALARM RAISED *** [major] default/press-2 rule=hot" in ln for ln in lines) == 1
    cleared = [ln for ln in lines if "ALARM CLEARED" in ln]
    assert len(cleared) == 1 and "state=cleared value=97.0" in cleared[0]
    # Same device, same partition: press-1's raise comes before its clear.
    press1 = [ln for ln in lines if "press-1" in ln]
    assert "RAISED" in press1[0] and "CLEARED" in press1[1]


class Hook(BaseHTTPRequestHandler):
    """Records every POST; answers with the next status of ``statuses`` (then 200)."""

    received: list[dict[str, Any]]
    statuses: list[int]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        status = type(self).statuses.pop(0) if type(self).statuses else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def hook() -> Iterator[tuple[str, type[Hook]]]:
    handler = type("TestHook", (Hook,), {"received": [], "statuses": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler
    server.shutdown()
    server.server_close()


def test_webhook_receives_slack_compatible_json_and_retries_a_500(
    kafka_bootstrap: str,
    alarms_topic: tuple[str, list[Alarm]],
    hook: tuple[str, type[Hook]],
) -> None:
    topic, alarms = alarms_topic
    url, handler = hook
    handler.statuses = [500]  # the first POST fails, its retry succeeds
    done = follow(kafka_bootstrap, topic, "--webhook", url, "--retry-initial", "0.05")
    assert done.returncode == 0, done.stderr
    assert "webhook attempt 1 failed (HTTP 500)" in done.stderr
    assert len(handler.received) == 4  # 3 alarms + 1 retry
    assert handler.received[0] == handler.received[1]  # the retried POST is the same alarm
    delivered = handler.received[1:]
    assert all(set(body) == {"text", "alarm"} for body in delivered)
    assert all("*** ALARM" in body["text"] for body in delivered)
    got = sorted((b["alarm"]["device"], b["alarm"]["seq"]) for b in delivered)
    assert got == sorted((a.device, a.seq) for a in alarms)
    assert {b["alarm"]["transition"] for b in delivered} == {"raised", "cleared"}


def test_webhook_gives_up_loudly(hook: tuple[str, type[Hook]]) -> None:
    url, handler = hook
    handler.statuses = [503, 503, 503]
    with pytest.raises(WebhookError, match="failed 3 times, last: HTTP 503"):
        post_with_retry(url, b"{}", retries=2, retry_initial=0.01)
    handler.statuses = [404]
    with pytest.raises(WebhookError, match="answered 404"):
        post_with_retry(url, b"{}", retries=2, retry_initial=0.01)
    assert len(handler.received) == 4  # a 404 is not retried


def test_follower_exits_nonzero_when_the_webhook_stays_down(
    kafka_bootstrap: str, alarms_topic: tuple[str, list[Alarm]], hook: tuple[str, type[Hook]]
) -> None:
    topic, _ = alarms_topic
    url, handler = hook
    handler.statuses = [500] * 10
    done = follow(
        kafka_bootstrap, topic, "--webhook", url, "--retries", "1", "--retry-initial", "0.01"
    )
    assert done.returncode == 1
    assert "exiting without committing this alarm" in done.stderr
    assert len(handler.received) == 2


def test_a_replayed_transition_is_told_once(
    kafka_bootstrap: str, alarms_topic: tuple[str, list[Alarm]]
) -> None:
    """After a crash the flow writes its transitions again; the follower tells each once."""
    topic, alarms = alarms_topic
    config = KafkaSinkConfig(topic_prefix=topic.removesuffix("alarms"), kinds=["alarm"])
    assert config.topic_for("alarm") == topic
    writer = KafkaRecordWriter(config, kafka_bootstrap)
    writer.write([("alarm", a) for a in alarms])  # the replay: the same three again
    writer.close()
    done = follow(kafka_bootstrap, topic, "--max-messages", "6")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3 and sum("ALARM CLEARED" in ln for ln in lines) == 1

"""A tiny StreamForge MQTT consumer run as a separate process by the MQTT tests.

    python -m tests.integration.mqtt_consumer CONFIG.json OUT.txt [--sink-delay S] [--epoch S]
        [--workers N]

Runs ``MqttSource(config) -> decode -> file sink``. The sink appends one line
per reading, ``<device> <metric> <value>``, and fsyncs before ``write_batch``
returns: a durable sink, which is what the source's acknowledgements are
aligned to. ``--sink-delay`` makes every write that much slower, so messages
pile up between the broker and the sink. With ``--workers N`` (> 1) the
decoded items are redistributed over N worker threads, so batches travel
between workers before their sink writes them, and the delay applies only
to the sinks of workers without the MQTT partition: the source's own worker
runs ahead of them. ``OUT.ready`` is created once the client is connected
and subscribed. Stop it with SIGTERM or SIGKILL.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.run import cli_main

from connectors.mqtt.config import MqttSourceConfig
from connectors.mqtt.source import MqttPartition, MqttSource
from flows.decode import decode_many
from schemas.config import DecodeConfig
from schemas.models import Reading

_SOURCE_THREADS: set[int] = set()
"""Worker threads that built an MQTT partition."""


class _FilePartition(StatelessSinkPartition[Any]):
    def __init__(self, path: Path, delay: float, only_other_workers: bool) -> None:
        self.path = path
        self.delay = delay
        self.only_other_workers = only_other_workers

    def write_batch(self, items: list[Any]) -> None:
        on_source_worker = threading.get_ident() in _SOURCE_THREADS
        if self.delay and not (self.only_other_workers and on_source_worker):
            time.sleep(self.delay)
        lines = [
            f"{r.device} {r.metric} {r.value}\n" if isinstance(r, Reading) else f"DEAD {r.reason}\n"
            for r in items
        ]
        with self.path.open("a") as out:
            out.writelines(lines)
            out.flush()
            os.fsync(out.fileno())


class FileSink(DynamicSink[Any]):
    """Appends readings to a file, durably (fsync) before returning."""

    def __init__(self, path: Path, delay: float) -> None:
        self.path = path
        self.delay = delay

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _FilePartition:
        return _FilePartition(self.path, self.delay, only_other_workers=worker_count > 1)


class ReadySource(MqttSource):
    """MqttSource that creates ``<out>.ready`` once a partition is connected and subscribed."""

    def __init__(self, config: MqttSourceConfig, ready: Path) -> None:
        super().__init__(config)
        self.ready = ready

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> MqttPartition:
        part = super().build_part(step_id, for_part, resume_state)
        _SOURCE_THREADS.add(threading.get_ident())
        self.ready.touch()
        return part


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--sink-delay", type=float, default=0.0)
    parser.add_argument("--epoch", type=float, default=0.2)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    config = MqttSourceConfig.model_validate(json.loads(args.config.read_text()))
    decode = DecodeConfig()

    flow = Dataflow("mqtt_consumer")
    raw = op.input("mqtt", flow, ReadySource(config, args.out.with_suffix(".ready")))
    decoded = op.flat_map_batch("decode", raw, lambda batch: decode_many(batch, decode))
    if args.workers > 1:
        decoded = op.redistribute("spread", decoded)
    op.output("file", decoded, FileSink(args.out, args.sink_delay))
    cli_main(flow, workers_per_process=args.workers, epoch_interval=timedelta(seconds=args.epoch))


if __name__ == "__main__":
    main()

"""StreamForge's main dataflow: sources -> decode -> one keyed pass per series -> sinks.

Run it with the built-in default (a simulated plant printed to stdout)::

    python -m bytewax.run flows.ingest

or with a pipeline config, several processes and recovery::

    STREAMFORGE_CONFIG=deploy/pipeline.sample.yaml \\
        python -m bytewax.run flows.ingest -i 0 -a "localhost:2101;localhost:2102"

Built from a config in a test, with a sink that collects ``(kind, record)`` pairs:

>>> from collections import Counter
>>> from bytewax.testing import TestingSink, run_main
>>> config = PipelineConfig(sources=[{"type": "simulator", "devices": 1, "rate": 0,
...                                   "limit": 100, "start": "2026-01-01T00:00:00Z"}])
>>> out = []
>>> run_main(build_flow(config, sinks=[TestingSink(out)]))
>>> Counter(kind for kind, _record in out)
Counter({'telemetry': 80, 'rollup': 12, 'event': 1})

The shape of the flow::

    input(s) ─► decode ─┬─► key by device ─► series (classify, events, alarms,
                        │                            rollups, anomaly scores)
                        │                              │ alarm transitions
                        │                              ▼ key by tenant/area
                        │                            flood (alarm floods)
                        └─► dead letters ──────────────┴─► sinks

``decode`` turns untrusted payloads (:class:`schemas.models.RawMessage`)
into readings and dead letters and never raises; readings from trusted
sources (simulator, Modbus, OPC UA) pass straight through. The ``series``
step is :mod:`flows.kernels.series`. Readings travel in chunks, one per bucket of
series per batch, and outputs in chunks, one per kind per activation, since
every item crossing an operator costs Bytewax ~1 µs. The partitioned sinks
(Kafka, TimescaleDB) receive the chunks still keyed by the bucket that made
them, ``(bucket, (kind, records))``, and write them on the worker that made
them (:mod:`connectors.runtime.routing`); other sinks receive ``(kind, records)`` chunks
(:mod:`connectors.runtime.outputs`); sinks passed to :func:`build_flow` by a caller get
plain ``(kind, record)`` pairs.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.outputs import FixedPartitionedSink, Sink

from connectors.runtime.compiled import compiled_modules
from connectors.runtime.logs import configure_logging, get_logger
from connectors.runtime.metrics_server import serve_metrics_from_environment
from connectors.runtime.outputs import Output, RoutedOutput, flatten_outputs
from connectors.runtime.registry import build_sink, build_source
from flows.alarm_flood import manage_floods
from flows.config import PipelineConfig, load_pipeline_config
from flows.operators import decode
from flows.series import series_logic_builder
from schemas.config import ConfigError
from schemas.devices import DeviceRegistry
from schemas.kinds import ALL_OUTPUT_KINDS, OutputKind
from schemas.models import DeadLetter
from schemas.settings import Settings

log = get_logger("flows.ingest")


def _values(items: list[RoutedOutput]) -> list[Output]:
    return [value for _key, value in items]


def _kind_filter(kinds: set[OutputKind]) -> Any:
    def keep(item: Output) -> bool:
        return item[0] in kinds

    return keep


def _routed_kind_filter(kinds: set[OutputKind]) -> Any:
    def keep(item: RoutedOutput) -> bool:
        return item[1][0] in kinds

    return keep


def build_flow(
    config: PipelineConfig,
    settings: Settings | None = None,
    *,
    sources: list[Source[Any]] | None = None,
    sinks: list[Sink[Any]] | None = None,
    flow_id: str = "streamforge",
    registry: DeviceRegistry | None = None,
) -> Dataflow:
    """Build the dataflow for a pipeline config.

    ``sources`` and ``sinks`` replace the configured ones (tests use
    ``TestingSource`` and ``TestingSink``, which gets ``(kind, record)``
    pairs; a ``FixedPartitionedSink`` gets routed outputs); by default they are built from
    ``config.sources`` (plus the operator actions topic when the config
    follows it: :mod:`connectors.kafka.alarm_actions`) and ``config.sinks``.
    ``registry`` replaces the device registry the config names (read from
    TimescaleDB: :mod:`connectors.timescale.devices`; none by default).
    """
    settings = settings or Settings()
    if registry is None:
        registry = device_registry(config, settings)
    # Every dead letter this process makes (decode, sources, sinks) keeps at most this.
    DeadLetter.payload_limit = config.decode.dead_letter_payload_bytes
    flow = Dataflow(flow_id)
    if sources is None:
        sources = [build_source(s, settings) for s in config.ingest_sources()]
        if config.follows_operator_actions():
            from connectors.kafka.alarm_actions import AlarmActionSource

            sources.append(AlarmActionSource(config.operator_actions, settings))
    inputs = [op.input(f"in_{i}", flow, src) for i, src in enumerate(sources)]
    raw: Stream[Any] = inputs[0] if len(inputs) == 1 else op.merge("inputs", *inputs)

    decoded = decode("decode", raw, config.decode, config.series_buckets)
    dead: Stream[RoutedOutput] = decoded.dead_letters

    processed: Stream[RoutedOutput] = op.stateful_batch(
        "series", decoded.readings, series_logic_builder(config, registry)
    )
    if config.alarm_management.flood.enabled:
        processed = manage_floods("flood", processed, config.alarm_management, registry)
    # Keyed by the bucket that made them: a partitioned sink (Kafka, TimescaleDB)
    # writes them on the worker that made them (connectors.runtime.routing).
    routed: Stream[RoutedOutput] = op.merge("outputs", processed, dead)
    unkeyed: list[Stream[Output]] = []

    def outputs() -> Stream[Output]:
        """The plain ``(kind, records)`` outputs, for the other sinks (made once)."""
        if not unkeyed:
            unkeyed.append(op.flat_map_batch("unkey", routed, _values))
        return unkeyed[0]

    if sinks is None:
        # Kafka sinks are attached first, whatever their place in the config:
        # a worker runs its outputs in the order they were attached, and a
        # Kafka sink only queues records, so alarms reach Kafka without
        # waiting for the batch's database rows. (Measured p99 event-to-alarm
        # latency varies between runs on a shared machine: 25-121 ms this
        # way, 39-86 ms with the TimescaleDB sink first; no throughput cost.)
        order = sorted(range(len(config.sinks)), key=lambda i: config.sinks[i].type != "kafka")
        for i in order:
            sink_config = config.sinks[i]
            sink = build_sink(sink_config, settings)
            kinds = set(sink_config.kinds)
            if isinstance(sink, FixedPartitionedSink):
                stream: Stream[Any] = routed
                if kinds != set(ALL_OUTPUT_KINDS):
                    stream = op.filter(f"kinds_{i}", routed, _routed_kind_filter(kinds))
            else:
                stream = outputs()
                if kinds != set(ALL_OUTPUT_KINDS):
                    stream = op.filter(f"kinds_{i}", stream, _kind_filter(kinds))
            op.output(f"sink_{i}_{sink_config.type}", stream, sink)
    else:
        # Sinks given by the caller (tests): the partitioned ones (Kafka,
        # TimescaleDB) get routed outputs as in a configured flow, the others
        # one (kind, record) pair per item.
        pairs: list[Stream[tuple[str, Any]]] = []
        for i, sink in enumerate(sinks):
            if isinstance(sink, FixedPartitionedSink):
                op.output(f"sink_{i}", routed, sink)
                continue
            if not pairs:
                pairs.append(op.flat_map_batch("flatten", outputs(), flatten_outputs))
            op.output(f"sink_{i}", pairs[0], sink)
    return flow


def device_registry(config: PipelineConfig, settings: Settings) -> DeviceRegistry | None:
    """The device registry the config names (``registry``), loaded and followed; or None."""
    url = config.registry_database_url(settings.database_url)
    if url is None:
        return None
    from connectors.timescale.devices import open_registry

    rc = config.registry
    return open_registry(
        url, refresh=rc.refresh, unregistered=rc.unregistered, start_timeout=rc.start_timeout
    )


GC_THRESHOLDS = (50_000, 20, 100)
"""Cyclic GC thresholds of a flow process (Python's defaults: 700, 10, 10)."""


def tune_gc() -> None:
    """Collect garbage cycles less often in a flow process.

    A flow holds a few objects per series for as long as it runs (windows,
    detector regimes, alarm trackers): millions at 100,000 series. With
    Python's default thresholds every 700 allocations start a young
    collection and the old generation is rescanned again and again while
    that state builds up: 15 full collections and ~20 % of the CPU at 50,000
    series (``tests/bench/bench_pipeline.py``). The flow's own records make
    no reference cycles, so collecting them less often holds nothing back.
    """
    gc.set_threshold(*GC_THRESHOLDS)


def stop_on_signals() -> None:
    """SIGINT and SIGTERM end a flow process with one log line and status 130 / 143.

    Without this, Ctrl-C ends each process with a ``KeyboardInterrupt``
    wrapped in a Bytewax error (a Rust panic message and two tracebacks),
    and SIGTERM (systemd, Kubernetes, ``kill``) ends it without a word.
    Bytewax does not flush its sinks on an interrupt either way, so the
    process simply ends where it is, as it would on SIGKILL: with recovery
    (``-r``) a restart replays what was read after the last snapshot, into
    sinks that are idempotent. Handlers someone else installed are left alone.
    """

    def stop(signum: int, _frame: Any) -> None:
        log.warning(
            "stopping on a signal; with recovery, a restart replays what was read"
            " after the last snapshot",
            extra={
                "step": "stop",
                "signal": signal.Signals(signum).name,
                "exit_status": 128 + signum,
            },
        )
        # What the stdout sink printed must not die in the buffer with us.
        for stream in (sys.stdout, sys.stderr):
            # closed, or the signal came in the middle of a write to it
            with contextlib.suppress(OSError, ValueError, RuntimeError):
                stream.flush()
        # Not SystemExit: Bytewax turns any exception out of a signal handler
        # into a panic and a BytewaxRuntimeError.
        os._exit(128 + signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) in (signal.default_int_handler, signal.SIG_DFL):
            signal.signal(sig, stop)


def start_process(check: Callable[[PipelineConfig], None] | None = None) -> PipelineConfig:
    """What every flow process does first: logs, GC, signals, metrics, then the config.

    A wrong config (or one ``check`` refuses with a :class:`ConfigError`)
    stops start-up with one message naming the field and the problem
    (exit status 2), before any source connects.
    """
    configure_logging()
    tune_gc()
    stop_on_signals()
    serve_metrics_from_environment()  # /metrics, /health: STREAMFORGE_METRICS_PORT + process id
    try:
        config = load_pipeline_config()
        if check is not None:
            check(config)
    except ConfigError as exc:
        print(f"streamforge: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return config


def flow_from_environment() -> Dataflow:
    """The flow ``python -m bytewax.run flows.ingest`` runs: config from the environment."""
    config = start_process()
    flow = build_flow(config)
    log.info(
        "pipeline config loaded",
        extra={
            "step": "start",
            "topology": config.topology,
            "sources": [s.type for s in config.ingest_sources()],
            "sinks": [s.type for s in config.sinks],
            # Empty when running as pure Python (no compiler at install, or
            # STREAMFORGE_PURE_PYTHON=1): same results, slower.
            "compiled_modules": compiled_modules(),
        },
    )
    return flow


def __getattr__(name: str) -> Any:
    # ``flow`` is built on first access, so importing this module (tests,
    # the API) does not read the environment or connect anything.
    if name == "flow":
        built = flow_from_environment()
        globals()["flow"] = built
        return built
    raise AttributeError(name)

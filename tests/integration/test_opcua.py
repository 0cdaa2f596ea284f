"""OPC UA source against a real asyncua server on loopback: values, timestamps, quality, modes.

The server (``opcua_server.py``) ticks every 50 ms; see its docstring for
what each variable does, e.g. ``Counter`` = tick with SourceTimestamp
2020-01-01 + tick seconds, so the event time of every reading is checkable.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import bytewax.operators as op
import pytest
import yaml
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, run_main

from connectors.opcua.config import OpcuaNodeConfig
from connectors.opcua.connection import NODE_ERRORS
from connectors.opcua.source import OpcuaPartition, OpcuaSource, main
from schemas.models import Reading
from tests.integration.opcua_harness import (
    OpcuaTestServer,
    collect,
    of_metric,
    open_partition,
    source_config,
)
from tests.support.opcua_server import COUNTER_EPOCH, SERVER_TS_EPOCH

NODES: list[dict[str, Any]] = [
    {"node_id": "ns=2;s=Line1.Counter", "device": "line1", "metric": "counter"},
    {
        "browse_path": "2:Plant/2:Line1/2:Temperature",
        "device": "line1",
        "metric": "temperature",
        "unit": "degC",
    },
    {"node_id": "ns=2;s=Line1.Running", "device": "line1", "metric": "running"},
    {"node_id": "ns=2;s=Line1.State", "device": "line1", "metric": "state"},
    {"node_id": "nsu=urn:streamforge:test;s=Line1.Quality", "device": "line1", "metric": "quality"},
    {"node_id": "ns=2;s=Line1.ServerTsOnly", "device": "line1", "metric": "server_ts"},
]


@pytest.fixture(scope="module")
def server() -> Iterator[OpcuaTestServer]:
    srv = OpcuaTestServer("--period-ms", "50").start()
    yield srv
    srv.kill()


class _StopAfter(OpcuaSource):
    """The OPC UA source whose partition ends once ``count`` readings went out (for run_main)."""

    def __init__(self, config: Any, count: int) -> None:
        super().__init__(config)
        self.count = count

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> OpcuaPartition:
        part = super().build_part(step_id, for_part, resume_state)
        inner, sent = part.next_batch, [0]

        def next_batch() -> list[Reading]:
            if sent[0] >= self.count:
                part.close()
                raise StopIteration
            batch = inner()
            sent[0] += len(batch)
            return batch

        part.next_batch = next_batch  # type: ignore[method-assign]
        return part


def test_values_timestamps_and_quality_flow_through_bytewax(server: OpcuaTestServer) -> None:
    config = source_config(server.url, NODES, name="flow")
    out: list[Reading] = []
    flow = Dataflow("opcua_test")
    op.output("out", op.input("in", flow, _StopAfter(config, 240)), TestingSink(out))
    run_main(flow)

    assert len(out) >= 240
    assert {r.source for r in out} == {"opcua"}
    assert {r.tenant for r in out} == {"plant-a"}
    assert {r.device for r in out} == {"line1"}

    counters = of_metric(out, "counter")
    assert len(counters) >= 10
    assert all(type(r.value) is int for r in counters)
    values = [r.value for r in counters]
    assert values == sorted(values) and len(set(values)) == len(values)
    # The event time is the SourceTimestamp the server set, not the receive time.
    assert all(r.ts == COUNTER_EPOCH + timedelta(seconds=int(r.value)) for r in counters)

    temperatures = of_metric(out, "temperature")  # resolved from its browse path
    assert temperatures and all(type(r.value) is float and r.unit == "degC" for r in temperatures)
    assert all(
        r.ts.tzinfo is not None and abs(datetime.now(UTC) - r.ts) < timedelta(minutes=5)
        for r in temperatures
    )
    assert {type(r.value) for r in of_metric(out, "running")} == {bool}
    assert all(
        isinstance(r.value, str) and r.value.startswith("state-") for r in of_metric(out, "state")
    )

    # Without a SourceTimestamp the ServerTimestamp is the event time.
    server_ts = of_metric(out, "server_ts")
    assert server_ts and all(
        r.ts == SERVER_TS_EPOCH + timedelta(seconds=float(r.value)) for r in server_ts
    )


def test_status_code_maps_to_quality(server: OpcuaTestServer) -> None:
    part = open_partition(source_config(server.url, NODES[4:5], name="quality"))
    try:
        readings = collect(
            part, lambda rs: len({r.quality for r in rs}) == 3, what="all three qualities"
        )
    finally:
        part.close()
    for r in readings:
        if r.quality == "bad":  # the server sends no value with Bad: the status name stands in
            assert r.value == "BadSensorFailure" and r.attributes == {"status": "BadSensorFailure"}
        elif r.quality == "uncertain":
            assert int(r.value) % 3 == 1 and r.attributes == {"status": "UncertainLastUsableValue"}
        else:
            assert int(r.value) % 3 == 0 and r.attributes is None


def test_absolute_deadband_suppresses_small_changes(server: OpcuaTestServer) -> None:
    # The same variable twice: once without a deadband, once with 1.0. It moves
    # +0.1 per tick and +10 every 10th tick.
    nodes: list[dict[str, Any]] = [
        {"node_id": "ns=2;s=Line1.Stepped", "device": "line1", "metric": "all"},
        {
            "node_id": "ns=2;s=Line1.Stepped",
            "device": "line1",
            "metric": "deadband",
            "deadband_type": "absolute",
            "deadband_value": 1.0,
        },
    ]
    part = open_partition(source_config(server.url, nodes, name="deadband"))
    try:
        readings = collect(
            part, lambda rs: len(of_metric(rs, "deadband")) >= 4, what="deadband readings"
        )
    finally:
        part.close()

    def steps(readings: list[Reading]) -> list[float]:
        return [round(float(b.value) - float(a.value), 3) for a, b in pairwise(readings)]

    assert 0.1 in steps(of_metric(readings, "all"))
    assert all(step > 1.0 for step in steps(of_metric(readings, "deadband")))


def test_polling_mode_reads_every_interval(server: OpcuaTestServer) -> None:
    part = open_partition(source_config(server.url, NODES[:2], name="polling", mode="polling"))
    try:
        readings = collect(
            part, lambda rs: len(of_metric(rs, "counter")) >= 5, what="polled counters"
        )
    finally:
        part.close()
    counters = of_metric(readings, "counter")
    assert all(r.ts == COUNTER_EPOCH + timedelta(seconds=int(r.value)) for r in counters)
    assert [r.value for r in counters] == sorted(r.value for r in counters)
    assert of_metric(readings, "temperature")


@pytest.mark.parametrize("mode", ["subscription", "polling"])
def test_unknown_nodes_are_reported_and_the_others_flow(server: OpcuaTestServer, mode: str) -> None:
    name = f"unknown-{mode}"
    nodes: list[dict[str, Any]] = [
        *NODES[:1],
        {"node_id": "ns=2;s=Line1.DoesNotExist", "device": "line1", "metric": "ghost"},
        {"browse_path": "2:Plant/2:Nowhere", "device": "line1", "metric": "ghost2"},
    ]
    before = NODE_ERRORS.value(endpoint=name)
    part = open_partition(source_config(server.url, nodes, name=name, mode=mode))
    try:
        readings = collect(part, lambda rs: len(rs) >= 5)
    finally:
        part.close()
    assert {r.metric for r in readings} == {"counter"}
    assert NODE_ERRORS.value(endpoint=name) - before == 2


def test_browse_lists_variables_and_yaml_builds_a_config(
    server: OpcuaTestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["browse", server.url, "--node", "ns=2;s=Line1"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "node_id\tbrowse_path\tdata_type"
    assert "ns=2;s=Line1.Temperature\t2:Plant/2:Line1/2:Temperature\tDouble" in table
    assert "ns=2;s=Line1.Running\t2:Plant/2:Line1/2:Running\tBoolean" in table
    assert len(table) == 1 + 7

    assert main(["browse", server.url, "--yaml"]) == 0
    nodes = yaml.safe_load(capsys.readouterr().out)["nodes"]
    parsed = [OpcuaNodeConfig.model_validate(n) for n in nodes]
    assert {n.metric for n in parsed} >= {"Temperature", "Counter", "State"}
    # What browse printed is what the source accepts: it resolves and reads.
    part = open_partition(source_config(server.url, nodes, name="browsed"))
    try:
        readings = collect(part, lambda rs: {"Temperature", "Counter"} <= {r.metric for r in rs})
    finally:
        part.close()
    assert {r.device for r in readings} == {"Line1"}

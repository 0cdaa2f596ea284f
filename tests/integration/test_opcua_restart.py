"""The OPC UA source survives server crashes and hangs without a StreamForge restart.

The competitor bug we guard against: after a server restart the client keeps
a dead session and subscription (BadNodeIdUnknown / "state Closed") until
the whole pipeline is restarted. Here the same partition object keeps
running while the server process is killed and started again on the same
port, or frozen; data must resume by itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from connectors.opcua.handoff import BUFFER_FULL
from connectors.opcua.session import CONNECTED, RECONNECTS
from schemas.models import Reading
from tests.integration.opcua_harness import (
    OpcuaTestServer,
    collect,
    of_metric,
    open_partition,
    source_config,
)

NODES = [
    {"node_id": "ns=2;s=Line1.Counter", "device": "line1", "metric": "counter"},
    # A browse path is resolved again on the new server.
    {"browse_path": "2:Plant/2:Line1/2:Temperature", "device": "line1", "metric": "temperature"},
]


@pytest.fixture(scope="module")
def server() -> Iterator[OpcuaTestServer]:
    srv = OpcuaTestServer("--period-ms", "50").start()
    yield srv
    srv.kill()


RESTARTED_AT = 1_000_000  # the restarted server counts from here: its values are recognisable


def _restarted(readings: list[Reading]) -> bool:
    """``done``: 10 counters from the restarted server, and its temperature too."""
    fresh = [r for r in of_metric(readings, "counter") if int(r.value) >= RESTARTED_AT]
    return len(fresh) >= 10 and bool(of_metric(readings[-40:], "temperature"))


def test_data_resumes_after_server_is_killed_and_restarted(server: OpcuaTestServer) -> None:
    # Both reading modes at once against the same server: one crash, two recoveries to check.
    modes = ("subscription", "polling")
    reconnects = {m: RECONNECTS.value(endpoint=f"restart-{m}") for m in modes}
    parts = {
        m: open_partition(source_config(server.url, NODES, name=f"restart-{m}", mode=m))
        for m in modes
    }
    try:
        for mode, part in parts.items():
            collect(part, lambda rs: len(of_metric(rs, "counter")) >= 20, what=f"{mode} data")

        server.kill()
        # Same port, fresh process: no sessions, no subscriptions.
        server.start("--first-tick", str(RESTARTED_AT))

        after = {
            m: collect(part, _restarted, timeout=60, what=f"{m} data after restart")
            for m, part in parts.items()
        }
    finally:
        for part in parts.values():
            part.close()
    for mode in modes:
        fresh = [
            int(r.value) for r in of_metric(after[mode], "counter") if int(r.value) >= RESTARTED_AT
        ]
        assert fresh == sorted(fresh), mode  # a live, advancing stream, not one stale value
        assert RECONNECTS.value(endpoint=f"restart-{mode}") - reconnects[mode] == 1, mode
        assert CONNECTED.value(endpoint=f"restart-{mode}") == 0  # closed by part.close()


def test_hung_server_is_detected_and_the_session_rebuilt(server: OpcuaTestServer) -> None:
    name = "hung"
    reconnects = RECONNECTS.value(endpoint=name)
    part = open_partition(source_config(server.url, NODES, name=name))
    try:
        collect(part, lambda rs: len(of_metric(rs, "counter")) >= 10)
        server.freeze()  # the socket stays open; nothing answers (watchdog / keep-alive territory)
        collect(
            part, lambda rs: CONNECTED.value(endpoint=name) == 0, timeout=30, what="loss detected"
        )
        server.thaw()
        after = collect(
            part,
            lambda rs: len(of_metric(rs, "counter")) >= 20,
            timeout=30,
            what="data after the server thawed",
        )
    finally:
        part.close()
    counters = [int(r.value) for r in of_metric(after, "counter")]
    assert counters[-1] > counters[0]
    assert RECONNECTS.value(endpoint=name) - reconnects >= 1


def test_stalled_flow_pauses_publishing_and_recovers_an_expired_subscription(
    server: OpcuaTestServer,
) -> None:
    # The flow stops draining: the 20-reading buffer fills, publishing pauses (counted),
    # the server expires the subscription after 1 s without Publish requests. Once the
    # flow drains again, the silence watchdog notices and the session is rebuilt.
    name = "stalled"
    full = BUFFER_FULL.value(endpoint=name)
    reconnects = RECONNECTS.value(endpoint=name)
    config = source_config(
        server.url, NODES[:1], name=name, buffer_size=20, subscription_lifetime_s=1, keepalive_s=0.2
    )
    part = open_partition(config)
    try:
        collect(part, lambda rs: len(rs) >= 5)
        time.sleep(3)  # the stall: nobody calls next_batch
        after = collect(
            part,
            lambda rs: RECONNECTS.value(endpoint=name) > reconnects and len(rs) >= 60,
            timeout=30,
            what="data from the rebuilt subscription",
        )
    finally:
        part.close()
    assert BUFFER_FULL.value(endpoint=name) > full
    values = [int(r.value) for r in after]
    assert values == sorted(values) and len(set(values)) == len(values)  # in order, no duplicates

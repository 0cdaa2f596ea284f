"""``POST /ingest`` served by the bare ASGI fast path answers exactly as the FastAPI route would.

``api.main.StreamForgeApp`` hands ``POST /ingest`` to
``api.routers.ingest.serve_ingest`` before FastAPI's own ``__call__``; the
route stays for OpenAPI and as the reference. Both are driven here with
the same requests, on real Kafka and TimescaleDB, and must give the same
status, body and headers that matter.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from api.main import StreamForgeApp, create_app
from tests.integration.api_harness import World, api_settings

pytest_plugins = ["tests.integration.api_harness"]
pytestmark = [pytest.mark.timescale, pytest.mark.kafka]


class RouteOnly:
    """The app as plain FastAPI would serve it: ``POST /ingest`` through the route."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await FastAPI.__call__(self.app, scope, receive, send)


@pytest.fixture(scope="module")
def clients(api_world: World, kafka_bootstrap: str) -> Iterator[tuple[TestClient, TestClient]]:
    settings = api_settings(api_world, kafka_bootstrap, api_supervise_flows=False)
    fast_app = create_app(settings)
    assert isinstance(fast_app, StreamForgeApp)
    with (
        TestClient(fast_app) as fast,
        TestClient(RouteOnly(create_app(settings))) as route,  # type: ignore[arg-type]
    ):
        yield fast, route


def _cases(world: World) -> list[tuple[str, dict[str, str], bytes]]:
    op = {**world.headers("plant-a", "operator"), "Content-Type": "application/json"}
    viewer = {**world.headers("plant-a", "viewer"), "Content-Type": "application/json"}
    one = json.dumps({"device": "press-1", "metric": "temperature", "value": 70.5}).encode()
    batch = json.dumps(
        [
            {"device": "press-1", "metric": "temperature", "value": 71.5},
            {"device": "press-1", "metric": "pressure", "value": "NaN", "bogus": 1},
            {"device": "press-2", "metric": "pressure", "value": 2.0, "tenant": "plant-b"},
            {"device": "press-2", "metric": "pressure", "value": 3.0},
        ]
    ).encode()
    return [
        ("one reading", op, one),
        ("batch with rejections", op, batch),
        ("not JSON", op, b"{nope"),
        ("empty body", op, b""),
        ("no credential", {"Content-Type": "application/json"}, one),
        ("unknown key", {"X-API-Key": "sfk_00000000_nope"}, one),
        ("bad bearer token", {"Authorization": "Bearer a.b.c"}, one),
        ("viewer", viewer, one),
        ("too large", op, b"[" + b" " * (2 * 1024 * 1024 + 10) + b"]"),
    ]


def _answer(client: TestClient, headers: dict[str, str], body: bytes) -> tuple:
    r = client.post("/ingest", content=body, headers=headers)
    return (
        r.status_code,
        r.json(),
        r.headers.get("content-type"),
        r.headers.get("www-authenticate"),
        int(r.headers["content-length"]) == len(r.content),
    )


def test_fast_path_answers_like_the_route(clients, api_world: World):
    fast, route = clients
    for name, headers, body in _cases(api_world):
        fast_answer = _answer(fast, headers, body)
        assert fast_answer == _answer(route, headers, body), name
        assert fast_answer[2] == "application/json" and fast_answer[4], name
    # And the answers are the expected ones, not merely equal.
    answers = {name: _answer(fast, h, b) for name, h, b in _cases(api_world)}
    assert answers["one reading"][:2] == (200, {"accepted": 1, "rejected": 0, "errors": []})
    status, result, *_ = answers["batch with rejections"]
    assert status == 200 and result["accepted"] == 2 and result["rejected"] == 2
    assert [e["index"] for e in result["errors"]] == [1, 2]
    assert "tenant 'plant-b' is not yours" in result["errors"][1]["reason"]
    assert answers["no credential"][0] == 401 and answers["no credential"][3] == "Bearer"
    assert answers["unknown key"][0] == 401 and answers["bad bearer token"][0] == 401
    assert answers["viewer"][0] == 403 and "operator" in answers["viewer"][1]["detail"]
    assert answers["too large"][0] == 413


def test_body_in_several_chunks_is_read_whole(clients, api_world: World):
    fast, route = clients
    items = [{"device": f"chunk-{i}", "metric": "m", "value": i} for i in range(300)]
    body = json.dumps(items).encode()
    headers = {**api_world.headers("plant-a", "operator"), "Content-Type": "application/json"}

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    for client in (fast, route):
        r = client.post("/ingest", content=chunks(), headers=headers)  # chunked: more_body
        assert r.status_code == 200, r.text
        assert r.json() == {"accepted": 300, "rejected": 0, "errors": []}


def test_produced_counters_are_up_to_date_when_the_answer_comes(clients, api_world: World):
    # Counted in the Kafka poll thread, before the request's future resolves.
    from api.kafka import PRODUCED
    from api.routers.ingest import ACCEPTED

    fast, _ = clients
    topic = api_world.topics["raw"]
    produced, accepted = PRODUCED.value(topic=topic), ACCEPTED.value()
    headers = {**api_world.headers("plant-a", "operator"), "Content-Type": "application/json"}
    two_devices = [
        {"device": "count-1", "metric": "m", "value": 1},
        {"device": "count-2", "metric": "m", "value": 2},
        {"device": "count-1", "metric": "m", "value": 3},
    ]
    for _ in range(5):
        assert fast.post("/ingest", json=two_devices, headers=headers).status_code == 200
    assert PRODUCED.value(topic=topic) - produced == 10  # one message per device and request
    assert ACCEPTED.value() - accepted == 15
    metrics = fast.get("/metrics").text
    assert f'streamforge_api_kafka_produced_total{{topic="{topic}"}}' in metrics

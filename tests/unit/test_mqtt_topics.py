"""MQTT source config and topic routing: pure logic, no broker."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from connectors.mqtt.client import connect_arguments, parse_broker_url, subscription_requests
from connectors.mqtt.config import (
    MqttSourceConfig,
    MqttSubscription,
    filters_overlap,
    parse_topic_template,
)
from connectors.mqtt.topics import TopicRouter
from flows.config import load_pipeline_config


def sub(topic: str, **kw: object) -> MqttSubscription:
    return MqttSubscription(topic=topic, **kw)


def test_template_fields_and_filter() -> None:
    s = sub("plant/{site}/+/{device}/{metric}/#")
    assert s.filter == "plant/+/+/+/+/#"
    assert s.fields == ("site", "device", "metric")


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("", "must not be empty"),
        ("a/{x}/{x}", "appears twice"),
        ("a/dev-{x}", "must fill a whole level"),
        ("a/#/b", "must be the last level"),
        ("a/b+c", "mixes a wildcard"),
        ("$share/g/a/b", "shared_group"),
    ],
)
def test_bad_templates_are_rejected(template: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_topic_template(template)


def test_router_takes_fields_from_levels_and_merges_defaults() -> None:
    router = TopicRouter(
        [
            sub("plant/{site}/{device}/{metric}", format="number", defaults={"unit": "C"}),
            sub("plant/{site}/#", format="array", defaults={"device": "fallback"}),
        ]
    )
    assert router.route("plant/north/press-1/temp") == (
        "number",
        {"unit": "C", "site": "north", "device": "press-1", "metric": "temp"},
    )
    # Too many levels for the first template: the second (multi-level) matches.
    assert router.route("plant/north/press-1/temp/extra") == (
        "array",
        {"device": "fallback", "site": "north"},
    )
    assert router.route("plant") is None
    assert router.route("other/north/press-1/temp") is None


def test_topic_fields_override_static_defaults() -> None:
    router = TopicRouter([sub("t/{device}", defaults={"device": "static", "tenant": "acme"})])
    assert router.route("t/real") == ("auto", {"device": "real", "tenant": "acme"})


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(alphabet="abc-_9", min_size=1, max_size=6), min_size=1, max_size=5))
def test_router_matches_exactly_what_the_mqtt_filter_matches(levels: list[str]) -> None:
    """A field level behaves like '+': it matches any single level and captures it."""
    template = "/".join(f"{{f{i}}}" if i % 2 else level for i, level in enumerate(levels))
    router = TopicRouter([sub(template)])
    topic = "/".join(levels)
    route = router.route(topic)
    assert route is not None
    assert route[1] == {f"f{i}": level for i, level in enumerate(levels) if i % 2}
    assert router.route(topic + "/more") is None


@pytest.mark.parametrize(
    ("first", "second", "overlap"),
    [
        ("a/+/c", "a/b/+", True),
        ("a/#", "a", True),
        ("a/#", "b/#", False),
        ("a/+", "a/+/c", False),
        ("+/+", "a/b", True),
        ("plant/+/+/+", "batch/+/+", False),
        ("#", "anything/at/all", True),
    ],
)
def test_filters_overlap(first: str, second: str, overlap: bool) -> None:
    assert filters_overlap(first, second) is overlap
    assert filters_overlap(second, first) is overlap


def test_overlapping_subscriptions_are_rejected() -> None:
    """An MQTT 5 broker would deliver a message matching both twice."""
    with pytest.raises(ValidationError, match="overlap"):
        MqttSourceConfig(subscriptions=[{"topic": "p/{site}/{device}"}, {"topic": "p/north/#"}])


def test_config_defaults_and_validation() -> None:
    config = MqttSourceConfig(subscriptions=[{"topic": "a/{device}/{metric}"}])
    assert config.protocol == "5" and config.ack == "epoch" and config.persistent_session
    assert config.subscriptions[0].qos == 1
    with pytest.raises(ValidationError, match="needs shared_group"):
        MqttSourceConfig(clients=2, subscriptions=[{"topic": "a"}])
    with pytest.raises(ValidationError, match="queue_size must be >= receive_maximum"):
        MqttSourceConfig(receive_maximum=100, queue_size=10, subscriptions=[{"topic": "a"}])
    with pytest.raises(ValidationError, match="subscriptions"):
        MqttSourceConfig()  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="qos"):
        MqttSourceConfig(subscriptions=[{"topic": "a", "qos": 2}])


def test_password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    config = MqttSourceConfig(
        username="u", password_env="SF_TEST_PW", subscriptions=[{"topic": "a"}]
    )
    monkeypatch.setenv("SF_TEST_PW", "pw")
    assert config.resolved_password() == "pw"
    monkeypatch.delenv("SF_TEST_PW")
    with pytest.raises(ValueError, match="SF_TEST_PW is not set"):
        config.resolved_password()


def test_broker_urls() -> None:
    assert parse_broker_url("mqtt://h").port == 1883
    tls = parse_broker_url("mqtts://h:8884")
    assert (tls.host, tls.port, tls.tls) == ("h", 8884, True)
    with pytest.raises(ValueError, match="scheme"):
        parse_broker_url("http://h")


def test_shared_subscriptions_and_session_properties() -> None:
    config = MqttSourceConfig(
        clients=2,
        shared_group="g1",
        session_expiry="2h",
        receive_maximum=500,
        subscriptions=[{"topic": "a/{device}", "qos": 0}, {"topic": "b/#"}],
    )
    requests = subscription_requests(config, config.shared_group)
    assert [(topic, options.QoS) for topic, options in requests] == [
        ("$share/g1/a/+", 0),
        ("$share/g1/b/#", 1),
    ]
    arguments = connect_arguments(config)
    assert arguments["clean_start"] is False
    assert arguments["properties"].SessionExpiryInterval == 7200
    assert arguments["properties"].ReceiveMaximum == 500
    v3 = config.model_copy(update={"protocol": "3.1.1"})
    assert connect_arguments(v3) == {}
    assert subscription_requests(v3, None) == [("a/+", 0), ("b/#", 1)]


def test_sample_config_is_valid() -> None:
    """connectors/mqtt/sample.yaml, the documented sample, loads as a pipeline config."""
    from pathlib import Path

    sample = Path(__file__).parents[2] / "connectors" / "mqtt" / "sample.yaml"
    config = load_pipeline_config(sample, env={})
    mqtt_sources = [s for s in config.sources if s.type == "mqtt"]
    assert mqtt_sources and all(isinstance(s, MqttSourceConfig) for s in mqtt_sources)

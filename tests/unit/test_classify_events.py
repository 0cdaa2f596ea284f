"""Classification (flows/classify.py) and change-of-state events (flows/events.py)."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flows.classify import Classifier, kind_by_value, log_level, to_log_record
from flows.config import PipelineConfig
from flows.events import EventDetector
from schemas.config import ClassificationRule
from schemas.models import Event, LogRecord, Reading, adapter, to_json

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def reading(value: Any, second: float = 0, **kw: Any) -> Reading:
    kw.setdefault("device", "door-1")
    kw.setdefault("metric", "state.open")
    return Reading(ts=T0 + timedelta(seconds=second), value=value, **kw)


RULES = [
    ClassificationRule(metric="log.*", kind="log"),
    ClassificationRule(metric="alarm.*", kind="alarm"),
    ClassificationRule(metric="status", device="plc-*", kind="event"),
    ClassificationRule(metric="status", kind="log"),
    ClassificationRule(metric="counter", kind="telemetry"),
]


@pytest.mark.parametrize(
    ("device", "metric", "resolved"),
    [
        ("press-1", "log.plc", "log"),
        ("press-1", "alarm.overheat", "alarm"),
        ("plc-7", "status", "event"),  # first matching rule wins
        ("press-1", "status", "log"),
        ("press-1", "temperature", None),
        ("press-1", "Log.plc", None),  # globs are case-sensitive
    ],
)
def test_resolve_first_matching_rule(device: str, metric: str, resolved: str | None) -> None:
    classifier = Classifier(RULES)
    assert classifier.resolve(device, metric) == resolved
    assert classifier.resolve(device, metric) == resolved  # cached answer is the same


@pytest.mark.parametrize(
    ("metric", "value", "kind"),
    [
        ("temperature", 71.5, "telemetry"),
        ("temperature", 3, "telemetry"),
        ("running", True, "event"),  # bool is not a number here
        ("mode", "AUTO", "event"),
        ("log.plc", 5, "log"),  # a rule beats the value type
        ("alarm.x", True, "alarm"),
        ("counter", 4, "telemetry"),
        ("counter", "n/a", "event"),  # telemetry rule, non-numeric value
    ],
)
def test_kind_of(metric: str, value: Any, kind: str) -> None:
    assert Classifier(RULES).kind_of("press-1", metric, value) == kind


def test_fallback_by_value_type() -> None:
    assert [kind_by_value(v) for v in (1, 1.5, True, "x")] == [
        "telemetry",
        "telemetry",
        "event",
        "event",
    ]


def test_default_config_rules() -> None:
    classifier = Classifier(PipelineConfig().classification)
    assert classifier.kind_of("sim-1", "temperature", 20.0) == "telemetry"
    assert classifier.kind_of("sim-1", "state.mode", "RUN") == "event"
    assert classifier.kind_of("sim-1", "alarm.fault", True) == "alarm"
    assert classifier.kind_of("sim-1", "log.app", "started") == "log"


def test_cache_is_bounded_and_answers_stay_right() -> None:
    classifier = Classifier(RULES, cache_size=10)
    for i in range(1000):
        assert classifier.resolve(f"dev-{i}", "log.x" if i % 2 else "temp") == (
            "log" if i % 2 else None
        )
        assert len(classifier._cache) <= 10


def test_classifier_pickles() -> None:
    classifier = pickle.loads(pickle.dumps(Classifier(RULES)))
    assert classifier.resolve("plc-1", "status") == "event"
    assert classifier.resolve("press-1", "status") == "log"


# --- log records ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("attributes", "level", "component"),
    [
        (None, "info", "log.plc"),
        ({"level": "ERROR", "component": "hydraulics"}, "error", "hydraulics"),
        ({"level": "warn"}, "warning", "log.plc"),
        ({"level": "fatal"}, "critical", "log.plc"),
        ({"level": "verbose-ish"}, "info", "log.plc"),
        ({"component": ""}, "info", "log.plc"),
    ],
)
def test_to_log_record(attributes: dict[str, str] | None, level: str, component: str) -> None:
    r = reading(42, device="press-1", metric="log.plc", tenant="acme", attributes=attributes)
    record = to_log_record(r)
    assert (record.level, record.component, record.message) == (level, component, "42")
    assert (record.tenant, record.device, record.metric, record.ts) == (
        "acme",
        "press-1",
        "log.plc",
        T0,
    )
    assert adapter(LogRecord).validate_json(to_json(record)) == record


def test_log_level_names() -> None:
    assert [log_level(x) for x in (None, "", " Debug ", "trace", "crit", "notice")] == [
        "info",
        "info",
        "debug",
        "debug",
        "critical",
        "info",
    ]


# --- events ---------------------------------------------------------------------


def test_first_value_is_an_event_then_only_changes() -> None:
    detector = EventDetector()
    values = [False, False, True, True, True, False, "jammed", "jammed"]
    events = [detector.update(reading(v, second=i)) for i, v in enumerate(values)]
    assert [(e.previous, e.value) if e else None for e in events] == [
        (None, False),
        None,
        (False, True),
        None,
        None,
        (True, False),
        (False, "jammed"),
        None,
    ]
    first = events[0]
    assert first is not None
    assert (first.tenant, first.device, first.metric, first.ts, first.source) == (
        "default",
        "door-1",
        "state.open",
        T0,
        "simulator",
    )
    assert adapter(Event).validate_json(to_json(first)) == first


def test_type_change_is_a_change() -> None:
    detector = EventDetector()
    detector.update(reading(1))
    event = detector.update(reading(True))
    assert event is not None and (event.previous, event.value) == (1, True)
    assert detector.update(reading(True)) is None


def test_event_detector_pickles_mid_stream() -> None:
    detector = EventDetector()
    detector.update(reading("RUN"))
    restored = pickle.loads(pickle.dumps(detector))
    assert restored.update(reading("RUN")) is None  # no re-emission after recovery
    event = restored.update(reading("STOP"))
    assert event is not None and event.previous == "RUN"
    fresh = pickle.loads(pickle.dumps(EventDetector()))
    first = fresh.update(reading(0))
    assert first is not None and first.previous is None

"""Pipeline config and connection settings: defaults, YAML, env overrides, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.config import PipelineConfig, load_pipeline_config
from schemas.config import ConfigError, parse_duration
from schemas.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def test_default_config_runs_the_simulator_to_stdout() -> None:
    config = load_pipeline_config(env={})
    assert [s.type for s in config.sources] == ["simulator"]
    assert [s.type for s in config.sinks] == ["stdout"]
    assert config.rollups.window_seconds() == [("1m", 60.0), ("5m", 300.0), ("1h", 3600.0)]


def test_sample_config_is_valid_and_documented() -> None:
    sample = REPO / "deploy" / "pipeline.sample.yaml"
    config = load_pipeline_config(sample, env={})
    assert config.alarms[0].levels == {"warning": 80.0, "critical": 95.0}
    assert config.rollups.allowed_lateness == 300.0
    assert "#" in sample.read_text()


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("tenant: acme\n")
    assert load_pipeline_config(env={"STREAMFORGE_CONFIG": str(path)}).tenant == "acme"


def test_environment_overrides_yaml(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("anomaly: {threshold: 0.8, hold: 4}\n")
    config = load_pipeline_config(
        path,
        env={
            "STREAMFORGE_PIPELINE__ANOMALY__THRESHOLD": "0.95",
            "STREAMFORGE_PIPELINE__ROLLUPS__WINDOWS": "[1m, 15m]",
        },
    )
    assert config.anomaly.threshold == 0.95
    assert config.anomaly.hold == 4  # untouched fields of the YAML survive
    assert config.rollups.windows == ["1m", "15m"]


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("alarms: [{name: a, metric: t, levels: {warning: x}}]", "alarms.0.levels.warning"),
        (
            "alarms: [{name: a, metric: t, levels: {warning: 90, critical: 80}}]",
            "higher thresholds",
        ),
        ("alarms: [{name: a, metric: t, levels: {warning: 80}, clear_at: 85}]", "clear_at 85"),
        ("rollups: {windows: [1m, 90s]}", "not a whole multiple"),
        ("rollups: {watermark_delay: soon}", "rollups.watermark_delay"),
        ("sources: [{type: carrier-pigeon}]", "sources.0"),
        ("sinks: []", "sinks"),
        ("anomaly: {threshold: 0.5, clear_threshold: 0.7}", "clear_threshold"),
        ("tenantt: x", "tenantt: Extra inputs are not permitted"),
        ("- just a list", "mapping at the top level"),
        ("a: [unclosed", "not valid YAML"),
    ],
)
def test_wrong_config_names_the_field_and_problem(
    tmp_path: Path, yaml_text: str, expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_pipeline_config(path, env={})
    message = str(info.value)
    assert expected in message
    assert str(path) in message
    assert "\n" not in message.strip()  # one message, one line


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read pipeline config"):
        load_pipeline_config(tmp_path / "nope.yaml", env={})


def test_durations() -> None:
    assert parse_duration("500ms") == 0.5
    assert parse_duration("5m") == 300.0
    assert parse_duration(7) == 7.0
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("5 minutes")


def test_settings_defaults_match_make_up(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "MQTT_URL", "CONFIG"):
        monkeypatch.delenv(f"STREAMFORGE_{name}", raising=False)
    settings = Settings()
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert settings.database_url.endswith("@127.0.0.1:5433/streamforge")
    assert settings.mqtt_url == "mqtt://127.0.0.1:1883"
    monkeypatch.setenv("STREAMFORGE_DATABASE_URL", "postgresql://u@h:1/d")
    assert Settings().database_url == "postgresql://u@h:1/d"


def test_pipeline_config_json_round_trip() -> None:
    config = PipelineConfig()
    assert PipelineConfig.model_validate_json(config.model_dump_json()) == config

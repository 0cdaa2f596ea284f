"""ModbusSourceConfig: defaults, durations and the mistakes it rejects with a clear message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from connectors.modbus.config import ModbusSourceConfig
from flows.config import load_pipeline_config

SAMPLE = Path(__file__).parents[2] / "connectors" / "modbus" / "sample.yaml"


def _config(tags: list[dict[str, Any]], **device: Any) -> ModbusSourceConfig:
    return ModbusSourceConfig.model_validate(
        {"devices": [{"name": "d", "groups": [{"tags": tags}], **device}]}
    )


def test_defaults_and_durations() -> None:
    config = ModbusSourceConfig.model_validate(
        {
            "devices": [
                {
                    "name": "d",
                    "timeout": "250ms",
                    "backoff_max": "2m",
                    "groups": [
                        {
                            "interval": "100ms",
                            "tags": [
                                {"metric": "a", "address": 0},
                                {"metric": "b", "function": "coil", "address": 0},
                            ],
                        }
                    ],
                }
            ]
        }
    )
    device = config.devices[0]
    assert (device.transport, device.port, device.unit_id, device.word_order) == (
        "tcp",
        502,
        1,
        "ABCD",
    )
    assert (device.timeout, device.backoff_max, device.groups[0].interval) == (0.25, 120.0, 0.1)
    assert [t.type for t in device.groups[0].tags] == ["uint16", "bool"]
    assert (config.tenant, config.status_metric, config.queue_size) == (
        "default",
        "_status.online",
        1000,
    )


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ({"type": "string"}, "needs length"),
        ({"type": "uint16", "length": 2}, "length applies to string"),
        ({"function": "coil", "type": "float32"}, "coil values are bool"),
        ({"function": "coil", "word_order": "CDAB"}, "registers only"),
        ({"type": "int32", "bit": 1}, "bit applies to bool"),
        ({"type": "bool", "scale": 2}, "numbers only"),
        ({"type": "string", "length": 2, "offset": 1}, "numbers only"),
        ({"type": "float64", "address": 65533}, "beyond 65535"),
        ({"type": "int24"}, "Input should be"),
        ({"word_order": "ABDC"}, "Input should be"),
        ({"type": "string", "length": 2, "encoding": "nope"}, "unknown encoding 'nope'"),
    ],
)
def test_bad_tags_are_rejected_with_a_reason(tag: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _config([{"metric": "m", "address": 0, **tag}])


def test_bad_devices_are_rejected() -> None:
    tag = [{"metric": "m", "address": 0}]
    with pytest.raises(ValidationError, match="defined twice"):
        _config([{"metric": "m", "address": 0}, {"metric": "m", "address": 1}])
    with pytest.raises(ValidationError, match="needs serial_port"):
        _config(tag, transport="rtu")
    with pytest.raises(ValidationError, match="more than max_registers_per_read"):
        _config(
            [{"metric": "s", "address": 0, "type": "string", "length": 10}],
            max_registers_per_read=8,
        )
    with pytest.raises(ValidationError, match="not a duration"):
        _config(tag, timeout="soon")
    with pytest.raises(ValidationError, match="backoff_max"):
        _config(tag, backoff_initial=10, backoff_max=1)


def test_groups_of_one_device_need_different_names() -> None:
    """The poller picks a group's requests by name: two of one name would poll each other's tags."""
    two = {
        "name": "p",
        "host": "127.0.0.1",
        "groups": [
            {"tags": [{"metric": "a", "address": 0}]},
            {"interval": "5s", "tags": [{"metric": "b", "address": 1}]},
        ],
    }
    with pytest.raises(ValidationError, match=r"group names must differ, \['default'\]"):
        ModbusSourceConfig.model_validate({"devices": [two]})
    two["groups"][1]["name"] = "slow"  # type: ignore[index]
    assert len(ModbusSourceConfig.model_validate({"devices": [two]}).devices[0].groups) == 2


def test_devices_on_one_gateway_must_share_connection_settings() -> None:
    def device(name: str, port: int) -> dict[str, Any]:
        return {
            "name": name,
            "gateway": "gw",
            "port": port,
            "groups": [{"tags": [{"metric": "m", "address": 0}]}],
        }

    ok = ModbusSourceConfig.model_validate({"devices": [device("a", 502), device("b", 502)]})
    assert list(ok.connections()) == ["gw"]
    with pytest.raises(ValidationError, match="different connection settings"):
        ModbusSourceConfig.model_validate({"devices": [device("a", 502), device("b", 503)]})
    with pytest.raises(ValidationError, match="duplicate device names"):
        ModbusSourceConfig.model_validate({"devices": [device("a", 502), device("a", 502)]})


def test_the_documented_sample_is_a_valid_pipeline_config() -> None:
    config = load_pipeline_config(SAMPLE, env={})
    modbus = [s for s in config.sources if s.type == "modbus"]
    assert modbus, "the sample must contain a modbus source"
    assert {d.transport for s in modbus for d in s.devices} >= {"tcp", "rtu_over_tcp"}

"""MQTT over TLS (test CA, client certificates) and with passwords, on private Mosquitto brokers.

Bad credentials, an untrusted server certificate or an unreachable broker
must stop the source at start with a clear MqttConnectError, not hang.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, run_main

from connectors.mqtt.config import MqttSourceConfig
from connectors.mqtt.source import CONNECTED, MqttConnectError, MqttSource
from schemas.models import RawMessage
from tests.ports import free_port
from tests.support.mqtt_broker import (
    Mosquitto,
    Publisher,
    TlsFiles,
    make_tls_files,
    password_file,
)

pytestmark = [pytest.mark.mqtt, pytest.mark.timeout(30)]

SUBSCRIPTIONS = [{"topic": "secure/{device}/{metric}", "format": "number"}]


def take(config: MqttSourceConfig, publish_url: str, count: int) -> list[RawMessage]:
    """Run the source in a flow until it took ``count`` messages published to ``publish_url``."""

    def publish() -> None:
        while CONNECTED.value(source=config.name, client=f"{config.client_id}-0") != 1:
            time.sleep(0.01)
        publisher = Publisher(publish_url)
        for i in range(count):
            publisher.publish(f"secure/dev-{i}/temperature", str(i))
        publisher.flush()
        publisher.close()

    threading.Thread(target=publish, daemon=True).start()
    out: list[Any] = []
    flow = Dataflow("mqtt_security_test")
    op.output("out", op.input("mqtt", flow, MqttSource(config)), TestingSink(out))
    run_main(flow, epoch_interval=timedelta(milliseconds=100))
    return out


def open_partition(config: MqttSourceConfig) -> None:
    """Build (connect) the source's partition as Bytewax would, then close it."""
    MqttSource(config).build_part("mqtt", "0", None).close()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_broker(tmp_path: Path, tls_files: TlsFiles):
    listener = (
        f"cafile {tls_files.ca}\ncertfile {tls_files.server_cert}\n"
        f"keyfile {tls_files.server_key}\nrequire_certificate true\n"
    )
    with Mosquitto(tmp_path / "tls-broker", listener=listener, plain_port=True) as broker:
        yield broker


def tls_config(broker: Mosquitto, client_id: str, **tls: Any) -> MqttSourceConfig:
    return MqttSourceConfig(
        url=f"mqtts://127.0.0.1:{broker.port}",
        client_id=client_id,
        tls=tls,
        subscriptions=SUBSCRIPTIONS,
        connect_timeout=5,
    )


def test_tls_with_test_ca_and_client_certificate(tls_broker: Mosquitto, tls_files: TlsFiles):
    config = tls_config(
        tls_broker,
        "tls-ok",
        ca_file=tls_files.ca,
        cert_file=tls_files.client_cert,
        key_file=tls_files.client_key,
    ).model_copy(update={"limit": 3})
    out = take(config, f"mqtt://127.0.0.1:{tls_broker.plain_port}", 3)
    assert sorted((m.defaults or {}).get("device", "") for m in out) == ["dev-0", "dev-1", "dev-2"]
    assert sorted(m.payload for m in out) == [b"0", b"1", b"2"]


def test_tls_server_not_signed_by_trusted_ca_fails_at_start(
    tls_broker: Mosquitto, tls_files: TlsFiles
):
    config = tls_config(
        tls_broker,
        "tls-untrusted",
        ca_file=tls_files.other_ca,
        cert_file=tls_files.client_cert,
        key_file=tls_files.client_key,
    )
    with pytest.raises(
        MqttConnectError, match=r"TLS connection to MQTT broker .* failed: .*certif"
    ):
        open_partition(config)


def test_tls_without_required_client_certificate_fails_at_start(
    tls_broker: Mosquitto, tls_files: TlsFiles
):
    config = tls_config(tls_broker, "tls-no-cert", ca_file=tls_files.ca)
    with pytest.raises(MqttConnectError, match=rf"MQTT broker 127.0.0.1:{tls_broker.port}"):
        open_partition(config)


@pytest.fixture
def password_broker(tmp_path: Path):
    passwords = password_file(tmp_path, "plant", "s3cret")
    auth = f"allow_anonymous false\npassword_file {passwords}\n"
    with Mosquitto(tmp_path / "auth-broker", auth=auth) as broker:
        yield broker


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_username_and_password(
    password_broker: Mosquitto, protocol: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("TEST_MQTT_PASSWORD", "s3cret")
    config = MqttSourceConfig(
        url=password_broker.url,
        client_id=f"auth-ok-{protocol}",
        protocol=protocol,
        username="plant",
        password_env="TEST_MQTT_PASSWORD",
        subscriptions=SUBSCRIPTIONS,
        limit=2,
    )
    out: list[Any] = []

    def publish() -> None:
        import paho.mqtt.client as mqtt

        while CONNECTED.value(source="mqtt", client=f"auth-ok-{protocol}-0") != 1:
            time.sleep(0.01)
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        client.username_pw_set("plant", "s3cret")
        client.connect("127.0.0.1", password_broker.port)
        client.loop_start()
        for i in range(2):
            client.publish(f"secure/dev-{i}/temperature", str(i), qos=1).wait_for_publish(10)
        client.disconnect()
        client.loop_stop()

    threading.Thread(target=publish, daemon=True).start()
    flow = Dataflow("mqtt_auth_test")
    op.output("out", op.input("mqtt", flow, MqttSource(config)), TestingSink(out))
    run_main(flow, epoch_interval=timedelta(milliseconds=100))
    assert sorted(m.payload for m in out) == [b"0", b"1"]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_wrong_password_fails_at_start_with_a_clear_message(
    password_broker: Mosquitto, protocol: str
):
    config = MqttSourceConfig(
        url=password_broker.url,
        client_id=f"auth-bad-{protocol}",
        protocol=protocol,
        username="plant",
        password="wrong",
        subscriptions=SUBSCRIPTIONS,
        connect_timeout=10,
    )
    expected = rf"MQTT broker 127.0.0.1:{password_broker.port} refused the connection: "
    with pytest.raises(MqttConnectError, match=expected + r"(Not authorized|Bad user name)"):
        open_partition(config)


def test_refused_connection_stops_the_dataflow(password_broker: Mosquitto):
    """Through Bytewax: the run fails with the reason instead of hanging."""
    config = MqttSourceConfig(
        url=password_broker.url, client_id="auth-flow", subscriptions=SUBSCRIPTIONS
    )
    flow = Dataflow("mqtt_refused_test")
    op.output("out", op.input("mqtt", flow, MqttSource(config)), TestingSink([]))
    with pytest.raises(Exception) as info:  # Bytewax wraps it; checked below
        run_main(flow)
    chain: list[str] = []
    exc: BaseException | None = info.value
    while exc is not None:
        chain.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    assert any("refused the connection: Not authorized" in text for text in chain), chain


def test_unreachable_broker_fails_after_connect_timeout():
    config = MqttSourceConfig(
        url=f"mqtt://127.0.0.1:{free_port()}",
        client_id="nobody-home",
        subscriptions=SUBSCRIPTIONS,
        connect_timeout=1.5,
    )
    with pytest.raises(MqttConnectError, match=r"not reachable within 1.5 s"):
        open_partition(config)

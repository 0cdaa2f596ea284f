"""Private Mosquitto brokers for MQTT tests that need their own (TLS, passwords, restarts).

>>> with Mosquitto(tmp_dir) as broker:          # doctest: +SKIP
...     broker.url                              # 'mqtt://127.0.0.1:<free port>'
...     broker.restart()                        # persistence survives it

Each broker has its own config, log and persistence directory under the
given directory, listens on a free loopback port and is always stopped by
``stop`` / the ``with`` block. The shared broker of ``make up`` is never
touched. Also here: a test CA with server and client certificates
(``cryptography``), a password file (``mosquitto_passwd``) and a tiny
publisher.
"""

from __future__ import annotations

import datetime as dt
import getpass
import ipaddress
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.ports import free_port, wait_port

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"


class Mosquitto:
    """A mosquitto process with its own config and persistence under ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        *,
        listener: str = "",
        auth: str = "allow_anonymous true",
        plain_port: bool = False,
        log_types: str = "all",
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        # A second, plain listener (for a test publisher when the main one needs TLS).
        self.plain_port = free_port() if plain_port else None
        self.listener_options = listener
        self.auth = auth
        self.log_types = log_types.split()
        self.config = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:<port>`` (``mqtts://`` is up to the caller when TLS is on)."""
        return f"mqtt://127.0.0.1:{self.port}"

    def _write_config(self) -> None:
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        self.config.write_text(
            f"user {getpass.getuser()}\n"
            f"per_listener_settings false\n"
            f"{self.auth}\n"
            f"listener {self.port} 127.0.0.1\n"
            f"{self.listener_options}\n"
            + (f"listener {self.plain_port} 127.0.0.1\n" if self.plain_port else "")
            + "persistence true\n"
            f"persistence_location {data}/\n"
            "autosave_interval 60\n"
            "max_queued_messages 1000000\n"
            "max_queued_bytes 0\n"
            "max_inflight_messages 1000\n"
            "max_packet_size 16777216\n"
            "log_dest stdout\n"
            + "".join(f"log_type {kind}\n" for kind in self.log_types)
            + "connection_messages true\n"
        )

    def start(self) -> None:
        """Start mosquitto and wait until its port answers."""
        self._write_config()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_port(self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"mosquitto did not start: {self.log.read_text()[-2000:]}") from None

    def stop(self) -> None:
        """SIGTERM (mosquitto saves its persistence file), SIGKILL if it hangs."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def save(self) -> None:
        """Write the persistence file now (SIGUSR1), as the autosave would."""
        assert self.process is not None
        database = self.workdir / "data" / "mosquitto.db"

        def stamp() -> int:
            return database.stat().st_mtime_ns if database.exists() else 0

        before = stamp()
        time.sleep(0.01)  # a save in this same instant would not change the stamp
        self.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while stamp() == before:
            if time.monotonic() > deadline:
                raise RuntimeError("mosquitto did not save its persistence file")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: a crash; what changed since the last save is lost."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(5)

    def restart(self, down_for: float = 0.0) -> None:
        """Stop, stay down ``down_for`` seconds, start again on the same port."""
        self.stop()
        time.sleep(down_for)
        self.start()

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def password_file(directory: Path, user: str, password: str) -> Path:
    """A mosquitto password file holding one user (made by ``mosquitto_passwd``)."""
    path = directory / "passwords"
    path.touch(mode=0o600)
    subprocess.run([MOSQUITTO_PASSWD, "-b", str(path), user, password], check=True)
    return path


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a throw-away CA, a server certificate for 127.0.0.1 and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # an unrelated CA, to test that an untrusted server is refused


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, common_name: str, server: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
                if server
                else [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256()), key


def make_tls_files(directory: Path) -> TlsFiles:
    """Generate a test CA, a server certificate (127.0.0.1, localhost) and a client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    ca, ca_key = _ca("StreamForge test CA")
    other, _ = _ca("Some other CA")
    server, server_key = _leaf(ca, ca_key, "127.0.0.1", server=True)
    client, client_key = _leaf(ca, ca_key, "streamforge-test-client", server=False)
    files = TlsFiles(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        other_ca=directory / "other-ca.pem",
    )
    files.ca.write_bytes(ca.public_bytes(pem))
    files.other_ca.write_bytes(other.public_bytes(pem))
    files.server_cert.write_bytes(server.public_bytes(pem))
    files.client_cert.write_bytes(client.public_bytes(pem))
    _write_key(files.server_key, server_key)
    _write_key(files.client_key, client_key)
    return files


class Publisher:
    """A paho publisher (MQTT 5, QoS 1 by default); ``flush`` waits until the broker has it all."""

    def __init__(self, url: str, client_id: str = "") -> None:
        host, _, port = url.split("://", 1)[1].partition(":")
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.client.max_inflight_messages_set(1000)
        self.client.connect(host, int(port))
        self.client.loop_start()
        self.infos: list[mqtt.MQTTMessageInfo] = []
        deadline = time.monotonic() + 10
        while not self.client.is_connected():
            if time.monotonic() > deadline:
                raise TimeoutError(f"publisher could not connect to {url}")
            time.sleep(0.01)

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        """Queue one message."""
        self.infos.append(self.client.publish(topic, payload, qos=qos))

    def flush(self, timeout: float = 20.0) -> None:
        """Wait until the broker acknowledged every QoS 1 message published so far."""
        deadline = time.monotonic() + timeout
        for info in self.infos:
            info.wait_for_publish(max(deadline - time.monotonic(), 0.01))
            if not info.is_published():
                raise TimeoutError(f"message {info.mid} not acknowledged by the broker")
        self.infos.clear()

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


REPO = Path(__file__).resolve().parents[2]


class Consumer:
    """``tests/integration/mqtt_consumer.py`` in its own process: a StreamForge MQTT flow."""

    def __init__(
        self,
        config: dict[str, object],
        out: Path,
        *,
        sink_delay: float = 0.0,
        epoch: float = 0.2,
        workers: int = 1,
    ) -> None:
        self.out = out
        self.ready = out.with_suffix(".ready")
        self.log = out.with_suffix(".log")
        self.config_file = out.with_suffix(".json")
        self.config_file.write_text(json.dumps(config))
        self.args = [
            sys.executable, "-m", "tests.integration.mqtt_consumer",
            str(self.config_file), str(out), "--sink-delay", str(sink_delay), "--epoch", str(epoch),
            "--workers", str(workers),
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> Consumer:
        """Start the process; with ``wait``, return once it is connected and subscribed."""
        self.ready.unlink(missing_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.args, cwd=REPO, stdout=log, stderr=log)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait for the ready marker; fail with the consumer's log if it died."""
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            assert self.process is not None
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"consumer not ready: {self.log.read_text()[-3000:]}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: a crash, nothing is cleaned up."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 5 s)."""
        self._end(signal.SIGTERM)

    def _end(self, sig: signal.Signals) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def lines(self) -> list[str]:
        """What the sink wrote so far, one entry per reading."""
        return self.out.read_text().splitlines() if self.out.exists() else []

    def log_text(self) -> str:
        """The consumer's stdout and stderr (JSON log lines)."""
        return self.log.read_text() if self.log.exists() else ""


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` every 50 ms; fail saying ``what`` did not happen in time."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)

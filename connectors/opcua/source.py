"""OPC UA input: subscriptions (or polling) as Readings, surviving server restarts.

>>> from bytewax.dataflow import Dataflow
>>> import bytewax.operators as op
>>> from bytewax.testing import TestingSink
>>> from connectors.opcua.config import OpcuaSourceConfig
>>> config = OpcuaSourceConfig.model_validate({"endpoints": [{
...     "name": "line1", "url": "opc.tcp://127.0.0.1:4840",
...     "nodes": [{"node_id": "ns=2;s=Line1.Temperature", "device": "press-1",
...                "metric": "temperature", "unit": "degC"}]}]})
>>> flow = Dataflow("opcua_demo")
>>> readings = op.input("opcua", flow, OpcuaSource(config))
>>> op.output("out", readings, TestingSink([]))  # doctest: +SKIP
>>> OpcuaSource(config).list_parts()      # one partition per endpoint, by name
['line1']

Command line helpers::

    python -m connectors.opcua browse opc.tcp://127.0.0.1:4840 [--node "ns=2;i=1"] [--yaml]
    python -m connectors.opcua gen-cert --out DIR [--name client] [--app-uri URI]

Partitions. One partition per endpoint, keyed by the endpoint's ``name``;
Bytewax spreads partitions over workers. A partition owns a thread running
its own asyncio loop, where :class:`~connectors.opcua.session.EndpointSession`
connects, subscribes and reconnects. Values reach the Bytewax worker only
through a bounded :class:`~connectors.opcua.handoff.HandoffBuffer`: when it
is full the loop *waits* for space, which pauses OPC UA publishing instead
of dropping data (counted and logged; see that module). The snapshot is
``None``: OPC UA servers cannot replay, so a resumed flow continues with
live values.

Opening. Building a partition waits for the first connection attempt (at
most ``open_timeout_s``). A configuration problem (wrong credentials, no
endpoint with the requested security, untrusted or mismatched certificate,
none of the nodes exists) raises :class:`OpcuaOpenError` with a readable
message, once. An unreachable server is not an error: the partition starts
and keeps reconnecting with backoff, logging each failure.

Readings: ``source="opcua"``, ``device``/``metric``/``unit`` from the node's
config, ``tenant`` from the endpoint (else the source), ``quality`` from the
StatusCode severity, ``ts`` the source timestamp (else the server timestamp,
else the receive time); see :mod:`connectors.opcua.convert`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading
from datetime import UTC, datetime, timedelta

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from connectors.opcua.client import OpcuaOpenError
from connectors.opcua.config import OpcuaEndpointConfig, OpcuaSourceConfig
from connectors.opcua.connection import describe
from connectors.opcua.handoff import HandoffBuffer
from connectors.opcua.nodes import NodePlan
from connectors.opcua.session import EndpointSession
from connectors.runtime.logs import get_logger
from schemas.models import Reading

__all__ = ["OpcuaOpenError", "OpcuaPartition", "OpcuaSource"]

_log = get_logger("connectors.opcua.source")

_MAX_BATCH = 5_000  # readings per next_batch
_IDLE_AWAKE = timedelta(milliseconds=20)  # pacing when the buffer is empty (bounds added latency)


class _LoopThread:
    """A daemon thread running one asyncio loop for one endpoint session."""

    def __init__(self, session: EndpointSession) -> None:
        self.session = session
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self.thread = threading.Thread(
            target=self._main, name=f"opcua-{session.cfg.name}", daemon=True
        )

    def start(self) -> None:
        self.thread.start()
        self._started.wait()

    def _main(self) -> None:
        asyncio.run(self._amain())

    async def _amain(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._started.set()
        while not self._stop.is_set():
            try:
                await self.session.run(self._stop)
                return  # stopped, or a configuration error at open (the partition raises it)
            except Exception:
                # A bug, not an outage: keep the endpoint alive rather than go silent.
                _log.exception(
                    "OPC UA session crashed; restarting it",
                    extra={"device": self.session.cfg.name, "step": "session"},
                )
                await asyncio.sleep(self.session.cfg.reconnect_max_s)

    def stop(self, timeout: float) -> None:
        """Ask the session to disconnect and wait up to ``timeout`` s for the thread to end."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(timeout)


class OpcuaPartition(StatefulSourcePartition[Reading, None]):
    """The readings of one OPC UA endpoint. Snapshot: ``None`` (live data, nothing to resume)."""

    def __init__(self, cfg: OpcuaEndpointConfig, tenant: str) -> None:
        self.cfg = cfg
        self.buffer: HandoffBuffer[Reading] = HandoffBuffer(cfg.buffer_size, cfg.name)
        self.session = EndpointSession(cfg, tenant, self.buffer)
        self._thread = _LoopThread(self.session)
        self._thread.start()
        self._idle = False
        extra = {"device": cfg.name, "step": "open", "url": cfg.url}
        if not self.session.opened.wait(cfg.open_timeout_s):
            _log.warning(
                "OPC UA endpoint did not answer within open_timeout_s; still trying", extra=extra
            )
        elif self.session.open_fatal:
            self._thread.stop(cfg.request_timeout_s)
            error = self.session.open_error
            assert error is not None
            raise error
        elif self.session.open_error is not None:
            _log.warning(
                "OPC UA endpoint not reachable yet (%s); reconnecting in the background",
                describe(self.session.open_error),
                extra=extra,
            )

    def next_batch(self) -> list[Reading]:
        """The readings received since the last call (never blocks)."""
        items = self.buffer.drain(_MAX_BATCH)
        self._idle = not items
        return items

    def next_awake(self) -> datetime | None:
        """Right away while readings flow; 20 ms later when the buffer was empty."""
        return datetime.now(UTC) + _IDLE_AWAKE if self._idle else None

    def snapshot(self) -> None:
        """Nothing to resume: OPC UA has no replay."""
        return None

    def close(self) -> None:
        """Disconnect (deleting the subscription on the server) and stop the thread."""
        self._thread.stop(self.cfg.request_timeout_s + 1)


class OpcuaSource(FixedPartitionedSource[Reading, None]):
    """Readings from OPC UA endpoints, one partition per endpoint (key: endpoint ``name``).

    Node ids and browse paths are parsed here, so a typo fails when the
    flow is built, not at the first connection.
    """

    def __init__(self, config: OpcuaSourceConfig) -> None:
        self.config = config
        for endpoint in config.endpoints:
            NodePlan(endpoint, config.tenant)  # parses every address: ValueError on a typo

    def list_parts(self) -> list[str]:
        """Every endpoint name (Bytewax assigns each to one worker)."""
        return [endpoint.name for endpoint in self.config.endpoints]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> OpcuaPartition:
        """Connect the endpoint ``for_part``; raises OpcuaOpenError on configuration problems."""
        endpoint = next(e for e in self.config.endpoints if e.name == for_part)
        return OpcuaPartition(endpoint, self.config.tenant)


# -- command line ------------------------------------------------------------


async def _browse_main(args: argparse.Namespace) -> int:
    from asyncua import ua

    from connectors.opcua.browse import browse_variables, format_table, format_yaml
    from connectors.opcua.client import connect, make_client

    cfg = OpcuaEndpointConfig.model_validate(
        {
            "name": "browse",
            "url": args.url,
            "nodes": [{"node_id": "i=85", "device": "-", "metric": "-"}],
            "security_policy": args.security_policy,
            "security_mode": args.security_mode,
            "certificate": args.cert,
            "private_key": args.key,
            "username": args.user,
            "password": args.password,
            "request_timeout_s": args.timeout,
        }
    )
    client = await make_client(cfg)
    await connect(client, cfg)
    try:
        start = ua.NodeId.from_string(args.node) if args.node else None
        variables = await browse_variables(client, start, max_depth=args.depth, limit=args.limit)
    finally:
        await client.disconnect()
    print(format_yaml(variables) if args.yaml else format_table(variables))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``browse`` and ``gen-cert`` commands (``python -m connectors.opcua --help``)."""
    parser = argparse.ArgumentParser(
        prog="python -m connectors.opcua", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    browse = commands.add_parser("browse", help="list variables: NodeId, browse path, data type")
    browse.add_argument("url", help="opc.tcp://host:port[/path]")
    browse.add_argument("--node", help='start node, e.g. "ns=2;i=1" (default: the Objects folder)')
    browse.add_argument("--depth", type=int, default=10)
    browse.add_argument("--limit", type=int, default=100_000)
    browse.add_argument("--yaml", action="store_true", help="print a nodes: config fragment")
    browse.add_argument("--security-policy", default="None", choices=["None", "Basic256Sha256"])
    browse.add_argument(
        "--security-mode", default="None", choices=["None", "Sign", "SignAndEncrypt"]
    )
    browse.add_argument("--cert")
    browse.add_argument("--key")
    browse.add_argument("--user")
    browse.add_argument("--password")
    browse.add_argument("--timeout", type=float, default=4.0)
    gen = commands.add_parser("gen-cert", help="create a self-signed certificate and key")
    gen.add_argument(
        "--out", required=True, help="directory for <name>-cert.der and <name>-key.pem"
    )
    gen.add_argument("--name", default="client")
    gen.add_argument(
        "--app-uri", default=None, help="application URI (default urn:streamforge:opcua-client)"
    )
    gen.add_argument("--hostname", default=None)
    gen.add_argument("--days", type=int, default=3650)
    gen.add_argument(
        "--server", action="store_true", help="a server certificate (for test servers)"
    )
    args = parser.parse_args(argv)
    if args.command == "gen-cert":
        from connectors.opcua.certs import DEFAULT_APPLICATION_URI, generate_certificate

        cert, key = generate_certificate(
            args.out,
            args.name,
            args.app_uri or DEFAULT_APPLICATION_URI,
            args.hostname,
            args.days,
            args.server,
        )
        print(f"certificate: {cert}\nprivate key: {key}")
        return 0
    try:
        return asyncio.run(_browse_main(args))
    except OpcuaOpenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, TimeoutError) as exc:
        print(f"error: cannot reach {args.url}: {exc!r}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

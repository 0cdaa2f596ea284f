"""A real asyncua OPC UA server with changing variables: the test peer of the OPC UA source.

    python tests/support/opcua_server.py --port 48400 --period-ms 50
    python tests/support/opcua_server.py --port 48400 --policies encrypt \\
        --cert certs/server-cert.der --key certs/server-key.pem --user op --password secret
    python tests/support/opcua_server.py --port 48400 --bench-vars 10000 --period-ms 1000

With ``--bench-vars`` the server skips asyncua's ``copy.deepcopy`` of every
sampled value (60% of its CPU at 10,000 items/s; safe here because each
tick writes fresh DataValues), so that the benchmark measures the client,
not this Python server.

``--trusted-cert`` makes the server reject every other client certificate
(BadCertificateUntrusted), like a production server with a trust list.

It prints ``READY <port>`` on stdout once it listens, then updates its
variables every ``--period-ms`` until killed. Namespace 2 is
``urn:streamforge:test``; the address space is::

    Objects/2:Plant/2:Line1/
        2:Temperature  ns=2;s=Line1.Temperature  Double   20 + tick / 10
        2:Counter      ns=2;s=Line1.Counter      Int64    tick; SourceTimestamp 2020-01-01 + tick s
        2:Running      ns=2;s=Line1.Running      Boolean  tick is even
        2:State        ns=2;s=Line1.State        String   "state-<tick>"
        2:Quality      ns=2;s=Line1.Quality      Double   tick; Good/Uncertain/Bad by tick % 3
        2:Stepped      ns=2;s=Line1.Stepped      Double   +0.1 per tick, +10 every 10th tick
        2:ServerTsOnly ns=2;s=Line1.ServerTsOnly Double   tick; no SourceTimestamp, ServerTimestamp
                                                          = 2021-01-01 + tick s
    Objects/2:Bench/2:g000/2:v00000 ... (--bench-vars N, 100 a folder)  ns=2;i=100000+k  Double

Every tick writes all variables, so each monitored item changes every period.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import User, UserRole
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

NAMESPACE = "urn:streamforge:test"
COUNTER_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
SERVER_TS_EPOCH = datetime(2021, 1, 1, tzinfo=UTC)
_POLICIES = {
    "none": ua.SecurityPolicyType.NoSecurity,
    "sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
    "encrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
}
_STATUS_BY_TICK = (
    ua.StatusCodes.Good,
    ua.StatusCodes.UncertainLastUsableValue,
    ua.StatusCodes.BadSensorFailure,
)


class OneUserManager:
    """Accepts exactly one username/password pair and nobody else."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.password = password

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username == self.username and password == self.password:
            return User(role=UserRole.User)
        return None


async def build_server(
    args: argparse.Namespace,
) -> tuple[Server, dict[str, ua.NodeId], list[ua.NodeId]]:
    user_manager = OneUserManager(args.user, args.password) if args.user else None
    server = Server(user_manager=user_manager)
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{args.port}/streamforge/test")
    server.set_server_name("StreamForge test server")
    policies = [_POLICIES[p] for p in args.policies.split(",")]
    server.set_security_policy(policies)
    if args.cert:
        await server.load_certificate(args.cert)
        await server.load_private_key(args.key)
    if args.user:
        server.set_identity_tokens([ua.UserNameIdentityToken])
    if args.trusted_cert:
        trusted = Path(args.trusted_cert).read_bytes()

        async def validate(cert: x509.Certificate, app: ua.ApplicationDescription) -> None:
            if cert.public_bytes(Encoding.DER) != trusted:
                raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)

        server.set_certificate_validator(validate)
    idx = await server.register_namespace(NAMESPACE)
    plant = await server.nodes.objects.add_object(
        ua.NodeId("Plant", idx), ua.QualifiedName("Plant", idx)
    )
    line = await plant.add_object(ua.NodeId("Line1", idx), ua.QualifiedName("Line1", idx))
    initial: dict[str, tuple[Any, ua.VariantType]] = {
        "Temperature": (20.0, ua.VariantType.Double),
        "Counter": (0, ua.VariantType.Int64),
        "Running": (True, ua.VariantType.Boolean),
        "State": ("state-0", ua.VariantType.String),
        "Quality": (0.0, ua.VariantType.Double),
        "Stepped": (0.0, ua.VariantType.Double),
        "ServerTsOnly": (0.0, ua.VariantType.Double),
    }
    plant_ids: dict[str, ua.NodeId] = {}
    for name, (value, vtype) in initial.items():
        node = await line.add_variable(
            ua.NodeId(f"Line1.{name}", idx), ua.QualifiedName(name, idx), value, vtype
        )
        plant_ids[name] = node.nodeid
    bench_ids: list[ua.NodeId] = []
    if args.bench_vars:
        bench = await server.nodes.objects.add_object(
            ua.NodeId("Bench", idx), ua.QualifiedName("Bench", idx)
        )
        group = bench
        for k in range(args.bench_vars):
            if k % 100 == 0:  # asyncua adds children in O(siblings): keep folders small
                group = await bench.add_object(
                    ua.NodeId(f"Bench.g{k // 100:03d}", idx),
                    ua.QualifiedName(f"g{k // 100:03d}", idx),
                )
            node = await group.add_variable(
                ua.NodeId(100000 + k, idx),
                ua.QualifiedName(f"v{k:05d}", idx),
                0.0,
                ua.VariantType.Double,
            )
            bench_ids.append(node.nodeid)
    return server, plant_ids, bench_ids


def _dv(
    value: Any,
    vtype: ua.VariantType,
    source_ts: datetime | None,
    server_ts: datetime | None,
    status: int = ua.StatusCodes.Good,
) -> ua.DataValue:
    return ua.DataValue(
        ua.Variant(value, vtype),
        ua.StatusCode(status),
        SourceTimestamp=source_ts,
        ServerTimestamp=server_ts,
    )


async def tick_forever(
    server: Server,
    ids: dict[str, ua.NodeId],
    bench: list[ua.NodeId],
    period: float,
    first_tick: int = 0,
) -> None:
    tick = first_tick
    stepped = 0.0
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    while True:
        tick += 1
        now = datetime.now(UTC)
        stepped += 10.0 if tick % 10 == 0 else 0.1
        writes = {
            "Temperature": _dv(20.0 + tick / 10, ua.VariantType.Double, now, now),
            "Counter": _dv(
                tick, ua.VariantType.Int64, COUNTER_EPOCH + timedelta(seconds=tick), now
            ),
            "Running": _dv(tick % 2 == 0, ua.VariantType.Boolean, now, now),
            "State": _dv(f"state-{tick}", ua.VariantType.String, now, now),
            "Quality": _dv(float(tick), ua.VariantType.Double, now, now, _STATUS_BY_TICK[tick % 3]),
            "Stepped": _dv(round(stepped, 6), ua.VariantType.Double, now, now),
            "ServerTsOnly": _dv(
                float(tick), ua.VariantType.Double, None, SERVER_TS_EPOCH + timedelta(seconds=tick)
            ),
        }
        for name, dv in writes.items():
            await server.write_attribute_value(ids[name], dv)
        for k, nodeid in enumerate(bench):
            await server.write_attribute_value(
                nodeid, _dv(float(tick * 100000 + k), ua.VariantType.Double, now, now)
            )
            if k % 500 == 499:
                await asyncio.sleep(0)  # let the server answer requests during a long tick
        next_at += period
        if next_at < loop.time():
            next_at = loop.time()  # a tick overran: skip, do not burst to catch up
        await asyncio.sleep(next_at - loop.time())


def skip_sample_copies() -> None:
    """Bench mode: keep sampled DataValues by reference instead of deep copies."""
    from asyncua.server.monitored_item_service import MonitoredItemValues

    def set_current_datavalue(self: MonitoredItemValues, cur_val: ua.DataValue) -> None:
        self.old_dvalue = self.current_dvalue
        self.current_dvalue = cur_val

    MonitoredItemValues.set_current_datavalue = set_current_datavalue


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--period-ms", type=float, default=50.0)
    parser.add_argument("--policies", default="none", help="comma list of none, sign, encrypt")
    parser.add_argument("--cert", help="server certificate (DER or PEM)")
    parser.add_argument("--key", help="server private key (PEM)")
    parser.add_argument("--user", help="the only accepted username (disables anonymous)")
    parser.add_argument("--password", default="")
    parser.add_argument("--trusted-cert", help="the only client certificate (DER) accepted")
    parser.add_argument("--bench-vars", type=int, default=0)
    parser.add_argument("--first-tick", type=int, default=0, help="tells a restarted server apart")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    if args.bench_vars:
        skip_sample_copies()
    server, ids, bench = await build_server(args)
    async with server:
        print(f"READY {args.port}", flush=True)
        await tick_forever(server, ids, bench, args.period_ms / 1000, args.first_tick)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)

"""The device registry read from TimescaleDB into a flow's memory, and kept current.

A flow process holds one :class:`schemas.devices.DeviceRegistry`, shared by
its worker threads. :class:`RegistryLoader` fills it from the ``devices``
and ``device_policies`` tables (``schemas/sql/010_device_registry.sql``,
written by the API): a full load at start, then every ``refresh`` seconds
the rows changed since the newest ``updated_at`` it saw, less a minute (a
row committed late with an earlier timestamp is still seen; rows seen again
are skipped by their revision). A failed look is logged and retried with
backoff from 1 s to 30 s; the registry keeps its last contents meanwhile.

>>> from schemas.devices import DeviceRegistry
>>> registry = DeviceRegistry()
>>> loader = RegistryLoader("postgresql://streamforge:streamforge@127.0.0.1:5433/streamforge",
...                         registry, refresh=5.0)
>>> loader.load_once()  # doctest: +SKIP
12
>>> registry.loaded  # doctest: +SKIP
True
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from connectors.runtime.logs import get_logger
from connectors.runtime.metrics import counter, gauge
from schemas.devices import DeviceRegistry, UnregisteredPolicy, info_from_row

log = get_logger("connectors.timescale.devices")

REGISTRY_DEVICES = gauge(
    "streamforge_registry_devices", "Devices in the flow's copy of the device registry"
)
REGISTRY_FAILURES = counter(
    "streamforge_registry_refresh_failures_total",
    "Looks at the device registry that failed (the flow keeps its last copy)",
)

OVERLAP = timedelta(seconds=60)
"""How far before the newest change seen the next look starts (late commits)."""

_DEVICES = """
SELECT tenant, device, type, area, tags, status, revision, updated_at FROM devices
 WHERE %(since)s::timestamptz IS NULL OR updated_at > %(since)s
"""
_POLICIES = """
SELECT tenant, unregistered, updated_at FROM device_policies
 WHERE %(since)s::timestamptz IS NULL OR updated_at > %(since)s
"""


class RegistryLoader:
    """Loads the registry tables into a :class:`DeviceRegistry`, then follows their changes."""

    def __init__(
        self,
        database_url: str,
        registry: DeviceRegistry,
        *,
        refresh: float = 5.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.database_url = database_url
        self.registry = registry
        self.refresh = refresh
        self.connect_timeout = connect_timeout
        self._since: datetime | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.database_url,
                autocommit=True,
                connect_timeout=max(1, round(self.connect_timeout)),
                row_factory=dict_row,
            )
        return self._conn

    def load_once(self) -> int:
        """One look: everything on the first, then what changed. Rows taken (raises on failure)."""
        try:
            conn = self._connection()
            since = None if self._since is None else self._since - OVERLAP
            devices = conn.execute(_DEVICES, {"since": since}).fetchall()
            policies = conn.execute(_POLICIES, {"since": since}).fetchall()
        except psycopg.Error:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            raise
        infos = [info_from_row(row) for row in devices]
        chosen: dict[str, UnregisteredPolicy] = {r["tenant"]: r["unregistered"] for r in policies}
        newest = max((r["updated_at"] for r in (*devices, *policies)), default=None)
        if self._since is None:
            self.registry.replace(infos, chosen)
            taken = len(infos) + len(chosen)
        else:
            taken = self.registry.update(infos, chosen)
        if newest is not None and (self._since is None or newest > self._since):
            self._since = newest
        elif self._since is None:
            # An empty registry: later looks ask for what changed from now on
            # (by the database's clock, so the two clocks need not agree).
            row = conn.execute("SELECT now() AS now").fetchone()
            self._since = None if row is None else row["now"]
        REGISTRY_DEVICES.set(len(self.registry))
        if taken:
            log.info(
                "device registry loaded",
                extra={"step": "registry", "rows": taken, "devices": len(self.registry),
                       "version": self.registry.version},
            )  # fmt: skip
        return taken

    def start(self, wait: float = 10.0) -> None:
        """Load (waiting up to ``wait`` seconds for the database), then follow changes in a thread.

        When the first load does not succeed in time the flow starts anyway:
        the registry admits every device until a load succeeds.
        """
        deadline = time.monotonic() + wait
        delay = 0.5
        while True:
            try:
                self.load_once()
                break
            except psycopg.Error as exc:
                REGISTRY_FAILURES.inc()
                if time.monotonic() + delay > deadline:
                    log.error(
                        "device registry not readable; admitting every device until it is",
                        extra={"step": "registry", "error": str(exc).strip()},
                    )
                    break
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._thread = threading.Thread(target=self._follow, name="device-registry", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        delay = self.refresh
        failing = False
        while not self._stop.wait(delay):
            try:
                self.load_once()
            except psycopg.Error as exc:
                REGISTRY_FAILURES.inc()
                if not failing:
                    log.warning(
                        "device registry look failed; keeping the last copy and retrying",
                        extra={"step": "registry", "error": str(exc).strip()},
                    )
                failing = True
                delay = min(max(delay * 2, 1.0), 30.0)
                continue
            if failing:
                log.info("device registry readable again", extra={"step": "registry"})
            failing = False
            delay = self.refresh

    def stop(self) -> None:
        """End the follow thread and close the connection (tests; a flow just exits)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._conn is not None:
            self._conn.close()


_OPEN: dict[tuple[str, float, str], DeviceRegistry] = {}
_OPEN_LOCK = threading.Lock()


def open_registry(
    database_url: str,
    *,
    refresh: float = 5.0,
    unregistered: UnregisteredPolicy = "accept",
    start_timeout: float = 10.0,
) -> DeviceRegistry:
    """The process's registry read from this database, loaded and followed (one per process).

    Every flow built in one process with the same settings shares it, and
    with it one connection and one follow thread.
    """
    key = (database_url, refresh, unregistered)
    with _OPEN_LOCK:
        registry = _OPEN.get(key)
        if registry is None:
            registry = _OPEN[key] = DeviceRegistry(unregistered)
            RegistryLoader(database_url, registry, refresh=refresh).start(wait=start_timeout)
        return registry

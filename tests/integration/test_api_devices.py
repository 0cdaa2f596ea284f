"""The device registry through the REST API, on the real TimescaleDB.

Register, update and re-register (revision bumped only by a change), bulk
import from CSV, YAML and JSON (all or nothing, every bad row named), the
list with registration, status, last values and ranges, and its filters,
devices seen only through events, logs or their own alarm signal,
decommissioning (of a discovered device too), the unregistered-device
policy, roles and tenant isolation.

The API session fixtures (:mod:`tests.integration.api_harness`) are shared
with other modules whose assertions count plant-a's and plant-b's devices,
so this module works in tenants of its own (``reg-*``), with keys and data
made here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.keys import create_key
from connectors.timescale.rows import SPEC_BY_TYPE
from connectors.timescale.writer import TimescaleWriter
from flows.alarm_lifecycle import AlarmLifecycle
from schemas.models import Alarm, Event, LogRecord, Reading
from tests.integration.api_harness import World

pytest_plugins = ["tests.integration.api_harness"]
pytestmark = [pytest.mark.timescale, pytest.mark.kafka]

LIST = "reg-a"  # the list, its filters, decommissioning
OTHER = "reg-b"  # tenant isolation
IMPORTS = "reg-imp"  # registration and imports
POLICY = "reg-pol"


@dataclass
class Registry:
    """Keys of this module's tenants and an owner connection to look at the rows."""

    world: World
    db: psycopg.Connection[Any]
    now: datetime
    keys: dict[tuple[str, str], str] = field(default_factory=dict)

    def headers(self, tenant: str, role: str = "viewer", **more: str) -> dict[str, str]:
        if (tenant, role) not in self.keys:
            self.keys[(tenant, role)] = create_key(self.db, tenant, role, f"registry {role}")
        return {"X-API-Key": self.keys[(tenant, role)], **more}

    def key_id(self, tenant: str, role: str) -> str:
        """The subject the API records for a key (its public id)."""
        self.headers(tenant, role)
        return "_".join(self.keys[(tenant, role)].split("_")[:2])

    def rows(self, tenant: str) -> dict[str, dict[str, Any]]:
        cur = self.db.cursor(row_factory=psycopg.rows.dict_row)
        found = cur.execute("SELECT * FROM devices WHERE tenant = %s", (tenant,)).fetchall()
        return {r["device"]: r for r in found}


def _records(tenant: str, now: datetime) -> dict[type, list[Any]]:
    ago = lambda s: now - timedelta(seconds=s)  # noqa: E731
    readings = [
        # press-1: fresh, temperature 130 (above its registered max 120)
        Reading("press-1", "temperature", ago(65), 101.0, tenant, source="http", unit="C"),
        Reading("press-1", "temperature", ago(5), 130.0, tenant, source="http", unit="C"),
        Reading("press-1", "pressure", ago(6), 3.5, tenant, source="http", unit="bar"),
        # press-2: last heard of 10 minutes ago (stale)
        Reading("press-2", "temperature", ago(600), 60.0, tenant, source="http"),
        # press-old: three hours ago (offline), never registered
        Reading("press-old", "temperature", ago(3 * 3600), 20.0, tenant, source="http"),
        # mixer-5: fresh, for the decommissioning test
        Reading("mixer-5", "rpm", ago(10), 900.0, tenant, source="http"),
    ]
    events = [
        # valve-7 and valve-8 send nothing but state changes
        Event(tenant, "valve-7", "state.position", ago(40), "closed", "open", "opcua"),
        Event(tenant, "valve-7", "state.position", ago(30), "open", "closed", "opcua"),
        Event(tenant, "valve-8", "state.position", ago(30), "open", "closed", "opcua"),
        Event(tenant, "press-1", "state.mode", ago(4), "idle", "running", "opcua"),
    ]
    logs = [LogRecord(tenant, "logger-3", ago(50), "info", "fw", "booted")]
    (signal,) = AlarmLifecycle(tenant, "beacon-4", "alarm", "device", "device").raise_(
        ago(20), "warning", True, None, "beacon-4 reports alarm = True"
    )
    (hot,) = AlarmLifecycle(tenant, "press-1", "temperature", "hot", "threshold").raise_(
        ago(5), "major", 130.0, 120.0, "temperature 130 >= 120 (major)"
    )
    # press-2's alarm is shelved by the fixture below: not an active one.
    (cold,) = AlarmLifecycle(tenant, "press-2", "temperature", "cold", "threshold").raise_(
        ago(600), "warning", 60.0, 65.0, "temperature 60 <= 65 (warning)"
    )
    return {Reading: readings, Event: events, LogRecord: logs, Alarm: [signal, hot, cold]}


@pytest.fixture(scope="module")
def reg(api_world: World, api: TestClient) -> Iterator[Registry]:
    """This module's tenants: reg-a's data written the way the flows' sink writes it."""
    with psycopg.connect(api_world.url, autocommit=True) as db:
        registry = Registry(api_world, db, datetime.now(UTC))
        writer = TimescaleWriter(api_world.url)
        try:
            records = _records(LIST, registry.now)
            records[Reading].append(  # reg-b has a device of the same name, other data
                Reading("press-1", "temperature", registry.now, -1.0, OTHER, source="http")
            )
            writer.write({SPEC_BY_TYPE[t]: rs for t, rs in records.items()})
            db.execute("UPDATE alarms SET state = 'shelved' WHERE device = 'press-2'")
        finally:
            writer.close()
        yield registry


def register(api: TestClient, reg: Registry, tenant: str, body: dict[str, Any]) -> Any:
    r = api.post("/devices", json=body, headers=reg.headers(tenant, "admin"))
    assert r.status_code in (200, 201), r.text
    return r


def listing(api: TestClient, reg: Registry, tenant: str = LIST, **params: Any) -> list[dict]:
    """Every device of the list (all pages), for these filters."""
    items: list[dict] = []
    cursor = None
    for _ in range(50):
        q = {**params, **({"cursor": cursor} if cursor else {})}
        r = api.get("/devices", params=q, headers=reg.headers(tenant))
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("the pages never ended")


# ---- registration ---------------------------------------------------------------------------


def test_register_update_and_unchanged_registration(api: TestClient, reg: Registry) -> None:
    body = {
        "device": "lathe-1", "name": "Lathe 1", "type": "lathe", "area": "hall-2",
        "tags": ["line-2", "cnc"], "metrics": {"spindle": {"unit": "rpm", "max": 6000}},
    }  # fmt: skip
    created = register(api, reg, IMPORTS, body)
    assert created.status_code == 201
    out = created.json()
    assert out["registration"] == "registered" and out["status"] == "unknown"  # never seen
    assert out["tags"] == ["cnc", "line-2"] and out["revision"] == 1
    assert out["metric_specs"] == {"spindle": {"unit": "rpm", "min": None, "max": 6000.0}}
    assert out["registered_by"] == out["updated_by"] == reg.key_id(IMPORTS, "admin")
    row = reg.rows(IMPORTS)["lathe-1"]
    assert (row["type"], row["area"], row["revision"]) == ("lathe", "hall-2", 1)
    assert row["metrics"] == {"spindle": {"unit": "rpm", "max": 6000.0}}

    # The same registration again (tags in another order): 200, nothing changes.
    same = register(api, reg, IMPORTS, {**body, "tags": ["cnc", "line-2", "cnc"]})
    assert same.status_code == 200 and same.json()["revision"] == 1
    assert reg.rows(IMPORTS)["lathe-1"]["updated_at"] == row["updated_at"]

    changed = register(api, reg, IMPORTS, {**body, "area": "hall-3"})
    assert changed.status_code == 200
    assert changed.json()["revision"] == 2 and changed.json()["area"] == "hall-3"
    assert reg.rows(IMPORTS)["lathe-1"]["revision"] == 2


def test_registration_is_validated(api: TestClient, reg: Registry) -> None:
    admin = reg.headers(IMPORTS, "admin")
    for body, where in (
        ({"device": "a/b"}, "device"),
        ({"device": "x", "metrics": {"t": {"min": 5, "max": 1}}}, "metrics"),
        ({"device": "x", "colour": "red"}, "colour"),
        ({"device": "x", "tags": [""]}, "body"),
    ):
        r = api.post("/devices", json=body, headers=admin)
        assert r.status_code == 422 and where in r.json()["message"], (body, r.text)
    # JSON the model takes but the database cannot hold: a 422, not a 500.
    for raw in (b'{"device": "x", "metrics": {"t": {"max": Infinity}}}',
                b'{"device": "x", "name": "\\ud800"}'):  # fmt: skip
        r = api.post("/devices", content=raw, headers={**admin, "Content-Type": "application/json"})
        assert r.status_code == 422, r.text
    assert "x" not in reg.rows(IMPORTS)


def test_viewers_and_operators_cannot_change_the_registry(api: TestClient, reg: Registry) -> None:
    for role in ("viewer", "operator"):
        h = reg.headers(IMPORTS, role)
        assert api.post("/devices", json={"device": "nope-1"}, headers=h).status_code == 403
        r = api.post("/devices/import", content="device\nnope-2\n",
                     headers={**h, "Content-Type": "text/csv"})  # fmt: skip
        assert r.status_code == 403
        assert api.post("/devices/lathe-1/decommission", headers=h).status_code == 403
        r = api.put("/device-policy", json={"unregistered": "reject"}, headers=h)
        assert r.status_code == 403
        assert api.get("/devices", headers=h).status_code == 200
        assert api.get("/device-policy", headers=h).status_code == 200
    assert not {"nope-1", "nope-2"} & set(reg.rows(IMPORTS))
    assert (
        api.get("/device-policy", headers=reg.headers(IMPORTS)).json()["unregistered"] == "accept"
    )


# ---- bulk import ----------------------------------------------------------------------------

CSV = """\
device,name,type,area,tags,metrics
csv-1,Press A,press,north,line-1;critical,temperature:degC:0:120;rpm:1/min::
csv-2,,pump,south,,flow:m3/h
csv-3,"Pump, spare",pump,,line-1,
"""


def _import(api: TestClient, reg: Registry, body: str | bytes, content_type: str) -> Any:
    h = reg.headers(IMPORTS, "admin", **{"Content-Type": content_type})
    return api.post("/devices/import", content=body, headers=h)


def test_csv_import_creates_then_leaves_unchanged_then_updates(
    api: TestClient, reg: Registry
) -> None:
    r = _import(api, reg, CSV, "text/csv")
    assert r.status_code == 200, r.text
    assert r.json() == {"created": 3, "updated": 0, "unchanged": 0}
    rows = reg.rows(IMPORTS)
    assert rows["csv-1"]["tags"] == ["critical", "line-1"]
    assert rows["csv-1"]["metrics"] == {
        "temperature": {"unit": "degC", "min": 0, "max": 120},
        "rpm": {"unit": "1/min"},
    }
    assert rows["csv-2"]["name"] is None and rows["csv-2"]["metrics"] == {"flow": {"unit": "m3/h"}}
    assert rows["csv-3"]["name"] == "Pump, spare"
    assert rows["csv-1"]["registered_by"] == reg.key_id(IMPORTS, "admin")

    again = _import(api, reg, CSV, "text/csv; charset=utf-8")
    assert again.json() == {"created": 0, "updated": 0, "unchanged": 3}
    assert all(reg.rows(IMPORTS)[d]["revision"] == 1 for d in ("csv-1", "csv-2", "csv-3"))

    changed = CSV.replace("csv-2,,pump,south", "csv-2,,pump,east") + "csv-4,,,,,\n"
    r = _import(api, reg, changed, "text/csv")
    assert r.json() == {"created": 1, "updated": 1, "unchanged": 2}
    rows = reg.rows(IMPORTS)
    assert rows["csv-2"]["area"] == "east" and rows["csv-2"]["revision"] == 2
    assert rows["csv-1"]["revision"] == 1


def test_yaml_and_json_imports(api: TestClient, reg: Registry) -> None:
    document = """\
devices:
  - device: yaml-1
    type: press
    tags: [line-3]
    metrics:
      temperature: {unit: degC, min: 10, max: 90}
  - {device: yaml-2, area: west}
"""
    r = _import(api, reg, document, "application/yaml")
    assert r.status_code == 200 and r.json() == {"created": 2, "updated": 0, "unchanged": 0}
    # A bare list, under another YAML media type; yaml-1 is equal, yaml-2 changes.
    bare = "- {device: yaml-1, type: press, tags: [line-3], metrics: {temperature: " \
           "{unit: degC, min: 10.0, max: 90}}}\n- {device: yaml-2, area: east}\n"  # fmt: skip
    r = _import(api, reg, bare, "application/x-yaml")
    assert r.json() == {"created": 0, "updated": 1, "unchanged": 1}
    r = _import(api, reg, "- device: yaml-3\n", "text/yaml")
    assert r.json() == {"created": 1, "updated": 0, "unchanged": 0}
    body = json.dumps({"devices": [{"device": "json-1", "type": "fan"}, {"device": "yaml-3"}]})
    r = _import(api, reg, body, "application/json")
    assert r.json() == {"created": 1, "updated": 0, "unchanged": 1}
    rows = reg.rows(IMPORTS)
    assert rows["yaml-1"]["metrics"]["temperature"] == {"unit": "degC", "min": 10, "max": 90}
    assert rows["yaml-2"]["area"] == "east" and rows["json-1"]["type"] == "fan"


def test_a_bad_import_writes_nothing_and_names_every_bad_row(
    api: TestClient, reg: Registry
) -> None:
    before = reg.rows(IMPORTS)
    bad_csv = """\
device,type,metrics
bad-ok-1,press,temperature:degC:0:120
bad/2,press,
bad-3,press,temperature:degC:hot:120
bad-4,pump,temperature::100:0
bad-ok-1,press,
"""
    r = _import(api, reg, bad_csv, "text/csv")
    assert r.status_code == 422, r.text
    errors = [(e["line"], e["field"]) for e in r.json()["errors"]]
    assert errors == [(3, "device"), (4, "metrics"), (5, "metrics.temperature"), (6, "device")], (
        r.text
    )
    assert "4 of 5 devices are invalid" in r.json()["message"]
    assert "hot" in r.json()["errors"][1]["message"]
    assert "first at line 2" in r.json()["errors"][3]["message"]

    bad_yaml = "- device: bad-ok-2\n- device: bad-5\n  tags: 7\n- {device: bad-6, size: 3}\n"
    r = _import(api, reg, bad_yaml, "application/yaml")
    assert r.status_code == 422
    assert [(e["index"], e["field"]) for e in r.json()["errors"]] == [(1, "tags"), (2, "size")]

    for body, content_type, status, words in (
        ("- device: [unclosed\n", "application/yaml", 422, "not a readable YAML"),
        ('[{"device": ', "application/json", 422, "not a readable JSON"),
        ("device: one\n", "application/yaml", 422, "expected a list"),
        ("device,colour\nbad-7,red\n", "text/csv", 422, "CSV header"),
        ('device\n"bad-8\n', "text/csv", 422, "not a readable CSV"),
        (b"device\n\xff\xfe\n", "text/csv", 422, "not UTF-8"),
        ("device\nbad-9\n", "text/plain", 415, "not an import format"),
        ("device\n" + "\n".join(f"many-{i}" for i in range(10_001)), "text/csv", 422, "10000"),
        ("device\n" + "x" * (5 * 1024 * 1024), "text/csv", 413, "5242880"),
    ):
        r = _import(api, reg, body, content_type)
        assert r.status_code == status and words in r.text, (content_type, r.status_code, r.text)
    assert reg.rows(IMPORTS) == before  # nothing written, nothing touched


# ---- the list -------------------------------------------------------------------------------


def _register_list_tenant(api: TestClient, reg: Registry) -> None:
    register(api, reg, LIST, {
        "device": "press-1", "name": "Press 1", "type": "press", "area": "north",
        "tags": ["line-1", "critical"],
        "metrics": {"temperature": {"unit": "degC", "min": 0, "max": 120},
                    "pressure": {"unit": "bar"}, "state.mode": {"min": 0, "max": 1}},
    })  # fmt: skip
    register(api, reg, LIST, {"device": "press-2", "type": "press", "area": "south",
                              "tags": ["line-1"]})  # fmt: skip
    register(api, reg, LIST, {"device": "spare-9", "type": "pump", "area": "north"})


def test_the_list_shows_registration_status_last_values_and_ranges(
    api: TestClient, reg: Registry
) -> None:
    _register_list_tenant(api, reg)
    items = {d["device"]: d for d in listing(api, reg)}
    assert set(items) >= {"press-1", "press-2", "spare-9", "press-old", "valve-7", "logger-3",
                          "beacon-4"}  # fmt: skip
    p1 = items["press-1"]
    assert (p1["registration"], p1["status"], p1["name"], p1["type"]) == (
        "registered", "online", "Press 1", "press")  # fmt: skip
    assert p1["metrics"] == ["pressure", "temperature"] and p1["event_metrics"] == ["state.mode"]
    temperature = p1["last_values"]["temperature"]
    assert temperature["value"] == 130.0 and temperature["unit"] == "degC"  # registered unit
    assert temperature["in_range"] is False  # 130 > max 120
    pressure = p1["last_values"]["pressure"]
    assert (pressure["value"], pressure["unit"], pressure["in_range"]) == (3.5, "bar", None)
    assert p1["last_values"]["state.mode"]["value"] == "running"  # an event's value
    assert p1["last_values"]["state.mode"]["in_range"] is None  # text: not judged
    assert p1["active_alarms"] == 1
    assert items["press-2"]["active_alarms"] == 0  # its alarm is shelved: not active
    # The newest of readings and events (the event, 4 s ago).
    assert p1["last_seen"] == p1["last_values"]["state.mode"]["ts"]

    assert (items["press-2"]["registration"], items["press-2"]["status"]) == ("registered", "stale")
    assert items["press-2"]["last_values"]["temperature"]["in_range"] is None  # no spec
    assert (items["spare-9"]["status"], items["spare-9"]["last_seen"]) == ("unknown", None)
    assert items["press-old"]["registration"] == "discovered"
    assert items["press-old"]["status"] == "offline"
    # Devices that never sent a reading are listed too, with what they did send.
    valve = items["valve-7"]
    assert (valve["registration"], valve["status"], valve["metrics"]) == (
        "discovered",
        "online",
        [],
    )
    assert valve["last_values"]["state.position"]["value"] == "closed"  # the newer event
    assert items["logger-3"]["status"] == "online" and items["logger-3"]["last_seen"]
    assert items["beacon-4"]["active_alarms"] == 1 and items["beacon-4"]["status"] == "online"
    # Ordered by device, one page or several.
    assert list(items) == sorted(items)
    paged = listing(api, reg, limit=2)
    assert [d["device"] for d in paged] == list(items)

    one = api.get("/devices/press-1", headers=reg.headers(LIST))
    assert one.status_code == 200 and one.json()["last_values"] == p1["last_values"]
    assert api.get("/devices/valve-7", headers=reg.headers(LIST)).json()["event_metrics"] == [
        "state.position"
    ]
    assert api.get("/devices/ghost", headers=reg.headers(LIST)).status_code == 404


def test_the_list_filters(api: TestClient, reg: Registry) -> None:
    _register_list_tenant(api, reg)

    def names(**params: Any) -> set[str]:
        return {d["device"] for d in listing(api, reg, **params)}

    every = listing(api, reg)
    discovered = {d["device"] for d in every if d["registration"] == "discovered"}
    assert {"press-old", "valve-7", "logger-3", "beacon-4"} <= discovered
    assert not {"press-1", "press-2", "spare-9"} & discovered
    assert names(registration="discovered") == discovered
    assert names(registration="discovered", limit=1) == discovered  # sparse pages, cursors
    assert {"press-1", "press-2", "spare-9"} <= names(registration="registered")
    assert names(status="stale") == {"press-2"}
    assert names(status=["stale", "offline"]) == {"press-2", "press-old"}
    assert names(status="unknown") == {"spare-9"}
    assert names(type="press") == {"press-1", "press-2"}
    assert names(type="press", area="north") == {"press-1"}
    assert names(tag="line-1") == {"press-1", "press-2"}
    assert names(tag=["line-1", "critical"]) == {"press-1"}  # all tags must be on it
    assert names(type="press", registration="discovered") == set()
    assert names(status="online", registration="registered") >= {"press-1"}
    assert "press-2" not in names(status="online", registration="registered")
    for bad in ({"status": "asleep"}, {"registration": "maybe"}, {"tag": ""}):
        assert api.get("/devices", params=bad, headers=reg.headers(LIST)).status_code == 422


# ---- decommissioning ------------------------------------------------------------------------


def test_decommission_a_registered_and_a_discovered_device(api: TestClient, reg: Registry) -> None:
    admin = reg.headers(LIST, "admin")
    register(api, reg, LIST, {"device": "mixer-5", "type": "mixer"})
    r = api.post("/devices/mixer-5/decommission", json={"reason": "replaced"}, headers=admin)
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["registration"], out["decommission_reason"], out["revision"]) == (
        "decommissioned", "replaced", 2)  # fmt: skip
    assert out["decommissioned_at"] and out["status"] == "online"  # it still sends
    # Idempotent: the second call changes nothing (time, reason, revision kept).
    again = api.post("/devices/mixer-5/decommission", headers=admin)
    assert again.status_code == 200 and again.json() == {**out, "status": again.json()["status"]}
    assert reg.rows(LIST)["mixer-5"]["revision"] == 2

    # A discovered device is registered as decommissioned (so flows reject it).
    assert "valve-8" not in reg.rows(LIST)
    r = api.post("/devices/valve-8/decommission", headers=admin)
    assert r.status_code == 200 and r.json()["registration"] == "decommissioned"
    row = reg.rows(LIST)["valve-8"]
    assert (row["status"], row["updated_by"]) == ("decommissioned", reg.key_id(LIST, "admin"))
    decommissioned = {d["device"] for d in listing(api, reg, registration="decommissioned")}
    assert {"mixer-5", "valve-8"} <= decommissioned
    assert "valve-8" not in {d["device"] for d in listing(api, reg, registration="discovered")}

    # Registering it again revives it.
    revived = register(api, reg, LIST, {"device": "mixer-5", "type": "mixer"})
    assert revived.status_code == 200
    assert (revived.json()["registration"], revived.json()["decommissioned_at"]) == (
        "registered", None)  # fmt: skip
    assert revived.json()["decommission_reason"] is None and revived.json()["revision"] == 3
    assert api.post("/devices/ghost-1/decommission", headers=admin).status_code == 404
    assert "ghost-1" not in reg.rows(LIST)


# ---- policy and tenants -----------------------------------------------------------------------


def test_the_unregistered_device_policy(api: TestClient, reg: Registry) -> None:
    viewer, admin = reg.headers(POLICY), reg.headers(POLICY, "admin")
    assert api.get("/device-policy", headers=viewer).json() == {
        "unregistered": "accept", "updated_at": None, "updated_by": None}  # fmt: skip
    r = api.put("/device-policy", json={"unregistered": "reject"}, headers=admin)
    assert r.status_code == 200 and r.json()["unregistered"] == "reject"
    assert r.json()["updated_by"] == reg.key_id(POLICY, "admin")
    assert api.get("/device-policy", headers=viewer).json()["unregistered"] == "reject"
    row = reg.db.execute(
        "SELECT unregistered FROM device_policies WHERE tenant = %s", (POLICY,)
    ).fetchone()
    assert row == ("reject",)
    bad = api.put("/device-policy", json={"unregistered": "sometimes"}, headers=admin)
    assert bad.status_code == 422
    # Another tenant's policy is its own.
    assert api.get("/device-policy", headers=reg.headers(OTHER)).json()["unregistered"] == "accept"


def test_another_tenant_sees_none_of_it(api: TestClient, reg: Registry) -> None:
    _register_list_tenant(api, reg)
    theirs = listing(api, reg, OTHER)
    # reg-b's own press-1 (a reading of its own), nothing of reg-a's.
    assert [(d["device"], d["registration"]) for d in theirs] == [("press-1", "discovered")]
    assert theirs[0]["last_values"]["temperature"]["value"] == -1.0
    assert theirs[0]["type"] is None and theirs[0]["active_alarms"] == 0
    h = reg.headers(OTHER, "admin")
    assert api.get("/devices/valve-7", headers=h).status_code == 404
    assert api.post("/devices/valve-7/decommission", headers=h).status_code == 404
    # Registering a name reg-a uses makes reg-b's own row; reg-a's is untouched.
    before = reg.rows(LIST)["press-1"]
    r = register(api, reg, OTHER, {"device": "press-1", "type": "oven"})
    assert r.json()["type"] == "oven" and r.json()["revision"] == 1
    assert reg.rows(LIST)["press-1"] == before
    assert api.get("/devices/press-1", headers=reg.headers(LIST)).json()["type"] == "press"

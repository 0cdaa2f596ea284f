-- The device registry (schemas/devices.py): devices registered with their
-- metadata, and each tenant's policy for devices nobody registered. The API
-- writes both (api/routers/devices.py); flows read them
-- (connectors/timescale/devices.py) to admit or reject a device's readings,
-- to select rules by type, area and tags, and to drop the state of a
-- decommissioned device. Rows are never deleted: decommissioning sets status.
CREATE TABLE IF NOT EXISTS devices (
    tenant            text COLLATE "C" NOT NULL,
    device            text COLLATE "C" NOT NULL,
    name              text,
    type              text,
    area              text,
    tags              text[]      NOT NULL DEFAULT '{}',
    -- metric -> {"unit": text, "min": number, "max": number}
    metrics           jsonb       NOT NULL DEFAULT '{}',
    status            text        NOT NULL DEFAULT 'active'
                      CHECK (status IN ('active', 'decommissioned')),
    -- Grows with every change (trigger below): flows re-apply rules when it does.
    revision          bigint      NOT NULL DEFAULT 1,
    registered_at     timestamptz NOT NULL DEFAULT now(),
    registered_by     text        NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    updated_by        text        NOT NULL,
    decommissioned_at timestamptz,
    -- Why it was decommissioned (POST /devices/{device}/decommission); NULL again once revived.
    decommission_reason text,
    PRIMARY KEY (tenant, device)
);
-- Flows poll for rows changed since their last look.
CREATE INDEX IF NOT EXISTS devices_updated_at ON devices (updated_at);

-- A device that only reports its own alarm signal (alarms of kind 'device')
-- has no readings, events or logs: GET /devices finds it, and its newest
-- signal, through this index, one probe per device, however many threshold
-- and anomaly alarms the tenant's devices have.
CREATE INDEX IF NOT EXISTS alarms_device_signal ON alarms (tenant, device, ts DESC)
    WHERE kind = 'device';

CREATE OR REPLACE FUNCTION streamforge_device_revision() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.revision := OLD.revision + 1;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;
DROP TRIGGER IF EXISTS device_revision ON devices;
CREATE TRIGGER device_revision BEFORE UPDATE ON devices
    FOR EACH ROW EXECUTE FUNCTION streamforge_device_revision();

CREATE TABLE IF NOT EXISTS device_policies (
    tenant        text COLLATE "C" PRIMARY KEY,
    unregistered  text        NOT NULL DEFAULT 'accept'
                  CHECK (unregistered IN ('accept', 'reject')),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    updated_by    text        NOT NULL
);
CREATE INDEX IF NOT EXISTS device_policies_updated_at ON device_policies (updated_at);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['devices', 'device_policies']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %I', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I '
            'USING (tenant = current_setting(''streamforge.tenant'', true))', t);
    END LOOP;
END
$$;

-- The API role's rights (009's function, plus the registry tables).
CREATE OR REPLACE FUNCTION streamforge_api_grants() RETURNS boolean
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
DECLARE
    t text;
    cols text;
    chunk regclass;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'streamforge_api') THEN
        RETURN false;
    END IF;
    EXECUTE 'GRANT USAGE ON SCHEMA public TO streamforge_api';
    -- Read-only, column-level (see above) on the time-partitioned tables.
    FOREACH t IN ARRAY ARRAY['readings', 'rollups', 'events', 'logs', 'dead_letters',
                             'anomaly_scores']
    LOOP
        EXECUTE format('REVOKE ALL ON %I FROM streamforge_api', t);
        SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO cols
          FROM pg_attribute
         WHERE attrelid = t::regclass AND attnum > 0 AND NOT attisdropped;
        EXECUTE format('GRANT SELECT (%s) ON %I TO streamforge_api', cols, t);
    END LOOP;
    -- Alarm actions (acknowledge, clear) write these two plain tables.
    EXECUTE 'GRANT SELECT, INSERT, UPDATE ON alarms, alarm_transitions TO streamforge_api';
    EXECUTE 'GRANT SELECT, INSERT, UPDATE ON api_keys TO streamforge_api';
    EXECUTE 'GRANT SELECT, INSERT, UPDATE, DELETE ON flows TO streamforge_api';
    EXECUTE 'GRANT SELECT, INSERT ON flow_config_versions TO streamforge_api';
    EXECUTE 'GRANT SELECT, INSERT, UPDATE ON devices, device_policies TO streamforge_api';
    EXECUTE 'GRANT EXECUTE ON FUNCTION streamforge_api_key_lookup(bytea) TO streamforge_api';
    -- Chunks that got a table-level grant some other way lose it.
    IF to_regnamespace('_timescaledb_internal') IS NOT NULL THEN
        FOR chunk IN
            SELECT c.oid::regclass FROM pg_class c
              JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = '_timescaledb_internal' AND c.relkind = 'r'
               AND pg_has_role(c.relowner, 'USAGE')
        LOOP
            EXECUTE format('REVOKE ALL ON %s FROM streamforge_api', chunk);
        END LOOP;
    END IF;
    RETURN true;
END
$$;

SELECT streamforge_api_grants();

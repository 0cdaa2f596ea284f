-- Config versions of the flows managed through the API (api/routers/flows.py):
-- every config a flow was given, with who gave it, when, why, and what it
-- changed from the one before. Rows are only ever added (the API may not
-- update or delete them): the audit trail outlives rollbacks. A flow's row
-- in `flows` says which version it runs (config_version).
CREATE TABLE IF NOT EXISTS flow_config_versions (
    tenant      text COLLATE "C" NOT NULL,
    flow        text COLLATE "C" NOT NULL,
    version     integer     NOT NULL CHECK (version >= 1),
    config      jsonb       NOT NULL,
    author      text        NOT NULL,
    reason      text,
    diff        jsonb       NOT NULL DEFAULT '[]',
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, flow, version)
);

ALTER TABLE flows ADD COLUMN IF NOT EXISTS config_version integer NOT NULL DEFAULT 1;
-- Counts the fresh starts a flow was given (a config of another shape): the
-- supervisor keeps one recovery store per (created_at, state_epoch) and
-- archives the one before.
ALTER TABLE flows ADD COLUMN IF NOT EXISTS state_epoch integer NOT NULL DEFAULT 0;

-- Flows created before this migration get their current config as version 1.
INSERT INTO flow_config_versions (tenant, flow, version, config, author, reason, created_at)
SELECT tenant, name, 1, config, 'migration 009', 'the config before versions were kept', created_at
  FROM flows
ON CONFLICT DO NOTHING;

ALTER TABLE flow_config_versions ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON flow_config_versions;
CREATE POLICY tenant_isolation ON flow_config_versions
    USING (tenant = current_setting('streamforge.tenant', true));

-- The API role's rights (004_api.sql's function, plus the versions table).
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

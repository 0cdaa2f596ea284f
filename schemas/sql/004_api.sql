-- The REST API's tables and its database role (api/README.md, "Tenants").
--
-- The API connects as the application user (the owner of the tables) and
-- runs every request transaction as the role streamforge_api:
--     SET LOCAL ROLE streamforge_api; SET LOCAL streamforge.tenant = '<caller's tenant>'
-- streamforge_api owns nothing, so the tenant_isolation policies of
-- 003_rls.sql apply to it: the database itself confines each query to the
-- caller's tenant, whatever SQL the API sends.
--
-- Creating a role needs CREATEROLE, which the application user normally
-- lacks; the server's administrator creates it once (deploy/ does):
--     CREATE ROLE streamforge_api NOLOGIN NOINHERIT;
--     GRANT streamforge_api TO streamforge;
-- This migration creates it itself when it may, and otherwise leaves the
-- grants to streamforge_api_grants(), which the API calls on every start.
--
-- TimescaleDB chunks (schema _timescaledb_internal, USAGE granted to PUBLIC
-- by the extension) do not carry the hypertable's policies, and a table-level
-- GRANT on a hypertable is copied to every chunk: the API role could then
-- read any tenant's rows by naming a chunk. So the API role gets column-level
-- SELECT on the hypertables, which TimescaleDB does not copy to chunks:
-- queries through the hypertable work (chunks are reached through it, not
-- permission-checked), a chunk named directly is "permission denied".
-- tests/integration/test_api_tenants.py checks both.

-- API keys: only a SHA-256 of the key is stored (keys are 256-bit random
-- strings, so a fast hash is enough: nothing to brute-force).
CREATE TABLE IF NOT EXISTS api_keys (
    id          text COLLATE "C" PRIMARY KEY,       -- public prefix of the key
    tenant      text COLLATE "C" NOT NULL,
    role        text        NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    name        text        NOT NULL DEFAULT '',
    key_hash    bytea       NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- Flows managed through the API: a name and a pipeline config (YAML text
-- validated by schemas.config.PipelineConfig before it is stored).
CREATE TABLE IF NOT EXISTS flows (
    tenant      text COLLATE "C" NOT NULL,
    name        text COLLATE "C" NOT NULL,
    config      jsonb       NOT NULL,
    desired     text        NOT NULL DEFAULT 'stopped' CHECK (desired IN ('running', 'stopped')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, name)
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['api_keys', 'flows']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %I', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I '
            'USING (tenant = current_setting(''streamforge.tenant'', true))', t);
    END LOOP;
END
$$;

-- Authentication happens before the tenant is known: this function (run
-- with its owner's rights, so past RLS) answers for one key hash only.
CREATE OR REPLACE FUNCTION streamforge_api_key_lookup(p_hash bytea)
RETURNS TABLE (id text, tenant text, role text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
    SELECT k.id, k.tenant, k.role FROM api_keys k
     WHERE k.key_hash = p_hash AND k.revoked_at IS NULL
$$;
REVOKE ALL ON FUNCTION streamforge_api_key_lookup(bytea) FROM PUBLIC;

-- The API role's rights, idempotent: run here and on every API start (the
-- role may be created after this migration ran). Returns false when the
-- role does not exist.
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

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'streamforge_api') THEN
        IF (SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user) THEN
            CREATE ROLE streamforge_api NOLOGIN NOINHERIT;
            EXECUTE format('GRANT streamforge_api TO %I', current_user);
        ELSE
            RAISE NOTICE 'role streamforge_api does not exist and % may not create it: '
                'an administrator must run CREATE ROLE streamforge_api NOLOGIN NOINHERIT; '
                'GRANT streamforge_api TO %', current_user, current_user;
        END IF;
    END IF;
    PERFORM streamforge_api_grants();
END
$$;

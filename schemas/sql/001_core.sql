-- StreamForge core tables: one per output kind, plus the current state of alarms.
--
-- Every table has a tenant column (row-level security: 003_rls.sql) and a
-- natural key that makes writes idempotent: a batch whose keys are new is
-- copied straight in; one that meets an existing key goes through a staging
-- table and INSERT ... ON CONFLICT, so a replay after a crash adds no rows. Unique indexes of time-partitioned tables include their time
-- column, as TimescaleDB requires of hypertables (002_hypertables.sql).
-- Values that may be a number, a boolean or a string are kept in three
-- nullable columns for readings (hot path, typed) and as jsonb elsewhere.
-- Key names (tenant, device, metric, ...) use the "C" collation: index
-- comparisons become byte comparisons, which doubled the write rate of
-- readings here (168k against 77k rows/s by COPY), and these are
-- identifiers, not prose to sort by language rules.

-- Readings classified as telemetry: the raw time series.
CREATE TABLE IF NOT EXISTS readings (
    tenant      text COLLATE "C" NOT NULL,
    device      text COLLATE "C" NOT NULL,
    metric      text COLLATE "C" NOT NULL,
    ts          timestamptz      NOT NULL,
    value       double precision,          -- int and float values
    value_text  text,                      -- str values
    value_bool  boolean,                   -- bool values
    quality     text             NOT NULL DEFAULT 'good',
    source      text             NOT NULL,
    unit        text,
    attributes  jsonb
);
-- Natural key, and the index of the API's "series of a device" queries.
CREATE UNIQUE INDEX IF NOT EXISTS readings_key
    ON readings (tenant, device, metric, ts DESC);

-- Rollups of every tier (1m, 5m, 1h, ...): one row per window; a correction
-- caused by late data has a higher revision and replaces the row.
CREATE TABLE IF NOT EXISTS rollups (
    tenant        text COLLATE "C" NOT NULL,
    device        text COLLATE "C" NOT NULL,
    metric        text COLLATE "C" NOT NULL,
    tier          text COLLATE "C" NOT NULL,
    window_start  timestamptz      NOT NULL,
    window_end    timestamptz      NOT NULL,
    count         bigint           NOT NULL,
    min           double precision NOT NULL,
    max           double precision NOT NULL,
    sum           double precision NOT NULL,
    mean          double precision NOT NULL,
    var           double precision NOT NULL,
    first         double precision NOT NULL,
    last          double precision NOT NULL,
    first_ts      timestamptz      NOT NULL,
    last_ts       timestamptz      NOT NULL,
    revision      integer          NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS rollups_key
    ON rollups (tenant, device, metric, tier, window_start DESC);

-- Discrete changes of state (previous -> value).
CREATE TABLE IF NOT EXISTS events (
    tenant    text COLLATE "C" NOT NULL,
    device    text COLLATE "C" NOT NULL,
    metric    text COLLATE "C" NOT NULL,
    ts        timestamptz NOT NULL,
    previous  jsonb,
    value     jsonb       NOT NULL,
    source    text        NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_key ON events (tenant, device, metric, ts DESC);
CREATE INDEX IF NOT EXISTS events_tenant_ts ON events (tenant, ts DESC);

-- Every transition of every alarm (raised, escalated, ..., cleared), keyed (alarm_id, seq).
CREATE TABLE IF NOT EXISTS alarm_transitions (
    alarm_id         text COLLATE "C" NOT NULL,
    seq              integer     NOT NULL,
    tenant           text COLLATE "C" NOT NULL,
    device           text COLLATE "C" NOT NULL,
    metric           text COLLATE "C" NOT NULL,
    rule             text COLLATE "C" NOT NULL,
    kind             text        NOT NULL,
    severity         text        NOT NULL,
    state            text        NOT NULL,
    transition       text        NOT NULL,
    ts               timestamptz NOT NULL,
    raised_at        timestamptz NOT NULL,
    value            jsonb,
    threshold        double precision,
    message          text        NOT NULL,
    acknowledged_at  timestamptz,
    acknowledged_by  text,
    cleared_at       timestamptz,
    comment          text,
    PRIMARY KEY (alarm_id, seq)
);
CREATE INDEX IF NOT EXISTS alarm_transitions_tenant_ts ON alarm_transitions (tenant, ts DESC);
CREATE INDEX IF NOT EXISTS alarm_transitions_device_ts
    ON alarm_transitions (tenant, device, ts DESC);

-- The current state of each alarm: its transition with the highest seq.
CREATE TABLE IF NOT EXISTS alarms (
    id               text COLLATE "C" PRIMARY KEY,
    seq              integer     NOT NULL,
    tenant           text COLLATE "C" NOT NULL,
    device           text COLLATE "C" NOT NULL,
    metric           text COLLATE "C" NOT NULL,
    rule             text COLLATE "C" NOT NULL,
    kind             text        NOT NULL,
    severity         text        NOT NULL,
    state            text        NOT NULL,
    transition       text        NOT NULL,
    ts               timestamptz NOT NULL,
    raised_at        timestamptz NOT NULL,
    value            jsonb,
    threshold        double precision,
    message          text        NOT NULL,
    acknowledged_at  timestamptz,
    acknowledged_by  text,
    cleared_at       timestamptz,
    comment          text
);
CREATE INDEX IF NOT EXISTS alarms_tenant_state ON alarms (tenant, state, ts DESC);
CREATE INDEX IF NOT EXISTS alarms_device ON alarms (tenant, device, ts DESC);

-- Log lines devices reported. Two lines may share a timestamp, so the key
-- adds a fingerprint (hash of metric, level, component and message).
CREATE TABLE IF NOT EXISTS logs (
    tenant       text COLLATE "C" NOT NULL,
    device       text COLLATE "C" NOT NULL,
    ts           timestamptz NOT NULL,
    fingerprint  bytea       NOT NULL,
    level        text        NOT NULL,
    component    text        NOT NULL,
    message      text        NOT NULL,
    metric       text COLLATE "C"
);
CREATE UNIQUE INDEX IF NOT EXISTS logs_key ON logs (tenant, device, ts DESC, fingerprint);
CREATE INDEX IF NOT EXISTS logs_tenant_ts ON logs (tenant, ts DESC);

-- Input that could not become a reading. tenant is NULL when unknown: such
-- rows are visible to operators (the table owner), not to any tenant.
-- fingerprint = hash of (received_at, source, origin, step, reason, payload).
CREATE TABLE IF NOT EXISTS dead_letters (
    received_at       timestamptz NOT NULL,
    fingerprint       bytea       NOT NULL,
    tenant            text COLLATE "C",
    source            text        NOT NULL,
    origin            text,
    step              text        NOT NULL,
    reason            text        NOT NULL,
    payload           text        NOT NULL,
    payload_encoding  text        NOT NULL DEFAULT 'utf-8'
);
CREATE UNIQUE INDEX IF NOT EXISTS dead_letters_key ON dead_letters (received_at DESC, fingerprint);
CREATE INDEX IF NOT EXISTS dead_letters_tenant ON dead_letters (tenant, received_at DESC);

-- Anomaly score of each telemetry value.
CREATE TABLE IF NOT EXISTS anomaly_scores (
    tenant     text COLLATE "C" NOT NULL,
    device     text COLLATE "C" NOT NULL,
    metric     text COLLATE "C" NOT NULL,
    ts         timestamptz      NOT NULL,
    value      double precision NOT NULL,
    score      double precision NOT NULL,
    detector   text             NOT NULL,
    anomalous  boolean          NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX IF NOT EXISTS anomaly_scores_key
    ON anomaly_scores (tenant, device, metric, ts DESC);
CREATE INDEX IF NOT EXISTS anomaly_scores_anomalous
    ON anomaly_scores (tenant, ts DESC) WHERE anomalous;

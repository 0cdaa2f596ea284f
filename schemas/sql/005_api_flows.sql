-- What the API's flow supervisor reports about each flow (api/flows.py).
--
-- The API writes the wish (flows.desired, and flows.generation + 1 for a
-- restart); the supervisor, one per database (it holds an advisory lock),
-- makes it so and writes back what runs: status, pids, since when, how
-- often it was restarted and the last error. Any API process can then
-- answer for any flow, whichever process supervises it.
ALTER TABLE flows
    ADD COLUMN IF NOT EXISTS generation  integer     NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS status      text        NOT NULL DEFAULT 'stopped'
        CHECK (status IN ('running', 'stopped', 'crashed')),
    ADD COLUMN IF NOT EXISTS pids        integer[]   NOT NULL DEFAULT '{}',
    ADD COLUMN IF NOT EXISTS started_at  timestamptz,
    ADD COLUMN IF NOT EXISTS restarts    integer     NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS last_error  text;

-- Row-level security per tenant. A session sees the rows of the tenant named
-- by the setting streamforge.tenant (SET streamforge.tenant = 'plant-a', or
-- SET LOCAL per transaction); with the setting unset it sees nothing.
--
-- RLS is enabled but not forced: the table owner (the role that runs the
-- migrations and the sink) bypasses it, so writes and operator tools are not
-- affected. The API must connect as another role granted access to these
-- tables (see the API's own migration) for the policies to apply.
-- dead_letters with a NULL tenant (tenant unknown) match no tenant.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['readings', 'rollups', 'events', 'alarms', 'alarm_transitions',
                             'logs', 'dead_letters', 'anomaly_scores']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %I', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I '
            'USING (tenant = current_setting(''streamforge.tenant'', true))', t);
    END LOOP;
END
$$;

-- Row-level security: the second wall. Tenant-plane transactions run as
-- bulkhead_tenant (no BYPASSRLS, no login) with `bulkhead.tenant` set locally, and
-- every tenant table lets that role see and write only the rows of that tenant.
-- With no tenant set, current_setting(..., true) is NULL and no row matches.
-- The login role (the one in the store URL, which owns the tables and runs these
-- migrations) is the admin plane: FORCE makes the policies bind it too, so it gets
-- an explicit policy of its own instead of owner privilege.
DO $$
BEGIN
    CREATE ROLE bulkhead_tenant NOLOGIN NOBYPASSRLS NOINHERIT;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    -- The role is cluster-wide: another database on this server made it first.
    NULL;
END $$;
GRANT bulkhead_tenant TO CURRENT_USER;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON tenants, data_keys, api_keys, records, audit_logs, audit_entries, audit_tiles
    TO bulkhead_tenant;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO bulkhead_tenant;

ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON tenants TO bulkhead_tenant
    USING (id = current_setting('bulkhead.tenant', true))
    WITH CHECK (id = current_setting('bulkhead.tenant', true));
CREATE POLICY admin_rows ON tenants TO CURRENT_USER USING (true) WITH CHECK (true);

ALTER TABLE data_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE data_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON data_keys TO bulkhead_tenant
    USING (tenant_id = current_setting('bulkhead.tenant', true))
    WITH CHECK (tenant_id = current_setting('bulkhead.tenant', true));
CREATE POLICY admin_rows ON data_keys TO CURRENT_USER USING (true) WITH CHECK (true);

ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON api_keys TO bulkhead_tenant
    USING (tenant_id = current_setting('bulkhead.tenant', true))
    WITH CHECK (tenant_id = current_setting('bulkhead.tenant', true));
CREATE POLICY admin_rows ON api_keys TO CURRENT_USER USING (true) WITH CHECK (true);

ALTER TABLE records ENABLE ROW LEVEL SECURITY;
ALTER TABLE records FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON records TO bulkhead_tenant
    USING (tenant_id = current_setting('bulkhead.tenant', true))
    WITH CHECK (tenant_id = current_setting('bulkhead.tenant', true));
CREATE POLICY admin_rows ON records TO CURRENT_USER USING (true) WITH CHECK (true);

ALTER TABLE audit_logs ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_logs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON audit_logs TO bulkhead_tenant
    USING (log_id = current_setting('bulkhead.tenant', true))
    WITH CHECK (log_id = current_setting('bulkhead.tenant', true));
CREATE POLICY admin_rows ON audit_logs TO CURRENT_USER USING (true) WITH CHECK (true);

ALTER TABLE audit_entries ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_entries FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON audit_entries TO bulkhead_tenant
    USING (log_id = current_setting('bulkhead.tenant', true))
    WITH CHECK (log_id = current_setting('bulkhead.tenant', true));
CREATE POLICY admin_rows ON audit_entries TO CURRENT_USER USING (true) WITH CHECK (true);

ALTER TABLE audit_tiles ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_tiles FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON audit_tiles TO bulkhead_tenant
    USING (log_id = current_setting('bulkhead.tenant', true))
    WITH CHECK (log_id = current_setting('bulkhead.tenant', true));
CREATE POLICY admin_rows ON audit_tiles TO CURRENT_USER USING (true) WITH CHECK (true);

-- Bulkhead's PostgreSQL schema, version 1: the same rows as the SQLite store,
-- plus row-level security (see 0002). Applied once, inside a transaction, under
-- the migration advisory lock. Record ids compare bytewise (COLLATE "C") because
-- part ranges [id#, id$) and part order rely on it, as SQLite's BINARY does.
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
CREATE TABLE tenants (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    region TEXT NOT NULL,
    policy TEXT NOT NULL,
    status TEXT NOT NULL,
    current_key_version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    models TEXT
);
CREATE TABLE data_keys (
    tenant_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    wrapped BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, version)
);
CREATE TABLE api_keys (
    key_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    secret_hash BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT,
    quarantined_at BIGINT
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id);
CREATE TABLE records (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    record_id TEXT COLLATE "C" NOT NULL,
    key_version BIGINT NOT NULL,
    sealed BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    UNIQUE (tenant_id, kind, record_id)
);
CREATE INDEX records_by_tenant_kind ON records (tenant_id, kind, seq);
CREATE INDEX records_by_key_version ON records (tenant_id, key_version);
CREATE INDEX records_by_expiry ON records (expires_at) WHERE expires_at IS NOT NULL;
-- Audit rows carry the log id (a tenant id, or 'operator') rather than a
-- surrogate key, so the row-level policy can compare it with the tenant setting.
CREATE TABLE audit_logs (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    log_id TEXT NOT NULL UNIQUE,
    size BIGINT NOT NULL,
    checkpoint_size BIGINT NOT NULL DEFAULT 0,
    checkpoint BYTEA,
    checkpoint_at BIGINT
);
CREATE TABLE audit_entries (
    log_id TEXT NOT NULL REFERENCES audit_logs (log_id),
    idx BIGINT NOT NULL,
    leaf_hash BYTEA NOT NULL,
    key_version BIGINT NOT NULL,
    sealed BYTEA,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (log_id, idx)
);
CREATE INDEX audit_entries_by_key_version ON audit_entries (log_id, key_version);
CREATE INDEX audit_entries_by_leaf ON audit_entries (log_id, leaf_hash);
CREATE TABLE audit_tiles (
    log_id TEXT NOT NULL REFERENCES audit_logs (log_id),
    level SMALLINT NOT NULL,
    idx BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (log_id, level, idx)
);
CREATE TABLE erasures (
    tenant_id TEXT PRIMARY KEY,
    erased_at BIGINT NOT NULL,
    receipt BYTEA NOT NULL
);

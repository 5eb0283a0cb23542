//! The composition root: [`App::start`] opens everything the server runs on —
//! the stores (a region's own store, PostgreSQL), the master key, the admin
//! token, the vault, the audit signing key and the audit logs — from one plain
//! [`AppConfig`], and [`App::shutdown`] closes them in order (audit, then store).
//!
//! Must never: bind a socket or know HTTP; log a secret (keys and tokens are
//! named by the file they live in, never printed).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bulkhead_audit::{Audit, AuditOptions};
use bulkhead_crypto::{KeyEncryptionKey, LocalKek, random_array, write_secret_file};
use bulkhead_ledger::note::NoteSigner;
use bulkhead_store::{PgOptions, PgStore, RegionalStore, SqliteOptions, SqliteStore, Store};
use bulkhead_types::{Clock, Region, SystemClock, TenantId};
use bulkhead_vault::{Vault, VaultLimits};
use zeroize::Zeroizing;

use crate::packs::Packs;

/// Where a store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// One embedded SQLite file, for one server process.
    Sqlite(PathBuf),
    /// A PostgreSQL URL, shared by any number of replicas.
    Postgres(String),
}

/// A region whose tenants live in a store of their own.
#[derive(Debug, Clone)]
pub struct RegionStore {
    pub region: Region,
    pub store: StoreSpec,
}

/// Everything [`App::start`] needs, already resolved (no files or environment
/// are read to fill it in).
#[derive(Clone)]
pub struct AppConfig {
    /// Holds the development master key and admin token when none is given.
    pub data_dir: PathBuf,
    /// The home store: every tenant whose region has no store of its own.
    pub store: StoreSpec,
    pub regions: Vec<RegionStore>,
    pub sqlite_group_commit_max: usize,
    /// At least 16 characters; generated into `data_dir/admin.token` when none.
    pub admin_token: Option<Zeroizing<String>>,
    /// Base64 of 32 bytes; a development key in `data_dir/master.key` when none.
    pub master_key: Option<Zeroizing<String>>,
    pub document_text_bytes_max: usize,
    /// The audit signing key's file (generated there on first start).
    pub audit_signing_key: PathBuf,
    pub server_name: String,
    pub audit_checkpoint_interval: Duration,
    /// The vault's clock: tests pass one they move forward.
    pub clock: Arc<dyn Clock>,
    /// The operator's compliance packs (TOML files), besides the built-in ones.
    pub policy_packs_dir: Option<PathBuf>,
}

impl std::fmt::Debug for AppConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token and master key are secrets: only whether they are set.
        f.debug_struct("AppConfig")
            .field("data_dir", &self.data_dir)
            .field("store", &self.store)
            .field("regions", &self.regions)
            .field("admin_token", &self.admin_token.is_some())
            .field("master_key", &self.master_key.is_some())
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl AppConfig {
    /// A config for a data directory: a SQLite store in it, generated secrets,
    /// the default limits and the system clock.
    pub fn in_dir(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        Self {
            store: StoreSpec::Sqlite(data_dir.join("bulkhead.db")),
            regions: Vec::new(),
            sqlite_group_commit_max: SqliteOptions::default().group_commit_max,
            admin_token: None,
            master_key: None,
            document_text_bytes_max: VaultLimits::default().document_text_bytes_max,
            audit_signing_key: data_dir.join("audit-signing.key"),
            server_name: "bulkhead.local".into(),
            audit_checkpoint_interval: AuditOptions::default().checkpoint_interval,
            clock: Arc::new(SystemClock),
            policy_packs_dir: None,
            data_dir,
        }
    }
}

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is refused as it is.
    #[error("{0}")]
    Invalid(String),
    /// A step failed; `what` says which, in lowercase words.
    #[error("{what}")]
    Step {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn step<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    what: impl Into<String>,
) -> impl FnOnce(E) -> StartError {
    let what = what.into();
    move |e| StartError::Step {
        what,
        source: e.into(),
    }
}

/// The opened application: its store, vault and audit logs, and the admin
/// token the HTTP edge checks.
pub struct App {
    pub store: Arc<dyn Store>,
    pub vault: Arc<Vault>,
    pub audit: Arc<Audit>,
    /// The compliance packs tenants choose from (built-in plus the operator's).
    pub packs: Packs,
    admin_token: Zeroizing<String>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

impl App {
    /// Opens everything in order: data directory, master key, admin token,
    /// stores, vault, audit signing key, audit logs, compliance packs; then
    /// resumes the re-seals a key rotation left unfinished.
    pub async fn start(config: AppConfig) -> Result<App, StartError> {
        create_private_dir(&config.data_dir)?;
        let kek = open_kek(&config)?;
        let admin_token = match &config.admin_token {
            Some(token) if token.len() >= 16 => token.clone(),
            Some(_) => {
                return Err(StartError::Invalid(
                    "the admin token must be at least 16 characters".into(),
                ));
            }
            None => load_or_generate_admin_token(&config.data_dir.join("admin.token"))?,
        };
        let store = open_stores(&config).await?;
        let limits = VaultLimits {
            document_text_bytes_max: config.document_text_bytes_max,
            ..VaultLimits::default()
        };
        let vault = Arc::new(
            Vault::open(Arc::clone(&store), kek, Arc::clone(&config.clock), limits)
                .await
                .map_err(step("open the vault"))?,
        );
        let signer = load_or_generate_signing_key(&config.audit_signing_key, &config.server_name)?;
        tracing::info!(vkey = %signer.vkey(), "audit checkpoints are signed with this key (publish it to auditors)");
        let audit = Audit::start(
            Arc::clone(&vault),
            signer,
            AuditOptions {
                server_name: config.server_name.clone(),
                checkpoint_interval: config.audit_checkpoint_interval,
                ..AuditOptions::default()
            },
        )
        .map_err(step("start the audit logs"))?;
        let packs = match &config.policy_packs_dir {
            Some(dir) => {
                Packs::with_folder(dir).map_err(step("load the operator's policy packs"))?
            }
            None => Packs::builtin(),
        };
        tracing::info!(packs = ?packs.names().collect::<Vec<_>>(), "compliance packs loaded");
        let reseals = vault
            .tenants_needing_reseal(RESEALS_RESUMED_MAX)
            .await
            .map_err(step("list the tenants with an unfinished re-seal"))?;
        for tenant in reseals {
            tracing::info!(tenant = %tenant, "resuming an interrupted re-seal after key rotation");
            spawn_reseal(Arc::clone(&vault), tenant);
        }
        Ok(App {
            store,
            vault,
            audit,
            packs,
            admin_token,
        })
    }

    /// The admin token the operator plane accepts.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Commits audit events still queued and signs final checkpoints, then
    /// drains the store's queue (SQLite folds its WAL into the database file).
    pub async fn shutdown(&self) {
        self.audit.shutdown().await;
        self.store.shutdown().await;
    }
}

/// Tenants whose interrupted re-seal is resumed at start, at most (the rest
/// resume at the next start or rotation).
const RESEALS_RESUMED_MAX: u32 = 10_000;

/// Re-seals a tenant's records under its current key in the background, in
/// bounded batches, then retires the old keys. Logged, never fatal.
pub fn spawn_reseal(vault: Arc<Vault>, tenant: TenantId) {
    tokio::spawn(async move {
        let mut total = 0usize;
        loop {
            match vault.reseal(&tenant, 256).await {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) => {
                    tracing::warn!(tenant = %tenant, error = %e,
                        "re-sealing stopped; it resumes at the next start or rotation");
                    return;
                }
            }
        }
        tracing::info!(tenant = %tenant, records = total, "re-sealed records under the current key");
    });
}

fn open_kek(config: &AppConfig) -> Result<Arc<dyn KeyEncryptionKey>, StartError> {
    Ok(match &config.master_key {
        Some(text) => Arc::new(
            LocalKek::parse(text, "BULKHEAD_MASTER_KEY").map_err(step("read the master key"))?,
        ),
        None => {
            let path = config.data_dir.join("master.key");
            let (kek, generated) = LocalKek::load_or_generate(&path)
                .map_err(step("load the development master key"))?;
            if generated {
                tracing::warn!(path = %path.display(),
                    "GENERATED A DEVELOPMENT MASTER KEY. Anyone who can read this file can open every tenant's data, \
                     and losing it loses all data. In production set BULKHEAD_MASTER_KEY (32 random bytes, base64: \
                     `openssl rand -base64 32`) from a secret manager, or a KMS provider once available.");
            } else {
                tracing::warn!(path = %path.display(),
                    "using the development master key file; production should set BULKHEAD_MASTER_KEY");
            }
            Arc::new(kek)
        }
    })
}

/// The home store, wrapped in a [`RegionalStore`] only when some region has a
/// store of its own (otherwise every call goes straight to the one store).
async fn open_stores(config: &AppConfig) -> Result<Arc<dyn Store>, StartError> {
    let group_commit_max = config.sqlite_group_commit_max;
    let home = open_store(&config.store, group_commit_max).await?;
    if config.regions.is_empty() {
        tracing::info!(
            "no region has a store of its own: every tenant's rows live in the home store"
        );
        return Ok(home);
    }
    let mut regions = Vec::with_capacity(config.regions.len());
    for r in &config.regions {
        let store = open_store(&r.store, group_commit_max)
            .await
            .map_err(step(format!("the store of region {}", r.region)))?;
        tracing::info!(region = %r.region, store = ?r.store,
            "this region's tenants live in a store of their own");
        regions.push((r.region.clone(), store));
    }
    tracing::info!(store = ?config.store,
        "tenants of every other region, and server-wide rows, live in the home store");
    warn_of_tenants_left_at_home(home.as_ref(), config).await?;
    let regional = RegionalStore::new(home, regions).map_err(step("the regional stores"))?;
    Ok(Arc::new(regional))
}

/// Tenants created before their region got a store of its own stay in the home
/// store (rows are never moved behind the operator's back) and are still served
/// from there; their residency is not what the config now says, so say so loudly.
async fn warn_of_tenants_left_at_home(
    home: &dyn Store,
    config: &AppConfig,
) -> Result<(), StartError> {
    /// Tenants read per page, and pages at most: a bounded scan at start.
    const PAGE_LEN: u32 = 1000;
    const PAGES_MAX: usize = 1000;
    let mut after = 0;
    let mut misplaced: Vec<(String, String)> = Vec::new();
    let mut misplaced_count = 0u64;
    for _ in 0..PAGES_MAX {
        let page = home
            .list_tenants(after, PAGE_LEN)
            .await
            .map_err(step("list the home store's tenants"))?;
        for (seq, tenant) in &page {
            after = *seq;
            if config.regions.iter().any(|r| r.region == tenant.region) {
                misplaced_count += 1;
                if misplaced.len() < 10 {
                    misplaced.push((tenant.id.to_string(), tenant.region.to_string()));
                }
            }
        }
        if page.len() < PAGE_LEN as usize {
            break;
        }
    }
    if misplaced_count > 0 {
        tracing::warn!(count = misplaced_count, first = ?misplaced,
            "TENANTS LIVE IN THE HOME STORE ALTHOUGH THEIR REGION NOW HAS A STORE OF ITS OWN: they were created \
             before the region's store was configured. They are still served from the home store, but their rows \
             are not where the config says. Bulkhead has no tool to move a tenant between stores yet.");
    }
    Ok(())
}

/// Opens the store a spec names: a SQLite file, or a PostgreSQL database (its
/// migrations applied on the way) shared with other replicas.
pub async fn open_store(
    spec: &StoreSpec,
    sqlite_group_commit_max: usize,
) -> Result<Arc<dyn Store>, StartError> {
    Ok(match spec {
        StoreSpec::Sqlite(path) => Arc::new(
            SqliteStore::open(
                path,
                SqliteOptions {
                    group_commit_max: sqlite_group_commit_max,
                    ..SqliteOptions::default()
                },
            )
            .map_err(step(format!("open the SQLite store at {}", path.display())))?,
        ),
        StoreSpec::Postgres(url) => Arc::new(
            PgStore::connect(url, PgOptions::default())
                .await
                .map_err(step("open the PostgreSQL store"))?,
        ),
    })
}

fn create_private_dir(dir: &Path) -> Result<(), StartError> {
    std::fs::create_dir_all(dir)
        .map_err(step(format!("create data directory {}", dir.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(step(format!("restrict data directory {}", dir.display())))?;
    }
    Ok(())
}

fn load_or_generate_admin_token(path: &Path) -> Result<Zeroizing<String>, StartError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Zeroizing::new(text.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let bytes: [u8; 32] = random_array().map_err(step("generate the admin token"))?;
            let token = Zeroizing::new(format!(
                "bha_{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
            ));
            write_secret_file(path, token.as_bytes())
                .map_err(step(format!("write {}", path.display())))?;
            tracing::warn!(path = %path.display(),
                "generated a development admin token (the CLI reads it from there). \
                 In production set BULKHEAD_ADMIN_TOKEN from a secret manager.");
            Ok(token)
        }
        Err(e) => Err(step(format!("read {}", path.display()))(e)),
    }
}

/// The audit signing key: read from its file, or generated there (0600) on first
/// start. The key's name is the server name; a mismatch is refused, because
/// checkpoints would silently change origin and break every auditor's chain.
fn load_or_generate_signing_key(path: &Path, server_name: &str) -> Result<NoteSigner, StartError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let signer = NoteSigner::from_skey(&text).map_err(step(format!(
                "read the audit signing key {} (C2SP PRIVATE+KEY+… format)",
                path.display()
            )))?;
            if signer.name() != server_name {
                return Err(StartError::Invalid(format!(
                    "the audit signing key in {} is for server name {:?} but server_name is {:?}; \
                     set server_name = {:?} to keep the audit logs' identity, or move the key away to \
                     start a new one (auditors will need the new public key)",
                    path.display(),
                    signer.name(),
                    server_name,
                    signer.name()
                )));
            }
            Ok(signer)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let signer = NoteSigner::generate(server_name)
                .map_err(step("generate the audit signing key"))?;
            let skey = Zeroizing::new(
                signer
                    .to_skey()
                    .map_err(step("encode the audit signing key"))?,
            );
            write_secret_file(path, skey.as_bytes())
                .map_err(step(format!("write {}", path.display())))?;
            tracing::warn!(path = %path.display(),
                "generated the audit signing key. Back it up: auditors verify checkpoints with its \
                 public key (bulkhead audit public-key), and a new key starts a new chain of trust.");
            Ok(signer)
        }
        Err(e) => Err(step(format!("read {}", path.display()))(e)),
    }
}

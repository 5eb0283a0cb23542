//! Server configuration: flag, then `BULKHEAD_*` variable, then TOML file, then
//! default. Every key has all three spellings (`foo_bar` in the file,
//! `BULKHEAD_FOO_BAR`, `--foo-bar`); a test checks that no key lacks one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;

/// Settings of `bulkhead serve`. All optional here; `resolve` applies the file and
/// the defaults.
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (snake_case names).
    #[arg(long, env = "BULKHEAD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7700].
    #[arg(long, env = "BULKHEAD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory for the SQLite file and development secrets [default: ./bulkhead-data].
    #[arg(long, env = "BULKHEAD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Store: a SQLite path (or sqlite:PATH) [default: <data-dir>/bulkhead.db].
    #[arg(long, env = "BULKHEAD_STORE")]
    pub store: Option<String>,
    /// Admin token for /admin/… [default: generated into <data-dir>/admin.token].
    #[arg(long, env = "BULKHEAD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Master key, 32 bytes as base64 or hex [default: generated into <data-dir>/master.key,
    /// for development only].
    #[arg(long, env = "BULKHEAD_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,
    /// Largest request body accepted, in bytes [default: 2097152].
    #[arg(long, env = "BULKHEAD_BODY_BYTES_MAX")]
    pub body_bytes_max: Option<usize>,
    /// Longest a request may take, in seconds [default: 30].
    #[arg(long, env = "BULKHEAD_REQUEST_TIMEOUT_SECS")]
    pub request_timeout_secs: Option<u64>,
    /// Largest document text, in bytes [default: 1048576].
    #[arg(long, env = "BULKHEAD_DOCUMENT_TEXT_BYTES_MAX")]
    pub document_text_bytes_max: Option<usize>,
    /// Most writes committed (and fsynced) together [default: 256]. 1 disables group commit.
    #[arg(long, env = "BULKHEAD_SQLITE_GROUP_COMMIT_MAX")]
    pub sqlite_group_commit_max: Option<usize>,
    /// Longest a clean shutdown waits for in-flight requests, in seconds [default: 30].
    #[arg(long, env = "BULKHEAD_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// This server's name: the audit signing key's name and the prefix of every audit
    /// log's origin (`<name>/tenants/<id>`). Choose it once; a DNS-like name such as
    /// `bulkhead.example.com` [default: bulkhead.local].
    #[arg(long, env = "BULKHEAD_SERVER_NAME")]
    pub server_name: Option<String>,
    /// File with the Ed25519 key that signs audit checkpoints (C2SP signing-key
    /// format), generated 0600 on first start [default: <data-dir>/audit-signing.key].
    #[arg(long, env = "BULKHEAD_AUDIT_SIGNING_KEY")]
    pub audit_signing_key: Option<PathBuf>,
    /// How often audit logs that grew get a new signed checkpoint, in seconds
    /// [default: 1]. Clients asking for a checkpoint always get a fresh one.
    #[arg(long, env = "BULKHEAD_AUDIT_CHECKPOINT_INTERVAL_SECS")]
    pub audit_checkpoint_interval_secs: Option<u64>,
}

/// The same keys, as read from the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub store: Option<String>,
    pub admin_token: Option<String>,
    pub master_key: Option<String>,
    pub body_bytes_max: Option<usize>,
    pub request_timeout_secs: Option<u64>,
    pub document_text_bytes_max: Option<usize>,
    pub sqlite_group_commit_max: Option<usize>,
    pub shutdown_grace_secs: Option<u64>,
    pub server_name: Option<String>,
    pub audit_signing_key: Option<PathBuf>,
    pub audit_checkpoint_interval_secs: Option<u64>,
}

/// Settings after precedence and defaults are applied.
#[derive(Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub sqlite_path: PathBuf,
    pub admin_token: Option<String>,
    pub master_key: Option<String>,
    pub body_bytes_max: usize,
    pub request_timeout: Duration,
    pub document_text_bytes_max: usize,
    pub sqlite_group_commit_max: usize,
    pub shutdown_grace: Duration,
    pub server_name: String,
    pub audit_signing_key: PathBuf,
    pub audit_checkpoint_interval: Duration,
}

impl ServeArgs {
    pub fn resolve(self) -> anyhow::Result<Settings> {
        let file = match &self.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let data_dir = self
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./bulkhead-data"));
        let store = self.store.or(file.store);
        let sqlite_path = match store {
            None => data_dir.join("bulkhead.db"),
            Some(url) => parse_store(&url)?,
        };
        let body_bytes_max = self
            .body_bytes_max
            .or(file.body_bytes_max)
            .unwrap_or(2 << 20);
        let document_text_bytes_max = self
            .document_text_bytes_max
            .or(file.document_text_bytes_max)
            .unwrap_or(1 << 20);
        if body_bytes_max < 1024 {
            bail!("body_bytes_max must be at least 1024");
        }
        let request_timeout_secs = self
            .request_timeout_secs
            .or(file.request_timeout_secs)
            .unwrap_or(30);
        if request_timeout_secs == 0 {
            bail!("request_timeout_secs must be at least 1");
        }
        let server_name = self
            .server_name
            .or(file.server_name)
            .unwrap_or_else(|| "bulkhead.local".to_owned());
        if server_name.is_empty()
            || server_name.contains('+')
            || server_name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            bail!(
                "server_name must be non-empty, without spaces or '+' (e.g. bulkhead.example.com)"
            );
        }
        let audit_signing_key = self
            .audit_signing_key
            .or(file.audit_signing_key)
            .unwrap_or_else(|| data_dir.join("audit-signing.key"));
        let checkpoint_secs = self
            .audit_checkpoint_interval_secs
            .or(file.audit_checkpoint_interval_secs)
            .unwrap_or(1);
        if checkpoint_secs == 0 {
            bail!("audit_checkpoint_interval_secs must be at least 1");
        }
        Ok(Settings {
            server_name,
            audit_signing_key,
            audit_checkpoint_interval: Duration::from_secs(checkpoint_secs),
            listen: self
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7700))),
            data_dir,
            sqlite_path,
            admin_token: self.admin_token.or(file.admin_token),
            master_key: self.master_key.or(file.master_key),
            body_bytes_max,
            request_timeout: Duration::from_secs(request_timeout_secs),
            document_text_bytes_max,
            sqlite_group_commit_max: self
                .sqlite_group_commit_max
                .or(file.sqlite_group_commit_max)
                .unwrap_or(256)
                .max(1),
            shutdown_grace: Duration::from_secs(
                self.shutdown_grace_secs
                    .or(file.shutdown_grace_secs)
                    .unwrap_or(30),
            ),
        })
    }
}

fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parse config file {}", path.display()))
}

fn parse_store(url: &str) -> anyhow::Result<PathBuf> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        bail!("the PostgreSQL store is not in this build yet; use a SQLite path for --store");
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    if path.is_empty() {
        bail!("--store needs a SQLite file path");
    }
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[derive(Debug, clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: ServeArgs,
    }

    /// Every setting has a flag `--foo-bar`, a variable `BULKHEAD_FOO_BAR` and a file
    /// key `foo_bar` that the file parser accepts.
    #[test]
    fn every_key_has_flag_env_and_file_spelling() {
        let cmd = Wrapper::command();
        let mut keys = 0;
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" {
                continue;
            }
            keys += 1;
            assert_eq!(
                arg.get_long(),
                Some(id.replace('_', "-").as_str()),
                "flag of {id}"
            );
            let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or_default();
            assert_eq!(
                env,
                format!("BULKHEAD_{}", id.to_uppercase()),
                "env of {id}"
            );
            if id != "config" {
                let value = match id {
                    "listen" => "\"127.0.0.1:1\"".to_owned(),
                    "data_dir" | "store" | "admin_token" | "master_key" | "server_name"
                    | "audit_signing_key" => "\"x\"".to_owned(),
                    _ => "1".to_owned(),
                };
                let parsed: Result<FileConfig, _> = toml::from_str(&format!("{id} = {value}"));
                assert!(parsed.is_ok(), "file key {id}: {parsed:?}");
            }
        }
        assert!(keys >= 10);
        assert!(toml::from_str::<FileConfig>("no_such_key = 1").is_err());
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bulkhead.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nbody_bytes_max = 4096\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file),
            body_bytes_max: Some(8192),
            ..ServeArgs::default()
        };
        let s = args.resolve().unwrap();
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.body_bytes_max, 8192);
        assert_eq!(s.sqlite_path, PathBuf::from("./bulkhead-data/bulkhead.db"));
        assert!(
            ServeArgs {
                store: Some("postgres://x".into()),
                ..ServeArgs::default()
            }
            .resolve()
            .is_err()
        );
    }
}

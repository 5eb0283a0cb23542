//! The `bulkhead` binary: the CLI definition and the glue that starts the server or
//! talks to a running one. No business logic lives here.

#![forbid(unsafe_code)]

mod client;
mod config;
mod serve;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Bulkhead keeps every tenant's AI context sealed in its own compartment and proves
/// that nothing crossed between them.
///
/// Start a server on the embedded default (SQLite under ./bulkhead-data):
///
///     bulkhead serve
///
/// Then, from another shell, create a tenant and give it an API key:
///
///     bulkhead tenant create --name "Acme Corp"
///     bulkhead key issue tn_…
#[derive(Debug, Parser)]
#[command(name = "bulkhead", version, about, long_about, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (admin API, tenant API, metrics).
    ///
    /// Every setting comes, in order of precedence, from its flag, its BULKHEAD_*
    /// environment variable, the --config TOML file (same names, snake_case), or the
    /// default. On first start without BULKHEAD_MASTER_KEY / BULKHEAD_ADMIN_TOKEN a
    /// development master key and admin token are generated in the data directory
    /// (files 0600); production supplies its own.
    Serve(Box<config::ServeArgs>),
    /// Manage tenants on a running server (operator; uses the admin token).
    Tenant {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Issue and revoke tenant API keys on a running server (operator).
    Key {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        command: KeyCommand,
    },
}

/// How the CLI reaches a running server.
#[derive(Debug, Args)]
struct ConnArgs {
    /// Base URL of the server.
    #[arg(
        long,
        env = "BULKHEAD_SERVER",
        default_value = "http://127.0.0.1:7700",
        global = true
    )]
    server: String,
    /// Admin token. Defaults to the development token in <data-dir>/admin.token.
    #[arg(
        long,
        env = "BULKHEAD_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    admin_token: Option<String>,
    /// Data directory to read the development admin token from.
    #[arg(
        long,
        env = "BULKHEAD_DATA_DIR",
        default_value = "./bulkhead-data",
        global = true
    )]
    data_dir: PathBuf,
    /// Print the server's JSON instead of a summary.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Create a tenant: a new compartment with its own data key.
    ///
    /// Example: bulkhead tenant create --name "Acme Corp" --region eu-west --policy gdpr
    Create {
        /// Human-readable name (1 to 200 characters).
        #[arg(long)]
        name: String,
        /// Residency region tag; the tenant's rows and requests stay in it.
        #[arg(long)]
        region: Option<String>,
        /// Policy pack name.
        #[arg(long)]
        policy: Option<String>,
    },
    /// List tenants (all pages).
    List,
    /// Show one tenant.
    Show { tenant_id: String },
    /// Stop every request of the tenant's keys (403) without touching its data.
    Quarantine { tenant_id: String },
    /// Lift a quarantine.
    Release { tenant_id: String },
    /// Rotate the tenant's data key; older records are re-sealed in the background.
    RotateKey { tenant_id: String },
    /// Crypto-shred the tenant: destroy its data keys and delete its rows. Irreversible.
    Delete {
        tenant_id: String,
        /// Confirm that the tenant's data should be destroyed for good.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Issue an API key for a tenant. The key is printed once and never again.
    ///
    /// Example: bulkhead key issue tn_0123456789abcdef01234567 --ttl-seconds 86400
    Issue {
        tenant_id: String,
        /// Lifetime in seconds; without it the key lives until revoked.
        #[arg(long)]
        ttl_seconds: Option<u64>,
    },
    /// Revoke an API key; it stops working on the next request.
    Revoke { tenant_id: String, key_id: String },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Tenant { conn, command } => client::tenant(conn, command).await,
            Command::Key { conn, command } => client::key(conn, command).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}

//! `bulkhead serve`: resolve settings, obtain secrets, open the store and vault,
//! serve until SIGINT/SIGTERM, then drain and close.
//!
//! [`start`] builds everything and binds the listener, so `bulkhead demo` can run
//! the same server in-process; [`run`] is `serve` itself around it.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use bulkhead_app::{App, AppConfig};
use bulkhead_server::{AppState, ServerLimits};
use bulkhead_types::SystemClock;
use bulkhead_vault::Vault;
use zeroize::Zeroizing;

use crate::config::{ServeArgs, Settings, StoreSpec};

/// The log filter of `bulkhead serve` when RUST_LOG does not set one.
pub const LOG_FILTER_DEFAULT: &str = "info";

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(LOG_FILTER_DEFAULT);
    let settings = args.resolve()?;
    let store_spec = settings.store.clone();
    let server = start(settings).await?;
    let addr = server.addr();
    tracing::info!(store = ?store_spec, "bulkhead listening on http://{addr}");
    let stop = server.stop_handle();
    // Detached on purpose: if serving fails first, `wait` returns the error and the
    // process exits with this task still waiting for a signal that no longer matters.
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.stop();
    });
    server.wait().await
}

/// A server that is built and listening. Stop it with [`Server::stop_handle`], then
/// [`Server::wait`] for the audit logs and the store to close. Dropping it and
/// every stop handle also stops it, but then nobody waits for the close.
pub struct Server {
    addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    serving: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Asks a [`Server`] to stop: it accepts no new connections, gives in-flight
/// requests the shutdown grace, then closes the audit logs and the store.
#[derive(Clone)]
pub struct StopHandle(tokio::sync::watch::Sender<bool>);

impl StopHandle {
    pub fn stop(&self) {
        // `send_replace` stores the value even when the server already stopped
        // and nobody listens any more; stopping twice is harmless.
        self.0.send_replace(true);
    }
}

impl Server {
    /// The address the listener is bound to (the real port when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stop.clone())
    }

    /// Waits until the server has stopped: in-flight requests finished (or the
    /// grace ran out), queued audit events committed and signed, the store closed.
    /// Returns early with the error if serving HTTP failed.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.serving.await.context("the server task failed")?
    }
}

/// Builds everything `serve` needs from `settings` and binds the listener; the
/// server runs on the current runtime until stopped through [`Server::stop_handle`].
/// Logging is the caller's to set up.
pub async fn start(settings: Settings) -> anyhow::Result<Server> {
    let app = App::start(app_config(&settings)).await?;
    let (vault, audit) = (Arc::clone(&app.vault), Arc::clone(&app.audit));
    let retrieval = build_retrieval(&settings.retrieval)?;
    let guard = Arc::new(bulkhead_server::guard::GuardState::with_prompt_window(
        &vault,
        settings.guard_prompt_window_secs,
    ));
    guard
        .rebuild(&vault)
        .await
        .context("load the output guard's canaries and fingerprints")?;
    let gateway = build_gateway(&vault, &settings.gateway)?;
    let state = AppState::new(
        vault,
        Arc::clone(&audit),
        Arc::new(retrieval),
        guard,
        app.admin_token(),
        ServerLimits {
            body_bytes_max: settings.body_bytes_max,
            request_timeout: settings.request_timeout,
            auth_failures_per_address_per_min: settings.auth_failures_per_address_per_min,
            auth_refusals_logged_per_min: settings.auth_refusals_logged_per_min,
            metrics_token: settings.metrics_token.clone(),
        },
    )
    .with_gateway(gateway)
    .with_packs(app.packs.clone())
    .with_alerts(bulkhead_server::alerts::Alerts::with_settings(
        settings.alerts.clone(),
    ));
    state
        .quotas
        .set_defaults(settings.quotas, settings.quota_completion_reserve_tokens)
        .map_err(|e| anyhow::anyhow!("quota settings: {e}"))?;

    // Configuration drift: the effective isolation policy against the approved
    // baseline (a fresh store records the current one as the baseline).
    match bulkhead_server::drift::check(&state).await {
        Ok(status) if status.drift => {
            tracing::warn!(policy = %status.hash, approved = %status.approved_hash,
            changed = ?status.changed, "CONFIGURATION DRIFT: the isolation policy differs from the approved baseline; \
             approve it with `bulkhead config approve` if intended")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e.detail, "the policy baseline could not be checked"),
    }
    bulkhead_server::guard::spawn_shared_sync(state.app.clone());
    bulkhead_server::retention::spawn_sweeper(
        state.app.clone(),
        settings.sweep_interval,
        settings.sweep_batch_max,
    );

    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| {
            format!(
                "listen on {} (is another server running? use --listen)",
                settings.listen
            )
        })?;
    let addr = listener.local_addr()?;

    let router = bulkhead_server::app(state);
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let mut graceful_rx = stop_rx.clone();
    let grace = settings.shutdown_grace;
    let serving = tokio::spawn(async move {
        // The peer address reaches the handlers: refused credentials are limited
        // per client address (`bulkhead_server::flood`).
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        let server = axum::serve(listener, service).with_graceful_shutdown(async move {
            // An error means every sender is gone, which also means stop.
            let _ = graceful_rx.wait_for(|stopped| *stopped).await;
        });
        tokio::select! {
            result = server => result.context("serve HTTP")?,
            _ = async {
                let _ = stop_rx.wait_for(|stopped| *stopped).await;
                tokio::time::sleep(grace).await;
            } => tracing::warn!(grace_secs = grace.as_secs(), "in-flight requests did not finish in time; closing anyway"),
        }
        // Every acknowledged write was committed before its response was sent; this
        // commits audit events still queued, signs final checkpoints, then drains the
        // store's queue and folds the WAL into the database file.
        app.shutdown().await;
        tracing::info!("bulkhead stopped cleanly");
        Ok(())
    });
    Ok(Server {
        addr,
        stop: stop_tx,
        serving,
    })
}

fn build_gateway(
    vault: &Vault,
    settings: &crate::config::GatewaySettings,
) -> anyhow::Result<bulkhead_server::gateway::GatewayState> {
    use bulkhead_server::gateway::{GATEWAY_SECRET_PURPOSE, GatewayState};
    let secret = vault.derive_server_key(GATEWAY_SECRET_PURPOSE);
    let gateway = bulkhead_gateway::Gateway::new(
        bulkhead_gateway::GatewayConfig {
            upstreams: settings.upstreams.clone(),
            timeouts: settings.timeouts,
            ..bulkhead_gateway::GatewayConfig::default()
        },
        &secret,
    )
    .context("configure the model gateway")?;
    if settings.echo_models {
        tracing::warn!(
            "THE ECHO MODELS ARE ON: `bulkhead-echo` and `bulkhead-echo-leaky` answer with their whole prompt \
             (the leaky one with the previous caller's too). They exist for tests and demos; turn echo_models \
             off for real traffic."
        );
    }
    if gateway.is_empty() {
        tracing::info!(
            "no model upstream configured: /v1/chat/completions answers 404 for every model. \
             Set --upstream-url and --upstream-models, or [[upstreams]] in the config file."
        );
    }
    for u in gateway.upstreams() {
        tracing::info!(upstream = %u.name(), region = ?u.config.region.as_ref().map(|r| r.to_string()),
            models = ?u.config.models, cache_salt = u.config.cache_salt, "model upstream ready");
    }
    let mut state = GatewayState::new(gateway)
        .with_content(
            bulkhead_gateway::content::ContentLimits {
                part_bytes_max: settings.content_part_bytes_max,
                ..bulkhead_gateway::content::ContentLimits::default()
            },
            bulkhead_gateway::fetch::FetchConfig::default(),
        )
        .map_err(anyhow::Error::msg)
        .context("configure the image fetcher")?;
    state.sessions.ttl_secs_default = settings.session_ttl_secs;
    state.sessions.bytes_max = settings.session_bytes_max;
    state.trace_ttl_secs = settings.trace_ttl_secs;
    if settings.trace_commit_background {
        state.trace_commit = bulkhead_server::gateway::TraceCommit::Background;
        tracing::warn!(
            "trace_commit = background: answers are released before their audit entries are on disk; \
             a machine crash can lose the entries of the last few milliseconds"
        );
    }
    Ok(state)
}

/// Logs to stderr, filtered by RUST_LOG when it is set, else by `default_filter`
/// (an `EnvFilter` directive such as `info` or `error`). The first call wins.
pub fn init_logging(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: finishing in-flight requests");
}

fn build_retrieval(
    settings: &crate::config::RetrievalSettings,
) -> anyhow::Result<bulkhead_server::retrieval::Retrieval> {
    use crate::config::EmbedderSetting;
    use bulkhead_index::{Embedder, HashedNgramEmbedder, HttpEmbedder, IndexConfig};
    use bulkhead_server::retrieval::Embedders;
    let embedders = match &settings.embedder {
        EmbedderSetting::None => Embedders::none(),
        // In process: no text leaves, so one embedder serves every region.
        EmbedderSetting::Hashed { dimensions } => Embedders::every_region(
            HashedNgramEmbedder::new(*dimensions).context("the hashed embedder")?,
        ),
        EmbedderSetting::Http(list) => {
            let mut built: Vec<(bulkhead_types::Region, Arc<dyn Embedder>)> = Vec::new();
            for e in list {
                tracing::info!(region = %e.region, url = %e.config.base_url, model = %e.config.model,
                    "embedding this region's text with an OpenAI-compatible service");
                let embedder = HttpEmbedder::new(e.config.clone())
                    .with_context(|| format!("the HTTP embedder of region {}", e.region))?;
                built.push((e.region.clone(), Arc::new(embedder)));
            }
            tracing::info!(
                "tenants of regions without an embedder get BM25 search only: their text is sent to no embedder"
            );
            Embedders::by_region(built).context("the HTTP embedders")?
        }
    };
    Ok(bulkhead_server::retrieval::Retrieval {
        chunker: bulkhead_index::Chunker::new(settings.chunker).context("the chunker")?,
        index: IndexConfig {
            vector_dims: embedders.dimensions(),
            ..IndexConfig::default()
        },
        embedders,
        cache: bulkhead_index::IndexCache::new(settings.index_cache_bytes_max),
        default_mode: settings.default_mode,
        top_k_max: 50,
        query_bytes_max: 4096,
    })
}

/// The application's config from the binary's settings.
fn app_config(settings: &Settings) -> AppConfig {
    let spec = |spec: &StoreSpec| match spec {
        StoreSpec::Sqlite(path) => bulkhead_app::StoreSpec::Sqlite(path.clone()),
        StoreSpec::Postgres(url) => bulkhead_app::StoreSpec::Postgres(url.clone()),
    };
    AppConfig {
        data_dir: settings.data_dir.clone(),
        store: spec(&settings.store),
        regions: settings
            .regions
            .iter()
            .map(|r| bulkhead_app::RegionStore {
                region: r.region.clone(),
                store: spec(&r.store),
            })
            .collect(),
        sqlite_group_commit_max: settings.sqlite_group_commit_max,
        admin_token: settings.admin_token.clone().map(Zeroizing::new),
        master_key: settings.master_key.clone().map(Zeroizing::new),
        document_text_bytes_max: settings.document_text_bytes_max,
        audit_signing_key: settings.audit_signing_key.clone(),
        server_name: settings.server_name.clone(),
        audit_checkpoint_interval: settings.audit_checkpoint_interval,
        clock: Arc::new(SystemClock),
        policy_packs_dir: settings.policy_packs_dir.clone(),
    }
}

//! The operator CLI: `bulkhead tenant …` and `bulkhead key …` over the admin API of
//! a running server.

use anyhow::{Context, bail};
use bulkhead_api::admin_views::TenantExport;
use bulkhead_api::quotas::UsageResponse;
use bulkhead_api::receipt::ErasureReceipt;
use bulkhead_api::{IssuedKeyResponse, RotateKeyResponse, TenantListResponse, TenantResponse};
use bulkhead_client::{Answer, Method};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::{ConnArgs, KeyCommand, TenantCommand};

/// The admin token: --admin-token or BULKHEAD_ADMIN_TOKEN, else the development
/// token in the data directory.
pub(crate) fn admin_token(conn: &ConnArgs) -> anyhow::Result<Zeroizing<String>> {
    if let Some(t) = &conn.admin_token {
        return Ok(Zeroizing::new(t.clone()));
    }
    let path = conn.data_dir.join("admin.token");
    let text = Zeroizing::new(std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no admin token: set BULKHEAD_ADMIN_TOKEN or --admin-token (the development token is read from {}, \
             which could not be read)",
            path.display()
        )
    })?);
    Ok(Zeroizing::new(text.trim().to_owned()))
}

/// The client settings every CLI command uses: the library's bounds, and the
/// hint a user needs when nothing answers at `--server`.
pub(crate) fn cli_client_config(server: &str) -> bulkhead_client::ClientConfig {
    bulkhead_client::ClientConfig {
        unreachable_hint: "is `bulkhead serve` running? see --server".to_owned(),
        ..bulkhead_client::ClientConfig::new(server)
    }
}

pub(crate) struct AdminClient {
    http: bulkhead_client::Client,
    token: Zeroizing<String>,
    json: bool,
}

const ADMIN_HINT: &str = "check BULKHEAD_ADMIN_TOKEN / --admin-token";

impl AdminClient {
    pub(crate) fn new(conn: ConnArgs) -> anyhow::Result<Self> {
        let token = admin_token(&conn)?;
        let http = bulkhead_client::Client::new(cli_client_config(&conn.server))
            .context("build the HTTP client")?;
        Ok(Self {
            http,
            token,
            json: conn.json,
        })
    }

    /// An admin call: the answer as `T` and as the server sent it.
    pub(crate) async fn typed<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<bulkhead_client::Answer<T>> {
        let answer = self
            .http
            .json(
                method,
                &format!("/admin/v1{path}"),
                Some(self.token.as_str()),
                body.as_ref(),
                ADMIN_HINT,
            )
            .await?;
        Ok(answer)
    }

    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        Ok(self.typed::<Value>(method, path, body).await?.raw)
    }

    /// The server's audit verifier key (public; no credentials).
    pub(crate) async fn public_key(&self) -> anyhow::Result<String> {
        Ok(self.http.public_key().await?)
    }

    /// With `--json` the answer exactly as the server sent it, else `summary` of
    /// it typed.
    pub(crate) fn print<T>(&self, answer: &Answer<T>, summary: impl FnOnce(&T) -> String) {
        self.print_raw(&answer.raw, || summary(&answer.value));
    }

    /// With `--json` `raw`, else `summary`.
    pub(crate) fn print_raw(&self, raw: &Value, summary: impl FnOnce() -> String) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(raw).unwrap_or_default());
        } else {
            println!("{}", summary());
        }
    }
}

fn tenant_line(t: &TenantResponse) -> String {
    let models = match &t.models {
        Some(m) => m.join(","),
        None => "all-in-region".to_owned(),
    };
    format!(
        "{}  {:<24}  region={}  policy={}  status={}  key=v{}  models={}",
        t.id, t.name, t.region, t.policy, t.status, t.key_version, models,
    )
}

pub(crate) fn segment(id: &str) -> anyhow::Result<&str> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        bail!("{id:?} is not an id (expected something like tn_0123… or bhk_0123…)");
    }
    Ok(id)
}

pub async fn tenant(conn: ConnArgs, command: TenantCommand) -> anyhow::Result<()> {
    let client = AdminClient::new(conn)?;
    match command {
        TenantCommand::Create {
            name,
            region,
            policy,
            models,
        } => create_tenant(&client, name, region, policy, models).await?,
        TenantCommand::List => list_tenants(&client).await?,
        TenantCommand::Export { tenant_id, out } => {
            export_tenant(&client, &tenant_id, &out).await?
        }
        TenantCommand::Policy { tenant_id, policy } => {
            let body = json!({ "policy": policy });
            let t: Answer<TenantResponse> =
                on_tenant(&client, Method::PUT, &tenant_id, "/policy", Some(body)).await?;
            client.print(&t, tenant_line);
        }
        TenantCommand::Models { tenant_id, set, .. } => {
            let body = json!({ "models": set });
            let t: Answer<TenantResponse> =
                on_tenant(&client, Method::PUT, &tenant_id, "/models", Some(body)).await?;
            client.print(&t, tenant_line);
        }
        TenantCommand::Quotas {
            tenant_id,
            set,
            unset,
        } => set_quotas(&client, &tenant_id, set, &unset).await?,
        TenantCommand::Usage { tenant_id } => {
            let u: Answer<UsageResponse> =
                on_tenant(&client, Method::GET, &tenant_id, "/usage", None).await?;
            client.print(&u, usage_table);
        }
        TenantCommand::Show { tenant_id } => {
            let t: Answer<TenantResponse> =
                on_tenant(&client, Method::GET, &tenant_id, "", None).await?;
            client.print(&t, tenant_line);
        }
        TenantCommand::Quarantine { tenant_id } => {
            let t: Answer<TenantResponse> =
                on_tenant(&client, Method::POST, &tenant_id, "/quarantine", None).await?;
            client.print(&t, |t| format!("quarantined {}\nits keys now get 403; undo with `bulkhead tenant release {tenant_id}`", tenant_line(t)));
        }
        TenantCommand::Release { tenant_id } => {
            let t: Answer<TenantResponse> =
                on_tenant(&client, Method::DELETE, &tenant_id, "/quarantine", None).await?;
            client.print(&t, |t| format!("released {}", tenant_line(t)));
        }
        TenantCommand::RotateKey { tenant_id } => {
            let r: Answer<RotateKeyResponse> =
                on_tenant(&client, Method::POST, &tenant_id, "/rotate-key", None).await?;
            client.print(&r, |r| {
                format!(
                    "data key rotated to v{}; older records are re-sealed in the background",
                    r.key_version
                )
            });
        }
        TenantCommand::Delete {
            tenant_id,
            yes,
            receipt,
        } => erase_tenant(&client, &tenant_id, yes, receipt).await?,
    }
    Ok(())
}

/// Flags of `bulkhead tenant quotas`: each sets one limit of the tenant's own.
#[derive(Debug, Default, clap::Args)]
pub struct QuotaFlags {
    /// Requests a second, all the tenant's keys together.
    #[arg(long)]
    requests_per_second: Option<u32>,
    /// Requests a second from any one key.
    #[arg(long)]
    requests_per_second_per_key: Option<u32>,
    /// Requests in flight at once (a stream counts until its last byte).
    #[arg(long)]
    concurrent_requests: Option<u32>,
    /// Requests of one key in flight at once.
    #[arg(long)]
    concurrent_requests_per_key: Option<u32>,
    /// Model tokens per UTC minute.
    #[arg(long)]
    tokens_per_minute: Option<u64>,
    /// Model tokens per UTC day.
    #[arg(long)]
    tokens_per_day: Option<u64>,
    /// Bytes of text sent to an embedder per UTC day.
    #[arg(long)]
    embedding_bytes_per_day: Option<u64>,
    /// Sealed bytes stored (documents, chunks, sessions, messages).
    #[arg(long)]
    stored_bytes: Option<u64>,
    /// Live documents.
    #[arg(long)]
    documents: Option<u64>,
}

/// The tenant's own quotas (those whose source is `tenant`), the flags laid over
/// them, the `unset` ones removed, sent as the new set.
async fn set_quotas(
    client: &AdminClient,
    tenant_id: &str,
    set: QuotaFlags,
    unset: &[String],
) -> anyhow::Result<()> {
    let now: Answer<UsageResponse> =
        on_tenant(client, Method::GET, tenant_id, "/usage", None).await?;
    let mut own = serde_json::Map::new();
    if let Value::Object(effective) = serde_json::to_value(now.value.quotas)? {
        for (field, value) in effective {
            if now.value.sources.get(&field).is_some_and(|s| s == "tenant") {
                own.insert(field, value);
            }
        }
    }
    if let Value::Object(given) = json!({
        "requests_per_second": set.requests_per_second,
        "requests_per_second_per_key": set.requests_per_second_per_key,
        "concurrent_requests": set.concurrent_requests,
        "concurrent_requests_per_key": set.concurrent_requests_per_key,
        "tokens_per_minute": set.tokens_per_minute,
        "tokens_per_day": set.tokens_per_day,
        "embedding_bytes_per_day": set.embedding_bytes_per_day,
        "stored_bytes": set.stored_bytes,
        "documents": set.documents,
    }) {
        for (field, value) in given.into_iter().filter(|(_, v)| !v.is_null()) {
            own.insert(field, value);
        }
    }
    for field in unset {
        if !now.value.sources.contains_key(field) {
            bail!(
                "--unset {field:?}: not a quota; the names are {}",
                now.value
                    .sources
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        own.remove(field);
    }
    let u: Answer<UsageResponse> = on_tenant(
        client,
        Method::PUT,
        tenant_id,
        "/quotas",
        Some(Value::Object(own)),
    )
    .await?;
    client.print(&u, |u| {
        format!("quotas of {tenant_id} set\n{}", usage_table(u))
    });
    Ok(())
}

/// One line per quota: used, limit, where the limit comes from.
fn usage_table(u: &UsageResponse) -> String {
    let row = |name: &str, m: &bulkhead_api::quotas::Meter, source: &str| {
        let limit = m.limit.map_or("-".to_owned(), |l| l.to_string());
        format!("{name:<28} {:>14} {:>14}  {source}\n", m.used, limit)
    };
    let source = |f: &str| u.sources.get(f).map_or("none", String::as_str);
    let mut out = format!(
        "{:<28} {:>14} {:>14}  {}\n",
        "quota", "used", "limit", "limit from"
    );
    out += &row(
        "requests_per_second",
        &u.requests_this_second,
        source("requests_per_second"),
    );
    out += &row(
        "concurrent_requests",
        &u.concurrent_requests,
        source("concurrent_requests"),
    );
    out += &row(
        "tokens_per_minute",
        &u.tokens_this_minute,
        source("tokens_per_minute"),
    );
    out += &row("tokens_per_day", &u.tokens_today, source("tokens_per_day"));
    out += &row(
        "embedding_bytes_per_day",
        &u.embedding_bytes_today,
        source("embedding_bytes_per_day"),
    );
    out += &row("stored_bytes", &u.stored_bytes, source("stored_bytes"));
    out += &row("documents", &u.documents, source("documents"));
    let per_key = |f: &str| match u.sources.get(f).map(String::as_str) {
        Some("none") | None => None,
        Some(s) => Some(format!("{f}: {} ({s})", per_key_limit(u, f))),
    };
    for line in ["requests_per_second_per_key", "concurrent_requests_per_key"]
        .iter()
        .filter_map(|f| per_key(f))
    {
        out += &format!("{line}\n");
    }
    if !u.refused.is_empty() {
        let refused: Vec<String> = u.refused.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out += &format!("refused since start: {}\n", refused.join(" "));
    }
    out.trim_end().to_owned()
}

fn per_key_limit(u: &UsageResponse, field: &str) -> String {
    let limit = match field {
        "requests_per_second_per_key" => u.quotas.requests_per_second_per_key,
        _ => u.quotas.concurrent_requests_per_key,
    };
    limit.map_or("-".to_owned(), |l| l.to_string())
}

/// One admin call on `/tenants/{id}{suffix}`, the id checked first.
async fn on_tenant<T: DeserializeOwned>(
    client: &AdminClient,
    method: Method,
    tenant_id: &str,
    suffix: &str,
    body: Option<Value>,
) -> anyhow::Result<Answer<T>> {
    let path = format!("/tenants/{}{suffix}", segment(tenant_id)?);
    client.typed(method, &path, body).await
}

/// `bulkhead tenant create`: only the fields given are sent.
async fn create_tenant(
    client: &AdminClient,
    name: String,
    region: Option<String>,
    policy: Option<String>,
    models: Option<Vec<String>>,
) -> anyhow::Result<()> {
    let mut body = json!({ "name": name });
    if let Some(r) = region {
        body["region"] = json!(r);
    }
    if let Some(p) = policy {
        body["policy"] = json!(p);
    }
    if let Some(m) = models {
        body["models"] = json!(m);
    }
    let t: Answer<TenantResponse> = client.typed(Method::POST, "/tenants", Some(body)).await?;
    client.print(&t, |t| {
        format!(
            "created {}\nnext: bulkhead key issue {}",
            tenant_line(t),
            t.id
        )
    });
    Ok(())
}

/// `bulkhead tenant list`: every page, then one listing.
async fn list_tenants(client: &AdminClient) -> anyhow::Result<()> {
    /// A page's tenants as sent, for `--json`.
    #[derive(Deserialize)]
    struct RawPage {
        tenants: Vec<Value>,
    }
    let mut cursor: Option<String> = None;
    let mut all = Vec::new();
    let mut all_raw = Vec::new();
    loop {
        let path = match &cursor {
            Some(c) => format!("/tenants?limit=100&cursor={c}"),
            None => "/tenants?limit=100".to_owned(),
        };
        let page: Answer<TenantListResponse> = client.typed(Method::GET, &path, None).await?;
        all_raw.extend(RawPage::deserialize(&page.raw)?.tenants);
        all.extend(page.value.tenants);
        match page.value.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let listing = Answer {
        value: all,
        raw: Value::Array(all_raw),
    };
    client.print(&listing, |tenants| {
        let rows: Vec<String> = tenants.iter().map(tenant_line).collect();
        if rows.is_empty() {
            "no tenants yet; create one with `bulkhead tenant create --name …`".into()
        } else {
            rows.join("\n")
        }
    });
    Ok(())
}

/// `bulkhead tenant export`: the tenant's content, written 0600.
async fn export_tenant(
    client: &AdminClient,
    tenant_id: &str,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let data: Answer<TenantExport> =
        on_tenant(client, Method::GET, tenant_id, "/export", None).await?;
    let bytes = serde_json::to_vec_pretty(&data.raw)?;
    bulkhead_crypto::write_secret_file(out, &bytes)
        .with_context(|| format!("write {}", out.display()))?;
    println!(
        "exported {} documents, {} sessions and {} traces of {tenant_id} to {} (0600; it holds the tenant's content)",
        data.value.documents.len(),
        data.value.sessions.len(),
        data.value.traces.len(),
        out.display()
    );
    Ok(())
}

/// `bulkhead tenant delete --yes`: erases the tenant and saves the signed receipt.
async fn erase_tenant(
    client: &AdminClient,
    tenant_id: &str,
    yes: bool,
    receipt: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    if !yes {
        bail!(
            "deleting a tenant destroys its data keys: its data can never be read again, backups included. Re-run with --yes to confirm"
        );
    }
    let r: Answer<ErasureReceipt> = on_tenant(client, Method::DELETE, tenant_id, "", None).await?;
    let path =
        receipt.unwrap_or_else(|| std::path::PathBuf::from(format!("erasure-{tenant_id}.json")));
    let bytes = serde_json::to_vec_pretty(&r.raw).context("encode the receipt")?;
    std::fs::write(&path, bytes)
        .with_context(|| format!("save the erasure receipt to {}", path.display()))?;
    client.print(&r, |r| {
        // A statement field as JSON shows it: the receipt keeps them as sent.
        let field = |name: &str| r.statement.get(name).cloned().unwrap_or(Value::Null);
        format!(
            "erased {} at {}: {} data key(s) destroyed, {} record(s) and {} API key(s) deleted\n\
             the signed receipt is in {} (entry {} of the operator log); anyone can check it with\n  \
             bulkhead audit verify-receipt --file {} --vkey-file <the server's public key>",
            r.text("tenant_id").unwrap_or("?"),
            r.text("erased_at").unwrap_or("?"),
            field("data_keys_destroyed"),
            field("records_deleted"),
            field("api_keys_deleted"),
            path.display(),
            json!(r.operator_log.as_ref().map(|l| l.index)),
            path.display(),
        )
    });
    Ok(())
}

/// `bulkhead key issue`: the key is printed once, here.
async fn issue_key(
    client: &AdminClient,
    tenant_id: &str,
    ttl_seconds: Option<u64>,
) -> anyhow::Result<()> {
    let body = match ttl_seconds {
        Some(t) => json!({ "ttl_seconds": t }),
        None => json!({}),
    };
    let k: Answer<IssuedKeyResponse> = client
        .typed(
            Method::POST,
            &format!("/tenants/{}/keys", segment(tenant_id)?),
            Some(body),
        )
        .await?;
    client.print(&k, |k| {
        format!(
            "key id:  {}\nkey:     {}\nexpires: {}\nThis key is shown once; the server keeps only a hash. Use it as `Authorization: Bearer <key>`.",
            k.key_id,
            k.key,
            k.expires_at.as_deref().unwrap_or("never (until revoked)"),
        )
    });
    Ok(())
}

pub async fn key(conn: ConnArgs, command: KeyCommand) -> anyhow::Result<()> {
    let client = AdminClient::new(conn)?;
    let quarantine = matches!(command, KeyCommand::Quarantine { .. });
    match command {
        KeyCommand::Issue {
            tenant_id,
            ttl_seconds,
        } => issue_key(&client, &tenant_id, ttl_seconds).await?,
        KeyCommand::Revoke { tenant_id, key_id } => {
            client
                .call(
                    Method::DELETE,
                    &format!(
                        "/tenants/{}/keys/{}",
                        segment(&tenant_id)?,
                        segment(&key_id)?
                    ),
                    None,
                )
                .await?;
            if client.json {
                println!("{}", json!({ "revoked": key_id }));
            } else {
                println!("revoked {key_id}; it is refused from the next request on");
            }
        }
        KeyCommand::Quarantine { tenant_id, key_id }
        | KeyCommand::Release { tenant_id, key_id } => {
            let method = if quarantine {
                Method::POST
            } else {
                Method::DELETE
            };
            client
                .call(
                    method,
                    &format!(
                        "/tenants/{}/keys/{}/quarantine",
                        segment(&tenant_id)?,
                        segment(&key_id)?
                    ),
                    None,
                )
                .await?;
            if client.json {
                println!("{}", json!({ "key_id": key_id, "quarantined": quarantine }));
            } else if quarantine {
                println!(
                    "quarantined {key_id}: it gets 403 from the next request on; undo with \
                     `bulkhead key release {tenant_id} {key_id}`"
                );
            } else {
                println!("released {key_id}; it works again");
            }
        }
    }
    Ok(())
}

//! The `bulkhead-loadgen` binary: the command line, the runtime, the output.

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use bulkhead_loadgen::args::{parse_duration, parse_header};
use bulkhead_loadgen::run::{RunConfig, Target, run};
use bulkhead_loadgen::schedule::Schedule;
use bytes::Bytes;
use clap::Parser;
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Uri};

/// The largest request body accepted from --body-file.
const BODY_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// The most runtime threads.
const THREADS_MAX: usize = 64;

/// Sends requests at a constant rate, whatever the server does, and reports latency
/// percentiles measured from each request's scheduled send time.
///
///     bulkhead-loadgen --url http://127.0.0.1:8080/v1/chat/completions --rate 500 \
///         --duration 20s --warmup 3s --header 'Authorization: Bearer …' \
///         --body-file req.json --header-metric x-bulkhead-overhead-ms --json
#[derive(Debug, Parser)]
#[command(name = "bulkhead-loadgen", version, about, verbatim_doc_comment)]
struct Cli {
    /// Target URL (http only).
    #[arg(long)]
    url: Uri,
    /// Requests per second.
    #[arg(long)]
    rate: f64,
    /// Length of the measured phase (ms, s, m or h).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Length of the warmup phase before it: same rate, nothing recorded.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    warmup: Duration,
    /// Keep-alive connections; also the most requests in flight.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// HTTP method [default: POST with a body, else GET].
    #[arg(long)]
    method: Option<Method>,
    /// A request header, 'Name: value'; repeatable. Content-Type defaults to
    /// application/json when there is a body.
    #[arg(long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Request body from a file.
    #[arg(long, conflicts_with = "body")]
    body_file: Option<PathBuf>,
    /// Request body.
    #[arg(long)]
    body: Option<String>,
    /// Runtime threads. One leaves the most CPU to a server on the same machine.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// A numeric response header in milliseconds whose p50 and p99 are reported
    /// (e.g. x-bulkhead-overhead-ms).
    #[arg(long)]
    header_metric: Option<HeaderName>,
    /// The longest one request may take, waiting for a connection included.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// Also print the result as one JSON line on stdout (the summary goes to stderr).
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = config(&cli)?;
    if !(1..=THREADS_MAX).contains(&cli.threads) {
        bail!("threads must be 1 to {THREADS_MAX}");
    }
    let runtime = if cli.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()
    }
    .context("start the tokio runtime")?;
    let report = runtime.block_on(run(config))?;

    if cli.json {
        eprint!("{report}");
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        print!("{report}");
    }
    Ok(())
}

fn config(cli: &Cli) -> anyhow::Result<RunConfig> {
    if cli.url.scheme_str() != Some("http") || cli.url.host().is_none() {
        bail!("--url must be an http:// URL with a host (no TLS)");
    }
    let schedule = Schedule::new(cli.rate, cli.warmup, cli.duration)?;
    if cli.timeout.is_zero() {
        bail!("timeout must be above 0");
    }
    let body = match (&cli.body, &cli.body_file) {
        (Some(text), _) => Bytes::from(text.clone()),
        (None, Some(path)) => {
            let len = std::fs::metadata(path)
                .with_context(|| format!("read {}", path.display()))?
                .len();
            if len > BODY_BYTES_MAX {
                bail!("{} is over {BODY_BYTES_MAX} bytes", path.display());
            }
            Bytes::from(std::fs::read(path).with_context(|| format!("read {}", path.display()))?)
        }
        (None, None) => Bytes::new(),
    };
    let has_body = cli.body.is_some() || cli.body_file.is_some();
    let mut headers = HeaderMap::new();
    if has_body {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    for (name, value) in &cli.headers {
        if name == CONTENT_TYPE {
            headers.insert(name.clone(), value.clone());
        } else {
            headers.append(name.clone(), value.clone());
        }
    }
    let method = cli
        .method
        .clone()
        .unwrap_or(if has_body { Method::POST } else { Method::GET });
    Ok(RunConfig {
        target: Target {
            method,
            uri: cli.url.clone(),
            headers,
            body,
        },
        schedule,
        connections: cli.connections,
        timeout: cli.timeout,
        header_metric: cli.header_metric.clone(),
    })
}

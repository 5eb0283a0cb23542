//! The mock upstream as a process, for benchmarks and for poking at a gateway
//! by hand.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use bulkhead_mock_upstream::{MockOptions, MockUpstream};
use clap::Parser;
use clap::builder::RangedU64ValueParser;
use tokio::net::TcpListener;

const MODELS_HELP: &str = "\
Models (pick one with the request's \"model\"):
  echo             answers with the whole prompt, \"{role}: {text}\\n\" per message
  leaky            answers with the previous leaky caller's prompt, then this one's;
                   one memory shared by every caller, like a leaking prefix cache
  fast             answers \"ok\" as cheaply as possible, for latency benchmarks
  multi            answers with n choices (at least 2, at most 8), each a consecutive
                   part of the echo; streamed, the choices' pieces interleave
  tools            answers with one tool call per --chunk-chars of the echo (string
                   and object arguments, custom tool input); no content
  extras           the echo plus unknown fields at every level, logprobs, and audio
                   (data, and the echo as transcript)
  refusal          the echo as the model's refusal, no content
  leaky-multi      multi, tools and refusal with the leaky answer instead of the
  leaky-tools      echo, from the same shared memory: the previous leaky caller's
  leaky-refusal    prompt comes back split into choices, tool calls or a refusal
  fault-500        500 with an OpenAI server_error body
  fault-malformed  200 with JSON that does not parse (streamed: one good chunk,
                   then an event that is not JSON)
  fault-cut        announces 1000 bytes, sends 20 and drops the connection
                   (streamed: two content chunks, then the connection drops)
  fault-drip       one byte (streamed: one \".\" chunk) per --drip-ms, forever
  fault-hang       never answers; ends only when the client hangs up
  fault-empty      200 with no choices (streamed: only data: [DONE])

Endpoints: GET /v1/models, POST /v1/chat/completions, POST /v1/embeddings
(deterministic unit vectors; fault-500 fails, every other model answers).

Prints `listening on http://ADDR/v1` once bound, then serves until killed.";

/// A mock OpenAI-compatible upstream that misbehaves on demand.
#[derive(Debug, Parser)]
#[command(name = "bulkhead-mock-upstream", version, after_help = MODELS_HELP)]
struct Args {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Milliseconds to wait before answering any model request.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Characters of the answer per streamed content chunk (and per tool call of
    /// the tools model).
    #[arg(long, default_value_t = 16, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    chunk_chars: usize,
    /// Milliseconds between the bytes or chunks of a fault-drip response.
    #[arg(long, default_value_t = 1000)]
    drip_ms: u64,
    /// Do not keep requests in memory (keeps memory flat in benchmarks).
    #[arg(long)]
    no_record: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let options = MockOptions {
        chunk_chars: args.chunk_chars,
        drip_interval: Duration::from_millis(args.drip_ms),
        latency: Duration::from_millis(args.latency_ms),
        record_requests: !args.no_record,
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    // Scripts wait for this exact line to learn the port, so it goes out
    // whole and at once.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{addr}/v1").context("writing to stdout")?;
    stdout.flush().context("flushing stdout")?;
    drop(stdout);

    tokio::select! {
        served = MockUpstream::serve(listener, options) => served.context("serving"),
        signal = shutdown_signal() => signal,
    }
}

/// Resolves on SIGINT, or SIGTERM on Unix, so that either exits cleanly.
async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        tokio::select! {
            interrupted = tokio::signal::ctrl_c() => interrupted.context("listening for SIGINT"),
            _ = terminate.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .context("listening for SIGINT")
    }
}

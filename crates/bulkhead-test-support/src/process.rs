//! A real `bulkhead serve` process for end-to-end tests: started on a free port
//! with its own data directory, its log drained (the tail kept for failure
//! messages), SIGTERM and SIGKILL on request, killed when dropped. Plus the few
//! HTTP helpers those tests share.
//!
//! The binary is passed in by path: only the `bulkhead` crate's own tests and
//! benches know it, as `env!("CARGO_BIN_EXE_bulkhead")`.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::mpsc;

/// A fixed admin token for tests (the server requires at least 16 characters).
pub const ADMIN_TOKEN: &str = "durability-test-admin-token-0123456789abcdef";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Server log lines kept for panic messages.
const LOG_TAIL_LINES: usize = 40;

pub fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A writer that panicked while holding the lock has already failed the
    // test through its join handle; the data itself is still usable.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running `bulkhead serve`, killed with SIGKILL when dropped, so that a
/// failing test never leaves a server behind.
#[derive(Debug)]
pub struct Server {
    pub child: Child,
    pub base_url: String,
    /// The binary this server runs; [`Server::cli`] runs the same one.
    bin: PathBuf,
    log_tail: Arc<Mutex<VecDeque<String>>>,
}

impl Server {
    /// Starts the binary and waits until it says where it listens. Its stdout
    /// and stderr are drained by threads for the rest of its life, so a full
    /// pipe can never stall it.
    pub async fn start(bin: impl AsRef<Path>, data_dir: &Path) -> Server {
        Self::start_with(bin, data_dir, &[]).await
    }

    /// Starts the binary with extra environment variables.
    pub async fn start_with(
        bin: impl AsRef<Path>,
        data_dir: &Path,
        env: &[(&str, &str)],
    ) -> Server {
        let bin = bin.as_ref().to_path_buf();
        let child = Command::new(&bin)
            .arg("serve")
            .env("BULKHEAD_DATA_DIR", data_dir)
            .env("BULKHEAD_LISTEN", "127.0.0.1:0")
            .env("BULKHEAD_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the bulkhead binary");
        let mut server = Server {
            child,
            base_url: String::new(),
            bin,
            log_tail: Arc::default(),
        };

        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
        let stdout = server
            .child
            .stdout
            .take()
            .expect("stdout was configured as piped");
        let stderr = server
            .child
            .stderr
            .take()
            .expect("stderr was configured as piped");
        drain(stdout, ready_tx.clone(), Arc::clone(&server.log_tail));
        drain(stderr, ready_tx, Arc::clone(&server.log_tail));

        let addr = match tokio::time::timeout(STARTUP_TIMEOUT, ready_rx.recv()).await {
            Ok(Some(addr)) => addr,
            Ok(None) => panic!(
                "bulkhead exited before it was listening ({:?})\n{}",
                server.child.try_wait(),
                server.log_tail()
            ),
            Err(_elapsed) => panic!(
                "bulkhead did not log `listening on http://…` within {STARTUP_TIMEOUT:?}\n{}",
                server.log_tail()
            ),
        };
        server.base_url = format!("http://{addr}");
        server
    }

    /// The same binary as a CLI pointed at this server as the operator (see
    /// [`crate::cli::operator`]); add the arguments and run it with
    /// [`crate::cli::run`].
    pub fn cli(&self) -> Command {
        crate::cli::operator(&self.bin, &self.base_url)
    }

    /// [`Server::cli`] working in `dir`, which is also its data directory
    /// (where commands write their files and find a local key).
    pub fn cli_in(&self, dir: &Path) -> Command {
        let mut command = self.cli();
        command.current_dir(dir).env("BULKHEAD_DATA_DIR", dir);
        command
    }

    /// Sends SIGTERM and waits for the server to finish shutting down.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        // The shell's builtin `kill`, so no procps package is needed.
        let sent = std::process::Command::new("sh")
            .args(["-c", &format!("kill -TERM {pid}")])
            .status()
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM {pid} failed");
        self.child.wait().expect("reap the stopped server")
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill_9(&mut self) -> ExitStatus {
        // `Child::kill` is SIGKILL on Unix.
        self.child.kill().expect("send SIGKILL to the server");
        self.child.wait().expect("reap the killed server")
    }

    pub fn log_tail(&self) -> String {
        let tail = lock(&self.log_tail);
        let mut out = format!("--- last {} server log lines ---\n", tail.len());
        for line in tail.iter() {
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Errors mean the process is already gone, which is what we want.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `stream` line by line until it closes, keeping the last lines for
/// panic messages and reporting the listen address once it appears.
fn drain(
    stream: impl Read + Send + 'static,
    ready: mpsc::UnboundedSender<SocketAddr>,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = parse_listen_line(&line) {
                // The receiver is gone once the server is up; that is fine.
                let _ = ready.send(addr);
            }
            let mut tail = lock(&tail);
            if tail.len() == LOG_TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    });
}

/// Finds `listening on http://ADDR` in a log line, with or without colour codes.
fn parse_listen_line(line: &str) -> Option<SocketAddr> {
    const MARKER: &str = "listening on http://";
    let rest = &line[line.find(MARKER)? + MARKER.len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Sends `request`, asserts the status, and returns the JSON body.
pub async fn expect_json(
    request: reqwest::RequestBuilder,
    expected: StatusCode,
    what: &str,
) -> Value {
    let response = request
        .send()
        .await
        .unwrap_or_else(|error| panic!("{what}: {error}"));
    let status = response.status();
    let body = response
        .text()
        .await
        .unwrap_or_else(|error| panic!("{what}: read body: {error}"));
    assert_eq!(status, expected, "{what}: unexpected status, body: {body}");
    serde_json::from_str(&body)
        .unwrap_or_else(|error| panic!("{what}: body is not JSON ({error}): {body}"))
}

/// A string field of a JSON object, or a panic naming it.
pub fn string_field(value: &Value, field: &str) -> String {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("expected a string field {field:?} in {value}"))
        .to_owned()
}

/// Creates a tenant named `name` through the admin API and issues it a key;
/// returns (tenant id, API key).
pub async fn tenant_with_key(
    client: &reqwest::Client,
    base_url: &str,
    name: &str,
) -> (String, String) {
    let tenant = expect_json(
        client
            .post(format!("{base_url}/admin/v1/tenants"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({ "name": name })),
        StatusCode::CREATED,
        "create a tenant",
    )
    .await;
    let id = string_field(&tenant, "id");
    let key = expect_json(
        client
            .post(format!("{base_url}/admin/v1/tenants/{id}/keys"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({})),
        StatusCode::CREATED,
        "create a tenant key",
    )
    .await;
    (id, string_field(&key, "key"))
}

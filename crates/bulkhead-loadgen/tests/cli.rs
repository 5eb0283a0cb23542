//! End to end: the real binary against a tiny in-process axum server. Counts only;
//! the one bound on timing (ok ≥ 150 of 200) is a sanity check that survives a
//! loaded CI machine, not a benchmark.

use std::net::SocketAddr;
use std::process::Command;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::Value;

/// Starts the server on its own thread and runtime, so the test thread is free to
/// wait for the child process. Returns its address.
fn server() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let addr = listener.local_addr().expect("bound socket has an address");
    listener.set_nonblocking(true).expect("set nonblocking");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("test runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            let app = Router::new()
                .route(
                    "/ok",
                    post(|body: String| async move {
                        // A wrong body would show up as non-2xx in the counts.
                        let status = if body == r#"{"model":"fast"}"# {
                            StatusCode::OK
                        } else {
                            StatusCode::BAD_REQUEST
                        };
                        let header = [("x-bulkhead-overhead-ms", "0.25")];
                        (status, header, "ok ".repeat(1000))
                    }),
                )
                .route("/fail", get(|| async { StatusCode::SERVICE_UNAVAILABLE }));
            axum::serve(listener, app).await.expect("serve");
        });
    });
    addr
}

/// Runs the binary with `args` and returns its JSON line.
fn loadgen(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead-loadgen"))
        .args(args)
        .arg("--json")
        .output()
        .expect("run bulkhead-loadgen");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "loadgen failed: {stderr}");
    let stdout = String::from_utf8(out.stdout).expect("utf-8 output");
    assert_eq!(stdout.lines().count(), 1, "one JSON line: {stdout}");
    serde_json::from_str(&stdout).expect("valid JSON")
}

fn count(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {report}"))
}

#[test]
fn counts_responses_at_a_constant_rate() {
    let addr = server();
    let url = format!("http://{addr}/ok");
    let report = loadgen(&[
        "--url",
        &url,
        "--rate",
        "200",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--connections",
        "8",
        "--body",
        r#"{"model":"fast"}"#,
        "--header-metric",
        "x-bulkhead-overhead-ms",
    ]);
    // Exactly the measured phase is counted: 1 s at 200/s, warmup excluded.
    assert_eq!(count(&report, "sent"), 200, "{report}");
    let ok = count(&report, "ok");
    assert!(ok >= 150, "{report}");
    assert_eq!(
        ok + count(&report, "non_2xx") + count(&report, "errors"),
        200
    );
    assert_eq!(report["url"], url.as_str());
    assert_eq!(report["rate"], 200.0);
    assert_eq!(report["duration_s"], 1.0);
    let latency = &report["latency_ms"];
    for key in ["p50", "p90", "p99", "p999", "max", "mean"] {
        assert!(
            latency[key].as_f64().is_some_and(|v| v > 0.0),
            "{key}: {report}"
        );
    }
    assert!(latency["p50"].as_f64() <= latency["max"].as_f64());
    // Every 2xx carried the header; its value is the server's, not a latency.
    assert_eq!(report["header_ms"]["p50"], 0.25);
    assert_eq!(report["header_ms"]["p99"], 0.25);
    assert_eq!(count(&report, "header_missing"), 0);
    assert!(report["behind_schedule"].is_u64());
}

#[test]
fn counts_non_2xx_and_transport_errors_apart() {
    let addr = server();
    let fail = loadgen(&[
        "--url",
        &format!("http://{addr}/fail"),
        "--rate",
        "100",
        "--duration",
        "500ms",
    ]);
    assert_eq!(count(&fail, "sent"), 50, "{fail}");
    assert_eq!(count(&fail, "non_2xx"), 50, "{fail}");
    assert_eq!(count(&fail, "errors"), 0, "{fail}");
    assert_eq!(fail["latency_ms"], Value::Null);
    assert_eq!(fail["header_ms"], Value::Null);

    // A port nobody listens on: every request is a transport error.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let closed_addr = closed.local_addr().expect("bound socket has an address");
    drop(closed);
    let refused = loadgen(&[
        "--url",
        &format!("http://{closed_addr}/"),
        "--rate",
        "100",
        "--duration",
        "500ms",
    ]);
    assert_eq!(count(&refused, "sent"), 50, "{refused}");
    assert_eq!(count(&refused, "errors"), 50, "{refused}");
    assert_eq!(count(&refused, "ok"), 0, "{refused}");
    assert!(
        refused["first_error"]
            .as_str()
            .is_some_and(|e| e.contains("onnect")),
        "{refused}"
    );
}

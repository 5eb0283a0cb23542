//! `HttpEmbedder` against small OpenAI-compatible servers started in-process:
//! batching and ordering, retries on 5xx and 429, no retry on malformed JSON or a
//! 4xx, timeouts, dimension checks, and the API key header.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bulkhead_index::{EmbedError, Embedder, HttpEmbedder, HttpEmbedderConfig};
use bulkhead_types::TenantId;
use serde_json::{Value, json};

#[derive(Clone, Copy)]
enum Behaviour {
    /// Answers with vectors `[len(text), i, 1]`, items in reverse order.
    Ok,
    /// 503 twice, then as `Ok`.
    FailTwice,
    /// 429 with `Retry-After: 0` once, then as `Ok`.
    RateLimitedOnce,
    Malformed,
    BadRequest,
    WrongDims,
    Slow,
}

#[derive(Clone)]
struct Mock {
    behaviour: Behaviour,
    calls: Arc<AtomicUsize>,
    batch_sizes: Arc<std::sync::Mutex<Vec<usize>>>,
    auth: Arc<std::sync::Mutex<Option<String>>>,
}

async fn embeddings(
    State(m): State<Mock>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let call = m.calls.fetch_add(1, Ordering::SeqCst);
    *m.auth.lock().expect("lock") = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let inputs: Vec<String> = body["input"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    m.batch_sizes.lock().expect("lock").push(inputs.len());
    let ok = |dims: usize| {
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .rev()
            .map(|(i, t)| {
                let mut v = vec![t.len() as f32, i as f32, 1.0];
                v.resize(dims, 0.0);
                json!({"object": "embedding", "index": i, "embedding": v})
            })
            .collect();
        Json(json!({"object": "list", "data": data, "model": body["model"]})).into_response()
    };
    match m.behaviour {
        Behaviour::Ok => ok(3),
        Behaviour::FailTwice if call < 2 => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Behaviour::FailTwice => ok(3),
        Behaviour::RateLimitedOnce if call == 0 => {
            (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "0")]).into_response()
        }
        Behaviour::RateLimitedOnce => ok(3),
        Behaviour::Malformed => (
            StatusCode::OK,
            [("content-type", "application/json")],
            "{\"data\": [ {\"embedding\": [1, 2,",
        )
            .into_response(),
        Behaviour::BadRequest => StatusCode::BAD_REQUEST.into_response(),
        Behaviour::WrongDims => ok(5),
        Behaviour::Slow => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            ok(3)
        }
    }
}

async fn serve(behaviour: Behaviour) -> (String, Mock) {
    let mock = Mock {
        behaviour,
        calls: Arc::new(AtomicUsize::new(0)),
        batch_sizes: Arc::default(),
        auth: Arc::default(),
    };
    let app = Router::new()
        .route("/v1/embeddings", post(embeddings))
        .with_state(mock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    (format!("http://{addr}/v1"), mock)
}

fn config(base: &str) -> HttpEmbedderConfig {
    HttpEmbedderConfig {
        batch_size: 2,
        timeout_ms: 500,
        retries_max: 3,
        backoff_ms: 5,
        ..HttpEmbedderConfig::new(base, "test-model", 3)
    }
}

fn tenant() -> TenantId {
    TenantId::from_random([3; 12])
}

#[tokio::test]
async fn batches_in_order_with_the_api_key() {
    let (base, mock) = serve(Behaviour::Ok).await;
    let e = HttpEmbedder::new(HttpEmbedderConfig {
        api_key: Some(zeroize::Zeroizing::new("sk-test".into())),
        ..config(&base)
    })
    .expect("embedder");
    assert_eq!(e.dimensions(), 3);
    let texts = ["a", "bb", "ccc", "dddd", "eeeee"];
    let v = e.embed(&tenant(), &texts).await.expect("embed");
    // Items came back reversed; they are put back in input order.
    let lens: Vec<f32> = v.iter().map(|x| x[0]).collect();
    assert_eq!(lens, [1.0, 2.0, 3.0, 4.0, 5.0]);
    assert_eq!(*mock.batch_sizes.lock().expect("lock"), [2, 2, 1]);
    assert_eq!(
        mock.auth.lock().expect("lock").as_deref(),
        Some("Bearer sk-test")
    );
}

#[tokio::test]
async fn transient_failures_are_retried() {
    let (base, mock) = serve(Behaviour::FailTwice).await;
    let e = HttpEmbedder::new(config(&base)).expect("embedder");
    let v = e
        .embed(&tenant(), &["x"])
        .await
        .expect("third attempt succeeds");
    assert_eq!(v.len(), 1);
    assert_eq!(mock.calls.load(Ordering::SeqCst), 3);

    let (base, mock) = serve(Behaviour::RateLimitedOnce).await;
    let e = HttpEmbedder::new(config(&base)).expect("embedder");
    e.embed(&tenant(), &["x"]).await.expect("retried after 429");
    assert_eq!(mock.calls.load(Ordering::SeqCst), 2);

    // Out of retries: the last error is returned.
    let (base, mock) = serve(Behaviour::FailTwice).await;
    let e = HttpEmbedder::new(HttpEmbedderConfig {
        retries_max: 1,
        ..config(&base)
    })
    .expect("embedder");
    let err = e.embed(&tenant(), &["x"]).await.expect_err("gives up");
    assert_eq!(err, EmbedError::Status { status: 503 });
    assert_eq!(mock.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn malformed_answers_and_client_errors_are_not_retried() {
    let (base, mock) = serve(Behaviour::Malformed).await;
    let e = HttpEmbedder::new(config(&base)).expect("embedder");
    let err = e.embed(&tenant(), &["x"]).await.expect_err("malformed");
    assert!(matches!(err, EmbedError::Malformed(_)), "{err:?}");
    assert_eq!(mock.calls.load(Ordering::SeqCst), 1);

    let (base, mock) = serve(Behaviour::BadRequest).await;
    let e = HttpEmbedder::new(config(&base)).expect("embedder");
    let err = e.embed(&tenant(), &["x"]).await.expect_err("400");
    assert_eq!(err, EmbedError::Status { status: 400 });
    assert_eq!(mock.calls.load(Ordering::SeqCst), 1);

    let (base, _) = serve(Behaviour::WrongDims).await;
    let e = HttpEmbedder::new(config(&base)).expect("embedder");
    let err = e.embed(&tenant(), &["x"]).await.expect_err("dims");
    assert_eq!(
        err,
        EmbedError::Dimensions {
            expected: 3,
            got: 5
        }
    );
}

#[tokio::test]
async fn timeouts_are_retried_then_reported() {
    let (base, mock) = serve(Behaviour::Slow).await;
    let e = HttpEmbedder::new(HttpEmbedderConfig {
        timeout_ms: 50,
        retries_max: 1,
        ..config(&base)
    })
    .expect("embedder");
    let err = e.embed(&tenant(), &["x"]).await.expect_err("timeout");
    assert_eq!(err, EmbedError::Timeout);
    assert_eq!(mock.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn unreachable_servers_and_bad_configs_give_clear_errors() {
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let e = HttpEmbedder::new(HttpEmbedderConfig {
        retries_max: 0,
        ..config(&format!("http://127.0.0.1:{port}/v1"))
    })
    .expect("embedder");
    let err = e.embed(&tenant(), &["x"]).await.expect_err("refused");
    assert!(matches!(err, EmbedError::Connect(_)), "{err:?}");
    assert!(HttpEmbedder::new(config("ftp://x")).is_err());
    assert!(
        HttpEmbedder::new(HttpEmbedderConfig {
            batch_size: 0,
            ..config("http://x/v1")
        })
        .is_err()
    );
}

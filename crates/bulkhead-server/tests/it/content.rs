//! Content parts besides text over HTTP: refused for a tenant whose pack opens
//! none (and the upstream never asked), a `file_id` refused for everyone, an image
//! URL fetched by Bulkhead itself — never passed through — from public addresses
//! only, within the cap, and sent upstream as a `data:` URL.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::{StatusCode, header};
use base64::Engine as _;
use bulkhead_gateway::content::ContentLimits;
use bulkhead_gateway::fetch::{FetchConfig, ImageFetcher};
use bulkhead_mock_upstream::{MockOptions, MockUpstream};
use serde_json::{Value, json};

use crate::common::{Api, Reply, assert_problem};
use crate::gateway::mock_upstream;

/// What the image host serves at `/cat.png`.
const CAT: &[u8] = b"\x89PNG\r\n\x1a\n a very small cat";
/// The part cap of these tests.
const CAP: usize = 4096;

/// An HTTP server on loopback with an image, a big image, a page and a redirect
/// to the cloud metadata address; counts the requests it answers.
struct ImageHost {
    base: String,
    hits: Arc<AtomicUsize>,
}

async fn image_host() -> ImageHost {
    use axum::response::IntoResponse;
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = |hits: &Arc<AtomicUsize>| {
        hits.fetch_add(1, Ordering::SeqCst);
    };
    let (h1, h2, h3, h4) = (hits.clone(), hits.clone(), hits.clone(), hits.clone());
    let router = axum::Router::new()
        .route(
            "/cat.png",
            axum::routing::get(move || async move {
                counted(&h1);
                ([(header::CONTENT_TYPE, "image/png")], CAT).into_response()
            }),
        )
        .route(
            "/big.png",
            axum::routing::get(move || async move {
                counted(&h2);
                ([(header::CONTENT_TYPE, "image/png")], vec![0u8; CAP + 1]).into_response()
            }),
        )
        .route(
            "/page",
            axum::routing::get(move || async move {
                counted(&h3);
                ([(header::CONTENT_TYPE, "text/html")], "<p>hi</p>").into_response()
            }),
        )
        .route(
            "/hop",
            axum::routing::get(move || async move {
                counted(&h4);
                axum::response::Redirect::temporary("http://169.254.169.254/latest/meta-data/")
                    .into_response()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    ImageHost { base, hits }
}

/// A server over a mock upstream with the `vision` pack (images and files open),
/// the part cap `CAP`, and a fetcher that may reach loopback only if `loopback`.
async fn content_api(loopback: bool) -> (MockUpstream, Api) {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let mut api = Api::new().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("vision.toml"),
        "name = \"vision\"\ndescription = \"images and files\"\n[retention]\naudit_retention_days_min = 1\n\
         [content]\nallow = [\"image_url\", \"file\"]\n",
    )
    .unwrap();
    api.state = api
        .state
        .clone()
        .with_packs(bulkhead_app::packs::Packs::with_folder(dir.path()).unwrap());
    let api = api.with_upstreams_and(
        vec![mock_upstream(&mock, "default", None)],
        bulkhead_gateway::Timeouts::default(),
        |gw| {
            gw.content_limits = ContentLimits {
                part_bytes_max: CAP,
                ..ContentLimits::default()
            };
            gw.fetcher = ImageFetcher::new(FetchConfig {
                bytes_max: CAP,
                loopback_for_tests: loopback,
                ..FetchConfig::default()
            })
            .unwrap();
        },
    );
    (mock, api)
}

fn with_parts(parts: Value) -> Value {
    json!({"model": "echo", "messages": [{"role": "user", "content": parts}]})
}

fn look_at(url: &str) -> Value {
    with_parts(json!([
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": url}},
    ]))
}

async fn chat(api: &Api, key: &str, body: Value) -> Reply {
    api.call("POST", "/v1/chat/completions", Some(key), Some(body))
        .await
}

/// A 400 whose detail starts with the part's place and contains `needle`.
fn assert_refused(reply: &Reply, place: &str, needle: &str) {
    assert_problem(reply, StatusCode::BAD_REQUEST, needle);
    let detail = reply.json()["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.starts_with(&format!("{place}: ")) && detail.contains(needle),
        "{detail}"
    );
}

#[tokio::test]
async fn a_tenant_whose_pack_opens_nothing_sends_text_only() {
    let (mock, api) = content_api(true).await;
    let host = image_host().await;
    let (_, key) = api.tenant_with_key("Plain").await;
    let r = chat(&api, &key, look_at(&format!("{}/cat.png", host.base))).await;
    assert_refused(
        &r,
        "messages[0].content[1]",
        "image_url parts are not allowed for this tenant",
    );
    let inline = look_at("data:image/png;base64,iVBORw0KGgo=");
    let r = chat(&api, &key, inline).await;
    assert_refused(
        &r,
        "messages[0].content[1]",
        "image_url parts are not allowed",
    );
    let audio = with_parts(
        json!([{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]),
    );
    let r = chat(&api, &key, audio).await;
    assert_refused(
        &r,
        "messages[0].content[0]",
        "input_audio parts are not allowed",
    );
    let unknown = with_parts(json!([{"type": "video_url", "video_url": {"url": "x"}}]));
    let r = chat(&api, &key, unknown).await;
    assert_refused(&r, "messages[0].content[0]", "video_url");
    assert!(mock.requests().is_empty(), "no model was asked");
    assert_eq!(host.hits.load(Ordering::SeqCst), 0, "nothing was fetched");
    // Text parts go through as before.
    let text = with_parts(json!([{"type": "text", "text": "hello"}]));
    let r = chat(&api, &key, text).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(
        mock.requests()[0].body["messages"][0]["content"],
        json!([{"type": "text", "text": "hello"}])
    );
}

#[tokio::test]
async fn an_image_url_on_a_private_address_is_refused_not_fetched() {
    let (mock, api) = content_api(false).await;
    let host = image_host().await;
    let (_, key) = api
        .tenant_from(json!({"name": "V", "policy": "vision"}))
        .await;
    let literal = format!("{}/cat.png", host.base);
    let named = literal.replace("127.0.0.1", "localhost");
    for url in [
        literal.as_str(),
        named.as_str(),
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:10.0.0.1]/x.png",
    ] {
        let r = chat(&api, &key, look_at(url)).await;
        assert_refused(&r, "messages[0].content[1]", "not a public address");
    }
    let r = chat(&api, &key, look_at("file:///etc/passwd")).await;
    assert_refused(&r, "messages[0].content[1]", "data: URL or an http(s) URL");
    assert_eq!(host.hits.load(Ordering::SeqCst), 0, "never connected");
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn an_allowed_image_is_fetched_and_sent_upstream_as_data() {
    let (mock, api) = content_api(true).await;
    let host = image_host().await;
    let (_, key) = api
        .tenant_from(json!({"name": "V", "policy": "vision"}))
        .await;
    let url = format!("{}/cat.png", host.base);
    let r = chat(&api, &key, look_at(&url)).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(host.hits.load(Ordering::SeqCst), 1);
    let seen = mock.requests();
    assert_eq!(seen.len(), 1);
    let sent = &seen[0].body["messages"];
    let part = sent
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "user")
        .unwrap()["content"][1]
        .clone();
    let data = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(CAT)
    );
    assert_eq!(
        part,
        json!({"type": "image_url", "image_url": {"url": data}})
    );
    assert!(
        !seen[0].body.to_string().contains(&host.base),
        "the URL itself never reaches the upstream"
    );

    // Too big, not an image, redirected to the metadata address, a file id, an
    // inline image over the cap: refused, and no model asked.
    for (path, needle) in [
        ("/big.png", "larger than 4096 bytes"),
        ("/page", "not an image"),
        ("/hop", "169.254.169.254, which is not a public address"),
        ("/missing.png", "404"),
    ] {
        let r = chat(&api, &key, look_at(&format!("{}{path}", host.base))).await;
        assert_refused(&r, "messages[0].content[1]", needle);
    }
    let file_id = with_parts(json!([{"type": "file", "file": {"file_id": "file-of-someone"}}]));
    let r = chat(&api, &key, file_id).await;
    assert_refused(&r, "messages[0].content[0]", "file_id is not accepted");
    let big_inline = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(vec![0u8; CAP + 3])
    );
    let r = chat(&api, &key, look_at(&big_inline)).await;
    assert_refused(&r, "messages[0].content[1]", "more than the 4096 bytes");
    let inline_file = with_parts(
        json!([{"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}}]),
    );
    let r = chat(&api, &key, inline_file).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(
        mock.requests().len(),
        2,
        "only the two admitted calls reached a model"
    );
}

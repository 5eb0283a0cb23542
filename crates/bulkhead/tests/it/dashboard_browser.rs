//! The dashboard in a real headless Chromium, driven through chromedriver with
//! fantoccini (a maintained W3C WebDriver client; no Node). Against the real
//! binary with the echo models: log in, see a tenant, quarantine and release it
//! (checked through the admin API too), see the alert a blocked leak raises,
//! verify a log. Screenshots of each view go to `target/dashboard-screenshots/`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/test` installs them).
//! Without them the test fails, unless `BULKHEAD_SKIP_BROWSER_TESTS` is set.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bulkhead_test_support::{ADMIN_TOKEN, Server, expect_json, tenant_with_key};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::BULKHEAD;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Longest wait for a page element or for chromedriver to come up. A wait, not a
/// timing assertion: a slow machine only makes the test slower.
const WAIT: Duration = Duration::from_secs(20);

/// chromedriver, killed when dropped.
struct Driver {
    child: Child,
    base: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session.
struct Browser {
    client: Client,
    shots: PathBuf,
}

impl Driver {
    async fn start() -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        // fantoccini has no readiness probe of its own: ask chromedriver's
        // /status until it answers.
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let ready = http
                .get(format!("{}/status", driver.base))
                .send()
                .await
                .ok()
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                return driver;
            }
            assert!(
                started.elapsed() < WAIT,
                "chromedriver did not answer /status"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn browser(&self, profile: &Path, shots: PathBuf) -> Browser {
        let caps = json!({
            "browserName": "chrome",
            "unhandledPromptBehavior": "accept",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1360,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!("the capabilities above are a JSON object")
        };
        // chromedriver listens on loopback: plain HTTP, no TLS connector.
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&self.base)
            .await
            .unwrap_or_else(|e| panic!("WebDriver new session: {e}"));
        Browser { client, shots }
    }
}

impl Browser {
    async fn go(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("WebDriver go to {url}: {e}"));
    }

    async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    /// The first element matching `css` whose text contains `text`, waiting for
    /// the page to show it.
    async fn find(&self, css: &str, text: &str) -> Element {
        let started = Instant::now();
        loop {
            let found = self
                .client
                .find_all(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("WebDriver find {css}: {e}"));
            for el in found {
                // The live panels re-render every few seconds: an element found a
                // moment ago may be gone ("stale"); look again rather than fail.
                match el.text().await {
                    Ok(t) if text.is_empty() || t.contains(text) => return el,
                    _ => {}
                }
            }
            assert!(
                started.elapsed() < WAIT,
                "no `{css}` showing {text:?} on {}:\n{}",
                self.url().await,
                self.source().await
            );
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    async fn text(&self, element: &Element) -> String {
        element
            .text()
            .await
            .unwrap_or_else(|e| panic!("WebDriver element text: {e}"))
    }

    async fn click(&self, element: &Element) {
        element
            .click()
            .await
            .unwrap_or_else(|e| panic!("WebDriver click: {e}"));
    }

    async fn type_into(&self, element: &Element, text: &str) {
        element
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("WebDriver send keys: {e}"));
    }

    async fn source(&self) -> String {
        self.client
            .source()
            .await
            .unwrap_or_else(|e| panic!("WebDriver page source: {e}"))
    }

    async fn screenshot(&self, name: &str) {
        let bytes = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("WebDriver screenshot: {e}"));
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::write(self.shots.join(format!("{name}.png")), bytes).expect("write screenshot");
    }

    async fn quit(self) {
        self.client
            .close()
            .await
            .unwrap_or_else(|e| panic!("WebDriver end session: {e}"));
    }
}

async fn tenant_status(http: &reqwest::Client, base: &str, id: &str) -> String {
    let t = expect_json(
        http.get(format!("{base}/admin/v1/tenants/{id}"))
            .bearer_auth(ADMIN_TOKEN),
        StatusCode::OK,
        "read a tenant",
    )
    .await;
    t["status"].as_str().unwrap_or_default().to_owned()
}

async fn chat(http: &reqwest::Client, base: &str, key: &str, prompt: &str) -> Value {
    expect_json(
        http.post(format!("{base}/v1/chat/completions"))
            .bearer_auth(key)
            .json(&json!({"model": "bulkhead-echo-leaky",
                "messages": [{"role": "user", "content": prompt}],
                "bulkhead": {"retrieve": {"top_k": 3}}})),
        StatusCode::OK,
        "chat with the leaky echo model",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_drives_the_dashboard_in_chromium() {
    if std::env::var_os("BULKHEAD_SKIP_BROWSER_TESTS").is_some() {
        eprintln!("BULKHEAD_SKIP_BROWSER_TESTS is set: the browser test is skipped");
        return;
    }
    assert!(
        Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists(),
        "{CHROMIUM} and {CHROMEDRIVER} are needed (apt-get install chromium chromium-driver, \
         as scripts/test does); set BULKHEAD_SKIP_BROWSER_TESTS=1 to skip this test"
    );
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("dashboard-screenshots");
    std::fs::create_dir_all(&shots).expect("create the screenshot folder");

    let data = tempfile::tempdir().expect("a data dir");
    let server =
        Server::start_with(BULKHEAD, data.path(), &[("BULKHEAD_ECHO_MODELS", "true")]).await;
    let base = server.base_url.clone();
    let http = reqwest::Client::new();
    let (acme, key_acme) = tenant_with_key(&http, &base, "Acme Corp").await;
    let (_globex, key_globex) = tenant_with_key(&http, &base, "Globex").await;
    expect_json(
        http.post(format!("{base}/v1/documents"))
            .bearer_auth(&key_acme)
            .json(&json!({"text": "The quarterly numbers of Acme are private: revenue grew in every region."})),
        StatusCode::CREATED,
        "store a document",
    )
    .await;
    // Some traffic for the charts: Acme's own calls.
    for i in 0..5 {
        chat(&http, &base, &key_acme, &format!("status report {i}")).await;
    }

    let profile = tempfile::tempdir().expect("a browser profile dir");
    let driver = Driver::start().await;
    let b = driver.browser(profile.path(), shots.clone()).await;

    // Log in: the dashboard sends an anonymous browser to the login form.
    b.go(&format!("{base}/dashboard")).await;
    let token = b.find("#token", "").await;
    assert!(b.url().await.ends_with("/dashboard/login"));
    b.screenshot("01-login").await;
    b.type_into(&token, ADMIN_TOKEN).await;
    let login = b.find("#login", "").await;
    b.click(&login).await;

    // The tenants view lists Acme, active. The session cookie was kept although it
    // is Secure and this is http://127.0.0.1 (Chromium treats loopback as secure).
    let row = format!("tr[data-tenant=\"{acme}\"]");
    b.find(&format!("{row} td.status"), "active").await;
    let cookies = b
        .client
        .get_all_cookies()
        .await
        .unwrap_or_else(|e| panic!("WebDriver cookies: {e}"));
    let cookie = cookies
        .iter()
        .find(|c| c.name() == "bulkhead_dashboard")
        .unwrap_or_else(|| panic!("the session cookie was not kept: {cookies:?}"));
    assert_eq!(cookie.secure(), Some(true));
    assert_eq!(cookie.http_only(), Some(true));
    b.screenshot("02-tenants").await;

    // Quarantine Acme (the confirm dialog is accepted), then release it.
    let button = b
        .find(&format!("{row} button[data-action=\"quarantine\"]"), "")
        .await;
    b.click(&button).await;
    b.find(&format!("{row} td.status"), "quarantined").await;
    assert_eq!(tenant_status(&http, &base, &acme).await, "quarantined");
    b.screenshot("03-tenant-quarantined").await;
    let button = b
        .find(&format!("{row} button[data-action=\"release\"]"), "")
        .await;
    b.click(&button).await;
    b.find(&format!("{row} td.status"), "active").await;
    assert_eq!(tenant_status(&http, &base, &acme).await, "active");

    // A blocked leak: the leaky model repeats Acme's prompt (with its canary) to
    // Globex; the guard blocks it and raises an alert.
    chat(&http, &base, &key_acme, "what are the quarterly numbers?").await;
    let leaked = chat(&http, &base, &key_globex, "anything new?").await;
    assert_eq!(leaked["bulkhead"]["blocked"], true, "{leaked}");
    b.go(&format!("{base}/dashboard/alerts")).await;
    let alert = b
        .find("tr[data-kind=\"cross_tenant_leak\"]", "cross_tenant_leak")
        .await;
    assert!(b.text(&alert).await.contains(&acme) || b.source().await.contains(&acme));
    b.screenshot("04-alerts").await;
    let ack = b
        .find(
            "tr[data-kind=\"cross_tenant_leak\"] button[data-action=\"ack\"]",
            "",
        )
        .await;
    b.click(&ack).await;
    b.find(
        "tr[data-kind=\"cross_tenant_leak\"] .pill.acked",
        "acknowledged",
    )
    .await;
    b.screenshot("05-alert-acknowledged").await;

    b.go(&format!("{base}/dashboard/traffic")).await;
    b.find("#traffic-tenants", &acme).await;
    b.screenshot("06-traffic").await;
    b.go(&format!("{base}/dashboard/guard")).await;
    b.find("#guard-types", "blocked leak").await;
    b.screenshot("07-guard").await;

    // Verify Acme's log: the result shows "ok".
    b.go(&format!("{base}/dashboard/audit")).await;
    let log_row = format!("tr[data-log=\"{acme}\"]");
    let verify = b
        .find(&format!("{log_row} button[data-action=\"verify\"]"), "")
        .await;
    b.click(&verify).await;
    b.find(&format!("{log_row} .verify-result"), "ok").await;
    b.screenshot("08-audit-verified").await;

    b.go(&format!("{base}/dashboard/tenants/{acme}/incident"))
        .await;
    b.find("#incident-report", "Actors:").await;
    b.screenshot("09-incident").await;

    // Logging out ends the session: the dashboard asks for the token again.
    b.go(&format!("{base}/dashboard")).await;
    let logout = b.find("#logout", "").await;
    b.click(&logout).await;
    b.find("#token", "").await;
    b.go(&format!("{base}/dashboard/audit")).await;
    b.find("#token", "").await;
    b.quit().await;
    drop(server);
}

//! The dashboard in a real headless Chromium, driven through chromedriver with the
//! W3C WebDriver protocol (plain HTTP + JSON over reqwest; no Node). Against the
//! real binary with the echo models: log in, see a tenant, quarantine and release
//! it (checked through the admin API too), see the alert a blocked leak raises,
//! verify a log. Screenshots of each view go to `target/dashboard-screenshots/`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/test` installs them).
//! Without them the test fails, unless `BULKHEAD_SKIP_BROWSER_TESTS` is set.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{ADMIN_TOKEN, Server, expect_json, tenant_with_key};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Longest wait for a page element or for chromedriver to come up. A wait, not a
/// timing assertion: a slow machine only makes the test slower.
const WAIT: Duration = Duration::from_secs(20);

/// chromedriver, killed when dropped.
struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session.
struct Browser<'a> {
    driver: &'a Driver,
    session: String,
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
            http: reqwest::Client::new(),
        };
        let started = Instant::now();
        loop {
            let ready = driver
                .http
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

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"))
    }

    /// A command whose failure the caller handles (an element the page's own
    /// refresh replaced meanwhile is "stale", not a failed test).
    async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let response = req.send().await.expect("chromedriver answers");
        let status = response.status();
        let body: Value = response.json().await.expect("chromedriver sends JSON");
        if status.is_success() {
            Ok(body["value"].clone())
        } else {
            Err(format!("{status} {body}"))
        }
    }

    async fn browser(&self, profile: &Path, shots: PathBuf) -> Browser<'_> {
        let caps = json!({"capabilities": {"alwaysMatch": {
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
        }}});
        let v = self
            .call(reqwest::Method::POST, "/session", Some(caps))
            .await;
        Browser {
            driver: self,
            session: v["sessionId"].as_str().expect("a session id").to_owned(),
            shots,
        }
    }
}

impl Browser<'_> {
    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.driver
            .call(method, &format!("/session/{}{path}", self.session), body)
            .await
    }

    async fn go(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    async fn url(&self) -> String {
        self.cmd(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The first element matching `css` whose text contains `text`, waiting for
    /// the page to show it.
    async fn find(&self, css: &str, text: &str) -> String {
        let started = Instant::now();
        loop {
            let found = self
                .driver
                .http
                .post(format!(
                    "{}/session/{}/elements",
                    self.driver.base, self.session
                ))
                .json(&json!({"using": "css selector", "value": css}))
                .send()
                .await
                .expect("chromedriver answers")
                .json::<Value>()
                .await
                .expect("JSON");
            for el in found["value"].as_array().cloned().unwrap_or_default() {
                // A W3C element reference is an object with one member (the
                // protocol's fixed element key) holding the id.
                let id = el
                    .as_object()
                    .and_then(|o| o.values().next())
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                // The live panels re-render every few seconds: an element found a
                // moment ago may be gone; look again rather than fail.
                let shown = self
                    .driver
                    .try_call(
                        reqwest::Method::GET,
                        &format!("/session/{}/element/{id}/text", self.session),
                        None,
                    )
                    .await;
                match shown {
                    Ok(t) if text.is_empty() || t.as_str().unwrap_or_default().contains(text) => {
                        return id;
                    }
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

    async fn text(&self, element: &str) -> String {
        self.cmd(
            reqwest::Method::GET,
            &format!("/element/{element}/text"),
            None,
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    async fn click(&self, element: &str) {
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn type_into(&self, element: &str, text: &str) {
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn source(&self) -> String {
        self.cmd(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn screenshot(&self, name: &str) {
        let png = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64 PNG"))
            .expect("valid base64");
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::write(self.shots.join(format!("{name}.png")), bytes).expect("write screenshot");
    }

    async fn quit(&self) {
        self.cmd(reqwest::Method::DELETE, "", None).await;
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
    let server = Server::start_with(data.path(), &[("BULKHEAD_ECHO_MODELS", "true")]).await;
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
    let cookies = b.cmd(reqwest::Method::GET, "/cookie", None).await;
    let cookie = cookies
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "bulkhead_dashboard"))
        .unwrap_or_else(|| panic!("the session cookie was not kept: {cookies}"));
    assert_eq!(cookie["secure"], true);
    assert_eq!(cookie["httpOnly"], true);
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

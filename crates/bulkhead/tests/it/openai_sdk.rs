//! End to end: the official OpenAI Python SDK against a real server.
//!
//! What is proven: an application written against the `openai` package, changed
//! only in its `base_url` and `api_key`, works through Bulkhead. The SDK lists
//! models, makes whole and streamed chat completions (with `stream_options`,
//! retrieval and sessions through `extra_body`), creates embeddings, reads the
//! `bulkhead` response extension from `model_extra` and the trace header from
//! `with_raw_response`, gets a guard-blocked leak as `finish_reason:
//! "content_filter"`, and raises its own typed exceptions (`NotFoundError`,
//! `BadRequestError`, `AuthenticationError`) from our problem+json errors.
//!
//! How: the checks live in `tests/it/sdk/openai_sdk_check.py`. This test prepares a
//! virtualenv with one pinned `openai` version under cargo's
//! `CARGO_TARGET_TMPDIR` (kept between runs, so only the first run installs),
//! starts the binary with the built-in echo models, creates two tenants, a
//! document and a session through plain HTTP, and runs the script against it.
//!
//! The test needs `python3` with the `venv` module, and PyPI (or a pip mirror)
//! the first time. Without them it fails, saying so: an SDK test that passes
//! because it could not run proves nothing.

#![cfg(unix)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use bulkhead_test_support::{Server, expect_json, string_field};
use reqwest::{Client, StatusCode};
use serde_json::json;

use crate::BULKHEAD;

/// The SDK under test, pinned exactly so that a new release cannot change the
/// result of an old commit. The newest 2.x on PyPI when this was written
/// (2.54.0); 3.x releases exist and deserve their own bump, with this test as
/// the judge.
const OPENAI_VERSION: &str = "2.54.0";
const VENV_DIR: &str = "openai-venv";
/// Prefixes of half-built or replaced virtualenvs next to `VENV_DIR`.
const BUILD_PREFIX: &str = "openai-venv.build-";
const STALE_PREFIX: &str = "openai-venv.stale-";
/// A build directory this old belongs to a process that died mid-install: no
/// live install takes longer than `PIP_TIMEOUT`.
const ABANDONED_BUILD_AGE: Duration = Duration::from_secs(3600);

const VENV_CREATE_TIMEOUT: Duration = Duration::from_secs(120);
const PIP_TIMEOUT: Duration = Duration::from_secs(600);
const VERSION_CHECK_TIMEOUT: Duration = Duration::from_secs(60);
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long to wait for a killed process's pipes to close before giving up on
/// the rest of its output.
const PIPE_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The line the script prints only when every check passed.
const ALL_PASSED: &str = "ALL OPENAI SDK CHECKS PASSED";
/// In tenant A's only document, so that retrieval puts it in A's prompt; the
/// script checks A gets it back and B never does.
const SECRET_A: &str = "QX-7731-ZEBRA";
const DOCUMENT_A: &str =
    "The vault code for Project Bluefin is QX-7731-ZEBRA; never share it outside Acme.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_python_sdk_works_through_the_gateway() {
    // The install is slow the first time; let it run while the server starts.
    let venv = tokio::task::spawn_blocking(|| prepare_venv(Path::new(env!("CARGO_TARGET_TMPDIR"))));

    let data_dir = tempfile::tempdir().expect("create a temporary data directory");
    let server = Server::start_with(
        BULKHEAD,
        data_dir.path(),
        &[("BULKHEAD_ECHO_MODELS", "true")],
    )
    .await;
    let client = Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("build the HTTP client");
    let (_, key_a) =
        bulkhead_test_support::tenant_with_key(&client, &server.base_url, "sdk-acme").await;
    let (_, key_b) =
        bulkhead_test_support::tenant_with_key(&client, &server.base_url, "sdk-globex").await;
    expect_json(
        client
            .post(format!("{}/v1/documents", server.base_url))
            .bearer_auth(&key_a)
            .json(&json!({ "text": DOCUMENT_A })),
        StatusCode::CREATED,
        "store tenant A's document",
    )
    .await;
    let session = expect_json(
        client
            .post(format!("{}/v1/sessions", server.base_url))
            .bearer_auth(&key_a)
            .json(&json!({})),
        StatusCode::CREATED,
        "create a session for tenant A",
    )
    .await;
    let session_id = string_field(&session, "id");

    let venv = venv
        .await
        .expect("the virtualenv task panicked")
        .unwrap_or_else(|error| panic!("{error}"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/sdk/openai_sdk_check.py");
    let mut command = Command::new(venv.join("bin/python"));
    command
        .arg(&script)
        .env("BULKHEAD_SDK_BASE_URL", format!("{}/v1", server.base_url))
        .env("BULKHEAD_SDK_KEY_A", &key_a)
        .env("BULKHEAD_SDK_KEY_B", &key_b)
        .env("BULKHEAD_SDK_SESSION_ID", &session_id)
        .env("BULKHEAD_SDK_SECRET_A", SECRET_A)
        // The SDK reads these; a developer's own settings must not leak in.
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("OPENAI_ORG_ID")
        .env_remove("OPENAI_PROJECT_ID")
        // httpx honours proxy variables; the server is on loopback.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let run = tokio::task::spawn_blocking(move || {
        run_with_timeout(&mut command, SCRIPT_TIMEOUT, "the OpenAI SDK check script")
    })
    .await
    .expect("the script task panicked");
    let finished = run.unwrap_or_else(|error| panic!("{error}\n{}", server.log_tail()));

    println!("{}", finished.stdout);
    assert!(
        finished.status.success() && finished.stdout.contains(ALL_PASSED),
        "the OpenAI SDK checks failed ({}) after {:.1?}\n{}\n{}",
        finished.status,
        finished.elapsed,
        finished.describe(),
        server.log_tail()
    );
}

/// A virtualenv under `root` with exactly `OPENAI_VERSION` installed, made once
/// and reused.
///
/// Two test processes may get here at once (two checkouts sharing a target dir,
/// `cargo test` next to `cargo llvm-cov`), so a virtualenv is built in a
/// directory of its own and renamed into place; `rename` is atomic, and a
/// process that loses the race uses the winner's. A lock file would have to be
/// cleaned up after a killed holder; a half-built directory only wastes disk, and
/// is removed by a later run once it is an hour old.
///
/// Everything runs through `bin/python`, never `bin/pip`: a renamed virtualenv
/// keeps working, but the `#!` lines of its scripts still name the build
/// directory.
fn prepare_venv(root: &Path) -> Result<PathBuf, String> {
    let venv = root.join(VENV_DIR);
    if venv_is_ready(&venv) {
        return Ok(venv);
    }
    std::fs::create_dir_all(root).map_err(|error| format!("create {}: {error}", root.display()))?;
    remove_abandoned_builds(root);

    let build = root.join(format!("{BUILD_PREFIX}{}", unique_suffix()));
    let started = Instant::now();
    let made = run_with_timeout(
        Command::new("python3").arg("-m").arg("venv").arg(&build),
        VENV_CREATE_TIMEOUT,
        "python3 -m venv",
    )
    .map_err(|error| setup_error(&error))?;
    if !made.status.success() {
        return Err(setup_error(&format!(
            "`python3 -m venv {}` failed ({}); on Debian and Ubuntu the venv module is \
             the python3-venv package\n{}",
            build.display(),
            made.status,
            made.describe()
        )));
    }
    let requirement = format!("openai=={OPENAI_VERSION}");
    let installed = run_with_timeout(
        Command::new(build.join("bin/python"))
            .args(["-m", "pip", "install", "--disable-pip-version-check", "-q"])
            .arg(&requirement),
        PIP_TIMEOUT,
        "pip install",
    )
    .map_err(|error| setup_error(&error))?;
    if !installed.status.success() {
        return Err(setup_error(&format!(
            "`pip install {requirement}` into {} failed ({}); it needs PyPI or a mirror \
             (PIP_INDEX_URL) the first time\n{}",
            build.display(),
            installed.status,
            installed.describe()
        )));
    }
    if !venv_is_ready(&build) {
        return Err(setup_error(&format!(
            "pip installed {requirement} into {}, but `import openai` there does not \
             report version {OPENAI_VERSION}",
            build.display()
        )));
    }

    if std::fs::rename(&build, &venv).is_err() {
        if venv_is_ready(&venv) {
            // Another test process finished first; its virtualenv is as good.
            let _ = std::fs::remove_dir_all(&build);
            return Ok(venv);
        }
        // A virtualenv of another version (or a broken one) is in the way:
        // move it aside, as one atomic step, then delete it at leisure.
        let stale = root.join(format!("{STALE_PREFIX}{}", unique_suffix()));
        let _ = std::fs::rename(&venv, &stale);
        let _ = std::fs::remove_dir_all(&stale);
        std::fs::rename(&build, &venv).map_err(|error| {
            setup_error(&format!(
                "move {} to {}: {error}",
                build.display(),
                venv.display()
            ))
        })?;
    }
    // Paired with the check on the build directory: the move kept it working.
    if !venv_is_ready(&venv) {
        return Err(setup_error(&format!(
            "the virtualenv no longer imports openai {OPENAI_VERSION} after it was \
             moved to {}",
            venv.display()
        )));
    }
    println!(
        "installed openai {OPENAI_VERSION} into {} in {:.1?}",
        venv.display(),
        started.elapsed()
    );
    Ok(venv)
}

fn setup_error(detail: &str) -> String {
    format!(
        "cannot prepare the Python virtualenv with openai {OPENAI_VERSION} that the OpenAI \
         SDK test needs: {detail}"
    )
}

/// Whether `venv` imports exactly the pinned SDK.
fn venv_is_ready(venv: &Path) -> bool {
    let python = venv.join("bin/python");
    if !python.exists() {
        return false;
    }
    let probe = format!("import openai; assert openai.__version__ == '{OPENAI_VERSION}'");
    run_with_timeout(
        Command::new(python).args(["-c", &probe]),
        VERSION_CHECK_TIMEOUT,
        "the openai version check",
    )
    .is_ok_and(|finished| finished.status.success())
}

/// Deletes build and stale directories left behind by processes that died.
fn remove_abandoned_builds(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(BUILD_PREFIX) || name.starts_with(STALE_PREFIX)) {
            continue;
        }
        let age = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| SystemTime::now().duration_since(modified).ok());
        if age.is_some_and(|age| age > ABANDONED_BUILD_AGE) {
            // Best effort: another process may be removing it too.
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Unique among processes and among calls in one process.
fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{}-{nanos}", std::process::id())
}

/// A process that ran to its end.
#[derive(Debug)]
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Finished {
    fn describe(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout, self.stderr
        )
    }
}

/// Runs `command` with its output captured, killing it after `timeout`. An
/// error names what ran and carries whatever it printed before it was killed.
fn run_with_timeout(
    command: &mut Command,
    timeout: Duration,
    what: &str,
) -> Result<Finished, String> {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| {
            format!(
                "{what}: cannot run {:?}: {error}; is python3, with its venv module and pip, \
                 installed? (Debian and Ubuntu: apt-get install python3-venv)",
                command.get_program()
            )
        })?;
    // Both pipes were configured as piped just above.
    let stdout = drain(child.stdout.take().expect("stdout is piped"));
    let stderr = drain(child.stderr.take().expect("stderr is piped"));

    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() >= timeout => {
                // Errors mean it has just exited, which is as good.
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(error) => return Err(format!("{what}: wait for it: {error}")),
        }
    };
    let finished = |status| Finished {
        status,
        stdout: collect(&stdout),
        stderr: collect(&stderr),
        elapsed: started.elapsed(),
    };
    match status {
        Some(status) => Ok(finished(status)),
        None => {
            let partial = finished(ExitStatus::default());
            Err(format!(
                "{what} did not finish within {timeout:?} and was killed\n{}",
                partial.describe()
            ))
        }
    }
}

/// Reads a pipe to its end on a thread of its own, so a full pipe never stalls
/// the child.
fn drain(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        // A read error ends the output early; what was read is still reported.
        let _ = pipe.read_to_end(&mut bytes);
        // The receiver may have given up waiting; nothing is lost that matters.
        let _ = tx.send(bytes);
    });
    rx
}

/// What a drained pipe held. A grandchild that inherited the pipe can keep it
/// open after the child is gone; then the output is reported as missing.
fn collect(rx: &mpsc::Receiver<Vec<u8>>) -> String {
    match rx.recv_timeout(PIPE_DRAIN_TIMEOUT) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => {
            format!("<the pipe was still open {PIPE_DRAIN_TIMEOUT:?} after the process ended>")
        }
    }
}
